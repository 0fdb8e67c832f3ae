package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/lbha/lbha/syncd/wire"
)

func init() { addCommand(newSyncCmd) }

// syncCommandFactories holds the constructors of the `lbha sync`
// subcommands, in order; files of other subcommands append theirs from
// init, as top-level commands do with addCommand.
var syncCommandFactories = []func() *cobra.Command{newSyncDecodeCmd}

func newSyncCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Work with the IPVS connection sync protocol",
	}
	for _, f := range syncCommandFactories {
		cmd.AddCommand(f())
	}
	return cmd
}

func newSyncDecodeCmd() *cobra.Command {
	var (
		asJSON bool
		syncID int
	)
	cmd := &cobra.Command{
		Use:   "decode [FILE|-]",
		Short: "Decode ip_vs_sync datagrams written in hex, one per line",
		Long: `Decode IPVS sync datagrams (the UDP payloads of the kernel's sync daemon),
one per input line: bare hex, or any line containing hex=<payload> such as
the lines of a capture file. Blank lines and lines starting with # are
ignored. Without FILE, or with -, standard input is read.

Each datagram is checked as a kernel backup would check it. Entries are
shown with the flags they had on the wire, in the columns of ipvsadm -Lcn;
expire shows the entry's timeout. A datagram, or entry, that a backup would
refuse is reported on standard error with its input line, and the exit
status is then 1.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, name := cmd.InOrStdin(), "-"
			if len(args) == 1 && args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("sync decode: %w", err)
				}
				defer f.Close()
				in, name = f, args[0]
			}
			d := syncDecoder{
				dec:    wire.Decoder{SyncID: syncID},
				json:   asJSON,
				name:   name,
				stdout: cmd.OutOrStdout(),
				stderr: cmd.ErrOrStderr(),
			}
			failed, err := d.run(in)
			if err != nil {
				return err
			}
			if failed {
				return silentExit(1)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per datagram")
	cmd.Flags().IntVar(&syncID, "syncid", 0, "check datagrams as a backup with this sync id (0 accepts every sync id)")
	return cmd
}

type syncDecoder struct {
	dec    wire.Decoder
	json   bool
	name   string
	stdout io.Writer
	stderr io.Writer
}

// maxHexLine bounds an input line: a 65535-byte datagram in hex plus the
// other fields of a capture line.
const maxHexLine = 2*65535 + 4096

// run decodes every datagram of in. failed reports whether any line could
// not be decoded or any datagram had a problem; err is a read error.
func (d *syncDecoder) run(in io.Reader) (failed bool, err error) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64*1024), maxHexLine)
	first := true
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		report := func(err error) {
			fmt.Fprintf(d.stderr, "lbha: sync decode: %s:%d: %v\n", d.name, n, err)
			failed = true
		}
		data, err := parseHexLine(line)
		if err != nil {
			report(err)
			continue
		}
		m, problems, err := d.dec.Decode(data)
		if err != nil {
			report(err)
			continue
		}
		if d.json {
			err = writeSyncJSON(d.stdout, &m)
		} else {
			if !first {
				fmt.Fprintln(d.stdout)
			}
			err = writeSyncText(d.stdout, n, &m)
		}
		first = false
		if err != nil {
			return failed, fmt.Errorf("sync decode: %w", err)
		}
		for i := range problems {
			report(&problems[i])
		}
	}
	if err := sc.Err(); err != nil {
		return failed, fmt.Errorf("sync decode: %s: %w", d.name, err)
	}
	return failed, nil
}

// parseHexLine returns the datagram of one input line: the word after
// "hex=" if there is one, else the whole line with blanks removed.
func parseHexLine(line string) ([]byte, error) {
	var s string
	if _, after, ok := strings.Cut(line, "hex="); ok {
		s, _, _ = strings.Cut(after, " ")
		s = strings.TrimSpace(s)
	} else {
		s = strings.Join(strings.Fields(line), "")
	}
	if s == "" {
		return nil, errors.New("no hex payload")
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("bad hex: %w", err)
	}
	return b, nil
}

func writeSyncText(w io.Writer, line int, m *wire.Message) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "line %d: v%d syncid=%d size=%d count=%d\n", line, m.Version, m.SyncID, m.Size, m.Count)
	fmt.Fprintf(bw, "%-3s %-6s %-11s %-18s %-18s %-18s %s\n", "pro", "expire", "state", "source", "virtual", "destination", "flags")
	for i := range m.Entries {
		e := &m.Entries[i]
		row := fmt.Sprintf("%-3s %-6s %-11s %-18s %-18s %-18s %s",
			protoName(e.Protocol),
			fmt.Sprintf("%02d:%02d", e.Timeout/60, e.Timeout%60),
			stateName(e),
			netip.AddrPortFrom(e.CAddr, e.CPort),
			netip.AddrPortFrom(e.VAddr, e.VPort),
			netip.AddrPortFrom(e.DAddr, e.DPort),
			flagString(e.Flags))
		if e.FWMark != 0 {
			row += fmt.Sprintf(" fwmark %d", e.FWMark)
		}
		if e.PEName != "" || len(e.PEData) > 0 {
			row += " pe " + printable(e.PEName) + " " + printable(string(e.PEData))
		}
		if s := e.Seq; s != nil {
			row += fmt.Sprintf(" seq in=%d/%d/%d out=%d/%d/%d",
				s.InInitSeq, s.InDelta, s.InPreviousDelta, s.OutInitSeq, s.OutDelta, s.OutPreviousDelta)
		}
		fmt.Fprintln(bw, strings.TrimRight(row, " "))
	}
	return bw.Flush()
}

// printable returns s as is when every rune prints, else quoted.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) || r == ' ' || r == unicode.ReplacementChar {
			return strconv.Quote(s)
		}
	}
	return s
}

type syncJSONMessage struct {
	Version uint8           `json:"version"`
	SyncID  uint8           `json:"syncid"`
	Size    uint16          `json:"size"`
	Count   uint8           `json:"count"`
	Entries []syncJSONEntry `json:"entries"`
}

type syncJSONEntry struct {
	AF       string       `json:"af"`
	Protocol uint8        `json:"protocol"`
	Flags    uint32       `json:"flags"`
	State    uint16       `json:"state"`
	CPort    uint16       `json:"cport"`
	VPort    uint16       `json:"vport"`
	DPort    uint16       `json:"dport"`
	FWMark   uint32       `json:"fwmark"`
	Timeout  uint32       `json:"timeout"`
	CAddr    string       `json:"caddr"`
	VAddr    string       `json:"vaddr"`
	DAddr    string       `json:"daddr"`
	Template bool         `json:"template"`
	PEName   string       `json:"pe_name,omitempty"`
	PEData   string       `json:"pe_data,omitempty"`
	Seq      *syncJSONSeq `json:"seq,omitempty"`
}

type syncJSONSeq struct {
	InInitSeq        uint32 `json:"in_init_seq"`
	InDelta          uint32 `json:"in_delta"`
	InPreviousDelta  uint32 `json:"in_previous_delta"`
	OutInitSeq       uint32 `json:"out_init_seq"`
	OutDelta         uint32 `json:"out_delta"`
	OutPreviousDelta uint32 `json:"out_previous_delta"`
}

func writeSyncJSON(w io.Writer, m *wire.Message) error {
	out := syncJSONMessage{Version: m.Version, SyncID: m.SyncID, Size: m.Size, Count: m.Count,
		Entries: make([]syncJSONEntry, 0, len(m.Entries))}
	for i := range m.Entries {
		e := &m.Entries[i]
		j := syncJSONEntry{
			AF: "inet", Protocol: e.Protocol, Flags: e.Flags, State: e.State,
			CPort: e.CPort, VPort: e.VPort, DPort: e.DPort, FWMark: e.FWMark, Timeout: e.Timeout,
			CAddr: e.CAddr.String(), VAddr: e.VAddr.String(), DAddr: e.DAddr.String(),
			Template: e.IsTemplate(), PEName: e.PEName, PEData: string(e.PEData),
		}
		if e.IsIPv6() {
			j.AF = "inet6"
		}
		if s := e.Seq; s != nil {
			j.Seq = &syncJSONSeq{s.InInitSeq, s.InDelta, s.InPreviousDelta, s.OutInitSeq, s.OutDelta, s.OutPreviousDelta}
		}
		out.Entries = append(out.Entries, j)
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(out)
}

// protoName is the kernel's ip_vs_proto_name, which /proc/net/ip_vs_conn
// and so ipvsadm -Lcn show.
func protoName(p uint8) string {
	switch p {
	case 0:
		return "IP"
	case 1:
		return "ICMP"
	case 6:
		return "TCP"
	case 17:
		return "UDP"
	case 58:
		return "ICMPv6"
	case 132:
		return "SCTP"
	}
	return "IP_" + strconv.Itoa(int(p))
}

var (
	tcpStateNames = []string{"NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
		"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK"}
	sctpStateNames = []string{"NONE", "INIT1", "INIT", "C-SENT", "C-REPLIED", "C-WAIT", "COOKIE",
		"C-ECHOED", "ESTABLISHED", "S-SENT", "S-RECEIVED", "S-ACK-SENT", "REJECTED", "CLOSED"}
	templateStateNames = []string{"NONE", "ASSURED"}
)

// stateName is the kernel's ip_vs_state_name: template states for
// templates, else the protocol's names, "ERR!" past the end.
func stateName(e *wire.Entry) string {
	names := []string(nil)
	switch {
	case e.IsTemplate():
		names = templateStateNames
	case e.Protocol == 6:
		names = tcpStateNames
	case e.Protocol == 17:
		names = []string{"UDP"}
	case e.Protocol == 132:
		names = sctpStateNames
	case e.Protocol == 0:
		return "NONE"
	}
	if int(e.State) < len(names) {
		return names[e.State]
	}
	return "ERR!"
}

var (
	fwdNames  = []string{"MASQ", "LOCALNODE", "TUNNEL", "DROUTE", "BYPASS"}
	flagNames = []struct {
		bit  uint32
		name string
	}{
		{wire.FlagSync, "SYNC"}, {wire.FlagHashed, "HASHED"}, {wire.FlagNoOutput, "NOOUTPUT"},
		{wire.FlagInactive, "INACTIVE"}, {wire.FlagOutSeq, "OUT_SEQ"}, {wire.FlagInSeq, "IN_SEQ"},
		{wire.FlagNoCPort, "NO_CPORT"}, {wire.FlagTemplate, "TEMPLATE"}, {wire.FlagOnePacket, "ONE_PACKET"},
		{wire.FlagNFCT, "NFCT"},
	}
)

// flagString shows connection flags as hex followed by their names: the
// forwarding method first, then the flags by value, then any unnamed bits.
func flagString(f uint32) string {
	var names []string
	if m := f & wire.FlagFwdMask; int(m) < len(fwdNames) {
		names = append(names, fwdNames[m])
	} else {
		names = append(names, fmt.Sprintf("FWD%d", m))
	}
	rest := f &^ wire.FlagFwdMask
	for _, n := range flagNames {
		if rest&n.bit != 0 {
			names = append(names, n.name)
			rest &^= n.bit
		}
	}
	if rest != 0 {
		names = append(names, fmt.Sprintf("0x%x", rest))
	}
	return fmt.Sprintf("0x%x(%s)", f, strings.Join(names, "|"))
}
