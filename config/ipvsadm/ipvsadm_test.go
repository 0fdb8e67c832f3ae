package ipvsadm

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/dest"
)

var cmpNetip = cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}, netip.Prefix{})

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t testing.TB, data []byte) []config.Service {
	t.Helper()
	svcs, err := ParseSave(data)
	if err != nil {
		t.Fatalf("ParseSave: %v", err)
	}
	return svcs
}

func save(t testing.TB, svcs []config.Service) string {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteSave(&buf, svcs); err != nil {
		t.Fatalf("WriteSave: %v", err)
	}
	return buf.String()
}

// TestCaptures converts the ipvsadm commands run for the real-kernel
// captures to the save form (golden written by hand from ipvsadm's printf
// formats), and checks that the save form round-trips byte for byte.
func TestCaptures(t *testing.T) {
	for _, name := range []string{"persist", "dr-mode", "sip-pe"} {
		t.Run(name, func(t *testing.T) {
			golden := string(readFile(t, name+".save"))
			got := save(t, mustParse(t, readFile(t, name+".cmds")))
			if diff := cmp.Diff(golden, got); diff != "" {
				t.Errorf("commands -> save (-want +got):\n%s", diff)
			}
			again := save(t, mustParse(t, []byte(golden)))
			if diff := cmp.Diff(golden, again); diff != "" {
				t.Errorf("save -> model -> save (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFeaturesRoundTrip(t *testing.T) {
	golden := string(readFile(t, "features.save"))
	got := save(t, mustParse(t, []byte(golden)))
	if diff := cmp.Diff(golden, got); diff != "" {
		t.Errorf("save -> model -> save (-want +got):\n%s", diff)
	}
}

func TestCaptureModel(t *testing.T) {
	got := mustParse(t, readFile(t, "sip-pe.cmds"))
	want := []config.Service{{
		Protocol:  config.UDP,
		Address:   netip.MustParseAddrPort("192.0.2.100:5060"),
		Scheduler: "rr",
		Persistence: &config.Persistence{
			Timeout: 60 * time.Second,
			Netmask: netip.MustParseAddr("0.0.0.0"),
			Engine:  "sip",
		},
		RealServers: []config.RealServer{
			{Address: netip.MustParseAddrPort("198.51.100.11:5060"), Weight: 1, Forward: dest.Masq},
			{Address: netip.MustParseAddrPort("198.51.100.12:5060"), Weight: 1, Forward: dest.Masq},
		},
	}}
	if diff := cmp.Diff(want, got, cmpNetip); diff != "" {
		t.Errorf("model (-want +got):\n%s", diff)
	}
	if err := config.ValidateServices(got); err != nil {
		t.Errorf("capture services do not validate: %v", err)
	}
}

func svc(proto config.Protocol, addr string) config.Service {
	return config.Service{Protocol: proto, Address: netip.MustParseAddrPort(addr), Scheduler: "wlc"}
}

func rsv(addr string, fwd dest.Method) config.RealServer {
	return config.RealServer{Address: netip.MustParseAddrPort(addr), Weight: 1, Forward: fwd}
}

func persist(secs int, mask string, prefix int) *config.Persistence {
	p := &config.Persistence{Timeout: time.Duration(secs) * time.Second, Prefix: prefix}
	if mask != "" {
		p.Netmask = netip.MustParseAddr(mask)
	}
	return p
}

func TestParseSave(t *testing.T) {
	with := func(s config.Service, f func(*config.Service)) config.Service { f(&s); return s }
	tests := []struct {
		name string
		in   string
		want []config.Service
	}{
		{
			name: "defaults: wlc, bare -p is 360 s, -r without port, -g",
			in:   "ipvsadm -A -t 192.0.2.1:80 -p\nipvsadm -a -t 192.0.2.1:80 -r 198.51.100.1\n",
			want: []config.Service{with(svc(config.TCP, "192.0.2.1:80"), func(s *config.Service) {
				s.Persistence = persist(360, "255.255.255.255", 0)
				s.RealServers = []config.RealServer{rsv("198.51.100.1:80", dest.Route)}
			})},
		},
		{
			name: "direct routing and tunnel force the service port, masq keeps its own",
			in: `-A -t 192.0.2.1:80
-a -t 192.0.2.1:80 -r 198.51.100.1:8080 -g
-a -t 192.0.2.1:80 -r 198.51.100.2:8080 -i
-a -t 192.0.2.1:80 -r 198.51.100.3:8080 -m`,
			want: []config.Service{with(svc(config.TCP, "192.0.2.1:80"), func(s *config.Service) {
				s.RealServers = []config.RealServer{
					rsv("198.51.100.1:80", dest.Route),
					rsv("198.51.100.2:80", dest.Tunnel),
					rsv("198.51.100.3:8080", dest.Masq),
				}
			})},
		},
		{
			name: "long options, = values, bundled short options, comments, blank lines",
			in: `# a comment

--add-service --udp-service=[2001:db8::1]:53 --scheduler rr --persistent=600 --netmask 64 --ops
-aw 5 --udp-service [2001:db8::1]:53 --real-server=[2001:db8::11]:5353 --masquerading -x 100 -y 10
`,
			want: []config.Service{with(svc(config.UDP, "[2001:db8::1]:53"), func(s *config.Service) {
				s.Scheduler = "rr"
				s.Persistence = persist(600, "", 64)
				s.OnePacket = true
				rs := rsv("[2001:db8::11]:5353", dest.Masq)
				rs.Weight, rs.UpperThreshold, rs.LowerThreshold = 5, 100, 10
				s.RealServers = []config.RealServer{rs}
			})},
		},
		{
			name: "fwmark -6, bare IPv6 real server, tunnels",
			in: `-A -f 7 -6 -s sh -b sh-fallback,,sh-port -p
-a -f 7 -6 -r 2001:db8::11 -i --tun-type gue --tun-port 6080 --tun-remcsum
-a -f 7 -6 -r [2001:db8::12]:0 -i --tun-type gre --tun-csum -w 0`,
			want: []config.Service{{
				FWMark: 7, Family: config.Inet6, Scheduler: "sh",
				SchedFlags:  config.ShFallback | config.ShPort,
				Persistence: persist(360, "", 128),
				RealServers: []config.RealServer{
					{Address: netip.MustParseAddrPort("[2001:db8::11]:0"), Weight: 1, Forward: dest.Tunnel,
						TunnelType: config.TunnelGUE, TunnelPort: 6080, TunnelChecksum: config.TunnelRemoteChecksum},
					{Address: netip.MustParseAddrPort("[2001:db8::12]:0"), Weight: 0, Forward: dest.Tunnel,
						TunnelType: config.TunnelGRE, TunnelChecksum: config.TunnelChecksumOn},
				},
			}},
		},
		{
			name: "a tunnel may cross families, as ipvsadm allows",
			in:   "-A -t [2001:db8::1]:80\n-a -t [2001:db8::1]:80 -r 198.51.100.1 -i",
			want: []config.Service{with(svc(config.TCP, "[2001:db8::1]:80"), func(s *config.Service) {
				s.RealServers = []config.RealServer{rsv("198.51.100.1:80", dest.Tunnel)}
			})},
		},
		{
			name: "-C, -E, -D, -e, -d",
			in: `-A -t 192.0.2.9:80
-C
-A -t 192.0.2.1:80 -s rr
-A --sctp-service 192.0.2.2:3868
-a -t 192.0.2.1:80 -r 198.51.100.1 -m
-a -t 192.0.2.1:80 -r 198.51.100.2 -m
-E -t 192.0.2.1:80 -s lc -p 10
-e -t 192.0.2.1:80 -r 198.51.100.1 -m -w 7
-d -t 192.0.2.1:80 -r 198.51.100.2
-D --sctp-service 192.0.2.2:3868`,
			want: []config.Service{with(svc(config.TCP, "192.0.2.1:80"), func(s *config.Service) {
				s.Scheduler = "lc"
				s.Persistence = persist(10, "255.255.255.255", 0)
				rs := rsv("198.51.100.1:80", dest.Masq)
				rs.Weight = 7
				s.RealServers = []config.RealServer{rs}
			})},
		},
		{
			name: "port-zero persistent service",
			in:   "-A -t 192.0.2.1 -p 30 -M 255.255.255.0\n-a -t 192.0.2.1:0 -r 198.51.100.1 -m",
			want: []config.Service{with(svc(config.TCP, "192.0.2.1:0"), func(s *config.Service) {
				s.Persistence = persist(30, "255.255.255.0", 0)
				s.RealServers = []config.RealServer{rsv("198.51.100.1:0", dest.Masq)}
			})},
		},
		{name: "empty", in: "\n\n# nothing\n", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSave([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseSave: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmpNetip); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseSaveErrors(t *testing.T) {
	const a = "-A -t 192.0.2.1:80\n"
	tests := []struct {
		name  string
		in    string
		line  int
		token string
		msg   string
	}{
		{"unknown option", "-A -t 192.0.2.1:80 --frobnicate", 1, "--frobnicate", "unknown"},
		{"unknown short option", "-A -t 192.0.2.1:80 -Q", 1, "-Q", "unknown"},
		{"missing value", "-A -t", 1, "-t", "missing value"},
		{"no command", "-t 192.0.2.1:80", 1, "-t", "no command"},
		{"two commands", "-A -a -t 192.0.2.1:80", 1, "-a", "multiple commands"},
		{"repeated option", "-A -t 192.0.2.1:80 -s rr -s wlc", 1, "-s", "multiple 'scheduler'"},
		{"two forwarding methods", a + "-a -t 192.0.2.1:80 -r 198.51.100.1 -g -m", 2, "-m", "multiple 'forwarding-method'"},
		{"positional", "-A -t 192.0.2.1:80 rr", 1, "rr", "unexpected argument"},
		{"option not for command", "-A -t 192.0.2.1:80 -w 3", 1, "-w", "Illegal 'weight'"},
		{"server without -r", a + "-a -t 192.0.2.1:80 -m", 2, "-a", "'real-server'"},
		{"weight too big", a + "-a -t 192.0.2.1:80 -r 198.51.100.1 -w 65536", 2, "65536", "weight"},
		{"weight not a number", a + "-a -t 192.0.2.1:80 -r 198.51.100.1 -w ten", 2, "ten", "weight"},
		{"host name", "-A -t www.example.com:80", 1, "www.example.com:80", "numeric"},
		{"port name", "-A -t 192.0.2.1:http", 1, "192.0.2.1:http", "port"},
		{"bad brackets", "-A -t [2001:db8::1]80", 1, "[2001:db8::1]80", "[ipv6]:port"},
		{"zero port not persistent", "-A -t 192.0.2.1:0", 1, "192.0.2.1:0", "Zero port"},
		{"timeout zero", "-A -t 192.0.2.1:80 -p 0", 1, "0", "timeout"},
		{"timeout over 31 days", "-A -t 192.0.2.1:80 -p 2678401", 1, "2678401", "timeout"},
		{"netmask without -p", "-A -t 192.0.2.1:80 -M 255.255.255.0", 1, "-M", "needs -p"},
		{"IPv6 netmask out of range", "-A -t [2001:db8::1]:80 -p -M 129", 1, "129", "ipv6 netmask"},
		{"IPv4 netmask not dotted", "-A -t 192.0.2.1:80 -p -M 24", 1, "24", "mask"},
		{"pe without -p", "-A -u 192.0.2.1:5060 --pe sip", 1, "--pe", "needs -p"},
		{"unknown pe", "-A -u 192.0.2.1:5060 -p --pe foo", 1, "foo", "persistence engine"},
		{"ops on tcp", "-A -t 192.0.2.1:80 -o", 1, "-o", "One-Packet"},
		{"sh flag on wlc", "-A -t 192.0.2.1:80 -b sh-port", 1, "sh-port", "only valid with scheduler sh"},
		{"flag-3 on sh", "-A -t 192.0.2.1:80 -s sh -b flag-3", 1, "flag-3", "no meaning"},
		{"unknown flag", "-A -t 192.0.2.1:80 -b fast", 1, "fast", "unknown scheduler flag"},
		{"no flags", "-A -t 192.0.2.1:80 -b ,", 1, ",", "no scheduler flag"},
		{"fwmark zero", "-A -f 0", 1, "0", "fwmark"},
		{"-6 before -f", "-A -6 -f 1", 1, "-6", "-6 used before -f"},
		{"-6 with -t", "-A -t 192.0.2.1:80 -6", 1, "-6", "-6 used before -f"},
		{"duplicate service", a + a, 2, "192.0.2.1:80", "already exists"},
		{"server of unknown service", "-a -t 192.0.2.1:80 -r 198.51.100.1", 1, "192.0.2.1:80", "not defined"},
		{"duplicate server", a + "-a -t 192.0.2.1:80 -r 198.51.100.1\n-a -t 192.0.2.1:80 -r 198.51.100.1:80", 3, "198.51.100.1:80", "already exists"},
		{"edit unknown service", "-E -t 192.0.2.1:80", 1, "192.0.2.1:80", "No such service"},
		{"delete unknown server", a + "-d -t 192.0.2.1:80 -r 198.51.100.1", 2, "198.51.100.1", "No such destination"},
		{"mixed family without tunnel", a + "-a -t 192.0.2.1:80 -r [2001:db8::1]:80 -m", 2, "[2001:db8::1]:80", "Different address family"},
		{"lower above upper", a + "-a -t 192.0.2.1:80 -r 198.51.100.1 -x 10 -y 20", 2, "20", "lower threshold"},
		{"tunnel option without -i", a + "-a -t 192.0.2.1:80 -r 198.51.100.1 -m --tun-type gue", 2, "--tun-type", "conflict"},
		{"gue without port", a + "-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-type gue", 2, "--tun-type", "'tun-port'"},
		{"ipip with port", a + "-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-port 6080", 2, "--tun-port", "Illegal 'tun-port'"},
		{"gre remcsum", a + "-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-type gre --tun-remcsum", 2, "--tun-remcsum", "Illegal"},
		{"two checksum modes", a + "-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-type gre --tun-csum --tun-nocsum", 2, "--tun-csum", "conflicts"},
		{"unknown tunnel type", a + "-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-type vxlan", 2, "vxlan", "tunnel type"},
		{"flag option with value", "-A -t 192.0.2.1:80 --ops=1", 1, "--ops=1", "no value"},
		{"save command", "-S -n", 1, "-S", "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSave([]byte(tt.in))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("ParseSave(%q) = %v, want a *ParseError", tt.in, err)
			}
			got := struct {
				Line  int
				Token string
			}{pe.Line, pe.Token}
			want := struct {
				Line  int
				Token string
			}{tt.line, tt.token}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("location (-want +got):\n%s\nerror: %v", diff, err)
			}
			if !strings.Contains(pe.Msg, tt.msg) {
				t.Errorf("message %q does not contain %q", pe.Msg, tt.msg)
			}
			if !strings.HasPrefix(err.Error(), "ipvsadm: line ") {
				t.Errorf("error %q lacks the package and line prefix", err)
			}
		})
	}
}

func TestWriteSaveErrors(t *testing.T) {
	tests := []struct {
		name string
		svc  config.Service
	}{
		{"no address or fwmark", config.Service{Scheduler: "wlc"}},
		{"no protocol", config.Service{Address: netip.MustParseAddrPort("192.0.2.1:80"), Scheduler: "wlc"}},
		{"no scheduler", config.Service{Protocol: config.TCP, Address: netip.MustParseAddrPort("192.0.2.1:80")}},
		{"flag-3 with sh", config.Service{FWMark: 1, Scheduler: "sh", SchedFlags: config.SchedFlag3}},
		{"bypass forwarding", config.Service{FWMark: 1, Scheduler: "rr", RealServers: []config.RealServer{
			{Address: netip.MustParseAddrPort("192.0.2.1:0"), Forward: dest.Bypass}}}},
		{"unknown tunnel type", config.Service{FWMark: 1, Scheduler: "rr", RealServers: []config.RealServer{
			{Address: netip.MustParseAddrPort("192.0.2.1:0"), Forward: dest.Tunnel, TunnelType: 9}}}},
		{"unknown checksum", config.Service{FWMark: 1, Scheduler: "rr", RealServers: []config.RealServer{
			{Address: netip.MustParseAddrPort("192.0.2.1:0"), Forward: dest.Tunnel, TunnelType: config.TunnelGRE, TunnelChecksum: 3}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := AppendSave(nil, []config.Service{tt.svc})
			if err == nil {
				t.Fatalf("AppendSave = %q, want an error", b)
			}
			if !strings.HasPrefix(err.Error(), "ipvsadm: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestWriteSaveLocalAndThresholds(t *testing.T) {
	s := svc(config.TCP, "192.0.2.1:80")
	s.RealServers = []config.RealServer{{
		Address: netip.MustParseAddrPort("127.0.0.1:8080"), Weight: 2, Forward: dest.Local,
		UpperThreshold: 100, LowerThreshold: 50,
	}}
	// Local is saved as -g but keeps its port: the kernel makes a local
	// address LOCALNODE whatever method ipvsadm sent, so the port is the
	// one given with that method. Thresholds are not saved, as in ipvsadm.
	want := "-A -t 192.0.2.1:80 -s wlc\n-a -t 192.0.2.1:80 -r 127.0.0.1:8080 -g -w 2\n"
	if diff := cmp.Diff(want, save(t, []config.Service{s})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestSortWrap pins ipvsadm's ordering quirk: the comparison subtracts
// unsigned words and keeps the wrapped sign, so it is not transitive, and
// the result depends on the merge sort's sequence of comparisons.
func TestSortWrap(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"10 after 192", []string{"10.0.0.1:80", "192.0.2.1:80"}, []string{"192.0.2.1:80", "10.0.0.1:80"}},
		{"cycle, ascending input", []string{"10.0.0.1:80", "100.0.0.1:80", "192.0.2.1:80"}, []string{"10.0.0.1:80", "100.0.0.1:80", "192.0.2.1:80"}},
		{"cycle, descending input", []string{"192.0.2.1:80", "100.0.0.1:80", "10.0.0.1:80"}, []string{"192.0.2.1:80", "10.0.0.1:80", "100.0.0.1:80"}},
		{"ports", []string{"192.0.2.1:443", "192.0.2.1:80", "192.0.2.1:8080"}, []string{"192.0.2.1:80", "192.0.2.1:443", "192.0.2.1:8080"}},
		{"IPv6 by words", []string{"[2001:db8::2]:80", "[2001:db8::1]:80", "[fe80::1]:80"}, []string{"[fe80::1]:80", "[2001:db8::1]:80", "[2001:db8::2]:80"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var svcs []config.Service
			for _, a := range tt.in {
				svcs = append(svcs, svc(config.TCP, a))
			}
			got := mustParse(t, []byte(save(t, svcs)))
			var addrs []string
			for _, s := range got {
				addrs = append(addrs, s.Address.String())
			}
			if diff := cmp.Diff(tt.want, addrs); diff != "" {
				t.Errorf("order (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("fwmark above 2^31 sorts before address services", func(t *testing.T) {
		svcs := []config.Service{svc(config.TCP, "192.0.2.1:80"), {FWMark: 1<<32 - 1, Scheduler: "rr"}}
		want := "-A -f 4294967295 -s rr\n-A -t 192.0.2.1:80 -s wlc\n"
		if diff := cmp.Diff(want, save(t, svcs)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

func TestMsortStable(t *testing.T) {
	type kv struct{ k, v int }
	in := []kv{{3, 0}, {1, 1}, {3, 2}, {2, 3}, {1, 4}, {3, 5}, {0, 6}}
	msort(in, func(a, b kv) int { return a.k - b.k })
	want := []kv{{0, 6}, {1, 1}, {1, 4}, {2, 3}, {3, 0}, {3, 2}, {3, 5}}
	if diff := cmp.Diff(want, in, cmp.AllowUnexported(kv{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if !slices.IsSortedFunc(in, func(a, b kv) int { return a.k - b.k }) {
		t.Error("not sorted")
	}
}

// benchTable is 100 services of 10 real servers each, as saved text.
func benchTable(b *testing.B) []byte {
	var buf bytes.Buffer
	for i := range 100 {
		svc := fmt.Sprintf("-t 192.0.%d.%d:80", i/250, i%250+1)
		fmt.Fprintf(&buf, "-A %s -s wlc -p 300 -M 255.255.255.0\n", svc)
		for j := range 10 {
			fmt.Fprintf(&buf, "-a %s -r 198.51.100.%d:8080 -m -w %d\n", svc, j+1, j)
		}
	}
	return buf.Bytes()
}

func BenchmarkParseSave(b *testing.B) {
	data := benchTable(b)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ParseSave(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendSave(b *testing.B) {
	svcs := mustParse(b, benchTable(b))
	var buf []byte
	for b.Loop() {
		var err error
		if buf, err = AppendSave(buf[:0], svcs); err != nil {
			b.Fatal(err)
		}
	}
}
