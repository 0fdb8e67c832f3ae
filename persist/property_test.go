package persist

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/lbha/lbha/dest"
	"pgregory.net/rapid"
)

// checkInvariants compares every destination's counters with the entries
// bound to it, and every template's NControl with the connections pointing
// at it.
func checkInvariants(t fataler, tbl *Table, dests []*dest.Dest) {
	t.Helper()
	want := map[*dest.Dest]counters{}
	ncontrol := map[Ref]int{}
	all := entries(tbl)
	for _, e := range all {
		if e.Control != 0 {
			ncontrol[e.Control]++
		}
		if e.Dest == nil {
			continue
		}
		c := want[e.Dest]
		switch {
		case e.Template():
			c.Persist++
		case e.Flags&FlagInactive != 0:
			c.Inact++
		default:
			c.Active++
		}
		want[e.Dest] = c
	}
	for i, d := range dests {
		if got := countersOf(d); got != want[d] {
			t.Fatalf("dest %d (%v): counters %+v, table holds %+v", i, d, got, want[d])
		}
	}
	for _, e := range all {
		if e.Template() && e.NControl != ncontrol[e.Ref] {
			t.Fatalf("template %v NControl %d, but %d connections point at it", e.Client, e.NControl, ncontrol[e.Ref])
		}
		if !e.Template() && e.Control != 0 {
			if _, ok := tbl.Get(e.Control); !ok {
				t.Fatalf("connection %v points at a template that is gone", e.Client)
			}
		}
	}
	conns, tmpls := tbl.Len()
	if conns+tmpls != len(all) {
		t.Fatalf("Len() = %d+%d, Range saw %d", conns, tmpls, len(all))
	}
	if n := tbl.dests.len(); n > len(dests) {
		t.Fatalf("registry holds %d destinations, only %d exist", n, len(dests))
	}
}

// model draws the pieces of a random workload.
type model struct {
	t     *rapid.T
	tbl   *Table
	clk   *fakeClock
	dests []*dest.Dest
	svcs  []*Service
	refs  []Ref
}

func newModel(t *rapid.T) *model {
	eqt := rapid.Bool().Draw(t, "expire_quiescent_template")
	shards := rapid.SampledFrom([]int{1, 2, 8}).Draw(t, "shards")
	tbl, clk := newTestTable(t, func(c *Config) { c.Shards = shards; c.ExpireQuiescentTemplate = eqt })
	m := &model{t: t, tbl: tbl, clk: clk}
	for i, meth := range []dest.Method{dest.Masq, dest.Route, dest.Tunnel} {
		d := dest.New(netip.AddrFrom4([4]byte{198, 51, 100, byte(11 + i)}), 80, meth, 1)
		d.SetThresholds(uint32(rapid.IntRange(0, 4).Draw(t, "uthreshold")), 0)
		m.dests = append(m.dests, d)
	}
	m.svcs = []*Service{
		{Port: 80, Timeout: 300 * time.Second, Netmask: netip.MustParseAddr("255.255.255.0")},
		{Port: 80, Timeout: 120 * time.Second, OnePacket: true},
		{Port: 80},
		{Fwmark: 7, Timeout: 600 * time.Second},
		{Port: 80, Timeout: 60 * time.Second, Netmask: netip.MustParseAddr("0.0.0.0"), PE: true},
		{Port: 21, Timeout: 200 * time.Second},
	}
	return m
}

func (m *model) pickDest(label string) *dest.Dest {
	i := rapid.IntRange(-1, len(m.dests)-1).Draw(m.t, label)
	if i < 0 {
		return nil
	}
	return m.dests[i]
}

func (m *model) pickRef() Ref {
	if len(m.refs) == 0 || rapid.IntRange(0, 20).Draw(m.t, "bogus ref") == 0 {
		return Ref(rapid.Uint64().Draw(m.t, "ref"))
	}
	return rapid.SampledFrom(m.refs).Draw(m.t, "ref")
}

func (m *model) client() netip.AddrPort {
	a := netip.AddrFrom4([4]byte{192, 0, byte(rapid.IntRange(2, 3).Draw(m.t, "net")), byte(rapid.IntRange(1, 4).Draw(m.t, "host"))})
	return netip.AddrPortFrom(a, uint16(rapid.IntRange(1000, 1007).Draw(m.t, "cport")))
}

