package persist

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lbha/lbha/dest"
)

var (
	webSvc = &Service{Addr: ip("192.0.2.100"), Port: 80, Timeout: 300 * time.Second, Netmask: ip("255.255.255.0")}
	dnsSvc = &Service{Addr: ip("192.0.2.100"), Port: 53, Timeout: 120 * time.Second}
)

func tcpPkt(src string, s State) *Packet {
	return &Packet{Proto: ProtoTCP, Src: ap(src), Dst: ap("192.0.2.100:80"), State: s}
}

func udpPkt(src string) *Packet {
	return &Packet{Proto: ProtoUDP, Src: ap(src), Dst: ap("192.0.2.100:53")}
}

func mustSchedule(tb fataler, tbl *Table, svc *Service, pkt *Packet, sched func() *dest.Dest) Scheduled {
	tb.Helper()
	s, err := tbl.Schedule(svc, pkt, sched)
	if err != nil {
		tb.Fatalf("Schedule(%v): %v", pkt.Src, err)
	}
	return s
}

func TestTemplateTimerRestart(t *testing.T) {
	tbl, clk := newTestTable(t, nil)
	d := newDest("198.51.100.11", 80, dest.Masq, 1)
	s1 := mustSchedule(t, tbl, webSvc, tcpPkt("192.0.2.10:1000", TCPEstablished), fixed(d))

	clk.Advance(100 * time.Second)
	if _, err := tbl.Touch(s1.Conn, false); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, tbl, s1.Template).Expires; got != 200*time.Second {
		t.Errorf("after a packet of an existing connection the template expires in %v, want 200s (not restarted)", got)
	}
	if got := mustGet(t, tbl, s1.Conn).Expires; got != 900*time.Second {
		t.Errorf("the touched connection expires in %v, want 900s", got)
	}

	clk.Advance(50 * time.Second)
	s2 := mustSchedule(t, tbl, webSvc, tcpPkt("192.0.2.20:1000", TCPSynRecv), fixed(nil))
	if s2.Template != s1.Template {
		t.Fatal("second client of the /24 did not reuse the template")
	}
	tm := mustGet(t, tbl, s1.Template)
	if tm.Expires != 300*time.Second || tm.NControl != 2 {
		t.Errorf("after a new connection: template expires in %v with NControl %d, want 300s and 2", tm.Expires, tm.NControl)
	}
}

func TestTemplateKeepAlive(t *testing.T) {
	tbl, clk := newTestTable(t, nil)
	d := newDest("198.51.100.11", 80, dest.Masq, 1)
	s := mustSchedule(t, tbl, webSvc, tcpPkt("192.0.2.10:1000", TCPEstablished), fixed(d))

	step := func(by time.Duration) {
		t.Helper()
		tbl.Expire(clk.Advance(by))
	}
	step(300 * time.Second)
	tm, ok := tbl.Get(s.Template)
	if !ok {
		t.Fatal("template controlling a connection expired")
	}
	if tm.Timeout != 60*time.Second || tm.Expires != 60*time.Second || tm.NControl != 1 {
		t.Errorf("kept template: timeout %v expires %v NControl %d, want 60s 60s 1", tm.Timeout, tm.Expires, tm.NControl)
	}
	step(60 * time.Second)
	if _, ok := tbl.Get(s.Template); !ok {
		t.Fatal("template expired at its second deadline while still controlling")
	}

	// A new connection now restarts the timer with 60 s, the timeout the
	// kernel left in the template.
	step(30 * time.Second)
	s2 := mustSchedule(t, tbl, webSvc, tcpPkt("192.0.2.10:1001", TCPSynRecv), fixed(nil))
	if s2.Template != s.Template {
		t.Fatal("template not reused")
	}
	if got := mustGet(t, tbl, s.Template).Expires; got != 60*time.Second {
		t.Errorf("restarted kept template expires in %v, want 60s", got)
	}

	tbl.Remove(s.Conn)
	tbl.Remove(s2.Conn)
	if got := mustGet(t, tbl, s.Template).NControl; got != 0 {
		t.Fatalf("NControl after removing both connections = %d", got)
	}
	step(59 * time.Second)
	if _, ok := tbl.Get(s.Template); !ok {
		t.Fatal("template removed before its deadline")
	}
	step(time.Second)
	if _, ok := tbl.Get(s.Template); ok {
		t.Fatal("idle template not removed at its deadline")
	}
	if diff := cmp.Diff(counters{}, countersOf(d)); diff != "" {
		t.Errorf("dest counters (-want +got):\n%s", diff)
	}
}

