package ftp

import (
	"net/netip"
	"strconv"
	"strings"
)

// The parsers below take one control line without its CRLF. They are liberal
// where servers and clients differ in practice (text around a 227 address,
// case and spacing of commands) and strict about the numbers: an octet above
// 255, a port of 0 or above 65535, or an address of the wrong family is no
// match. A Rewrite function returns false exactly when its parser does not
// match the line or the new address cannot be written in that form; its
// result always parses back to the new address.

// ParsePASV parses a server reply "227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)".
// The line must start with "227 "; the address is the first run of exactly
// six comma-separated decimal numbers after it, with or without parentheses
// and with any text around it.
func ParsePASV(line string) (netip.AddrPort, bool) {
	start, end, ok := pasvSpan(line)
	if !ok {
		return netip.AddrPort{}, false
	}
	return parseSix(line[start:end])
}

// RewritePASV returns line with the address of its 227 reply replaced by ap,
// which must be an IPv4 (or IPv4-mapped) address with a non-zero port. The
// text around the address is kept.
func RewritePASV(line string, ap netip.AddrPort) (string, bool) {
	return rewriteSix(line, ap, pasvSpan)
}

// rewriteSix replaces the six-number address that span finds in line.
func rewriteSix(line string, ap netip.AddrPort, span func(string) (int, int, bool)) (string, bool) {
	start, end, ok := span(line)
	if !ok {
		return "", false
	}
	if _, ok := parseSix(line[start:end]); !ok {
		return "", false
	}
	six, ok := formatSix(ap)
	if !ok {
		return "", false
	}
	return line[:start] + six + line[end:], true
}

// ParseEPSV parses a server reply "229 Entering Extended Passive Mode (|||port|)"
// and returns the port. The line must start with "229 "; the first "(" after
// it that is followed by the RFC 2428 form, three delimiters, the port and a
// fourth delimiter, holds the port. The delimiter is the character after "(";
// it must be printable ASCII other than a digit or space. The closing
// parenthesis is not required.
func ParseEPSV(line string) (uint16, bool) {
	start, end, ok := epsvSpan(line)
	if !ok {
		return 0, false
	}
	return parsePort(line[start:end])
}

// RewriteEPSV returns line with the port of its 229 reply replaced by port,
// which must not be 0.
func RewriteEPSV(line string, port uint16) (string, bool) {
	start, end, ok := epsvSpan(line)
	if !ok || port == 0 {
		return "", false
	}
	if _, ok := parsePort(line[start:end]); !ok {
		return "", false
	}
	return line[:start] + strconv.Itoa(int(port)) + line[end:], true
}

// ParsePORT parses a client command "PORT h1,h2,h3,h4,p1,p2". The verb is
// case-insensitive and followed by one or more spaces; the six numbers may be
// followed by spaces or tabs, nothing else.
func ParsePORT(line string) (netip.AddrPort, bool) {
	start, end, ok := portSpan(line)
	if !ok {
		return netip.AddrPort{}, false
	}
	return parseSix(line[start:end])
}

// RewritePORT returns line with the address of its PORT command replaced by
// ap, which must be an IPv4 (or IPv4-mapped) address with a non-zero port.
func RewritePORT(line string, ap netip.AddrPort) (string, bool) {
	return rewriteSix(line, ap, portSpan)
}

// ParseEPRT parses a client command "EPRT |af|addr|port|" (RFC 2428): af 1
// is an IPv4 address in dotted decimal, af 2 an IPv6 address without a zone.
// The verb is case-insensitive and followed by one or more spaces; the
// delimiter is the first character of the argument (printable ASCII other
// than a digit or space); the closing delimiter may be followed by spaces or
// tabs, nothing else.
func ParseEPRT(line string) (netip.AddrPort, bool) {
	e, ok := eprtSplit(line)
	if !ok {
		return netip.AddrPort{}, false
	}
	return e.addrPort()
}

// RewriteEPRT returns line with the argument of its EPRT command replaced by
// ap with a non-zero port, keeping the delimiter: an IPv4 or IPv4-mapped
// address is written with af 1, any other with af 2. A zone is dropped. It
// fails if the delimiter occurs in the new address (a ':' delimiter cannot
// carry IPv6).
func RewriteEPRT(line string, ap netip.AddrPort) (string, bool) {
	e, ok := eprtSplit(line)
	if !ok {
		return "", false
	}
	if _, ok := e.addrPort(); !ok {
		return "", false
	}
	addr := ap.Addr().Unmap().WithZone("")
	if !addr.IsValid() || ap.Port() == 0 {
		return "", false
	}
	af := "2"
	if addr.Is4() {
		af = "1"
	}
	host := addr.String()
	if strings.IndexByte(host, e.delim) >= 0 {
		return "", false
	}
	d := string(e.delim)
	return line[:e.argStart] + d + af + d + host + d + strconv.Itoa(int(ap.Port())) + d + line[e.argEnd:], true
}

// pasvSpan locates the six-number run of a 227 reply.
func pasvSpan(line string) (start, end int, ok bool) {
	const prefix = "227 "
	if !strings.HasPrefix(line, prefix) {
		return 0, 0, false
	}
	return findSix(line, len(prefix))
}

// portSpan locates the six-number argument of a PORT command.
func portSpan(line string) (start, end int, ok bool) {
	i, ok := verb(line, "PORT")
	if !ok {
		return 0, 0, false
	}
	start, end, ok = findSix(line, i)
	if !ok || start != i || !blank(line[end:]) {
		return 0, 0, false
	}
	return start, end, true
}

