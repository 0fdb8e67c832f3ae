package ftp_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/lbha/lbha/ipvs/userspace/ftp"
)

// FuzzControlLine feeds arbitrary lines, as they come from the network, to
// every parser and rewriter. None may panic; a rewriter must succeed exactly
// when its parser matches and the new address fits the form, and its output
// must parse back to the new address.
func FuzzControlLine(f *testing.F) {
	for _, line := range []string{
		"227 Entering Passive Mode (192,168,1,2,19,137).",
		"227 Mode 2024 (1,2,3,4,5,6,7) 10,0,0,1,4,1",
		"229 Entering Extended Passive Mode (|||6446|)",
		"229 (x) (!!!00021!",
		"PORT 192,168,1,2,19,137",
		"port   10,0,0,1,4,1 \t",
		"EPRT |1|132.235.1.2|6275|",
		"EPRT |2|1080::8:800:200C:417A|5282|",
		"EPRT .2.::1.21.",
		"EPRT :1:10.0.0.1:21:",
	} {
		f.Add(line, []byte{10, 0, 0, 1}, uint16(2121))
		f.Add(line, netip.MustParseAddr("2001:db8::1").AsSlice(), uint16(65535))
		f.Add(line, netip.MustParseAddr("::ffff:10.0.0.1").AsSlice(), uint16(0))
	}
	f.Fuzz(func(t *testing.T, line string, addr []byte, port uint16) {
		ip, ok := netip.AddrFromSlice(addr)
		if !ok {
			ip = netip.IPv4Unspecified()
		}
		to := netip.AddrPortFrom(ip, port)
		to4 := ip.Unmap().Is4() && port != 0
		want := netip.AddrPortFrom(ip.Unmap(), port)

		checkAddrForm(t, "PASV", line, to, want, to4, ftp.ParsePASV, ftp.RewritePASV)
		checkAddrForm(t, "PORT", line, to, want, to4, ftp.ParsePORT, ftp.RewritePORT)

		// EPRT takes either family but cannot hold its delimiter.
		_, parsed := ftp.ParseEPRT(line)
		fits := port != 0
		if parsed {
			delim := strings.TrimLeft(line[5:], " ")[0]
			fits = fits && !strings.Contains(ip.Unmap().String(), string(delim))
		}
		checkAddrForm(t, "EPRT", line, to, want, fits, ftp.ParseEPRT, ftp.RewriteEPRT)

		_, parsed = ftp.ParseEPSV(line)
		out, ok := ftp.RewriteEPSV(line, port)
		if ok != (parsed && port != 0) {
			t.Fatalf("EPSV: parsed %v, rewrite(%q, %d) ok %v", parsed, line, port, ok)
		}
		if ok {
			if got, ok := ftp.ParseEPSV(out); !ok || got != port {
				t.Fatalf("EPSV: rewrite(%q, %d) = %q parses back as %d, %v", line, port, out, got, ok)
			}
		}
	})
}

func checkAddrForm(t *testing.T, name, line string, to, want netip.AddrPort, fits bool,
	parse func(string) (netip.AddrPort, bool), rewrite func(string, netip.AddrPort) (string, bool)) {
	t.Helper()
	_, parsed := parse(line)
	out, ok := rewrite(line, to)
	if ok != (parsed && fits) {
		t.Fatalf("%s: parsed %v, fits %v, rewrite(%q, %v) ok %v", name, parsed, fits, line, to, ok)
	}
	if !ok {
		return
	}
	if got, ok := parse(out); !ok || got != want {
		t.Fatalf("%s: rewrite(%q, %v) = %q parses back as %v, %v; want %v", name, line, to, out, got, ok, want)
	}
}
