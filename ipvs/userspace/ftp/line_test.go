package ftp_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/lbha/lbha/ipvs/userspace/ftp"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// addrCase is a parser case: want is the zero AddrPort for "no match".
type addrCase struct {
	line string
	want netip.AddrPort
}

func runAddrCases(t *testing.T, parse func(string) (netip.AddrPort, bool), cases []addrCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.line, func(t *testing.T) {
			got, ok := parse(tc.line)
			if wantOK := tc.want.IsValid(); ok != wantOK || got != tc.want {
				t.Fatalf("parse(%q) = %v, %v; want %v, %v", tc.line, got, ok, tc.want, wantOK)
			}
		})
	}
}

func TestParsePASV(t *testing.T) {
	runAddrCases(t, ftp.ParsePASV, []addrCase{
		{"227 Entering Passive Mode (192,168,1,2,19,137)", ap("192.168.1.2:5001")},
		{"227 Entering Passive Mode (192,168,1,2,19,137).", ap("192.168.1.2:5001")},
		{"227 Entering Passive Mode 10,0,0,1,4,1", ap("10.0.0.1:1025")},
		{"227 =10,0,0,1,4,1", ap("10.0.0.1:1025")},
		{"227 (10,0,0,1,4,1", ap("10.0.0.1:1025")},
		{"227 Entering Passive Mode (010,000,000,001,004,001)", ap("10.0.0.1:1025")},
		{"227 Mode 2024 (10,0,0,1,4,1)", ap("10.0.0.1:1025")},
		{"227 v1,2 (10,0,0,1,4,1)", ap("10.0.0.1:1025")},
		{"227 (1,2,3,4,5,6,7) (10,0,0,1,4,1)", ap("10.0.0.1:1025")},
		{"227 (255,255,255,255,255,255)", ap("255.255.255.255:65535")},
		{"227 (0,0,0,0,0,1)", ap("0.0.0.0:1")},
		{"227 Entering Passive Mode (10,0,0,1,4,1) (10,0,0,2,4,1)", ap("10.0.0.1:1025")},

		{"", netip.AddrPort{}},
		{"227", netip.AddrPort{}},
		{"227 ", netip.AddrPort{}},
		{"227 Entering Passive Mode", netip.AddrPort{}},
		{"226 Entering Passive Mode (10,0,0,1,4,1)", netip.AddrPort{}},
		{"227-Entering Passive Mode (10,0,0,1,4,1)", netip.AddrPort{}},
		{"227Entering Passive Mode (10,0,0,1,4,1)", netip.AddrPort{}},
		{" 227 Entering Passive Mode (10,0,0,1,4,1)", netip.AddrPort{}},
		{"227 (256,0,0,1,4,1)", netip.AddrPort{}},
		{"227 (10,0,0,1,4,256)", netip.AddrPort{}},
		{"227 (10,0,0,1,0,0)", netip.AddrPort{}},
		{"227 (10,0,0,1,4)", netip.AddrPort{}},
		{"227 (10,0,0,1,4,1,1)", netip.AddrPort{}},
		{"227 (10, 0,0,1,4,1)", netip.AddrPort{}},
		{"227 (10,0,0,1,4,)", netip.AddrPort{}},
		{"227 (99999999999999999999999,0,0,1,4,1)", netip.AddrPort{}},
		// Only the first six-number run counts, as documented.
		{"227 (256,0,0,1,4,1) (10,0,0,1,4,1)", netip.AddrPort{}},
	})
}

func TestParsePORT(t *testing.T) {
	runAddrCases(t, ftp.ParsePORT, []addrCase{
		{"PORT 192,168,1,2,19,137", ap("192.168.1.2:5001")},
		{"port 10,0,0,1,4,1", ap("10.0.0.1:1025")},
		{"Port   10,0,0,1,4,1  ", ap("10.0.0.1:1025")},
		{"PORT 10,0,0,1,4,1\t", ap("10.0.0.1:1025")},
		{"PORT 010,0,0,1,4,1", ap("10.0.0.1:1025")},

		{"", netip.AddrPort{}},
		{"PORT", netip.AddrPort{}},
		{"PORT ", netip.AddrPort{}},
		{"PORT10,0,0,1,4,1", netip.AddrPort{}},
		{"PORT\t10,0,0,1,4,1", netip.AddrPort{}},
		{"PORTS 10,0,0,1,4,1", netip.AddrPort{}},
		{" PORT 10,0,0,1,4,1", netip.AddrPort{}},
		{"PORT 10,0,0,1,4", netip.AddrPort{}},
		{"PORT 10,0,0,1,4,1,1", netip.AddrPort{}},
		{"PORT 10,0,0,1,4,1 x", netip.AddrPort{}},
		{"PORT x10,0,0,1,4,1", netip.AddrPort{}},
		{"PORT (10,0,0,1,4,1)", netip.AddrPort{}},
		{"PORT 300,0,0,1,4,1", netip.AddrPort{}},
		{"PORT 10,0,0,1,0,0", netip.AddrPort{}},
		{"EPRT 10,0,0,1,4,1", netip.AddrPort{}},
	})
}

