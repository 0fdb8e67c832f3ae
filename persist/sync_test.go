package persist

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lbha/lbha/dest"
)

// services is a fake backup configuration for Resolver.
type services map[string]*dest.Dest // "virtual dest" -> destination

func (s services) resolve(q DestQuery) *dest.Dest {
	return s[q.Virtual.String()+" "+q.DestAddr.String()]
}

func TestApplySyncNew(t *testing.T) {
	dr := newDest("198.51.100.12", 80, dest.Route, 1)
	nat := newDest("198.51.100.11", 80, dest.Masq, 1)
	cfg := services{
		"192.0.2.100:80 198.51.100.12:80": dr,
		"192.0.2.100:81 198.51.100.11:80": nat,
	}
	tests := []struct {
		name     string
		in       SyncEntry
		want     entryView
		wantDest *dest.Dest
		wantCnt  counters
		wantPkts uint32
	}{
		{
			name: "DR template from the capture",
			in: SyncEntry{Proto: ProtoTCP, Client: ap("192.0.2.10:0"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.12:80"),
				Flags: 0x1183, State: TemplateAssured, Timeout: 300},
			want: entryView{Proto: 6, Client: "192.0.2.10:0", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.12:80",
				Flags: 0x11A3, State: "ASSURED", Timeout: 300 * time.Second},
			wantDest: dr,
			wantCnt:  counters{Persist: 1},
		},
		{
			name: "established DR connection",
			in: SyncEntry{Proto: ProtoTCP, Client: ap("192.0.2.10:57780"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.12:80"),
				Flags: 0x0083, State: TCPEstablished, Timeout: 900},
			want: entryView{Proto: 6, Client: "192.0.2.10:57780", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.12:80",
				Flags: 0x00A3, State: "ESTABLISHED", Timeout: 900 * time.Second},
			wantDest: dr,
			wantCnt:  counters{Active: 1},
		},
		{
			name: "method and NOOUTPUT come from the local destination",
			in: SyncEntry{Proto: ProtoTCP, Client: ap("192.0.2.10:57780"), Virtual: ap("192.0.2.100:81"), DestAddr: ap("198.51.100.11:80"),
				Flags: 0x0183, State: TCPFinWait, Timeout: 120},
			want: entryView{Proto: 6, Client: "192.0.2.10:57780", Virtual: "192.0.2.100:81", DestAddr: "198.51.100.11:80",
				Flags: 0x0120, State: "FIN_WAIT", Timeout: 120 * time.Second},
			wantDest: nat,
			wantCnt:  counters{Inact: 1},
		},
		{
			name: "unbound: no such service here",
			in: SyncEntry{Proto: ProtoUDP, Client: ap("192.0.5.10:46701"), Virtual: ap("192.0.2.100:53"), DestAddr: ap("198.51.100.12:53"),
				Flags: 0x0100, State: UDPNormal, Timeout: 300},
			want: entryView{Proto: 17, Client: "192.0.5.10:46701", Virtual: "192.0.2.100:53", DestAddr: "198.51.100.12:53",
				Flags: 0x0120, State: "UDP", Timeout: 300 * time.Second},
		},
		{
			name: "v0 template: no timeout, 180 s",
			in: SyncEntry{Proto: ProtoTCP, Client: ap("192.0.3.0:0"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.11:80"),
				Flags: 0x1100, State: TemplateAssured},
			want: entryView{Proto: 6, Client: "192.0.3.0:0", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.11:80",
				Flags: 0x1120, State: "ASSURED", Timeout: 180 * time.Second},
		},
		{
			name: "v0 connection: the state's default timeout",
			in: SyncEntry{Proto: ProtoTCP, Client: ap("192.0.3.10:53234"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.11:80"),
				Flags: 0x0100, State: TCPTimeWait},
			want: entryView{Proto: 6, Client: "192.0.3.10:53234", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.11:80",
				Flags: 0x0120, State: "TIME_WAIT", Timeout: 120 * time.Second},
		},
		{
			name: "AH has no timeout table: 180 s",
			in: SyncEntry{Proto: ProtoAH, Client: ap("192.0.3.10:500"), Virtual: ap("192.0.2.100:500"), DestAddr: ap("198.51.100.11:500"),
				Flags: 0x0100},
			want: entryView{Proto: ProtoAH, Client: "192.0.3.10:500", Virtual: "192.0.2.100:500", DestAddr: "198.51.100.11:500",
				Flags: 0x0120, State: "ERR!", Timeout: 180 * time.Second},
		},
		{
			name: "fwmark IPv6 template with its mark",
			in: SyncEntry{Proto: ProtoIP, Client: ap("[2001:db8:1::]:0"), Virtual: ap("[0:7::]:0"), DestAddr: ap("[2001:db8:b::11]:0"),
				Flags: 0x1100, Fwmark: 7, Timeout: 600},
			want: entryView{Proto: 0, Client: "[2001:db8:1::]:0", Virtual: "[0:7::]:0", DestAddr: "[2001:db8:b::11]:0",
				Flags: 0x1120, State: "NONE", Fwmark: 7, Timeout: 600 * time.Second},
		},
		{
			name: "sip template keeps its Call-ID",
			in: SyncEntry{Proto: ProtoUDP, Client: ap("0.0.0.0:0"), Virtual: ap("192.0.2.100:5060"), DestAddr: ap("198.51.100.12:5060"),
				Flags: 0x1100, Timeout: 60, PEData: []byte("3848276298220188511@192.0.2.10")},
			want: entryView{Proto: 17, Client: "0.0.0.0:0", Virtual: "192.0.2.100:5060", DestAddr: "198.51.100.12:5060",
				Flags: 0x1120, State: "NONE", Timeout: 60 * time.Second, PEData: "3848276298220188511@192.0.2.10"},
		},
		{
			name: "huge timeout is clamped",
			in: SyncEntry{Proto: ProtoTCP, Client: ap("192.0.3.0:0"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.11:80"),
				Flags: 0x1100, Timeout: 0xFFFFFFFF},
			want: entryView{Proto: 6, Client: "192.0.3.0:0", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.11:80",
				Flags: 0x1120, State: "NONE", Timeout: maxTimeoutMillis * time.Millisecond},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := map[*dest.Dest]counters{dr: countersOf(dr), nat: countersOf(nat)}
			tbl, _ := newTestTable(t, nil)
			r, err := tbl.ApplySync(&tt.in, cfg.resolve)
			if err != nil {
				t.Fatal(err)
			}
			e := mustGet(t, tbl, r)
			if diff := cmp.Diff(tt.want, project(e)); diff != "" {
				t.Errorf("entry (-want +got):\n%s", diff)
			}
			if e.Dest != tt.wantDest {
				t.Errorf("bound to %v, want %v", e.Dest, tt.wantDest)
			}
			if e.InPkts != 3 || e.Control != 0 || e.Expires != e.Timeout {
				t.Errorf("InPkts %d Control %#x Expires %v; want 3, none, the timeout", e.InPkts, uint64(e.Control), e.Expires)
			}
			if tt.wantDest != nil {
				b := before[tt.wantDest]
				got := countersOf(tt.wantDest)
				delta := counters{got.Active - b.Active, got.Inact - b.Inact, got.Persist - b.Persist}
				if diff := cmp.Diff(tt.wantCnt, delta); diff != "" {
					t.Errorf("dest counter change (-want +got):\n%s", diff)
				}
				// Leave the shared destinations clean for the next case.
				tbl.Remove(r)
			}
		})
	}
}

func TestApplySyncUpdate(t *testing.T) {
	conn := SyncEntry{Proto: ProtoTCP, Client: ap("192.0.2.10:40000"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.11:80"),
		Flags: 0x0000, State: TCPEstablished, Timeout: 900}
	tests := []struct {
		name     string
		update   func(s *SyncEntry)
		wantSame bool // the update hit the existing entry
		want     entryView
		wantOld  counters // counters of the first destination afterwards
		wantNew  counters // counters of the second destination afterwards
		ignored  bool
	}{
		{
			name:     "INACTIVE set moves the counters",
			update:   func(s *SyncEntry) { s.Flags = 0x0100; s.State = TCPTimeWait; s.Timeout = 120 },
			wantSame: true,
			want: entryView{Proto: 6, Client: "192.0.2.10:40000", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.11:80",
				Flags: 0x0120, State: "TIME_WAIT", Timeout: 120 * time.Second},
			wantOld: counters{Inact: 1},
		},
		{
			name:     "flags outside 0x0700 are kept",
			update:   func(s *SyncEntry) { s.Flags = 0x0803 | 0x0600 },
			wantSame: true,
			want: entryView{Proto: 6, Client: "192.0.2.10:40000", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.11:80",
				Flags: 0x0620, State: "ESTABLISHED", Timeout: 900 * time.Second},
			wantOld: counters{Active: 1},
		},
		{
			name:   "other destination, active: replaced",
			update: func(s *SyncEntry) { s.DestAddr = ap("198.51.100.12:80") },
			want: entryView{Proto: 6, Client: "192.0.2.10:40000", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.12:80",
				Flags: 0x0020, State: "ESTABLISHED", Timeout: 900 * time.Second},
			wantOld: counters{},
			wantNew: counters{Active: 1},
		},
		{
			name:    "other destination, INACTIVE: stale expiry notice, ignored",
			update:  func(s *SyncEntry) { s.DestAddr = ap("198.51.100.12:80"); s.Flags = 0x0100; s.State = TCPClose },
			ignored: true,
			want: entryView{Proto: 6, Client: "192.0.2.10:40000", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.11:80",
				Flags: 0x0020, State: "ESTABLISHED", Timeout: 900 * time.Second},
			wantOld: counters{Active: 1},
		},
		{
			name:     "timeout 0 takes the new state's default",
			update:   func(s *SyncEntry) { s.Timeout = 0; s.State = TCPCloseWait; s.Flags = 0x0100 },
			wantSame: true,
			want: entryView{Proto: 6, Client: "192.0.2.10:40000", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.11:80",
				Flags: 0x0120, State: "CLOSE_WAIT", Timeout: 60 * time.Second},
			wantOld: counters{Inact: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d1 := newDest("198.51.100.11", 80, dest.Masq, 1)
			d2 := newDest("198.51.100.12", 80, dest.Masq, 1)
			cfg := services{"192.0.2.100:80 198.51.100.11:80": d1, "192.0.2.100:80 198.51.100.12:80": d2}
			tbl, clk := newTestTable(t, nil)
			first, err := tbl.ApplySync(&conn, cfg.resolve)
			if err != nil {
				t.Fatal(err)
			}
			clk.Advance(10 * time.Second)
			upd := conn
			tt.update(&upd)
			r, err := tbl.ApplySync(&upd, cfg.resolve)
			if err != nil {
				t.Fatal(err)
			}
			if tt.ignored {
				if r != 0 {
					t.Errorf("ignored update returned Ref %#x", uint64(r))
				}
				r = first
			}
			if tt.wantSame && r != first {
				t.Errorf("update created a new entry")
			}
			e := mustGet(t, tbl, r)
			if diff := cmp.Diff(tt.want, project(e)); diff != "" {
				t.Errorf("entry (-want +got):\n%s", diff)
			}
			if !tt.ignored && e.Expires != e.Timeout {
				t.Errorf("timer not restarted: expires %v of %v", e.Expires, e.Timeout)
			}
			if diff := cmp.Diff(tt.wantOld, countersOf(d1)); diff != "" {
				t.Errorf("first destination (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantNew, countersOf(d2)); diff != "" {
				t.Errorf("second destination (-want +got):\n%s", diff)
			}
			if c, _ := tbl.Len(); c != 1 {
				t.Errorf("%d connections, want 1", c)
			}
		})
	}
}

func TestApplySyncRejects(t *testing.T) {
	base := SyncEntry{Proto: ProtoTCP, Client: ap("192.0.2.10:40000"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.11:80")}
	tests := []struct {
		name string
		mod  func(s *SyncEntry)
	}{
		{"template state 2", func(s *SyncEntry) { s.Flags = FlagTemplate; s.State = 2 }},
		{"TCP state 11", func(s *SyncEntry) { s.State = 11 }},
		{"UDP state 1", func(s *SyncEntry) { s.Proto = ProtoUDP; s.State = 1 }},
		{"unknown protocol", func(s *SyncEntry) { s.Proto = 99 }},
		{"no client", func(s *SyncEntry) { s.Client = netip.AddrPort{} }},
		{"families differ", func(s *SyncEntry) { s.DestAddr = ap("[2001:db8::1]:80") }},
		{"PE data too long", func(s *SyncEntry) { s.Flags = FlagTemplate; s.PEData = make([]byte, 256) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, _ := newTestTable(t, nil)
			in := base
			tt.mod(&in)
			if _, err := tbl.ApplySync(&in, nil); !errors.Is(err, ErrInvalid) {
				t.Errorf("ApplySync error %v, want ErrInvalid", err)
			}
			if c, tm := tbl.Len(); c+tm != 0 {
				t.Errorf("rejected entry stored")
			}
		})
	}
}

func TestApplySyncTemplates(t *testing.T) {
	tbl, clk := newTestTable(t, nil)
	sip := func(callID string, st State) *SyncEntry {
		return &SyncEntry{Proto: ProtoUDP, Client: ap("0.0.0.0:0"), Virtual: ap("192.0.2.100:5060"), DestAddr: ap("198.51.100.12:5060"),
			Flags: 0x1100, State: st, Timeout: 60, PEData: []byte(callID)}
	}
	r1, err := tbl.ApplySync(sip("call-1", TemplateNone), nil)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := tbl.ApplySync(sip("call-2", TemplateNone), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r1 == r2 {
		t.Fatal("templates differing only by Call-ID were merged")
	}
	clk.Advance(30 * time.Second)
	again, err := tbl.ApplySync(sip("call-1", TemplateAssured), nil)
	if err != nil {
		t.Fatal(err)
	}
	if again != r1 {
		t.Fatal("same Call-ID did not update the existing template")
	}
	e := mustGet(t, tbl, r1)
	if e.State != TemplateAssured || e.Expires != 60*time.Second {
		t.Errorf("updated template state %d expires %v", e.State, e.Expires)
	}
	// A template whose destination differs is still the same template.
	moved := sip("call-2", TemplateNone)
	moved.DestAddr = ap("198.51.100.11:5060")
	if r, err := tbl.ApplySync(moved, nil); err != nil || r != r2 {
		t.Errorf("template with another daddr: %#x, %v; want update of %#x", uint64(r), err, uint64(r2))
	}
	if got := mustGet(t, tbl, r2).DestAddr; got != ap("198.51.100.12:5060") {
		t.Errorf("template update changed daddr to %v; the kernel keeps it", got)
	}
	// A local new connection finds the synced template after take-over and
	// is linked to it then.
	d := newDest("198.51.100.12", 5060, dest.Masq, 1)
	cfg := services{"192.0.2.100:5060 198.51.100.12:5060": d}
	if n := tbl.Rebind(cfg.resolve); n != 2 {
		t.Fatalf("Rebind bound %d entries, want 2", n)
	}
	svc := &Service{Port: 5060, Timeout: time.Minute, Netmask: ip("0.0.0.0"), PE: true}
	s := mustSchedule(t, tbl, svc, &Packet{Proto: ProtoUDP, Src: ap("192.0.2.10:5060"), Dst: ap("192.0.2.100:5060"), PEData: []byte("call-1")},
		func() *dest.Dest { t.Fatal("scheduler called despite a synced template"); return nil })
	if s.Template != r1 || s.Dest != d {
		t.Errorf("take-over: template %#x dest %v; want %#x %v", uint64(s.Template), s.Dest, uint64(r1), d)
	}
}

func TestRebind(t *testing.T) {
	tbl, _ := newTestTable(t, nil)
	in := []SyncEntry{
		{Proto: ProtoTCP, Client: ap("192.0.2.10:0"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.12:80"), Flags: 0x1100, Timeout: 300},
		{Proto: ProtoTCP, Client: ap("192.0.2.10:4000"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.12:80"), Flags: 0x0000, State: TCPEstablished, Timeout: 900},
		{Proto: ProtoTCP, Client: ap("192.0.2.10:4001"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.12:80"), Flags: 0x0100, State: TCPFinWait, Timeout: 120},
		{Proto: ProtoTCP, Client: ap("192.0.2.10:4002"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.13:80"), Flags: 0x0000, State: TCPEstablished, Timeout: 900},
	}
	for i := range in {
		if _, err := tbl.ApplySync(&in[i], services{}.resolve); err != nil {
			t.Fatal(err)
		}
	}
	d := newDest("198.51.100.12", 80, dest.Route, 1)
	cfg := services{"192.0.2.100:80 198.51.100.12:80": d}
	if n := tbl.Rebind(cfg.resolve); n != 3 {
		t.Errorf("Rebind bound %d, want 3", n)
	}
	if diff := cmp.Diff(counters{Active: 1, Inact: 1, Persist: 1}, countersOf(d)); diff != "" {
		t.Errorf("dest counters (-want +got):\n%s", diff)
	}
	flags := map[uint16]Flags{}
	for _, e := range entries(tbl) {
		flags[e.Client.Port()] = e.Flags
	}
	want := map[uint16]Flags{0: 0x11A3, 4000: 0x00A3, 4001: 0x01A3, 4002: 0x0020}
	if diff := cmp.Diff(want, flags); diff != "" {
		t.Errorf("flags by client port (-want +got):\n%s", diff)
	}
	if n := tbl.Rebind(cfg.resolve); n != 0 {
		t.Errorf("second Rebind bound %d, want 0", n)
	}
}

func TestApplySyncBindsOnUpdate(t *testing.T) {
	// The kernel retries binding an unbound entry at its next sync message.
	tbl, _ := newTestTable(t, nil)
	in := SyncEntry{Proto: ProtoTCP, Client: ap("192.0.2.10:4000"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.12:80"),
		State: TCPEstablished, Timeout: 900}
	r, err := tbl.ApplySync(&in, services{}.resolve)
	if err != nil {
		t.Fatal(err)
	}
	d := newDest("198.51.100.12", 80, dest.Masq, 1)
	if _, err := tbl.ApplySync(&in, services{"192.0.2.100:80 198.51.100.12:80": d}.resolve); err != nil {
		t.Fatal(err)
	}
	if e := mustGet(t, tbl, r); e.Dest != d {
		t.Errorf("entry not bound on update")
	}
	if diff := cmp.Diff(counters{Active: 1}, countersOf(d)); diff != "" {
		t.Errorf("dest counters (-want +got):\n%s", diff)
	}
}

// A full resync gives the remaining lifetime: the timer runs for it, while
// the entry keeps its configured timeout for later restarts.
func TestApplySyncRemainingLifetime(t *testing.T) {
	tbl, clk := newTestTable(t, nil)
	s := SyncEntry{Proto: ProtoTCP, Client: ap("192.0.2.0:0"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.12:80"),
		Flags: 0x1100, State: TemplateNone, Timeout: 300, Expires: 20 * time.Second}
	ref, err := tbl.ApplySync(&s, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := tbl.Get(ref)
	if !ok || e.Timeout != 300*time.Second || e.Expires > 20*time.Second || e.Expires < 19*time.Second {
		t.Fatalf("after apply: timeout %v expires %v", e.Timeout, e.Expires)
	}
	clk.Advance(21 * time.Second)
	tbl.Expire(clk.Now())
	if _, ok := tbl.Get(ref); ok {
		t.Fatal("the template outlived its remaining lifetime")
	}
	// An Expires beyond the timeout is capped by the timeout.
	s.Expires = time.Hour
	ref, _ = tbl.ApplySync(&s, nil)
	if e, _ := tbl.Get(ref); e.Expires > 300*time.Second {
		t.Fatalf("expires %v beyond the configured 300 s", e.Expires)
	}
}
