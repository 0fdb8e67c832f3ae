// Package sip is the SIP persistence engine's packet parser: it extracts the
// Call-ID from a UDP payload exactly as the Linux kernel's ip_vs_pe_sip does
// (net/netfilter/ipvs/ip_vs_pe_sip.c, which reuses nf_conntrack_sip's header
// parser), so that lbha and a kernel director put the same SIP dialogs on
// the same real server and exchange the same PE_DATA in sync messages.
//
// The kernel's rules, reproduced here:
//   - a header is recognised only at the start of a line (after CR, LF or
//     CRLF), never on the request line, and not on a continuation line;
//   - the long name "Call-Id" matches case-insensitively; the compact name
//     "i" only when the next byte is not a letter;
//   - blanks and continuation lines may surround the colon;
//   - the value is a "word", optionally followed by "@" and another word,
//     where word characters are those of nf_conntrack_sip's iswordc;
//   - a header whose value is empty is skipped and the search resumes (with
//     the kernel's own, slightly odd, offset arithmetic);
//   - the result is rejected when longer than 255 bytes (IP_VS_PEDATA_MAXLEN)
//     or when it is not followed by CR or LF;
//   - a payload without a usable Call-ID is dropped by the kernel, not
//     scheduled without persistence: callers must drop it too.
//
// "Letters" follow the kernel's ctype table, which classifies the Latin-1
// letters 0xC0-0xFF (except 0xD7 and 0xF7) as alphabetic.
package sip

import "errors"

// MaxCallIDLen is IP_VS_PEDATA_MAXLEN: the longest PE data the kernel keeps.
const MaxCallIDLen = 255

// Errors returned by CallID. All of them mean the kernel would drop the
// datagram.
var (
	ErrNoCallID        = errors.New("sip: no Call-ID header")
	ErrCallIDTooLong   = errors.New("sip: Call-ID longer than 255 bytes")
	ErrCallIDNotEnded  = errors.New("sip: Call-ID not followed by a line end")
	errNoValueAtHeader = errors.New("sip: Call-ID header without a value")
)

const (
	longName    = "call-id"
	compactName = "i"
)

// CallID returns the Call-ID of the SIP message in payload. The result
// aliases payload; copy it to keep it beyond the payload's lifetime. It
// never allocates.
func CallID(payload []byte) ([]byte, error) {
	if len(payload) == 0 {
		return nil, ErrNoCallID
	}
	dataoff := 0
	for {
		off, n, err := findHeader(payload, dataoff)
		if err == nil {
			if n > MaxCallIDLen {
				return nil, ErrCallIDTooLong
			}
			end := off + n
			if end == len(payload) || (payload[end] != '\r' && payload[end] != '\n') {
				return nil, ErrCallIDNotEnded
			}
			return payload[off:end], nil
		}
		if err != errNoValueAtHeader {
			return nil, err
		}
		// The kernel adds the absolute match offset to the search start
		// (get_callid: dataoff += *matchoff); off > dataoff, so this ends.
		dataoff += off
	}
}

// findHeader mirrors ct_sip_get_header for the Call-ID header. It returns
// the value's offset and length; errNoValueAtHeader with the offset reached
// when a header was found with an empty value; ErrNoCallID when the search
// ran out.
func findHeader(b []byte, dataoff int) (off, n int, err error) {
	limit := len(b)
	for p := dataoff; p < limit; p++ {
		if b[p] != '\r' && b[p] != '\n' {
			continue
		}
		p++
		if p >= limit {
			break
		}
		if b[p-1] == '\r' && b[p] == '\n' {
			p++
			if p >= limit {
				break
			}
		}
		if b[p] == ' ' || b[p] == '\t' {
			continue // continuation line
		}
		switch {
		case limit-p >= len(longName) && equalFold(b[p:p+len(longName)], longName):
			p += len(longName)
		case limit-p >= len(compactName)+1 && equalFold(b[p:p+len(compactName)], compactName) &&
			!isAlpha(b[p+len(compactName)]):
			p += len(compactName)
		default:
			// Not our header: the loop's p++ moves past its first byte,
			// as the kernel's does.
			continue
		}
		var ok bool
		if p, ok = skipWhitespace(b, p); !ok || p >= limit || b[p] != ':' {
			break
		}
		p++
		if p >= limit {
			break
		}
		if p, ok = skipWhitespace(b, p); !ok || p > limit {
			break
		}
		n := callIDLen(b[p:])
		if n == 0 {
			return p, 0, errNoValueAtHeader
		}
		return p, n, nil
	}
	return 0, 0, ErrNoCallID
}

// skipWhitespace mirrors sip_skip_whitespace: spaces, and line ends that
// continue on a line starting with a blank. ok is false where the kernel
// returns NULL (a line end that is not a continuation).
func skipWhitespace(b []byte, p int) (int, bool) {
	for ; p < len(b); p++ {
		if b[p] == ' ' {
			continue
		}
		if b[p] != '\r' && b[p] != '\n' {
			break
		}
		var ok bool
		if p, ok = followContinuation(b, p); !ok {
			return p, false
		}
		// The kernel's loop increment then steps past the first
		// non-blank byte of the continuation line, which is thereby lost
		// from the value. Reproduced on purpose: the same bytes must
		// select the same server as on a kernel director.
	}
	return p, true
}

// followContinuation mirrors sip_follow_continuation: from a line end at p,
// return the first non-blank byte of the next line if it is a continuation.
func followContinuation(b []byte, p int) (int, bool) {
	p++
	if p >= len(b) {
		return p, false
	}
	if b[p-1] == '\r' && b[p] == '\n' {
		p++
		if p >= len(b) {
			return p, false
		}
	}
	if b[p] != ' ' && b[p] != '\t' {
		return p, false
	}
	for p < len(b) && (b[p] == ' ' || b[p] == '\t') {
		p++
	}
	return p, true
}

// callIDLen mirrors callid_len: word [ "@" word ], 0 if "@" has no word.
func callIDLen(b []byte) int {
	n := wordLen(b)
	if n == 0 || n == len(b) || b[n] != '@' {
		return n
	}
	domain := wordLen(b[n+1:])
	if domain == 0 {
		return 0
	}
	return n + 1 + domain
}

func wordLen(b []byte) int {
	n := 0
	for n < len(b) && isWordChar(b[n]) {
		n++
	}
	return n
}

// isWordChar is nf_conntrack_sip's iswordc. Its range comparisons run on a
// signed char, so bytes 0x80 and above only qualify through isalnum.
func isWordChar(c byte) bool {
	switch {
	case isAlpha(c), c >= '0' && c <= '9':
		return true
	case c == '!', c == '"', c == '%', c >= '(' && c <= '/', c == ':', c == '<', c == '>',
		c == '?', c >= '[' && c <= ']', c == '_', c == '`', c == '{', c == '}', c == '~':
		return true
	}
	return false
}

// isAlpha is the kernel's isalpha: ASCII letters and the Latin-1 letters.
func isAlpha(c byte) bool {
	switch {
	case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		return true
	case c >= 0xC0 && c != 0xD7 && c != 0xF7:
		return true
	}
	return false
}

// equalFold compares b with the lower-case ASCII name, ignoring case as the
// kernel's strncasecmp does (ASCII and Latin-1 letters fold; names here are
// ASCII, so only ASCII folding can ever match).
func equalFold(b []byte, lower string) bool {
	for i := 0; i < len(lower); i++ {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
