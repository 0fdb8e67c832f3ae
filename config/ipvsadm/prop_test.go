package ipvsadm

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/dest"
)

// genAddr4 draws from two documentation ranges whose first octets are less
// than 128 apart, so ipvsadm's wrapping comparison is a total order there.
func genAddr4(t *rapid.T, label string) netip.Addr {
	first := rapid.SampledFrom([]byte{192, 198}).Draw(t, label+"-net")
	return netip.AddrFrom4([4]byte{first, 51, 100, rapid.Byte().Draw(t, label+"-host")})
}

func genAddr6(t *rapid.T, label string) netip.Addr {
	var b [16]byte
	b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
	b[14] = rapid.Byte().Draw(t, label+"-hi")
	b[15] = rapid.Byte().Draw(t, label+"-lo")
	return netip.AddrFrom16(b)
}

// genService draws a service in the form ipvsadm -S can express, with the
// real-server ports ipvsadm would have stored.
func genService(t *rapid.T, i int) config.Service {
	l := fmt.Sprintf("svc%d", i)
	var s config.Service
	v6 := rapid.Bool().Draw(t, l+"-v6")
	if rapid.IntRange(0, 3).Draw(t, l+"-kind") == 0 {
		s.FWMark = rapid.Uint32Range(1, 1<<31-1).Draw(t, l+"-mark")
		s.Family = config.Inet
		if v6 {
			s.Family = config.Inet6
		}
	} else {
		s.Protocol = rapid.SampledFrom([]config.Protocol{config.TCP, config.UDP, config.SCTP}).Draw(t, l+"-proto")
		a := genAddr4(t, l)
		if v6 {
			a = genAddr6(t, l)
		}
		s.Address = netip.AddrPortFrom(a, rapid.Uint16().Draw(t, l+"-port"))
	}
	s.Scheduler = rapid.SampledFrom(config.Schedulers).Draw(t, l+"-sched")
	if s.FWMark != 0 || s.Address.Port() == 0 || rapid.Bool().Draw(t, l+"-persist") {
		p := &config.Persistence{Timeout: time.Duration(rapid.IntRange(1, 2678400).Draw(t, l+"-timeout")) * time.Second}
		if s.AddrFamily() == config.Inet {
			ones := rapid.IntRange(0, 32).Draw(t, l+"-mask")
			m := ^uint32(0) << (32 - ones)
			if ones == 0 {
				m = 0
			}
			p.Netmask = netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)})
		} else {
			p.Prefix = rapid.IntRange(1, 128).Draw(t, l+"-prefix")
		}
		if (s.FWMark != 0 || s.Protocol == config.UDP) && rapid.Bool().Draw(t, l+"-pe") {
			p.Engine = "sip"
		}
		s.Persistence = p
	}
	s.OnePacket = (s.FWMark != 0 || s.Protocol == config.UDP) && rapid.Bool().Draw(t, l+"-ops")
	switch s.Scheduler {
	case "sh", "mh":
		s.SchedFlags = config.SchedFlags(rapid.IntRange(0, 3).Draw(t, l+"-flags")) * config.SchedFlag1
	default:
		s.SchedFlags = config.SchedFlags(rapid.IntRange(0, 7).Draw(t, l+"-flags")) * config.SchedFlag1
	}
	n := rapid.IntRange(0, 5).Draw(t, l+"-n")
	seen := map[netip.AddrPort]bool{}
	for j := 0; j < n; j++ {
		rl := fmt.Sprintf("%s-rs%d", l, j)
		rs := config.RealServer{
			Weight:  rapid.IntRange(0, 65535).Draw(t, rl+"-w"),
			Forward: rapid.SampledFrom([]dest.Method{dest.Masq, dest.Route, dest.Tunnel}).Draw(t, rl+"-fwd"),
		}
		a := genAddr4(t, rl)
		if v6 {
			a = genAddr6(t, rl)
		}
		port := rapid.Uint16().Draw(t, rl+"-port")
		if s.FWMark == 0 && rs.Forward != dest.Masq {
			port = s.Address.Port()
		}
		rs.Address = netip.AddrPortFrom(a, port)
		if seen[rs.Address] {
			continue
		}
		seen[rs.Address] = true
		if rs.Forward == dest.Tunnel {
			rs.TunnelType = rapid.SampledFrom([]config.TunnelType{config.TunnelIPIP, config.TunnelGUE, config.TunnelGRE}).Draw(t, rl+"-tun")
			switch rs.TunnelType {
			case config.TunnelGUE:
				rs.TunnelPort = rapid.Uint16Range(1, 65535).Draw(t, rl+"-tport")
				rs.TunnelChecksum = config.TunnelChecksum(rapid.IntRange(0, 2).Draw(t, rl+"-csum"))
			case config.TunnelGRE:
				rs.TunnelChecksum = config.TunnelChecksum(rapid.IntRange(0, 1).Draw(t, rl+"-csum"))
			}
		}
		s.RealServers = append(s.RealServers, rs)
	}
	return s
}