func (m *model) proto() (uint8, State) {
	switch rapid.IntRange(0, 2).Draw(m.t, "proto") {
	case 0:
		return ProtoTCP, State(rapid.IntRange(0, int(tcpStates)-1).Draw(m.t, "tcp state"))
	case 1:
		return ProtoUDP, UDPNormal
	}
	return ProtoSCTP, State(rapid.IntRange(0, int(sctpStates)-1).Draw(m.t, "sctp state"))
}

func (m *model) step() {
	t, tbl := m.t, m.tbl
	switch rapid.IntRange(0, 10).Draw(t, "op") {
	case 0, 1, 2:
		svc := rapid.SampledFrom(m.svcs).Draw(t, "service")
		proto, st := m.proto()
		pkt := &Packet{Proto: proto, Src: m.client(), Dst: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.100"),
			rapid.SampledFrom([]uint16{80, 21, 8080}).Draw(t, "vport")), State: st, Fwmark: 7}
		if svc.PE {
			pkt.PEData = []byte(fmt.Sprintf("call-%d", rapid.IntRange(0, 3).Draw(t, "call")))
		}
		d := m.pickDest("scheduled")
		s, err := tbl.Schedule(svc, pkt, fixed(d))
		if err == nil {
			m.refs = append(m.refs, s.Conn, s.Template)
		}
	case 3:
		_, st := m.proto()
		_ = tbl.SetState(m.pickRef(), st)
	case 4:
		_, _ = tbl.Touch(m.pickRef(), rapid.Bool().Draw(t, "reply"))
	case 5:
		if rapid.Bool().Draw(t, "force") {
			tbl.Drop(m.pickRef())
		} else {
			tbl.Remove(m.pickRef())
		}
	case 6:
		tbl.Expire(m.clk.Advance(time.Duration(rapid.Int64Range(0, int64(20*time.Minute)).Draw(t, "advance"))))
	case 7:
		d := rapid.SampledFrom(m.dests).Draw(t, "changed dest")
		switch rapid.IntRange(0, 2).Draw(t, "change") {
		case 0:
			d.SetAvailable(!d.Available())
		case 1:
			d.SetWeight(1 - d.Weight())
		case 2:
			d.SetThresholds(uint32(rapid.IntRange(0, 4).Draw(t, "uthreshold")), 0)
		}
	case 8:
		proto, st := m.proto()
		in := SyncEntry{Proto: proto, Client: m.client(), Virtual: netip.MustParseAddrPort("192.0.2.100:80"),
			DestAddr: netip.AddrPortFrom(m.dests[rapid.IntRange(0, 2).Draw(t, "sync daddr")].Addr, 80),
			Flags:    Flags(rapid.SampledFrom([]uint32{0, 0x100, 0x83, 0x183, 0x1100, 0x1183, 0x700}).Draw(t, "sync flags")),
			State:    st, Timeout: uint32(rapid.IntRange(0, 1000).Draw(t, "sync timeout"))}
		if in.Flags&FlagTemplate != 0 {
			in.State = State(rapid.IntRange(0, 1).Draw(t, "tpl state"))
			in.Client = netip.AddrPortFrom(in.Client.Addr(), 0)
		}
		var resolve Resolver
		if rapid.Bool().Draw(t, "resolvable") {
			d := m.pickDest("resolved")
			resolve = func(DestQuery) *dest.Dest { return d }
		}
		if r, err := tbl.ApplySync(&in, resolve); err == nil && r != 0 {
			m.refs = append(m.refs, r)
		}
	case 9:
		d := m.pickDest("rebind")
		tbl.Rebind(func(DestQuery) *dest.Dest { return d })
	case 10:
		r := m.pickRef()
		if e, ok := tbl.Get(r); ok {
			k := Key{Proto: e.Proto, Client: e.Client, Virtual: e.Virtual, Template: e.Template(), PEData: e.PEData}
			got, _, found := tbl.Lookup(&k)
			// The model never syncs port 65535, so that port means
			// invalidated, synced or not (a synced template whose
			// destination is unbound is invalid for local scheduling).
			invalid := e.Template() && e.Virtual.Port() == invalidPort
			if invalid && found && got == r {
				t.Fatalf("invalidated template found by Lookup")
			}
			if !invalid && (!found || got != r) {
				t.Fatalf("Lookup(%+v) = %#x, %v; want %#x", k, uint64(got), found, uint64(r))
			}
		}
	}
}

