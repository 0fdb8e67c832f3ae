package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/lbha/lbha/dest"
)

var cmpNetip = cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}, netip.Prefix{})

func problemsOf(t *testing.T, err error) []Problem {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *ValidationError", err, err)
	}
	return ve.Problems
}

func TestExamples(t *testing.T) {
	tests := []struct {
		file                string
		role                Role
		services, rss, vips int
	}{
		{"lbha.yaml", RoleDirector, 4, 9, 3},
		{"witness.yaml", RoleWitness, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, err := Load(filepath.Join("..", "examples", tt.file))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			rss := 0
			for _, s := range c.Services {
				rss += len(s.RealServers)
			}
			got := []any{c.Node.Role, len(c.Services), rss, len(c.VIPs), len(c.Cluster.Peers)}
			want := []any{tt.role, tt.services, tt.rss, tt.vips, 3}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("role, services, real servers, VIPs, peers (-want +got):\n%s", diff)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			// The example must survive Marshal -> Parse unchanged.
			b, err := Marshal(c)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			c2, err := Parse("marshalled", b)
			if err != nil {
				t.Fatalf("Parse(Marshal): %v\n%s", err, b)
			}
			if diff := cmp.Diff(c, c2, cmpNetip); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	const in = `
node: {name: d1, role: director}
services:
  - protocol: tcp
    address: 192.0.2.1:80
    persistence: {}
    real_servers:
      - address: 198.51.100.1
      - {address: 198.51.100.2:8080, forward: masq, weight: 0}
    health_check: {type: http}
  - protocol: udp
    address: "[2001:db8::1]:53"
    persistence: {timeout: 2m}
    real_servers: [{address: "2001:db8::11"}]
  - fwmark: 3
    real_servers: [{address: 198.51.100.1}]
    sorry_server: 198.51.100.9
`
	c, err := Parse("defaults.yaml", []byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Default()
	want.Node.Name, want.Node.Role = "d1", RoleDirector
	hc := DefaultHealthCheck()
	hc.Type, hc.Path, hc.ExpectStatus = CheckHTTP, "/", 200
	want.Services = []Service{
		{
			Protocol: TCP, Address: netip.MustParseAddrPort("192.0.2.1:80"), Scheduler: "wlc",
			Persistence: &Persistence{Timeout: 360 * time.Second, Netmask: HostMask4},
			RealServers: []RealServer{
				{Address: netip.MustParseAddrPort("198.51.100.1:80"), Weight: 1, Forward: dest.Route},
				{Address: netip.MustParseAddrPort("198.51.100.2:8080"), Weight: 0, Forward: dest.Masq},
			},
			HealthCheck: &hc,
		},
		{
			Protocol: UDP, Address: netip.MustParseAddrPort("[2001:db8::1]:53"), Scheduler: "wlc",
			Persistence: &Persistence{Timeout: 2 * time.Minute, Prefix: 128},
			RealServers: []RealServer{{Address: netip.MustParseAddrPort("[2001:db8::11]:53"), Weight: 1, Forward: dest.Route}},
		},
		{
			FWMark: 3, Family: Inet, Scheduler: "wlc",
			RealServers: []RealServer{{Address: netip.MustParseAddrPort("198.51.100.1:0"), Weight: 1, Forward: dest.Route}},
			SorryServer: netip.MustParseAddrPort("198.51.100.9:0"),
		},
	}
	if diff := cmp.Diff(want, c, cmpNetip); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if c.Sync.Group != netip.MustParseAddr("224.0.0.81") || c.Sync.Port != 8848 || c.Cluster.RaftPort != 7000 ||
		c.Cluster.GossipPort != 7946 || c.API.Socket != "/run/lbha/lbha.sock" || !c.Cluster.Preempt {
		t.Errorf("global defaults: %+v %+v %+v", c.Sync, c.Cluster, c.API)
	}
}

// base is a valid director configuration that the problem cases extend.
const base = `node: {name: d1, role: director}
`

type problemCase struct {
	name string
	in   string
	want []string // "line:col path: message prefix"
}

var problemCases = []problemCase{
	{"malformed YAML", "node: {name: d1\nrole: x", []string{
		"1:1 : malformed YAML: did not find expected ',' or '}'"}},
	{"two documents", base + "---\nnode: {}\n", []string{
		"2:1 : a configuration is a single YAML document"}},
	{"unknown key", base + "servics: []\n", []string{
		"2:1 servics: unknown key (did you mean \"services\"?)"}},
	{"unknown key far from any", base + "zzzzzzzzzz: 1\n", []string{
		"2:1 zzzzzzzzzz: unknown key (want one of node, cluster, api, dataplane, dataplane_options, vips, sync, services)"}},
	{"repeated key", base + "dataplane: auto\ndataplane: kernel\n", []string{
		"3:1 dataplane: key \"dataplane\" already set at line 2"}},
	{"wrong type", "node: {name: d1, role: director, priority: high}\n", []string{
		"1:44 node.priority: want an integer, got the string \"high\""}},
	{"list expected", base + "vips: {address: 192.0.2.1/24}\n", []string{
		"2:7 vips: want a list, got a mapping"}},
	{"bad role and priority", "node: {name: d1, role: boss, priority: 0}\n", []string{
		"1:24 node.role: unknown role \"boss\" (want director or witness)"}},
	{"priority range", "node: {name: d1, role: director, priority: 256}\n", []string{
		"1:44 node.priority: 256 is out of range 1..255"}},
	{"witness with priority", "node: {name: w, role: witness, priority: 5}\n", []string{
		"1:42 node.priority: applies to directors only; a witness is never master"}},
	{"witness with VIPs and services", "node: {name: w, role: witness}\nvips: [{address: 192.0.2.1/24, interface: eth0}]\nservices: [{protocol: tcp, address: 192.0.2.1:80}]\n",
		[]string{
			"2:7 vips: a witness holds no VIPs",
			"3:11 services: a witness runs no dataplane and has no services"}},
	{"timing", base + "cluster: {timing: {heartbeat: 100ms, election: 50ms, lease: 100ms}}\n", []string{
		"2:31 cluster.timing.heartbeat: 100ms must not exceed election (50ms)",
		"2:61 cluster.timing.lease: 100ms must be shorter than heartbeat (100ms)"}},
	{"duration without unit", base + "cluster: {timing: {heartbeat: 100}}\n", []string{
		"2:31 cluster.timing.heartbeat: want a duration with a unit, e.g. \"100ms\" or \"2s\", got an integer"}},
	{"peer problems", "node: {name: d1, role: director, bind_address: 192.0.2.1}\n" + `cluster:
  peers:
    - {name: d1, address: 192.0.2.2, role: witness}
    - {name: d2, address: 192.0.2.2, role: director}
`, []string{
		"4:27 cluster.peers[0].address: is 192.0.2.2 but node.bind_address is 192.0.2.1",
		"4:44 cluster.peers[0].role: is witness but node.role is director",
		"5:27 cluster.peers[1].address: 192.0.2.2 is already the address of peers[0]"}},
	{"duplicate VIP", base + "vips:\n  - {address: 192.0.2.1/24, interface: eth0}\n  - {address: 192.0.2.1/32, interface: eth1}\n",
		[]string{
			"4:15 vips[1].address: VIP 192.0.2.1 already defined as vips[0]"}},
	{"VIP without prefix", base + "vips: [{address: 192.0.2.1, interface: eth0}]\n", []string{
		"2:18 vips[0].address: \"192.0.2.1\" is not an address with a prefix length (e.g. 192.0.2.100/24, 2001:db8::100/64)"}},
	{"sync", base + "sync: {group: 192.0.2.1, port: 0, syncid: 256, ttl: 0, maxlen: 70000, version: 2}\n", []string{
		"2:15 sync.group: 192.0.2.1 is not a multicast address",
		"2:32 sync.port: 0 is out of range 1..65535",
		"2:43 sync.syncid: 256 is out of range 0..255",
		"2:53 sync.ttl: 0 is out of range 1..255",
		"2:64 sync.maxlen: 70000 is out of range 1..65507 (0 for the kernel default)",
		"2:80 sync.version: 2 is not a sync version (want 0 or 1)"}},
	{"sync IPv6 group must be multicast", base + "sync: {group: \"2001:db8::1\"}\n", []string{
		"2:15 sync.group: 2001:db8::1 is not a multicast address"}},
	{"sync v0 with IPv6 service", base + "sync: {version: 0}\nservices: [{protocol: tcp, address: \"[2001:db8::1]:80\"}]\n",
		[]string{
			"2:17 sync.version: version 0 carries IPv4 connections only, but services[0] is IPv6"}},
	{"bad address", base + "services: [{protocol: tcp, address: 192.0.2.300:80}]\n", []string{
		"2:37 services[0].address: \"192.0.2.300:80\" is not a valid address (want ip, ip:port or [ipv6]:port)"}},
	{"no address", base + "services: [{protocol: tcp}]\n", []string{
		"2:12 services[0].address: is required (or fwmark)"}},
	{"no protocol", base + "services: [{address: 192.0.2.1:80}]\n", []string{
		"2:12 services[0].protocol: is required (tcp, udp or sctp)"}},
	{"unknown protocol", base + "services: [{protocol: icmp, address: 192.0.2.1:80}]\n", []string{
		"2:23 services[0].protocol: unknown protocol \"icmp\" (want tcp, udp, sctp)"}},
	{"address and fwmark", base + "services: [{protocol: tcp, address: 192.0.2.1:80, fwmark: 1}]\n", []string{
		"2:59 services[0].fwmark: a service has either an address or a fwmark, not both"}},
	{"family on address service", base + "services: [{protocol: tcp, address: 192.0.2.1:80, family: inet}]\n", []string{
		"2:59 services[0].family: applies to fwmark services only; an address service has its address's family"}},
	{"fwmark zero", base + "services: [{fwmark: 0}]\n", []string{
		"2:21 services[0].fwmark: 0 is out of range 1..4294967295"}},
	{"IPv4 mask on IPv6 service", base + "services: [{protocol: tcp, address: \"[2001:db8::1]:80\", persistence: {netmask: 255.255.255.0}}]\n",
		[]string{
			"2:80 services[0].persistence.netmask: applies to IPv4 services; use prefix (1..128) for an IPv6 service"}},
	{"prefix on IPv4 service", base + "services: [{protocol: tcp, address: 192.0.2.1:80, persistence: {prefix: 24}}]\n",
		[]string{
			"2:73 services[0].persistence.prefix: applies to IPv6 services; use netmask for an IPv4 service"}},
	{"non-contiguous mask", base + "services: [{protocol: tcp, address: 192.0.2.1:80, persistence: {netmask: 255.0.255.0}}]\n",
		[]string{
			"2:74 services[0].persistence.netmask: 255.0.255.0 is not a contiguous IPv4 netmask"}},
	{"port zero without persistence", base + "services: [{protocol: tcp, address: 192.0.2.1}]\n", []string{
		"2:37 services[0].address: port 0 (all ports) requires persistence"}},
	{"persistence too long", base + "services: [{protocol: tcp, address: 192.0.2.1:80, persistence: {timeout: 2678401}}]\n",
		[]string{
			"2:74 services[0].persistence.timeout: 2678401 s exceeds the maximum of 31 days (2678400 s)"}},
	{"persistence too long as duration", base + "services: [{protocol: tcp, address: 192.0.2.1:80, persistence: {timeout: 745h}}]\n",
		[]string{
			"2:74 services[0].persistence.timeout: 745h0m0s exceeds the maximum of 31 days (2678400 s)"}},
	{"persistence too short", base + "services: [{protocol: tcp, address: 192.0.2.1:80, persistence: {timeout: 500ms}}]\n",
		[]string{
			"2:74 services[0].persistence.timeout: 500ms is below the minimum of 1s"}},
	{"persistence fraction", base + "services: [{protocol: tcp, address: 192.0.2.1:80, persistence: {timeout: 1500ms}}]\n",
		[]string{
			"2:74 services[0].persistence.timeout: 1.5s is not a whole number of seconds"}},
	{"unknown scheduler", base + "services: [{protocol: tcp, address: 192.0.2.1:80, scheduler: fastest}]\n", []string{
		"2:62 services[0].scheduler: unknown scheduler \"fastest\" (want one of rr, wrr, lc, wlc, sed, nq, sh, dh, mh, fo, ovf, lblc, lblcr, twos)"}},
	{"flag for another scheduler", base + "services: [{protocol: tcp, address: 192.0.2.1:80, scheduler_flags: [sh-port]}]\n",
		[]string{
			"2:69 services[0].scheduler_flags[0]: scheduler flag \"sh-port\" is only valid with scheduler sh, not wlc"}},
	{"flag-3 with mh", base + "services: [{protocol: tcp, address: 192.0.2.1:80, scheduler: mh, scheduler_flags: flag-3}]\n",
		[]string{
			"2:83 services[0].scheduler_flags: scheduler flag flag-3 has no meaning for scheduler mh"}},
	{"duplicate service", base + "services:\n  - {protocol: tcp, address: 192.0.2.1:80}\n  - {protocol: tcp, address: 192.0.2.1:80}\n  - {fwmark: 1}\n  - {fwmark: 1, family: inet6}\n  - {fwmark: 1, family: inet}\n",
		[]string{
			"4:30 services[1].address: duplicate service tcp 192.0.2.1:80, already defined as services[0]",
			"7:14 services[4].fwmark: duplicate service fwmark 1 inet, already defined as services[2]"}},
	{"duplicate name", base + "services:\n  - {name: a, protocol: tcp, address: 192.0.2.1:80}\n  - {name: a, protocol: tcp, address: 192.0.2.1:81}\n",
		[]string{
			"4:12 services[1].name: service name \"a\" already used by services[0]"}},
	{"real servers", base + `services:
  - protocol: tcp
    address: 192.0.2.1:80
    real_servers:
      - {address: 198.51.100.1:80, weight: 65536}
      - {address: 198.51.100.1:80}
      - {address: "[2001:db8::1]:80"}
      - {address: 198.51.100.2:8080}
      - {address: 198.51.100.3, forward: masq, upper_threshold: 10, lower_threshold: 20}
      - {address: 198.51.100.4, forward: nat}
`, []string{
		"6:44 services[0].real_servers[0].weight: 65536 is out of range 0..65535",
		"7:19 services[0].real_servers[1].address: duplicate real server 198.51.100.1:80, already real_servers[0]",
		"8:19 services[0].real_servers[2].address: 2001:db8::1 is inet6 but the service is inet; the kernel cannot sync services with mixed families",
		"9:19 services[0].real_servers[3].address: port 8080 differs from the service port 80; only masq forwarding can change the port",
		"10:86 services[0].real_servers[4].lower_threshold: 20 is above upper_threshold (10)",
		"11:42 services[0].real_servers[5].forward: unknown forwarding method \"nat\" (want masq, route, tunnel)"}},
	{"tunnels", base + `services:
  - fwmark: 1
    real_servers:
      - {address: 198.51.100.1, forward: tunnel, tunnel_type: gue}
      - {address: 198.51.100.2, forward: tunnel, tunnel_port: 6080}
      - {address: 198.51.100.3, forward: tunnel, tunnel_type: gre, tunnel_checksum: remcsum}
      - {address: 198.51.100.4, tunnel_type: gre}
`, []string{
		"5:9 services[0].real_servers[0].tunnel_port: is required for gue tunnels",
		"6:63 services[0].real_servers[1].tunnel_port: applies to gue tunnels only",
		"7:85 services[0].real_servers[2].tunnel_checksum: remcsum is for gue tunnels only",
		"8:46 services[0].real_servers[3].tunnel_type: needs forward: tunnel (forward is route)"}},
	{"one packet on TCP and sip on TCP", base + "services: [{protocol: tcp, address: 192.0.2.1:80, one_packet: true, persistence: {engine: sip}}]\n",
		[]string{
			"2:63 services[0].one_packet: one-packet scheduling is for UDP and fwmark services, not tcp",
			"2:91 services[0].persistence.engine: sip reads UDP payloads only, but the service is tcp"}},
	{"unknown engine", base + "services: [{protocol: udp, address: 192.0.2.1:80, persistence: {engine: h323}}]\n",
		[]string{
			"2:73 services[0].persistence.engine: unknown persistence engine \"h323\" (want sip)"}},
	{"health check", base + `services:
  - protocol: tcp
    address: 192.0.2.1:80
    health_check: {type: ping, interval: 1s, timeout: 2s, rise: 0, path: /x, on_failure: panic}
`, []string{
		"5:26 services[0].health_check.type: unknown check type \"ping\" (want tcp, http, https or command)",
		"5:55 services[0].health_check.timeout: 2s exceeds the interval (1s)",
		"5:65 services[0].health_check.rise: must be at least 1",
		"5:74 services[0].health_check.path: applies to http and https checks only",
		"5:90 services[0].health_check.on_failure: unknown action \"panic\" (want quiesce or remove)"}},
	{"health check needs a port", base + "services: [{fwmark: 1, persistence: {}, real_servers: [{address: 198.51.100.1}], health_check: {type: tcp}}]\n",
		[]string{
			"2:96 services[0].health_check.port: is required: real_servers[0] has no port to probe"}},
	{"sorry server family", base + "services: [{protocol: tcp, address: 192.0.2.1:80, sorry_server: \"[2001:db8::9]:80\"}]\n",
		[]string{
			"2:65 services[0].sorry_server: 2001:db8::9 is inet6 but the service is inet"}},
	{"interface names", base + "vips: [{address: 192.0.2.1/24, interface: a/b}]\ncluster: {track_interfaces: [averyveryverylongname, eth0, eth0]}\n", []string{
		"2:43 vips[0].interface: \"a/b\" is not a valid interface name",
		"3:30 cluster.track_interfaces[0]: interface name \"averyveryverylongname\" is longer than 15 bytes",
		"3:59 cluster.track_interfaces[2]: interface \"eth0\" listed twice"}},
	{"api", base + "api: {socket: run/lbha.sock, metrics_address: localhost}\n", []string{
		"2:15 api.socket: \"run/lbha.sock\" is not an absolute path",
		"2:47 api.metrics_address: \"localhost\" is not host:port"}},
	{"tls needs files", base + "cluster: {tls: {ca_file: /ca}}\n", []string{
		"2:16 cluster.tls.cert_file: is required with tls",
		"2:16 cluster.tls.key_file: is required with tls"}},
	{"empty list item", base + "services:\n  -\n", []string{
		"3:4 services[0]: empty list item"}},
	{"aliases work", base + "x: &s {protocol: tcp}\n", []string{
		"2:1 x: unknown key (want one of node, cluster, api, dataplane, dataplane_options, vips, sync, services)"}},
}

func TestProblems(t *testing.T) {
	for _, tt := range problemCases {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded, want %d problems", len(tt.want))
			}
			ps := problemsOf(t, err)
			if len(ps) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(ps), len(tt.want), err)
			}
			for i, p := range ps {
				got := p.Pos.String() + " " + p.Path + ": " + p.Msg
				want := "t.yaml:" + tt.want[i]
				if !strings.HasPrefix(got, want) {
					t.Errorf("problem %d:\n got %s\nwant %s...", i, got, want)
				}
			}
		})
	}
}

