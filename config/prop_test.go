package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/lbha/lbha/dest"
)

func genName(t *rapid.T, label string) string {
	return rapid.StringMatching(`[a-z][a-z0-9-]{0,8}`).Draw(t, label)
}

func genDur(t *rapid.T, label string, lo, hi time.Duration) time.Duration {
	return time.Duration(rapid.Int64Range(int64(lo/time.Millisecond), int64(hi/time.Millisecond)).Draw(t, label)) * time.Millisecond
}

// genConfig draws a valid director configuration, valid by construction.
func genConfig(t *rapid.T) *Config {
	c := Default()
	c.Node.Name = "dir1"
	c.Node.Role = RoleDirector
	c.Node.Priority = rapid.IntRange(1, 255).Draw(t, "priority")
	if rapid.Bool().Draw(t, "cluster") {
		c.Node.BindAddress = netip.MustParseAddr("203.0.113.2")
		c.Cluster.Peers = []Peer{
			{Name: "dir1", Address: c.Node.BindAddress, Role: RoleDirector},
			{Name: "dir2", Address: netip.MustParseAddr("203.0.113.3"), Role: RoleDirector},
			{Name: "wit1", Address: netip.MustParseAddr("2001:db8:5::4"), Role: RoleWitness},
		}
	}
	c.Cluster.Timing.Election = genDur(t, "election", 2*time.Millisecond, 10*time.Second)
	c.Cluster.Timing.Heartbeat = genDur(t, "heartbeat", 2*time.Millisecond, c.Cluster.Timing.Election)
	c.Cluster.Timing.Lease = genDur(t, "lease", time.Millisecond, c.Cluster.Timing.Heartbeat-time.Millisecond)
	c.Cluster.Preempt = rapid.Bool().Draw(t, "preempt")
	c.Cluster.PreemptDelay = genDur(t, "preempt_delay", 0, time.Hour)
	c.Cluster.TrackInterfaces = rapid.SliceOfDistinct(rapid.StringMatching(`eth[0-9]{1,2}`), rapid.ID[string]).Draw(t, "track")
	if len(c.Cluster.TrackInterfaces) == 0 {
		c.Cluster.TrackInterfaces = nil
	}
	for i := range rapid.IntRange(0, 2).Draw(t, "checks") {
		iv := genDur(t, fmt.Sprintf("check%d-interval", i), time.Millisecond, time.Minute)
		c.Cluster.CheckCommands = append(c.Cluster.CheckCommands, LocalCheck{
			Name:     genName(t, "check-name"),
			Command:  rapid.StringMatching(`[a-z/ -]{1,20}x`).Draw(t, "check-cmd"),
			Interval: iv,
			Timeout:  genDur(t, "check-timeout", time.Millisecond, iv),
		})
	}
	if rapid.Bool().Draw(t, "tls") {
		c.Cluster.TLS = &TLS{CertFile: "/c", KeyFile: "/k", CAFile: rapid.SampledFrom([]string{"", "/ca"}).Draw(t, "ca")}
	}
	c.API.MetricsAddress = rapid.SampledFrom([]string{"", "127.0.0.1:9147", "[::1]:80", ":9100"}).Draw(t, "metrics")
	c.Dataplane = rapid.SampledFrom([]Dataplane{DataplaneAuto, DataplaneKernel, DataplaneUserspace}).Draw(t, "dataplane")
	for i := range rapid.IntRange(0, 3).Draw(t, "vips") {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})
		bits := rapid.IntRange(8, 32).Draw(t, "vip-bits")
		if rapid.Bool().Draw(t, "vip6") {
			a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)})
			bits += 96
		}
		c.VIPs = append(c.VIPs, VIP{Address: netip.PrefixFrom(a, bits), Interface: "front0"})
	}
	c.Sync.Interface = rapid.SampledFrom([]string{"", "sync0"}).Draw(t, "sync-if")
	c.Sync.Group = rapid.SampledFrom([]netip.Addr{DefaultSyncGroup, netip.MustParseAddr("239.1.2.3"), netip.MustParseAddr("ff02::81")}).Draw(t, "group")
	c.Sync.Port = rapid.IntRange(1, 65535).Draw(t, "sync-port")
	c.Sync.SyncID = rapid.IntRange(0, 255).Draw(t, "syncid")
	c.Sync.MaxLen = rapid.IntRange(0, 65507).Draw(t, "maxlen")
	c.Sync.TTL = rapid.IntRange(1, 255).Draw(t, "ttl")
	c.Sync.FlushInterval = genDur(t, "flush", time.Millisecond, time.Second)
	c.Services = genServices(t)
	c.Sync.Version = 1
	return c
}