func TestParseEPRT(t *testing.T) {
	runAddrCases(t, ftp.ParseEPRT, []addrCase{
		{"EPRT |1|132.235.1.2|6275|", ap("132.235.1.2:6275")},
		{"EPRT |2|1080::8:800:200C:417A|5282|", ap("[1080::8:800:200c:417a]:5282")},
		{"eprt !1!10.0.0.1!21!", ap("10.0.0.1:21")},
		{"EPRT  |1|10.0.0.1|21|  ", ap("10.0.0.1:21")},
		{"EPRT |2|::ffff:10.0.0.1|21|", ap("[::ffff:10.0.0.1]:21")},
		{"EPRT |2|::1|00021|", ap("[::1]:21")},
		{"EPRT .2.::1.21.", ap("[::1]:21")},

		{"", netip.AddrPort{}},
		{"EPRT", netip.AddrPort{}},
		{"EPRT ", netip.AddrPort{}},
		{"EPRT |", netip.AddrPort{}},
		{"EPRT |1|10.0.0.1|21", netip.AddrPort{}},
		{"EPRT |1|10.0.0.1|21|x", netip.AddrPort{}},
		{"EPRT |1|10.0.0.1|21||", netip.AddrPort{}},
		{"EPRT |3|10.0.0.1|21|", netip.AddrPort{}},
		{"EPRT ||10.0.0.1|21|", netip.AddrPort{}},
		{"EPRT |1|::1|21|", netip.AddrPort{}},
		{"EPRT |2|10.0.0.1|21|", netip.AddrPort{}},
		{"EPRT |2|fe80::1%eth0|21|", netip.AddrPort{}},
		{"EPRT |1|010.0.0.1|21|", netip.AddrPort{}},
		{"EPRT |1||21|", netip.AddrPort{}},
		{"EPRT |1|10.0.0.1|0|", netip.AddrPort{}},
		{"EPRT |1|10.0.0.1|65536|", netip.AddrPort{}},
		{"EPRT |1|10.0.0.1|-21|", netip.AddrPort{}},
		{"EPRT |1|10.0.0.1||", netip.AddrPort{}},
		{"EPRT 1101.0.0.11211", netip.AddrPort{}},
		{"EPRT  1 10.0.0.1 21 ", netip.AddrPort{}},
		{"EPRT :2:::1:21:", netip.AddrPort{}},
		{"EPRTS |1|10.0.0.1|21|", netip.AddrPort{}},
		{"PORT |1|10.0.0.1|21|", netip.AddrPort{}},
	})
}

func TestParseEPSV(t *testing.T) {
	for _, tc := range []struct {
		line string
		want uint16 // 0: no match
	}{
		{"229 Entering Extended Passive Mode (|||6446|)", 6446},
		{"229 Entering Extended Passive Mode (!!!6446!)", 6446},
		{"229 (|||65535|)", 65535},
		{"229 ok (|||00021|)", 21},
		{"229 (|||1|", 1},
		{"229 EPSV (x) (|||6446|)", 6446},

		{"", 0},
		{"229", 0},
		{"229 (|||6446|)"[:8], 0},
		{"228 (|||6446|)", 0},
		{"229(|||6446|)", 0},
		{"229-(|||6446|)", 0},
		{"229 |||6446|", 0},
		{"229 (|||0|)", 0},
		{"229 (|||65536|)", 0},
		{"229 (|||99999999999999999999|)", 0},
		{"229 (||6446|)", 0},
		{"229 (|||6446)", 0},
		{"229 (|||6446", 0},
		{"229 (||||)", 0},
		{"229 (|||64a6|)", 0},
		{"229 (11164461)", 0},
		{"229 (   6446 )", 0},
		{"229 (|1|10.0.0.1|6446|)", 0},
		{"229 (|\x7f|6446|)", 0},
	} {
		t.Run(tc.line, func(t *testing.T) {
			got, ok := ftp.ParseEPSV(tc.line)
			if wantOK := tc.want != 0; ok != wantOK || got != tc.want {
				t.Fatalf("ParseEPSV(%q) = %d, %v; want %d, %v", tc.line, got, ok, tc.want, wantOK)
			}
		})
	}
}

// rewriteCase is a rewriter case: want "" means the rewrite must fail.
type rewriteCase struct {
	line string
	to   netip.AddrPort
	want string
}

func runRewriteCases(t *testing.T, rewrite func(string, netip.AddrPort) (string, bool), cases []rewriteCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.line+" to "+tc.to.String(), func(t *testing.T) {
			got, ok := rewrite(tc.line, tc.to)
			if wantOK := tc.want != ""; ok != wantOK || got != tc.want {
				t.Fatalf("rewrite(%q, %v) = %q, %v; want %q, %v", tc.line, tc.to, got, ok, tc.want, wantOK)
			}
		})
	}
}