func genServices(t *rapid.T) []config.Service {
	n := rapid.IntRange(0, 8).Draw(t, "n")
	var svcs []config.Service
	keys := map[string]bool{}
	for i := 0; i < n; i++ {
		s := genService(t, i)
		if keys[s.Key()] {
			continue
		}
		keys[s.Key()] = true
		svcs = append(svcs, s)
	}
	return svcs
}

// TestPropertyRoundTrip: any table ipvsadm can express survives save ->
// parse as the same model, sorted as ipvsadm sorts, and saves to the same
// text again.
func TestPropertyRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		svcs := genServices(t)
		text, err := AppendSave(nil, svcs)
		if err != nil {
			t.Fatalf("AppendSave: %v", err)
		}
		got, err := ParseSave(text)
		if err != nil {
			t.Fatalf("ParseSave(%q): %v", text, err)
		}
		want := slices.Clone(svcs)
		msort(want, func(a, b config.Service) int { return cmpServices(&a, &b) })
		for i := range want {
			want[i].RealServers = slices.Clone(want[i].RealServers)
			msort(want[i].RealServers, func(a, b config.RealServer) int { return cmpDests(&a, &b) })
			if len(want[i].RealServers) == 0 {
				want[i].RealServers = nil
			}
		}
		if len(want) == 0 {
			want = nil
		}
		if diff := cmp.Diff(want, got, cmpNetip); diff != "" {
			t.Fatalf("model (-want +got):\n%s\ntext:\n%s", diff, text)
		}
		again, err := AppendSave(nil, got)
		if err != nil {
			t.Fatalf("AppendSave again: %v", err)
		}
		if !bytes.Equal(text, again) {
			t.Fatalf("text changed:\n%s\nthen:\n%s", text, again)
		}
		if err := config.ValidateServices(got); err != nil {
			t.Fatalf("generated services do not validate: %v\n%s", err, text)
		}
	})
}

// wraps reports whether some 32-bit subtraction ipvsadm's comparison makes
// between these services or their real servers overflows an int, which
// makes the sort depend on the input order. It is conservative.
func wraps(svcs []config.Service) bool {
	over := func(a, b uint32) bool {
		d := int64(a) - int64(b)
		return d > 1<<31-1 || d < -1<<31
	}
	addrs := func(a, b netip.Addr) bool {
		wa, wb := words(a), words(b)
		for i := range wa {
			if over(wa[i], wb[i]) {
				return true
			}
		}
		return false
	}
	for i := range svcs {
		for j := range svcs {
			a, b := &svcs[i], &svcs[j]
			if over(a.FWMark, b.FWMark) || (a.FWMark == 0 && b.FWMark == 0 && addrs(a.Address.Addr(), b.Address.Addr())) {
				return true
			}
		}
		rss := svcs[i].RealServers
		for x := range rss {
			for y := range rss {
				if addrs(rss[x].Address.Addr(), rss[y].Address.Addr()) {
					return true
				}
			}
		}
	}
	return false
}

// FuzzParseSave: no input makes the reader panic, and whatever it accepts
// saves to text that reads back and saves identically (as lines, when
// ipvsadm's non-transitive comparison makes the order input-dependent).
func FuzzParseSave(f *testing.F) {
	files, _ := filepath.Glob("testdata/*")
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("-A -t 10.0.0.1:80\n-A -t 192.0.2.1:80\n-A -t 100.0.0.1:80\n"))
	f.Add([]byte("-A -u [::ffff:192.0.2.1]:53 -p -M 96 --pe sip -o -b flag-2\n-a -u [::ffff:192.0.2.1]:53 -r 198.51.100.1 -i"))
	f.Fuzz(func(t *testing.T, data []byte) {
		svcs, err := ParseSave(data)
		if err != nil {
			if _, ok := err.(*ParseError); !ok {
				t.Fatalf("error %v is a %T, not a *ParseError", err, err)
			}
			return
		}
		text, err := AppendSave(nil, svcs)
		if err != nil {
			t.Fatalf("AppendSave of accepted input: %v", err)
		}
		svcs2, err := ParseSave(text)
		if err != nil {
			t.Fatalf("ParseSave(AppendSave(...)) = %v\ntext:\n%s", err, text)
		}
		again, err := AppendSave(nil, svcs2)
		if err != nil {
			t.Fatalf("AppendSave again: %v", err)
		}
		if bytes.Equal(text, again) {
			return
		}
		if !wraps(svcs2) {
			t.Fatalf("save is not stable:\n%s\nthen:\n%s", text, again)
		}
		l1 := strings.Split(string(text), "\n")
		l2 := strings.Split(string(again), "\n")
		slices.Sort(l1)
		slices.Sort(l2)
		if diff := cmp.Diff(l1, l2); diff != "" {
			t.Fatalf("save lines differ (-first +second):\n%s", diff)
		}
	})
}