func genServices(t *rapid.T) []Service {
	var svcs []Service
	keys := map[string]bool{}
	for i := range rapid.IntRange(0, 5).Draw(t, "services") {
		s := genService(t, i)
		if keys[s.Key()] {
			continue
		}
		keys[s.Key()] = true
		svcs = append(svcs, s)
	}
	return svcs
}

func genService(t *rapid.T, i int) Service {
	l := fmt.Sprintf("svc%d-", i)
	s := DefaultService()
	if rapid.Bool().Draw(t, l+"named") {
		s.Name = fmt.Sprintf("svc%d", i)
	}
	v6 := rapid.Bool().Draw(t, l+"v6")
	addr := func(label string) netip.Addr {
		if v6 {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: 1, 15: rapid.Byte().Draw(t, label)})
		}
		return netip.AddrFrom4([4]byte{198, 51, 100, rapid.ByteRange(1, 254).Draw(t, label)})
	}
	if rapid.IntRange(0, 3).Draw(t, l+"kind") == 0 {
		s.FWMark = rapid.Uint32Min(1).Draw(t, l+"mark")
		s.Family = Inet
		if v6 {
			s.Family = Inet6
		}
	} else {
		s.Protocol = rapid.SampledFrom([]Protocol{TCP, UDP, SCTP}).Draw(t, l+"proto")
		s.Address = netip.AddrPortFrom(addr(l+"vip"), rapid.Uint16().Draw(t, l+"port"))
	}
	s.Scheduler = rapid.SampledFrom(Schedulers).Draw(t, l+"sched")
	if s.Scheduler == "sh" || s.Scheduler == "mh" {
		s.SchedFlags = SchedFlags(rapid.IntRange(0, 3).Draw(t, l+"flags")) * SchedFlag1
	} else {
		s.SchedFlags = SchedFlags(rapid.IntRange(0, 7).Draw(t, l+"flags")) * SchedFlag1
	}
	if s.FWMark != 0 || s.Address.Port() == 0 || rapid.Bool().Draw(t, l+"persist") {
		p := &Persistence{Timeout: time.Duration(rapid.IntRange(1, 2678400).Draw(t, l+"timeout")) * time.Second}
		if v6 {
			p.Prefix = rapid.IntRange(1, 128).Draw(t, l+"prefix")
		} else {
			ones := rapid.IntRange(0, 32).Draw(t, l+"ones")
			var m uint32
			if ones > 0 {
				m = ^uint32(0) << (32 - ones)
			}
			p.Netmask = netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)})
		}
		if (s.FWMark != 0 || s.Protocol == UDP) && rapid.Bool().Draw(t, l+"sip") {
			p.Engine = "sip"
		}
		s.Persistence = p
	}
	s.OnePacket = (s.FWMark != 0 || s.Protocol == UDP) && rapid.Bool().Draw(t, l+"ops")
	seen := map[netip.AddrPort]bool{}
	for j := range rapid.IntRange(0, 4).Draw(t, l+"rs") {
		rl := fmt.Sprintf("%srs%d-", l, j)
		rs := RealServer{
			Weight:  rapid.IntRange(0, 65535).Draw(t, rl+"w"),
			Forward: rapid.SampledFrom([]dest.Method{dest.Masq, dest.Route, dest.Tunnel}).Draw(t, rl+"fwd"),
		}
		port := uint16(rapid.IntRange(1, 65535).Draw(t, rl+"port"))
		if s.FWMark == 0 && rs.Forward != dest.Masq {
			port = s.Address.Port()
		}
		rs.Address = netip.AddrPortFrom(addr(rl+"a"), port)
		if seen[rs.Address] {
			continue
		}
		seen[rs.Address] = true
		if rs.Forward == dest.Tunnel {
			rs.TunnelType = rapid.SampledFrom([]TunnelType{TunnelIPIP, TunnelGUE, TunnelGRE}).Draw(t, rl+"tun")
			switch rs.TunnelType {
			case TunnelGUE:
				rs.TunnelPort = rapid.Uint16Min(1).Draw(t, rl+"tport")
				rs.TunnelChecksum = TunnelChecksum(rapid.IntRange(0, 2).Draw(t, rl+"csum"))
			case TunnelGRE:
				rs.TunnelChecksum = TunnelChecksum(rapid.IntRange(0, 1).Draw(t, rl+"csum"))
			}
		}
		rs.UpperThreshold = rapid.IntRange(0, MaxThreshold).Draw(t, rl+"u")
		rs.LowerThreshold = rapid.IntRange(0, rs.UpperThreshold).Draw(t, rl+"l")
		s.RealServers = append(s.RealServers, rs)
	}
	if rapid.Bool().Draw(t, l+"hc") {
		hc := DefaultHealthCheck()
		hc.Type = rapid.SampledFrom([]CheckType{CheckTCP, CheckHTTP, CheckHTTPS, CheckCommand}).Draw(t, l+"hc-type")
		hc.Port = rapid.IntRange(1, 65535).Draw(t, l+"hc-port")
		hc.Interval = genDur(t, l+"hc-interval", time.Millisecond, time.Minute)
		hc.Timeout = genDur(t, l+"hc-timeout", time.Millisecond, hc.Interval)
		hc.Rise = rapid.IntRange(1, 10).Draw(t, l+"rise")
		hc.Fall = rapid.IntRange(1, 10).Draw(t, l+"fall")
		switch hc.Type {
		case CheckHTTP, CheckHTTPS:
			hc.Path = rapid.StringMatching(`/[a-z0-9/?=]{0,10}`).Draw(t, l+"path")
			hc.ExpectStatus = rapid.IntRange(100, 599).Draw(t, l+"status")
			hc.ExpectBody = rapid.String().Draw(t, l+"body")
		case CheckCommand:
			hc.Command = rapid.StringMatching(`[a-z]{1,5} "\$LBHA_RS_ADDR"`).Draw(t, l+"cmd")
		}
		hc.OnFailure = rapid.SampledFrom([]FailureAction{Quiesce, Remove}).Draw(t, l+"onfail")
		s.HealthCheck = &hc
	}
	if rapid.Bool().Draw(t, l+"sorry") {
		s.SorryServer = netip.AddrPortFrom(addr(l+"sorry"), rapid.Uint16().Draw(t, l+"sorry-port"))
	}
	return s
}

