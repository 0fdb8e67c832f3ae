package sip

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestCallID(t *testing.T) {
	long := strings.Repeat("a", 251) + "@b.c" // 255 bytes
	tests := []struct {
		name    string
		payload string
		want    string
		err     error
	}{
		// The three Call-IDs of the real-kernel capture sip-pe.
		{"capture long form", "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060\r\nCall-ID: a84b4c76e66710@pc33.example.com\r\nCSeq: 1 INVITE\r\n\r\n", "a84b4c76e66710@pc33.example.com", nil},
		{"capture uuid", "INVITE sip:carol@example.com SIP/2.0\r\nCall-ID: f81d4fae-7dec-11d0-a765-00a0c91e6bf6@example.org\r\n\r\n", "f81d4fae-7dec-11d0-a765-00a0c91e6bf6@example.org", nil},
		{"capture compact form", "OPTIONS sip:x@y SIP/2.0\r\ni: 3848276298220188511@192.0.2.10\r\n\r\n", "3848276298220188511@192.0.2.10", nil},
		{"capture no call-id", "OPTIONS sip:x@y SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n", "", ErrNoCallID},

		{"case insensitive", "X\r\ncALL-iD: abc\r\n", "abc", nil},
		{"compact upper case", "X\r\nI:abc\n", "abc", nil},
		{"LF only line ends", "X\nCall-ID: abc\n", "abc", nil},
		{"CR only line ends", "X\rCall-ID: abc\r", "abc", nil},
		{"blanks around colon", "X\r\nCall-ID   :   abc\r\n", "abc", nil},
		{"no blank after colon", "X\r\nCall-ID:abc\r\n", "abc", nil},
		{"value stops at a non-word byte", "X\r\nCall-ID: abc;tag=1\r\n", "abc", ErrCallIDNotEnded},
		{"value with word punctuation", "X\r\nCall-ID: a!\"%()*+,-./:<>?[\\]_`{}~z\r\n", "a!\"%()*+,-./:<>?[\\]_`{}~z", nil},
		{"request line never matches", "Call-ID: abc\r\n\r\n", "", ErrNoCallID},
		{"continuation line not a header", "X\r\n Call-ID: abc\r\n", "", ErrNoCallID},
		{"compact name followed by a letter", "X\r\nif: abc\r\n", "", ErrNoCallID},
		{"compact name followed by digit", "X\r\ni1: abc\r\n", "", ErrNoCallID}, // matches "i", then wants ':' and finds '1'
		{"exactly 255 bytes", "X\r\nCall-ID: " + long + "\r\n", long, nil},
		{"256 bytes", "X\r\nCall-ID: x" + long + "\r\n", "", ErrCallIDTooLong},
		{"at end of payload", "X\r\nCall-ID: abc", "", ErrCallIDNotEnded},
		{"followed by blank", "X\r\nCall-ID: abc \r\n", "", ErrCallIDNotEnded},
		{"at with no domain is empty, search resumes", "X\r\nCall-ID: abc@\r\nCall-ID: def\r\n", "def", nil},
		{"empty value, next header used", "X\r\nCall-ID: ;\r\nCall-ID: ok1\r\n", "ok1", nil},
		{"empty payload", "", "", ErrNoCallID},
		{"colon missing", "X\r\nCall-ID abc\r\n", "", ErrNoCallID},
		// The kernel's whitespace skipper steps past the first non-blank
		// byte of a continuation line; the same bytes must give the same
		// key as on a kernel director.
		{"continuation drops first byte", "X\r\nCall-ID:\r\n  abc@d\r\n", "bc@d", nil},
		{"latin-1 letters are word bytes", "X\r\nCall-ID: \xe9t\xe9\r\n", "\xe9t\xe9", nil},
		{"latin-1 letter blocks compact match", "X\r\ni\xe9: abc\r\n", "", ErrNoCallID},
		{"multiplication sign is not a letter", "X\r\ni\xd7: abc\r\n", "", ErrNoCallID}, // 'i' matches, then no ':'
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CallID([]byte(tt.payload))
			if !errors.Is(err, tt.err) {
				t.Fatalf("CallID error = %v, want %v", err, tt.err)
			}
			if err == nil && string(got) != tt.want {
				t.Fatalf("CallID = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCallIDAliasesPayload(t *testing.T) {
	p := []byte("X\r\nCall-ID: abc\r\n")
	got, err := CallID(p)
	if err != nil {
		t.Fatal(err)
	}
	if &got[0] != &p[12] {
		t.Fatal("CallID copied the value; it should alias the payload")
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = CallID(p) }); n != 0 {
		t.Fatalf("CallID allocates %v times per call, want 0", n)
	}
}

func FuzzCallID(f *testing.F) {
	for _, s := range []string{
		"INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: a84b4c76e66710@pc33.example.com\r\n\r\n",
		"OPTIONS sip:x@y SIP/2.0\r\ni: 3848276298220188511@192.0.2.10\r\n\r\n",
		"X\r\nCall-ID:\r\n  abc@d\r\n",
		"X\r\nCall-ID: abc@\r\nCall-ID: def\r\n",
		"\r\ni:\r\n \r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, err := CallID(payload)
		if err != nil {
			return
		}
		if len(got) == 0 || len(got) > MaxCallIDLen {
			t.Fatalf("Call-ID length %d out of 1..%d", len(got), MaxCallIDLen)
		}
		i := bytes.Index(payload, got)
		if i < 0 {
			t.Fatal("Call-ID is not part of the payload")
		}
		at := 0
		for _, c := range got {
			if c == '@' {
				at++
				continue
			}
			if !isWordChar(c) {
				t.Fatalf("Call-ID %q holds non-word byte %q", got, c)
			}
		}
		if at > 1 {
			t.Fatalf("Call-ID %q has %d '@'", got, at)
		}
	})
}

func BenchmarkCallID(b *testing.B) {
	p := []byte("INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060\r\nFrom: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: a84b4c76e66710@pc33.example.com\r\nCSeq: 1 INVITE\r\n\r\n")
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, err := CallID(p); err != nil {
			b.Fatal(err)
		}
	}
}