func TestAliases(t *testing.T) {
	in := base + `services:
  - &web {protocol: tcp, address: 192.0.2.1:80, real_servers: [{address: 198.51.100.1}]}
  - {protocol: tcp, address: 192.0.2.1:443, real_servers: *rs}
x-anchors: []
`
	in = strings.Replace(in, "real_servers: [{", "real_servers: &rs [{", 1)
	in = strings.Replace(in, "x-anchors: []\n", "", 1)
	c, err := Parse("alias.yaml", []byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	got := []string{c.Services[0].RealServers[0].Address.String(), c.Services[1].RealServers[0].Address.String()}
	// The alias copies the list; the missing port is filled per service.
	want := []string{"198.51.100.1:80", "198.51.100.1:443"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestAliasBomb: aliases can make a few kilobytes name millions of nodes;
// the decoder must stop early and say why.
func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("x-r: &r {address: 198.51.100.1}\n")
	b.WriteString("x-rs: &rs [*r" + strings.Repeat(", *r", 1100) + "]\n")
	b.WriteString("x-s: &s {protocol: tcp, address: 192.0.2.1:80, real_servers: *rs}\n")
	b.WriteString("services: [*s" + strings.Repeat(", *s", 1000) + "]\n")
	start := time.Now()
	_, err := Parse("bomb.yaml", []byte(b.String()))
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Parse took %s", d)
	}
	if !strings.Contains(err.Error(), "document too complex") {
		t.Errorf("error does not name the complexity limit:\n%.500s", err)
	}
}

// TestTenMistakes: one file, ten different mistakes, ten located problems.
func TestTenMistakes(t *testing.T) {
	_, err := Load("testdata/ten-mistakes.yaml")
	got := strings.Split(err.Error(), "\n")
	want := strings.Split(strings.TrimSpace(string(mustRead(t, "testdata/ten-mistakes.golden"))), "\n")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestValidateInCode(t *testing.T) {
	c := Default()
	c.Node.Name, c.Node.Role = "d1", RoleDirector
	c.Services = []Service{{
		Protocol: TCP, Address: netip.MustParseAddrPort("192.0.2.1:80"), Scheduler: "wlc",
		RealServers: []RealServer{{Address: netip.MustParseAddrPort("198.51.100.1:80"), Weight: -1, Forward: dest.Route}},
	}}
	c.Cluster.Timing.Lease = 0
	var got []string
	for _, p := range problemsOf(t, c.Validate()) {
		got = append(got, p.String())
	}
	want := []string{
		"cluster.timing.lease: must be positive",
		"services[0].real_servers[0].weight: -1 is out of range 0..65535",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	c.Cluster.Timing.Lease = 50 * time.Millisecond
	c.Services[0].RealServers[0].Weight = 1
	if err := c.Validate(); err != nil {
		t.Errorf("Validate after fixing: %v", err)
	}
	// A zero netmask and prefix mean the host defaults.
	p := Persistence{}
	if p.Mask4() != HostMask4 || p.Prefix6() != 128 {
		t.Errorf("zero Persistence: mask %s prefix %d", p.Mask4(), p.Prefix6())
	}
}

func TestParseServices(t *testing.T) {
	svcs, err := ParseServices("svcs.yaml", []byte("services: [{protocol: udp, address: 192.0.2.1:53, real_servers: [{address: 198.51.100.1}]}]\n"))
	if err != nil {
		t.Fatalf("ParseServices: %v", err)
	}
	if len(svcs) != 1 || svcs[0].RealServers[0].Address.Port() != 53 {
		t.Errorf("services: %+v", svcs)
	}
	// Syntax in other sections is still checked; their semantics are not.
	_, err = ParseServices("svcs.yaml", []byte("node: {priority: x}\nservices: [{protocol: udp, address: 192.0.2.1:0}]\n"))
	var got []string
	for _, p := range problemsOf(t, err) {
		got = append(got, p.String())
	}
	want := []string{
		"svcs.yaml:1:18: node.priority: want an integer, got the string \"x\"",
		"svcs.yaml:2:37: services[0].address: port 0 (all ports) requires persistence",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestMarshalServicesEmpty(t *testing.T) {
	b, err := MarshalServices(nil)
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := ParseServices("empty", b)
	if err != nil || len(svcs) != 0 {
		t.Errorf("ParseServices(%q) = %v, %v", b, svcs, err)
	}
}

func TestSchedFlagNames(t *testing.T) {
	tests := []struct {
		sched string
		flags SchedFlags
		want  []string
	}{
		{"sh", ShFallback | ShPort, []string{"sh-fallback", "sh-port"}},
		{"mh", MhPort, []string{"mh-port"}},
		{"wlc", SchedFlag1 | SchedFlag3, []string{"flag-1", "flag-3"}},
		{"rr", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.sched, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.flags.Names(tt.sched)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			for _, n := range tt.want {
				if _, err := ParseSchedFlag(tt.sched, n); err != nil {
					t.Errorf("ParseSchedFlag(%s, %s): %v", tt.sched, n, err)
				}
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	data, err := os.ReadFile("../examples/lbha.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse("lbha.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal(b *testing.B) {
	c, err := Load("../examples/lbha.yaml")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Marshal(c); err != nil {
			b.Fatal(err)
		}
	}
}

// A pair without a witness cannot survive a failure, but it is a legitimate
// (if fragile) deployment: the agent warns at start and in lbha status
// instead of refusing the file.
func TestPairWithoutWitnessIsValid(t *testing.T) {
	doc := "node: {name: d1, role: director, bind_address: 192.0.2.1}\n" + `cluster:
  peers:
    - {name: d1, address: 192.0.2.1, role: director}
    - {name: d2, address: 192.0.2.2, role: director}
`
	if _, err := Parse("pair.yaml", []byte(doc)); err != nil {
		t.Fatalf("Parse: %v", err)
	}
}

func TestDataplaneOptions(t *testing.T) {
	const in = `
node: {name: d1, role: director}
dataplane: userspace
dataplane_options: {expire_quiescent_template: true, on_standby: drain, drain_timeout: 5s}
`
	c, err := Parse("opts.yaml", []byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := DataplaneOptions{ExpireQuiescentTemplate: true, OnStandby: StandbyDrain, DrainTimeout: 5 * time.Second}
	if c.DataplaneOptions != want {
		t.Fatalf("options %+v, want %+v", c.DataplaneOptions, want)
	}
	out, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse("back.yaml", out)
	if err != nil || back.DataplaneOptions != want {
		t.Fatalf("round trip: %+v, %v\n%s", back.DataplaneOptions, err, out)
	}
	if Default().DataplaneOptions.OnStandby != StandbyClose {
		t.Fatal("default standby action is not close")
	}
	_, err = Parse("bad.yaml", []byte("dataplane_options: {on_standby: linger}\n"))
	if err == nil || !strings.Contains(err.Error(), `bad.yaml:1:33: dataplane_options.on_standby: unknown standby action "linger" (want close, drain)`) {
		t.Fatalf("bad standby action: %v", err)
	}
}