// TestPropCounters: the destination counters always equal what the table
// holds, whatever the sequence of operations.
func TestPropCounters(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := newModel(t)
		n := rapid.IntRange(1, 150).Draw(t, "steps")
		for range n {
			m.step()
			checkInvariants(t, m.tbl, m.dests)
		}
		// Everything expires in the end, and the counters go back to zero.
		for range 3 {
			for _, r := range m.refs {
				m.tbl.Remove(r)
			}
			m.tbl.Expire(m.clk.Advance(time.Hour))
		}
		checkInvariants(t, m.tbl, m.dests)
		if c, tm := m.tbl.Len(); c+tm != 0 {
			t.Fatalf("%d connections and %d templates left", c, tm)
		}
		if n := m.tbl.dests.len(); n != 0 {
			t.Fatalf("registry still holds %d destinations", n)
		}
	})
}

// TestPropSameServer: while a template is valid, every client inside its
// netmask reaches the same server.
func TestPropSameServer(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tbl, clk := newTestTable(t, nil)
		bits := rapid.IntRange(0, 32).Draw(t, "mask bits")
		mask := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		m4 := [4]byte{}
		for i := range bits {
			m4[i/8] |= 0x80 >> (i % 8)
		}
		_ = mask
		svc := &Service{Port: 443, Timeout: time.Duration(rapid.IntRange(1, 600).Draw(t, "timeout")) * time.Second,
			Netmask: netip.AddrFrom4(m4)}
		var dests []*dest.Dest
		for i := range rapid.IntRange(1, 4).Draw(t, "dests") {
			dests = append(dests, dest.New(netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}), 443, dest.Masq, 1))
		}
		type seen struct {
			tmpl Ref
			d    *dest.Dest
		}
		byNet := map[netip.Addr]seen{}
		for range rapid.IntRange(1, 100).Draw(t, "conns") {
			c := [4]byte{10, byte(rapid.IntRange(0, 3).Draw(t, "b")), byte(rapid.IntRange(0, 3).Draw(t, "c")), byte(rapid.IntRange(0, 255).Draw(t, "d"))}
			src := netip.AddrPortFrom(netip.AddrFrom4(c), uint16(rapid.IntRange(1024, 65535).Draw(t, "port")))
			pick := rapid.SampledFrom(dests).Draw(t, "scheduler choice")
			s, err := tbl.Schedule(svc, &Packet{Proto: ProtoTCP, Src: src, Dst: ap("192.0.2.1:443"), State: TCPEstablished}, fixed(pick))
			if err != nil {
				continue // ErrExists on a repeated 4-tuple
			}
			var n [4]byte
			for i := range c {
				n[i] = c[i] & m4[i]
			}
			net := netip.AddrFrom4(n)
			if prev, ok := byNet[net]; ok {
				if _, alive := tbl.Get(prev.tmpl); alive && (s.Template != prev.tmpl || s.Dest != prev.d) {
					t.Fatalf("client %v of %v went to %v; its valid template sends to %v", src, net, s.Dest, prev.d)
				}
			}
			byNet[net] = seen{s.Template, s.Dest}
			if rapid.Bool().Draw(t, "close") {
				tbl.Remove(s.Conn)
			}
			tbl.Expire(clk.Advance(time.Duration(rapid.Int64Range(0, int64(svc.Timeout)).Draw(t, "advance"))))
		}
	})
}

// TestPropInvalidated: an invalidated template never matches again.
func TestPropInvalidated(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		eqt := rapid.Bool().Draw(t, "eqt")
		tbl, clk := newTestTable(t, func(c *Config) { c.ExpireQuiescentTemplate = eqt })
		svc := &Service{Port: 80, Timeout: 300 * time.Second, Netmask: netip.MustParseAddr("255.255.255.0")}
		dests := []*dest.Dest{newDest("198.51.100.1", 80, dest.Masq, 1), newDest("198.51.100.2", 80, dest.Masq, 1)}
		invalid := map[Ref]bool{}
		for range rapid.IntRange(1, 80).Draw(t, "steps") {
			switch rapid.IntRange(0, 3).Draw(t, "op") {
			case 0, 1:
				src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, byte(rapid.IntRange(2, 4).Draw(t, "net")), 10}),
					uint16(rapid.IntRange(1000, 60000).Draw(t, "port")))
				called := false
				pick := rapid.SampledFrom(dests).Draw(t, "pick")
				s, err := tbl.Schedule(svc, &Packet{Proto: ProtoTCP, Src: src, Dst: ap("192.0.2.100:80"), State: TCPEstablished},
					func() *dest.Dest { called = true; return pick })
				if err != nil {
					continue
				}
				if invalid[s.Template] {
					t.Fatalf("Schedule used invalidated template %#x", uint64(s.Template))
				}
				if valid := s.Dest.Available() && !(eqt && s.Dest.Weight() == 0); !called && !valid {
					t.Fatalf("Schedule kept a template whose destination is not valid")
				}
			case 2:
				d := rapid.SampledFrom(dests).Draw(t, "changed")
				if rapid.Bool().Draw(t, "availability") {
					d.SetAvailable(!d.Available())
				} else {
					d.SetWeight(1 - d.Weight())
				}
			case 3:
				tbl.Expire(clk.Advance(time.Duration(rapid.IntRange(0, 400).Draw(t, "advance")) * time.Second))
			}
			for _, e := range entries(tbl) {
				if !e.Template() {
					continue
				}
				if e.Virtual.Port() == invalidPort {
					invalid[e.Ref] = true
					if e.DestAddr.Port() != invalidPort || e.Client.Port() != 0 {
						t.Fatalf("invalidated template with ports %v %v", e.Client, e.DestAddr)
					}
					k := Key{Proto: e.Proto, Client: e.Client, Virtual: e.Virtual, Template: true}
					if _, _, ok := tbl.Lookup(&k); ok {
						t.Fatalf("invalidated template matches Lookup")
					}
				} else if invalid[e.Ref] {
					t.Fatalf("invalidated template %v became valid again", e.Client)
				}
			}
		}
	})
}