// epsvSpan locates the port digits of a 229 reply.
func epsvSpan(line string) (start, end int, ok bool) {
	const prefix = "229 "
	if !strings.HasPrefix(line, prefix) {
		return 0, 0, false
	}
	for i := len(prefix); i < len(line); i++ {
		if line[i] != '(' {
			continue
		}
		// "(" d d d digits d
		if i+5 >= len(line) {
			return 0, 0, false
		}
		d := line[i+1]
		if !isDelim(d) || line[i+2] != d || line[i+3] != d {
			continue
		}
		j := i + 4
		for j < len(line) && isDigit(line[j]) {
			j++
		}
		if j == i+4 || j == len(line) || line[j] != d {
			continue
		}
		return i + 4, j, true
	}
	return 0, 0, false
}

// eprt is an EPRT command split at its delimiters; argStart and argEnd
// bound the argument from the opening to just past the closing delimiter.
type eprt struct {
	delim            byte
	af, host, port   string
	argStart, argEnd int
}

func eprtSplit(line string) (eprt, bool) {
	i, ok := verb(line, "EPRT")
	if !ok || i >= len(line) {
		return eprt{}, false
	}
	e := eprt{delim: line[i], argStart: i}
	if !isDelim(e.delim) {
		return eprt{}, false
	}
	var fields [3]string
	j := i + 1
	for k := range fields {
		n := strings.IndexByte(line[j:], e.delim)
		if n < 0 {
			return eprt{}, false
		}
		fields[k] = line[j : j+n]
		j += n + 1
	}
	if !blank(line[j:]) {
		return eprt{}, false
	}
	e.af, e.host, e.port, e.argEnd = fields[0], fields[1], fields[2], j
	return e, true
}

func (e eprt) addrPort() (netip.AddrPort, bool) {
	port, ok := parsePort(e.port)
	if !ok {
		return netip.AddrPort{}, false
	}
	addr, err := netip.ParseAddr(e.host)
	if err != nil || addr.Zone() != "" {
		return netip.AddrPort{}, false
	}
	switch {
	case e.af == "1" && addr.Is4():
	case e.af == "2" && addr.Is6():
	default:
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(addr, port), true
}

// verb reports whether line starts with the command name (any case) and one
// or more spaces, and returns the index of the argument.
func verb(line, name string) (int, bool) {
	n := len(name)
	if len(line) <= n || !strings.EqualFold(line[:n], name) || line[n] != ' ' {
		return 0, false
	}
	for n < len(line) && line[n] == ' ' {
		n++
	}
	return n, true
}

// findSix returns the bounds of the first maximal run of comma-separated
// decimal numbers (digits, then any number of "," digits) in line[from:]
// that has exactly six numbers. Runs with another count are skipped.
func findSix(line string, from int) (start, end int, ok bool) {
	i := from
	for i < len(line) {
		if !isDigit(line[i]) {
			i++
			continue
		}
		start, n := i, 0
		for {
			for i < len(line) && isDigit(line[i]) {
				i++
			}
			n++
			if i+1 < len(line) && line[i] == ',' && isDigit(line[i+1]) {
				i++
				continue
			}
			break
		}
		if n == 6 {
			return start, i, true
		}
	}
	return 0, 0, false
}

// parseSix decodes "h1,h2,h3,h4,p1,p2" as found by findSix.
func parseSix(s string) (netip.AddrPort, bool) {
	var b [6]byte
	for k := range b {
		field := s
		if n := strings.IndexByte(s, ','); n >= 0 {
			field, s = s[:n], s[n+1:]
		} else {
			s = ""
		}
		v, ok := parseDecimal(field, 255)
		if !ok {
			return netip.AddrPort{}, false
		}
		b[k] = byte(v)
	}
	port := uint16(b[4])<<8 | uint16(b[5])
	if port == 0 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), port), true
}

func formatSix(ap netip.AddrPort) (string, bool) {
	addr := ap.Addr().Unmap()
	if !addr.Is4() || ap.Port() == 0 {
		return "", false
	}
	a := addr.As4()
	buf := make([]byte, 0, len("255,255,255,255,255,255"))
	for _, v := range [6]byte{a[0], a[1], a[2], a[3], byte(ap.Port() >> 8), byte(ap.Port())} {
		if len(buf) > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendUint(buf, uint64(v), 10)
	}
	return string(buf), true
}

// parsePort decodes a non-empty run of decimal digits as a port 1..65535.
func parsePort(s string) (uint16, bool) {
	v, ok := parseDecimal(s, 65535)
	if !ok || v == 0 {
		return 0, false
	}
	return uint16(v), true
}

// parseDecimal decodes a non-empty run of decimal digits (leading zeros
// allowed, as the kernel's simple_strtoul allows them) not above limit.
func parseDecimal(s string, limit int) (int, bool) {
	if s == "" {
		return 0, false
	}
	v := 0
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		v = v*10 + int(s[i]-'0')
		if v > limit {
			return 0, false
		}
	}
	return v, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isDelim reports whether c may delimit an RFC 2428 argument: printable
// ASCII (33..126, as the RFC says), but not a digit, which would run into
// the numbers.
func isDelim(c byte) bool { return c > ' ' && c < 0x7f && !isDigit(c) }

func blank(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != ' ' && s[i] != '\t' {
			return false
		}
	}
	return true
}