// TestPropertyMarshalParse: a valid configuration marshals to YAML that
// parses back to the same model.
func TestPropertyMarshalParse(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genConfig(t)
		if err := c.Validate(); err != nil {
			t.Fatalf("generated configuration is invalid: %v", err)
		}
		b, err := Marshal(c)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		c2, err := Parse("gen.yaml", b)
		if err != nil {
			t.Fatalf("Parse: %v\n%s", err, b)
		}
		if diff := cmp.Diff(c, c2, cmpNetip); diff != "" {
			t.Fatalf("(-want +got):\n%s\n%s", diff, b)
		}
		sb, err := MarshalServices(c.Services)
		if err != nil {
			t.Fatalf("MarshalServices: %v", err)
		}
		svcs, err := ParseServices("svcs.yaml", sb)
		if err != nil {
			t.Fatalf("ParseServices: %v\n%s", err, sb)
		}
		if diff := cmp.Diff(c.Services, svcs, cmpNetip); diff != "" {
			t.Fatalf("services (-want +got):\n%s\n%s", diff, sb)
		}
	})
}

// FuzzParse: no input panics; every problem is located in the file; and a
// configuration that validates marshals and re-parses to the same model.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"../examples/*.yaml", "testdata/*.yaml"} {
		files, _ := filepath.Glob(pattern)
		for _, name := range files {
			if b, err := os.ReadFile(name); err == nil {
				f.Add(b)
			}
		}
	}
	for _, s := range []string{
		"", "{}", "[]", "node: ~", "a: &a [*a]", "node: {name: n, role: witness}\n",
		"node: {name: n, role: director}\nservices: [{fwmark: 1, persistence: {}, real_servers: [{address: 192.0.2.1}]}]\n",
		"services: [{protocol: udp, address: '[::1]:53', scheduler_flags: 'flag-1,flag-2'}]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("error %v is not a non-empty *ValidationError", err)
			}
			for _, p := range ve.Problems {
				if p.Pos.File != "fuzz.yaml" || p.Pos.Line < 1 || p.Pos.Col < 1 {
					t.Fatalf("problem %q is not located", p)
				}
			}
			return
		}
		b, err := Marshal(c)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		c2, err := Parse("again.yaml", b)
		if err != nil {
			t.Fatalf("Parse(Marshal(c)): %v\n%s", err, b)
		}
		if diff := cmp.Diff(c, c2, cmpNetip); diff != "" {
			t.Fatalf("(-want +got):\n%s\n%s", diff, b)
		}
	})
}