func TestRewritePASV(t *testing.T) {
	runRewriteCases(t, ftp.RewritePASV, []rewriteCase{
		{"227 Entering Passive Mode (192,168,1,2,19,137).", ap("10.1.2.3:65535"), "227 Entering Passive Mode (10,1,2,3,255,255)."},
		{"227 Entering Passive Mode 010,0,0,1,4,1 ok", ap("203.0.113.9:1025"), "227 Entering Passive Mode 203,0,113,9,4,1 ok"},
		{"227 Mode 2024 (10,0,0,1,4,1)", ap("[::ffff:10.1.2.3]:21"), "227 Mode 2024 (10,1,2,3,0,21)"},
		{"227 (10,0,0,1,4,1)", ap("[2001:db8::1]:21"), ""},
		{"227 (10,0,0,1,4,1)", netip.AddrPortFrom(netip.MustParseAddr("10.1.2.3"), 0), ""},
		{"227 (10,0,0,1,4,1)", netip.AddrPort{}, ""},
		{"227 (256,0,0,1,4,1)", ap("10.1.2.3:21"), ""},
		{"PORT 10,0,0,1,4,1", ap("10.1.2.3:21"), ""},
	})
}

func TestRewritePORT(t *testing.T) {
	runRewriteCases(t, ftp.RewritePORT, []rewriteCase{
		{"PORT 192,168,1,2,19,137", ap("10.1.2.3:2020"), "PORT 10,1,2,3,7,228"},
		{"port   10,0,0,1,4,1 \t", ap("10.1.2.3:2020"), "port   10,1,2,3,7,228 \t"},
		{"PORT 10,0,0,1,4,1", ap("[::ffff:10.1.2.3]:2020"), "PORT 10,1,2,3,7,228"},
		{"PORT 10,0,0,1,4,1", ap("[::1]:2020"), ""},
		{"PORT 10,0,0,1,4,1", netip.AddrPortFrom(netip.MustParseAddr("10.1.2.3"), 0), ""},
		{"PORT 10,0,0,1,0,0", ap("10.1.2.3:2020"), ""},
		{"227 (10,0,0,1,4,1)", ap("10.1.2.3:2020"), ""},
	})
}

func TestRewriteEPRT(t *testing.T) {
	runRewriteCases(t, ftp.RewriteEPRT, []rewriteCase{
		{"EPRT |1|10.0.0.1|21|", ap("[2001:db8::1]:40000"), "EPRT |2|2001:db8::1|40000|"},
		{"eprt  !2!::1!21!  ", ap("10.0.0.5:1025"), "eprt  !1!10.0.0.5!1025!  "},
		{"EPRT |1|10.0.0.1|21|", ap("[::ffff:10.0.0.5]:1025"), "EPRT |1|10.0.0.5|1025|"},
		{"EPRT |2|::1|21|", ap("[fe80::1%eth0]:1025"), "EPRT |2|fe80::1|1025|"},
		{"EPRT .2.::1.21.", ap("[::2]:1025"), "EPRT .2.::2.1025."},
		{"EPRT .2.::1.21.", ap("10.0.0.1:1025"), ""},
		{"EPRT :1:10.0.0.1:21:", ap("[::2]:1025"), ""},
		{"EPRT :1:10.0.0.1:21:", ap("10.0.0.2:1025"), "EPRT :1:10.0.0.2:1025:"},
		{"EPRT |2|::1|21|", netip.AddrPortFrom(netip.MustParseAddr("::2"), 0), ""},
		{"EPRT |2|::1|21|", netip.AddrPort{}, ""},
		{"EPRT |1|10.0.0.1|0|", ap("10.0.0.2:1025"), ""},
		{"PORT 10,0,0,1,4,1", ap("10.0.0.2:1025"), ""},
	})
}

func TestRewriteEPSV(t *testing.T) {
	for _, tc := range []struct {
		line string
		port uint16
		want string
	}{
		{"229 Entering Extended Passive Mode (|||6446|)", 40000, "229 Entering Extended Passive Mode (|||40000|)"},
		{"229 ok (x) (!!!00021!) bye", 2121, "229 ok (x) (!!!2121!) bye"},
		{"229 (|||6446|)", 0, ""},
		{"229 (|||0|)", 2121, ""},
		{"227 (10,0,0,1,4,1)", 2121, ""},
	} {
		t.Run(tc.line, func(t *testing.T) {
			got, ok := ftp.RewriteEPSV(tc.line, tc.port)
			if wantOK := tc.want != ""; ok != wantOK || got != tc.want {
				t.Fatalf("RewriteEPSV(%q, %d) = %q, %v; want %q, %v", tc.line, tc.port, got, ok, tc.want, wantOK)
			}
		})
	}
}

func TestParseLongLine(t *testing.T) {
	// The parsers are linear and do not mind length; Relay caps lines.
	line := "227 " + strings.Repeat("1,", 100000) + " (10,0,0,1,4,1)"
	if got, ok := ftp.ParsePASV(line); !ok || got != ap("10.0.0.1:1025") {
		t.Fatalf("ParsePASV(long) = %v, %v", got, ok)
	}
}