func TestKeepAliveAfterLongGap(t *testing.T) {
	// Expire not called for a long time: the template keeps the 60 s phase
	// from its first deadline, in one step.
	tbl, clk := newTestTable(t, func(c *Config) { c.Shards = 1 })
	d := newDest("198.51.100.11", 80, dest.Masq, 1)
	s := mustSchedule(t, tbl, &Service{Port: 80, Timeout: 100 * time.Second}, tcpPkt("192.0.2.10:1000", TCPEstablished), fixed(d))
	tbl.Expire(clk.Advance(250 * time.Second))
	// Deadlines 100, 160, 220, 280: next at 280, 30 s from now.
	if got := mustGet(t, tbl, s.Template).Expires; got != 30*time.Second {
		t.Errorf("template expires in %v, want 30s", got)
	}
}

func TestTemplateValidity(t *testing.T) {
	tests := []struct {
		name      string
		eqt       bool // expire_quiescent_template
		change    func(d *dest.Dest)
		wantFirst bool // the second client still reaches the first destination
	}{
		{"unchanged", false, func(*dest.Dest) {}, true},
		{"destination removed", false, func(d *dest.Dest) { d.SetAvailable(false) }, false},
		{"weight 0, expire_quiescent_template off", false, func(d *dest.Dest) { d.SetWeight(0) }, true},
		{"weight 0, expire_quiescent_template on", true, func(d *dest.Dest) { d.SetWeight(0) }, false},
		{"overloaded", true, func(d *dest.Dest) { d.SetThresholds(1, 0); d.Bind(false, false) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, clk := newTestTable(t, func(c *Config) { c.ExpireQuiescentTemplate = tt.eqt })
			d1 := newDest("198.51.100.11", 80, dest.Masq, 1)
			d2 := newDest("198.51.100.12", 80, dest.Masq, 1)
			s1 := mustSchedule(t, tbl, webSvc, tcpPkt("192.0.2.10:1000", TCPEstablished), fixed(d1))
			tt.change(d1)
			if tt.name == "overloaded" && !d1.Overloaded() {
				t.Fatal("test setup: d1 not overloaded")
			}
			clk.Advance(time.Second)
			calls := 0
			s2 := mustSchedule(t, tbl, webSvc, tcpPkt("192.0.2.11:1000", TCPEstablished), func() *dest.Dest { calls++; return d2 })

			if tt.wantFirst {
				if s2.Dest != d1 || s2.Template != s1.Template || calls != 0 {
					t.Fatalf("got dest %v template same=%v scheduler calls %d; want the existing template's d1", s2.Dest, s2.Template == s1.Template, calls)
				}
				return
			}
			if s2.Dest != d2 || s2.Template == s1.Template || calls != 1 {
				t.Fatalf("got dest %v template same=%v scheduler calls %d; want a new template on d2", s2.Dest, s2.Template == s1.Template, calls)
			}
			old := mustGet(t, tbl, s1.Template)
			want := entryView{Proto: 6, Client: "192.0.2.0:0", Virtual: "192.0.2.100:65535", DestAddr: "198.51.100.11:65535",
				Flags: 0x1100, State: "ASSURED", Timeout: 300 * time.Second, NControl: 1}
			if diff := cmp.Diff(want, project(old)); diff != "" {
				t.Errorf("invalidated template (-want +got):\n%s", diff)
			}
			if old.Expires != 299*time.Second {
				t.Errorf("invalidated template timer restarted: expires in %v, want 299s", old.Expires)
			}
			// It still counts on d1 and keeps its connection.
			if diff := cmp.Diff(counters{Active: 1, Persist: 1}, countersOf(d1)); diff != "" {
				t.Errorf("d1 counters (-want +got):\n%s", diff)
			}
			if got := mustGet(t, tbl, s1.Conn).Control; got != s1.Template {
				t.Errorf("old connection lost its template")
			}
			// Later clients use the new template, never the old one.
			s3 := mustSchedule(t, tbl, webSvc, tcpPkt("192.0.2.12:1000", TCPEstablished), fixed(d1))
			if s3.Template != s2.Template {
				t.Errorf("third client: template %#x, want the new one %#x", uint64(s3.Template), uint64(s2.Template))
			}
			// The old template dies once its connection has gone.
			tbl.Remove(s1.Conn)
			tbl.Expire(clk.Advance(300 * time.Second))
			if _, ok := tbl.Get(s1.Template); ok {
				t.Error("invalidated template outlived its deadline and connections")
			}
			if diff := cmp.Diff(counters{}, countersOf(d1)); diff != "" {
				t.Errorf("d1 counters at the end (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAssured(t *testing.T) {
	d := newDest("198.51.100.11", 80, dest.Masq, 1)
	sctpSvc := &Service{Port: 80, Timeout: time.Minute}
	tests := []struct {
		name string
		svc  *Service
		pkt  *Packet
		then func(tbl *Table, conn Ref) error
		want State
	}{
		{"tcp syn only", webSvc, tcpPkt("192.0.2.10:1000", TCPSynRecv), nil, TemplateNone},
		{"tcp established at schedule", webSvc, tcpPkt("192.0.2.10:1000", TCPEstablished), nil, TemplateAssured},
		{"tcp established later", webSvc, tcpPkt("192.0.2.10:1000", TCPSynRecv),
			func(tbl *Table, c Ref) error { return tbl.SetState(c, TCPEstablished) }, TemplateAssured},
		{"tcp reply does not assure", webSvc, tcpPkt("192.0.2.10:1000", TCPSynRecv),
			func(tbl *Table, c Ref) error { _, err := tbl.Touch(c, true); return err }, TemplateNone},
		{"udp inbound only", dnsSvc, udpPkt("192.0.2.10:1000"),
			func(tbl *Table, c Ref) error { _, err := tbl.Touch(c, false); return err }, TemplateNone},
		{"udp reply", dnsSvc, udpPkt("192.0.2.10:1000"),
			func(tbl *Table, c Ref) error { _, err := tbl.Touch(c, true); return err }, TemplateAssured},
		{"sctp established", sctpSvc, &Packet{Proto: ProtoSCTP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:80"), State: SCTPInit1},
			func(tbl *Table, c Ref) error { return tbl.SetState(c, SCTPEstablished) }, TemplateAssured},
		{"assured survives the connection closing", webSvc, tcpPkt("192.0.2.10:1000", TCPEstablished),
			func(tbl *Table, c Ref) error { return tbl.SetState(c, TCPTimeWait) }, TemplateAssured},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, _ := newTestTable(t, nil)
			s := mustSchedule(t, tbl, tt.svc, tt.pkt, fixed(d))
			if tt.then != nil {
				if err := tt.then(tbl, s.Conn); err != nil {
					t.Fatal(err)
				}
			}
			if got := mustGet(t, tbl, s.Template).State; got != tt.want {
				t.Errorf("template state %d, want %d", got, tt.want)
			}
		})
	}
}

func TestStateTimeoutsAndCounters(t *testing.T) {
	type tc struct {
		proto   uint8
		state   State
		timeout time.Duration
		active  bool
		name    string
	}
	var tests []tc
	tcp := []struct {
		s      State
		secs   int
		active bool
	}{
		{TCPNone, 2, false}, {TCPEstablished, 900, true}, {TCPSynSent, 120, true}, {TCPSynRecv, 60, true},
		{TCPFinWait, 120, false}, {TCPTimeWait, 120, false}, {TCPClose, 10, false}, {TCPCloseWait, 60, false},
		{TCPLastAck, 30, false}, {TCPListen, 120, false}, {TCPSynAck, 120, true},
	}
	for _, c := range tcp {
		tests = append(tests, tc{ProtoTCP, c.s, time.Duration(c.secs) * time.Second, c.active, "TCP " + tcpNames[c.s]})
	}
	sctp := []int{2, 4, 61, 61, 61, 61, 61, 61, 900, 61, 61, 61, 4, 61}
	for s, secs := range sctp {
		tests = append(tests, tc{ProtoSCTP, State(s), time.Duration(secs) * time.Second, State(s) == SCTPEstablished, "SCTP " + sctpNames[s]})
	}
	tests = append(tests, tc{ProtoUDP, UDPNormal, 300 * time.Second, false, "UDP"})

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, clk := newTestTable(t, nil)
			d := newDest("198.51.100.11", 80, dest.Masq, 1)
			svc := &Service{Port: 80}
			start := TCPListen // inactive and not the state under test, mostly
			if tt.proto != ProtoTCP {
				start = 0
			}
			s := mustSchedule(t, tbl, svc, &Packet{Proto: tt.proto, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:80"), State: start}, fixed(d))
			clk.Advance(time.Second)
			if err := tbl.SetState(s.Conn, tt.state); err != nil {
				t.Fatal(err)
			}
			e := mustGet(t, tbl, s.Conn)
			if e.Timeout != tt.timeout || e.Expires != tt.timeout {
				t.Errorf("timeout %v expires %v, want %v", e.Timeout, e.Expires, tt.timeout)
			}
			want := counters{Inact: 1}
			if tt.active {
				want = counters{Active: 1}
			}
			if diff := cmp.Diff(want, countersOf(d)); diff != "" {
				t.Errorf("dest counters (-want +got):\n%s", diff)
			}
			if inactive := e.Flags&FlagInactive != 0; inactive == tt.active {
				t.Errorf("flags %v disagree with active=%v", e.Flags, tt.active)
			}
			if dflt, ok := DefaultTimeout(tt.proto, tt.state); !ok || dflt != tt.timeout {
				t.Errorf("DefaultTimeout = %v, %v", dflt, ok)
			}
		})
	}
}

func TestSetStateSequence(t *testing.T) {
	tbl, _ := newTestTable(t, nil)
	d := newDest("198.51.100.11", 80, dest.Route, 1)
	s := mustSchedule(t, tbl, &Service{Port: 80}, tcpPkt("192.0.2.10:1000", TCPNone), fixed(d))
	steps := []struct {
		s     State
		want  counters
		flags Flags
	}{
		{TCPNone, counters{Inact: 1}, 0x183},
		{TCPSynRecv, counters{Active: 1}, 0x083},
		{TCPEstablished, counters{Active: 1}, 0x083},
		{TCPFinWait, counters{Inact: 1}, 0x183},
		{TCPTimeWait, counters{Inact: 1}, 0x183},
		{TCPEstablished, counters{Active: 1}, 0x083},
		{TCPClose, counters{Inact: 1}, 0x183},
	}
	for i, st := range steps {
		if err := tbl.SetState(s.Conn, st.s); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(st.want, countersOf(d)); diff != "" {
			t.Errorf("step %d (%s) counters (-want +got):\n%s", i, tcpNames[st.s], diff)
		}
		if got := mustGet(t, tbl, s.Conn).Flags; got != st.flags {
			t.Errorf("step %d (%s) flags %#x, want %#x", i, tcpNames[st.s], uint32(got), uint32(st.flags))
		}
	}
	if _, err := tbl.Touch(s.Conn, true); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, tbl, s.Conn).Flags; got&FlagNoOutput != 0 {
		t.Errorf("a reply did not clear NOOUTPUT: %v", got)
	}
}

func TestSetStateErrors(t *testing.T) {
	tbl, _ := newTestTable(t, nil)
	d := newDest("198.51.100.11", 80, dest.Masq, 1)
	s := mustSchedule(t, tbl, webSvc, tcpPkt("192.0.2.10:1000", TCPSynRecv), fixed(d))
	tests := []struct {
		name string
		ref  Ref
		s    State
		want error
	}{
		{"zero ref", 0, TCPEstablished, ErrNotFound},
		{"stale ref", s.Conn + 1<<32, TCPEstablished, ErrNotFound},
		{"bad shard", Ref(0xFFFF) << 48, TCPEstablished, ErrNotFound},
		{"state out of range", s.Conn, 11, ErrInvalid},
		{"template", s.Template, TemplateAssured, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tbl.SetState(tt.ref, tt.s); !errors.Is(err, tt.want) {
				t.Errorf("SetState error %v, want %v", err, tt.want)
			}
		})
	}
}

func TestConfiguredTimeouts(t *testing.T) {
	tbl, _ := newTestTable(t, func(c *Config) {
		c.Timeouts = Timeouts{TCP: 2 * time.Hour, TCPFin: 30 * time.Second, UDP: 10 * time.Second}
	})
	d := newDest("198.51.100.11", 80, dest.Masq, 1)
	for _, tt := range []struct {
		pkt  *Packet
		want time.Duration
	}{
		{tcpPkt("192.0.2.10:1000", TCPEstablished), 2 * time.Hour},
		{tcpPkt("192.0.2.10:1001", TCPFinWait), 30 * time.Second},
		{tcpPkt("192.0.2.10:1002", TCPTimeWait), 120 * time.Second},
		{&Packet{Proto: ProtoUDP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:80")}, 10 * time.Second},
	} {
		s := mustSchedule(t, tbl, &Service{Port: 80}, tt.pkt, fixed(d))
		if got := mustGet(t, tbl, s.Conn).Timeout; got != tt.want {
			t.Errorf("%v state %d: timeout %v, want %v", tt.pkt.Proto, tt.pkt.State, got, tt.want)
		}
	}
}

func TestOnePacket(t *testing.T) {
	tests := []struct {
		name       string
		svc        Service
		proto      uint8
		wantStored bool
	}{
		{"udp persistent", Service{Port: 53, Timeout: time.Minute, OnePacket: true}, ProtoUDP, false},
		{"udp non-persistent", Service{Port: 53, OnePacket: true}, ProtoUDP, false},
		{"tcp ignores ops", Service{Port: 53, Timeout: time.Minute, OnePacket: true}, ProtoTCP, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, _ := newTestTable(t, nil)
			d := newDest("198.51.100.11", 53, dest.Masq, 1)
			var last Scheduled
			for i := range 3 {
				pkt := &Packet{Proto: tt.proto, Src: ap(fmt.Sprintf("192.0.2.10:%d", 1000+i)), Dst: ap("192.0.2.100:53")}
				last = mustSchedule(t, tbl, &tt.svc, pkt, fixed(d))
			}
			conns, tmpls := tbl.Len()
			wantTmpls := 0
			if tt.svc.Timeout > 0 {
				wantTmpls = 1
			}
			if tmpls != wantTmpls {
				t.Errorf("%d templates, want %d", tmpls, wantTmpls)
			}
			if !tt.wantStored {
				if conns != 0 || last.Conn != 0 {
					t.Errorf("one-packet connections stored: %d, last Ref %#x", conns, uint64(last.Conn))
				}
				if last.Flags&FlagOnePacket == 0 || last.Dest != d {
					t.Errorf("Scheduled = %+v, want ONE_PACKET to d", last)
				}
				want := counters{Persist: wantTmpls}
				if diff := cmp.Diff(want, countersOf(d)); diff != "" {
					t.Errorf("dest counters (-want +got):\n%s", diff)
				}
				if wantTmpls == 1 {
					tm := mustGet(t, tbl, last.Template)
					if tm.InPkts != 3 || tm.NControl != 0 {
						t.Errorf("template InPkts %d NControl %d, want 3 and 0", tm.InPkts, tm.NControl)
					}
				}
				return
			}
			if conns != 3 {
				t.Errorf("%d connections, want 3", conns)
			}
		})
	}
}

func TestExpireConnections(t *testing.T) {
	tbl, clk := newTestTable(t, nil)
	d := newDest("198.51.100.11", 80, dest.Masq, 1)
	s1 := mustSchedule(t, tbl, webSvc, tcpPkt("192.0.2.10:1000", TCPSynRecv), fixed(d))     // 60 s
	s2 := mustSchedule(t, tbl, webSvc, tcpPkt("192.0.2.10:1001", TCPEstablished), fixed(d)) // 900 s

	if n := tbl.Expire(clk.Advance(59 * time.Second)); n != 0 {
		t.Fatalf("Expire at 59s removed %d", n)
	}
	if n := tbl.Expire(clk.Advance(time.Second)); n != 1 {
		t.Fatalf("Expire at 60s removed %d, want 1", n)
	}
	if _, ok := tbl.Get(s1.Conn); ok {
		t.Error("SYN_RECV connection outlived 60s")
	}
	if got := mustGet(t, tbl, s2.Template).NControl; got != 1 {
		t.Errorf("template NControl %d after one connection expired, want 1", got)
	}
	if diff := cmp.Diff(counters{Active: 1, Persist: 1}, countersOf(d)); diff != "" {
		t.Errorf("dest counters (-want +got):\n%s", diff)
	}
	if err := tbl.SetState(s1.Conn, TCPEstablished); !errors.Is(err, ErrNotFound) {
		t.Error("SetState on an expired connection did not report ErrNotFound")
	}
}

func TestDrop(t *testing.T) {
	tests := []struct {
		name       string
		state      State
		others     int
		wantTmpl   bool
		useDrop    bool
		wantRemove bool
	}{
		{"drop, template not assured", TCPSynRecv, 0, false, true, true},
		{"drop, template assured", TCPEstablished, 0, true, true, true},
		{"drop, template controls another", TCPSynRecv, 1, true, true, true},
		{"remove keeps an idle template", TCPSynRecv, 0, true, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, _ := newTestTable(t, nil)
			d := newDest("198.51.100.11", 80, dest.Masq, 1)
			s := mustSchedule(t, tbl, webSvc, tcpPkt("192.0.2.10:1000", tt.state), fixed(d))
			for i := range tt.others {
				mustSchedule(t, tbl, webSvc, tcpPkt(fmt.Sprintf("192.0.2.10:%d", 2000+i), TCPSynRecv), fixed(d))
			}
			var ok bool
			if tt.useDrop {
				ok = tbl.Drop(s.Conn)
			} else {
				ok = tbl.Remove(s.Conn)
			}
			if ok != tt.wantRemove {
				t.Fatalf("removal reported %v", ok)
			}
			if _, got := tbl.Get(s.Template); got != tt.wantTmpl {
				t.Errorf("template present = %v, want %v", got, tt.wantTmpl)
			}
			if tbl.Remove(s.Conn) {
				t.Error("second removal of the same Ref reported success")
			}
		})
	}
}

func TestRemoveControllingTemplate(t *testing.T) {
	tbl, _ := newTestTable(t, nil)
	d := newDest("198.51.100.11", 80, dest.Masq, 1)
	s := mustSchedule(t, tbl, webSvc, tcpPkt("192.0.2.10:1000", TCPEstablished), fixed(d))
	if !tbl.Remove(s.Template) {
		t.Fatal("Remove(template) found nothing")
	}
	tm, ok := tbl.Get(s.Template)
	if !ok || tm.Timeout != time.Minute || tm.Expires != time.Minute {
		t.Fatalf("template controlling a connection: present %v timeout %v expires %v; want kept 60s", ok, tm.Timeout, tm.Expires)
	}
}

func TestObserver(t *testing.T) {
	tbl, clk := newTestTable(t, nil)
	var got []string
	tbl.SetObserver(func(ev Event) {
		kind := "conn"
		if ev.Entry.Template() {
			kind = "tmpl"
		}
		got = append(got, fmt.Sprintf("%s %s %s sync=%v", ev.Kind, kind, ev.Entry.StateName(), ev.Sync))
	})
	d := newDest("198.51.100.11", 80, dest.Masq, 1)
	s := mustSchedule(t, tbl, webSvc, tcpPkt("192.0.2.10:1000", TCPSynRecv), fixed(d))
	if err := tbl.SetState(s.Conn, TCPEstablished); err != nil {
		t.Fatal(err)
	}
	if _, err := tbl.Touch(s.Conn, false); err != nil { // no event
		t.Fatal(err)
	}
	tbl.Expire(clk.Advance(300 * time.Second)) // template kept alive
	tbl.Remove(s.Conn)
	tbl.Expire(clk.Advance(60 * time.Second))
	if _, err := tbl.ApplySync(&SyncEntry{Proto: ProtoUDP, Client: ap("192.0.2.9:53"), Virtual: ap("192.0.2.100:53"),
		DestAddr: ap("198.51.100.11:53")}, nil); err != nil {
		t.Fatal(err)
	}
	tbl.SetObserver(nil)
	tbl.Remove(s.Conn)
	want := []string{
		"created tmpl NONE sync=false",
		"created conn SYN_RECV sync=false",
		"updated conn ESTABLISHED sync=false",
		"updated tmpl ASSURED sync=false",
		"updated tmpl ASSURED sync=false",
		"removed conn ESTABLISHED sync=false",
		"removed tmpl ASSURED sync=false",
		"created conn UDP sync=true",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestRange(t *testing.T) {
	tbl, _ := newTestTable(t, func(c *Config) { c.Shards = 2 })
	d := newDest("198.51.100.11", 80, dest.Masq, 1)
	const n = 1000 // several Range batches per shard
	for i := range n {
		mustSchedule(t, tbl, &Service{Port: 80}, tcpPkt(fmt.Sprintf("192.0.2.%d:%d", i%250+1, 1000+i), TCPSynRecv), fixed(d))
	}
	seen := map[Ref]bool{}
	tbl.Range(func(e Entry) bool { seen[e.Ref] = true; return true })
	if len(seen) != n {
		t.Errorf("Range saw %d entries, want %d", len(seen), n)
	}
	count := 0
	tbl.Range(func(Entry) bool { count++; return count < 10 })
	if count != 10 {
		t.Errorf("Range did not stop: %d calls", count)
	}
	if c, tm := tbl.Len(); c != n || tm != 0 {
		t.Errorf("Len = %d, %d", c, tm)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"defaults", DefaultConfig(), true},
		{"shards not power of two", Config{Shards: 3}, false},
		{"too many shards", Config{Shards: 8192}, false},
		{"tick too small", Config{Tick: time.Microsecond}, false},
		{"negative max", Config{MaxEntries: -1}, false},
		{"negative timeout", Config{Timeouts: Timeouts{UDP: -time.Second}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if _, err := New(tt.cfg); (err == nil) != tt.ok {
				t.Errorf("New() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestStateNames(t *testing.T) {
	tests := []struct {
		proto uint8
		flags Flags
		s     State
		want  string
	}{
		{ProtoTCP, FlagTemplate, TemplateNone, "NONE"},
		{ProtoIP, FlagTemplate, TemplateAssured, "ASSURED"},
		{ProtoTCP, FlagTemplate, 2, "ERR!"},
		{ProtoTCP, 0, TCPSynAck, "SYNACK"},
		{ProtoTCP, 0, 11, "ERR!"},
		{ProtoUDP, 0, UDPNormal, "UDP"},
		{ProtoSCTP, 0, SCTPCookieEchoed, "C-ECHOED"},
		{ProtoSCTP, 0, SCTPShutdownAckSent, "S-ACK-SENT"},
		{ProtoAH, 0, 0, "ERR!"},
		{ProtoIP, 0, 0, "NONE"},
	}
	for _, tt := range tests {
		if got := StateName(tt.proto, tt.flags, tt.s); got != tt.want {
			t.Errorf("StateName(%d, %v, %d) = %q, want %q", tt.proto, tt.flags, tt.s, got, tt.want)
		}
	}
	if got, want := Flags(0x11183).String(), "Route|NOOUTPUT|INACTIVE|TEMPLATE|NFCT"; got != want {
		t.Errorf("Flags.String() = %q, want %q", got, want)
	}
}