// TestPropExpiryDeadline: expiry never removes an entry before its deadline
// and always removes it by deadline + Tick, for any tick, timeouts from
// milliseconds to weeks and any pattern of clock steps.
func TestPropExpiryDeadline(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tick := rapid.SampledFrom([]time.Duration{time.Millisecond, 7 * time.Millisecond, 100 * time.Millisecond, time.Second}).Draw(t, "tick")
		tbl, clk := newTestTable(t, func(c *Config) { c.Tick = tick; c.Shards = rapid.SampledFrom([]int{1, 4}).Draw(t, "shards") })
		deadline := map[Ref]time.Time{}
		cport := uint16(0)
		for range rapid.IntRange(1, 120).Draw(t, "steps") {
			switch rapid.IntRange(0, 3).Draw(t, "op") {
			case 0:
				// Templates via sync carry no control linkage, so they
				// expire like connections; timeouts up to 40 days
				// exercise every wheel level.
				cport++
				secs := rapid.SampledFrom([]uint32{1, 2, 59, 60, 61, 3600, 86400, 31 * 86400, 40 * 86400}).Draw(t, "secs")
				r, err := tbl.ApplySync(&SyncEntry{Proto: ProtoTCP, Client: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.10"), cport),
					Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.1:80"), Flags: FlagTemplate, Timeout: secs}, nil)
				if err != nil {
					t.Fatal(err)
				}
				deadline[r] = clk.Now().Add(time.Duration(secs) * time.Second)
			case 1:
				// Connections with millisecond-scale differences.
				cport++
				st := State(rapid.IntRange(0, int(tcpStates)-1).Draw(t, "state"))
				s, err := tbl.Schedule(&Service{Port: 80}, &Packet{Proto: ProtoTCP, Src: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.10"), cport),
					Dst: ap("192.0.2.100:80"), State: st}, fixed(newDest("198.51.100.1", 80, dest.Masq, 1)))
				if err != nil {
					t.Fatal(err)
				}
				dl, _ := DefaultTimeout(ProtoTCP, st)
				deadline[s.Conn] = clk.Now().Add(dl)
			case 2:
				// Timer restart.
				for r := range deadline {
					if _, err := tbl.Touch(r, false); err == nil {
						e := mustGet(t, tbl, r)
						deadline[r] = clk.Now().Add(e.Timeout)
					}
					break
				}
			case 3:
				step := rapid.SampledFrom([]time.Duration{0, time.Nanosecond, tick - 1, tick, tick + 1, 999 * time.Millisecond,
					time.Minute + 3*time.Millisecond, time.Hour, 7 * 24 * time.Hour, 45 * 24 * time.Hour}).Draw(t, "step")
				now := clk.Advance(step)
				tbl.Expire(now)
				for r, dl := range deadline {
					_, alive := tbl.Get(r)
					if !alive && now.Before(dl) {
						t.Fatalf("entry removed %v before its deadline", dl.Sub(now))
					}
					if alive && !now.Before(dl.Add(tick)) {
						t.Fatalf("entry alive %v after its deadline (tick %v)", now.Sub(dl), tick)
					}
					if !alive {
						delete(deadline, r)
					}
				}
			}
		}
	})
}
