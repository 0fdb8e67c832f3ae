package kernel

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/lbha/lbha/ipvs"
)

// ProcConnFile is the kernel's list of connections and templates in the
// current network namespace.
const ProcConnFile = "/proc/net/ip_vs_conn"

// maxConnLine bounds one line: a row is at most about 400 bytes (three
// IPv6 addresses, a 16-byte engine name and 255 bytes of engine data).
const maxConnLine = 64 << 10

// ParseConns parses /proc/net/ip_vs_conn (ip_vs_conn_seq_show) or
// /proc/net/ip_vs_conn_sync (ip_vs_conn_sync_seq_show).
//
// The first line may be the header, which is skipped; the sync file is
// recognised by its "Origin" column, or, without a header, by LOCAL or
// SYNC after the state. Rows are
//
//	"%-3s %08X %04X %08X %04X %s %04X %-11s %7u%s"
//
// protocol, client, virtual and destination address and port, state,
// expiry in seconds, then " <pe name> <pe data>" for connections whose
// template has engine data. Addresses are 8 hex digits for IPv4 and %pI6
// (8 colon-separated groups of 4 hex digits) for IPv6; each column is
// read in its own family, since a destination may differ from the
// client's. The sync file has Origin (LOCAL or SYNC) before Expires, and
// no engine columns; the origin is not kept.
//
// The file does not show the TEMPLATE flag, so Template is inferred: a
// row is a template when its state is NONE or ASSURED (the only template
// states, ip_vs_ctpl_state_name) and its client port is 0 (templates key
// on the masked client address with port 0; a real client has a port).
// The one misreading is an FTP data connection the kernel creates without
// a client port (IP_VS_CONN_F_NO_CPORT) before its first packet, while its
// TCP state is still NONE.
//
// Blank lines are skipped; any other line that does not parse is an error
// naming its line number.
func ParseConns(r io.Reader) ([]ipvs.Conn, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxConnLine)
	var out []ipvs.Conn
	syncFile := false
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if n == 1 && strings.HasPrefix(line, "Pro ") {
			syncFile = strings.Contains(line, " Origin ")
			continue
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		c, err := parseConn(line, syncFile)
		if err != nil {
			return nil, fmt.Errorf("kernel: connections line %d: %w", n, err)
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kernel: connections line %d: %w", n+1, err)
	}
	return out, nil
}

// cut returns the first space-separated field of s and the rest after it.
func cut(s string) (field, rest string) {
	s = strings.TrimLeft(s, " \t")
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		return s[:i], s[i:]
	}
	return s, ""
}

func parseConn(line string, syncFile bool) (ipvs.Conn, error) {
	var f [8]string
	rest := line
	for i := range f {
		f[i], rest = cut(rest)
		if f[i] == "" {
			return ipvs.Conn{}, fmt.Errorf("%d fields, want at least 9", i)
		}
	}
	c := ipvs.Conn{Proto: f[0], State: f[7]}
	var err error
	if c.Client, err = addrPort(f[1], f[2]); err != nil {
		return c, fmt.Errorf("client: %w", err)
	}
	if c.Virtual, err = addrPort(f[3], f[4]); err != nil {
		return c, fmt.Errorf("virtual: %w", err)
	}
	if c.Dest, err = addrPort(f[5], f[6]); err != nil {
		return c, fmt.Errorf("destination: %w", err)
	}
	c.Template = (c.State == "NONE" || c.State == "ASSURED") && c.Client.Port() == 0

	exp, rest := cut(rest)
	if exp == "" {
		return c, errors.New("8 fields, want at least 9")
	}
	if origin := exp; syncFile || origin == "LOCAL" || origin == "SYNC" {
		if origin != "LOCAL" && origin != "SYNC" {
			return c, fmt.Errorf("origin %q is neither LOCAL nor SYNC", origin)
		}
		exp, rest = cut(rest)
		if extra := strings.TrimSpace(rest); extra != "" {
			return c, fmt.Errorf("unexpected %q after the expiry", extra)
		}
	}
	secs, err := strconv.ParseUint(exp, 10, 32)
	if err != nil {
		return c, fmt.Errorf("expiry %q: %w", exp, errors.Unwrap(err))
	}
	c.Expires = time.Duration(secs) * time.Second
	c.PEName, rest = cut(rest)
	c.PEData = strings.TrimSpace(rest)
	return c, nil
}

// addrPort reads an address column (8 hex digits, or an IPv6 address) and
// a port column (4 hex digits).
func addrPort(a, p string) (netip.AddrPort, error) {
	var addr netip.Addr
	if len(a) == 8 && !strings.Contains(a, ":") {
		v, err := strconv.ParseUint(a, 16, 32)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("address %q is not 8 hex digits", a)
		}
		addr = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	} else {
		var err error
		addr, err = netip.ParseAddr(a)
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return netip.AddrPort{}, fmt.Errorf("address %q is neither 8 hex digits nor an IPv6 address", a)
		}
	}
	if len(p) != 4 {
		return netip.AddrPort{}, fmt.Errorf("port %q is not 4 hex digits", p)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q is not 4 hex digits", p)
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
