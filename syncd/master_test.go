package syncd

import (
	"context"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbha/lbha/persist"
	"github.com/lbha/lbha/syncd/wire"
)

type sentKey struct {
	Client   string
	Template bool
}

func keysOf(es []wire.Entry) []sentKey {
	out := make([]sentKey, 0, len(es))
	for _, e := range es {
		out = append(out, sentKey{netip.AddrPortFrom(e.CAddr, e.CPort).String(), e.IsTemplate()})
	}
	sortKeys(out)
	return out
}

func sortKeys(k []sentKey) {
	sort.Slice(k, func(i, j int) bool {
		if k[i].Client != k[j].Client {
			return k[i].Client < k[j].Client
		}
		return !k[i].Template && k[j].Template
	})
}

func tableKeys(tbl *persist.Table) []sentKey {
	var out []sentKey
	tbl.Range(func(e persist.Entry) bool {
		out = append(out, sentKey{e.Client.String(), e.Template()})
		return true
	})
	sortKeys(out)
	return out
}

func TestMasterSendsChanges(t *testing.T) {
	tbl := newTable(t)
	tx := newFakeSender()
	m := startMaster(t, MasterConfig{RefreshInterval: -1}, tbl, tx)

	const clients = 100
	for i := range clients {
		schedule(t, tbl, i, i%2 == 1)
	}
	got := tx.collect(t, 2*clients, 2*time.Second)
	if diff := cmp.Diff(tableKeys(tbl), keysOf(got)); diff != "" {
		t.Fatalf("entries sent differ from the table (-want +got):\n%s", diff)
	}
	for _, e := range got {
		if e.IsTemplate() && e.Timeout != 360 {
			t.Errorf("template %v sent with timeout %d, want the configured 360", e.CAddr, e.Timeout)
		}
		if e.Flags&wire.FlagHashed != 0 {
			t.Errorf("entry %v sent with HASHED", e.CAddr)
		}
	}

	t.Run("what the sync protocol applied is not sent again", func(t *testing.T) {
		_, err := tbl.ApplySync(&persist.SyncEntry{Proto: persist.ProtoTCP, Client: ap("192.0.2.99:0"), Virtual: ap("192.0.2.100:80"),
			DestAddr: ap("198.51.100.11:80"), Flags: persist.FlagTemplate, Timeout: 100}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tx.quiet(t, 50*time.Millisecond)
	})
	t.Run("removals are not sent", func(t *testing.T) {
		s := schedule(t, tbl, 5000, false)
		tx.collect(t, 2, time.Second)
		tbl.Drop(s.Conn)
		if _, ok := tbl.Get(s.Conn); ok {
			t.Fatal("Drop left the connection")
		}
		tx.quiet(t, 50*time.Millisecond)
	})
	st := m.Stats()
	if st.EntriesSent != 2*clients+2 || st.DatagramsSent == 0 || st.SendErrors != 0 {
		t.Errorf("stats %+v: want %d entries sent", st, 2*clients+2)
	}
}

func TestMasterCoalesces(t *testing.T) {
	tbl := newTable(t)
	tx := newFakeSender()
	startMaster(t, MasterConfig{RefreshInterval: -1, FlushInterval: 200 * time.Millisecond}, tbl, tx)
	s := schedule(t, tbl, 1, false)
	for _, st := range []persist.State{persist.TCPEstablished, persist.TCPFinWait} {
		if err := tbl.SetState(s.Conn, st); err != nil {
			t.Fatal(err)
		}
	}
	got := tx.collect(t, 2, 2*time.Second)
	tx.quiet(t, 300*time.Millisecond)
	want := map[bool]uint16{false: uint16(persist.TCPFinWait), true: uint16(persist.TemplateAssured)}
	if len(got) != 2 {
		t.Fatalf("sent %d entries, want the latest state of each of 2", len(got))
	}
	for _, e := range got {
		if e.State != want[e.IsTemplate()] {
			t.Errorf("template=%v sent in state %d, want the latest, %d", e.IsTemplate(), e.State, want[e.IsTemplate()])
		}
	}
}

func TestMasterWithdrawsRemoved(t *testing.T) {
	tbl := newTable(t)
	tx := newFakeSender()
	startMaster(t, MasterConfig{RefreshInterval: -1, FlushInterval: 100 * time.Millisecond}, tbl, tx)
	s := schedule(t, tbl, 1, false)
	tbl.Drop(s.Conn) // takes the unassured template with it
	if n := tableLen(tbl); n != 0 {
		t.Fatalf("table holds %d entries after Drop", n)
	}
	tx.quiet(t, 300*time.Millisecond)
}

func TestMasterFlushBound(t *testing.T) {
	t.Run("a lone change waits at most FlushInterval", func(t *testing.T) {
		tbl := newTable(t)
		tx := newFakeSender()
		const interval = 40 * time.Millisecond
		startMaster(t, MasterConfig{RefreshInterval: -1, FlushInterval: interval}, tbl, tx)
		start := time.Now()
		schedule(t, tbl, 1, false)
		got := tx.collect(t, 2, 2*time.Second)
		took := time.Since(start)
		if len(got) != 2 {
			t.Fatalf("got %d entries", len(got))
		}
		if took < interval*3/4 || took > interval+200*time.Millisecond {
			t.Errorf("sent after %v, want about %v", took, interval)
		}
	})
	t.Run("a full datagram goes at once, the rest at Close", func(t *testing.T) {
		tbl := newTable(t)
		tx := newFakeSender()
		m, err := NewMaster(MasterConfig{RefreshInterval: -1, FlushInterval: time.Hour, Logger: quietLog}, tbl, tx)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error)
		go func() { done <- m.Run(context.Background()) }()
		waitRunning(t, func() bool { m.runMu.Lock(); defer m.runMu.Unlock(); return m.cancel != nil })
		time.Sleep(5 * time.Millisecond)
		for i := range 30 { // 60 entries; (1472-8)/36 = 40 fit in one datagram
			schedule(t, tbl, i, false)
		}
		first := tx.collect(t, 40, 2*time.Second)
		if len(first) != 40 {
			t.Fatalf("first datagram: %d entries, want 40 at once", len(first))
		}
		tx.quiet(t, 100*time.Millisecond)
		m.Close()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if rest := tx.collect(t, 20, time.Second); len(rest) != 20 {
			t.Fatalf("Close sent %d queued entries, want 20", len(rest))
		}
	})
}

func TestMasterDatagramSize(t *testing.T) {
	a, err := NewAuth(make([]byte, 32), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		cfg    MasterConfig
		maxLen int
	}{
		{"kernel default", MasterConfig{}, 1472},
		{"configured maxlen", MasterConfig{MaxLen: 200}, 200},
		{"authenticated: the trailer fits in the budget", MasterConfig{Auth: a}, 1472},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl := newTable(t)
			tx := newFakeSender()
			tc.cfg.RefreshInterval = -1
			startMaster(t, tc.cfg, tbl, tx)
			for i := range 100 {
				schedule(t, tbl, i, i%3 == 0)
			}
			var ver *verifier
			if tc.cfg.Auth != nil {
				ver = newVerifier(tc.cfg.Auth)
			}
			n := 0
			for n < 200 {
				select {
				case b := <-tx.ch:
					if len(b) > tc.maxLen {
						t.Fatalf("datagram of %d bytes, budget %d", len(b), tc.maxLen)
					}
					if ver != nil {
						var res authResult
						if b, res = ver.verify(b); res != authOK {
							t.Fatalf("verify: %v", res)
						}
					}
					m, problems, err := wire.Decode(b)
					if err != nil || problems != nil {
						t.Fatalf("decode: %v %v", problems, err)
					}
					n += len(m.Entries)
				case <-time.After(2 * time.Second):
					t.Fatalf("got %d of 200 entries", n)
				}
			}
		})
	}
}

func TestMasterV0(t *testing.T) {
	tbl := newTable(t)
	tx := newFakeSender()
	m := startMaster(t, MasterConfig{V0: true, RefreshInterval: -1, SyncID: 9}, tbl, tx)
	for i := range 10 {
		schedule(t, tbl, i, i%2 == 1)
	}
	var got []wire.Entry
	deadline := time.After(2 * time.Second)
	for len(got) < 10 {
		select {
		case b := <-tx.ch:
			msg, problems, err := wire.Decode(b)
			if err != nil || problems != nil {
				t.Fatalf("decode: %v %v", problems, err)
			}
			if msg.Version != wire.V0 || msg.SyncID != 9 {
				t.Fatalf("message version %d syncid %d, want v0 syncid 9", msg.Version, msg.SyncID)
			}
			got = append(got, msg.Entries...)
		case <-deadline:
			t.Fatalf("got %d of 10 entries", len(got))
		}
	}
	tx.quiet(t, 50*time.Millisecond)
	for _, e := range got {
		if e.IsIPv6() {
			t.Errorf("v0 sent IPv6 entry %v", e.CAddr)
		}
	}
	if st := m.Stats(); st.EntriesSkipped != 10 {
		t.Errorf("EntriesSkipped = %d, want the 10 IPv6 entries", st.EntriesSkipped)
	}
}

func TestMasterRefresh(t *testing.T) {
	tbl := newTable(t)
	tx := newFakeSender()
	m := startMaster(t, MasterConfig{RefreshInterval: -1, RefreshRate: 100}, tbl, tx)
	for i := range 200 {
		schedule(t, tbl, i, false)
	}
	if got := tx.collect(t, 400, 2*time.Second); len(got) != 400 {
		t.Fatalf("live: %d entries", len(got))
	}
	start := time.Now()
	if err := m.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	got := tx.collect(t, 400, time.Second)
	if diff := cmp.Diff(tableKeys(tbl), keysOf(got)); diff != "" {
		t.Fatalf("refresh (-want +got):\n%s", diff)
	}
	for _, e := range got {
		if e.IsTemplate() && e.Timeout != 360 {
			t.Fatalf("refresh sent timeout %d, want the configured 360", e.Timeout)
		}
	}
	// 400 entries are 10 datagrams: 9 gaps of 10 ms at 100 datagrams/s.
	if took < 80*time.Millisecond {
		t.Errorf("refresh of 10 datagrams at 100/s took %v", took)
	}
	if st := m.Stats(); st.Refreshes != 1 {
		t.Errorf("Refreshes = %d", st.Refreshes)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Refresh(ctx); err == nil {
		t.Error("Refresh with a cancelled context succeeded")
	}
}

func TestMasterRefreshLoop(t *testing.T) {
	tbl := newTable(t)
	tx := newFakeSender()
	schedule(t, tbl, 1, false)
	m := startMaster(t, MasterConfig{RefreshInterval: 30 * time.Millisecond}, tbl, tx)
	// The entries predate the Master: only the sweep sends them.
	if got := tx.collect(t, 4, 2*time.Second); len(got) != 4 {
		t.Fatalf("two sweeps sent %d entries, want 4", len(got))
	}
	if !waitFor(time.Second, func() bool { return m.Stats().Refreshes >= 2 }) {
		t.Fatal("Refreshes not counted")
	}
}

func TestThresholdPass(t *testing.T) {
	conn := func(proto uint8, s persist.State) persist.Entry {
		return persist.Entry{Proto: proto, State: s}
	}
	tmpl := persist.Entry{Proto: persist.ProtoTCP, Flags: persist.FlagTemplate}
	tests := []struct {
		name string
		th   Threshold
		e    persist.Entry
		pkts uint32
		want bool
	}{
		{"3 50: third packet", DefaultThreshold, conn(6, persist.TCPEstablished), 3, true},
		{"3 50: fourth packet", DefaultThreshold, conn(6, persist.TCPEstablished), 4, false},
		{"3 50: 53rd packet", DefaultThreshold, conn(6, persist.TCPEstablished), 53, true},
		{"3 50: SYN_RECV is never synced", DefaultThreshold, conn(6, persist.TCPSynRecv), 3, false},
		{"3 50: FIN_WAIT", DefaultThreshold, conn(6, persist.TCPFinWait), 103, true},
		{"3 50: UDP", DefaultThreshold, conn(17, persist.UDPNormal), 3, true},
		{"3 50: SCTP COOKIE_ECHOED", DefaultThreshold, conn(132, persist.SCTPCookieEchoed), 3, false},
		{"3 50: SCTP ESTABLISHED", DefaultThreshold, conn(132, persist.SCTPEstablished), 3, true},
		{"3 50: templates pass", DefaultThreshold, tmpl, 4, true},
		{"3 0: at the threshold", Threshold{3, 0}, conn(6, persist.TCPEstablished), 3, true},
		{"3 0: never again", Threshold{3, 0}, conn(6, persist.TCPEstablished), 53, false},
		{"3 0: templates too", Threshold{3, 0}, tmpl, 4, false},
		{"0 10: every tenth", Threshold{0, 10}, conn(17, persist.UDPNormal), 20, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.th.pass(&tc.e, tc.pkts); got != tc.want {
				t.Errorf("pass(pkts=%d) = %v, want %v", tc.pkts, got, tc.want)
			}
		})
	}
}

func TestMasterNote(t *testing.T) {
	tbl := newTable(t)
	tx := newFakeSender()
	th := DefaultThreshold
	m := startMaster(t, MasterConfig{RefreshInterval: -1, Threshold: &th}, tbl, tx)
	s := schedule(t, tbl, 1, false)
	tx.quiet(t, 30*time.Millisecond) // creation alone is not sent
	if err := tbl.SetState(s.Conn, persist.TCPEstablished); err != nil {
		t.Fatal(err)
	}
	tx.quiet(t, 30*time.Millisecond)

	steps := []struct {
		name      string
		act       func()
		wantConn  bool
		wantTempl bool
	}{
		{"second packet: the template passes", func() { m.Note(s.Conn, 2) }, false, true},
		{"third packet: both", func() { m.Note(s.Conn, 3) }, true, true},
		{"entering FIN_WAIT is sent at once", func() {
			if err := tbl.SetState(s.Conn, persist.TCPFinWait); err != nil {
				t.Fatal(err)
			}
		}, true, false},
		{"gone: nothing", func() { tbl.Drop(s.Conn); m.Note(s.Conn, 53) }, false, false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.act()
			want := 0
			if st.wantConn {
				want++
			}
			if st.wantTempl {
				want++
			}
			got := tx.collect(t, want, time.Second)
			tx.quiet(t, 30*time.Millisecond)
			var conn, tmpl bool
			for _, e := range got {
				if e.IsTemplate() {
					tmpl = true
				} else {
					conn = true
				}
			}
			if conn != st.wantConn || tmpl != st.wantTempl {
				t.Errorf("sent connection %v template %v, want %v %v", conn, tmpl, st.wantConn, st.wantTempl)
			}
		})
	}
}

func TestMasterConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  MasterConfig
	}{
		{"negative maxlen", MasterConfig{MaxLen: -1}},
		{"negative flush", MasterConfig{FlushInterval: -1}},
		{"threshold not below period", MasterConfig{Threshold: &Threshold{50, 50}}},
		{"empty auth", MasterConfig{Auth: &Auth{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); err == nil {
				t.Error("accepted")
			}
		})
	}
	if err := (MasterConfig{Threshold: &Threshold{3, 0}}).Validate(); err != nil {
		t.Errorf("period 0: %v", err)
	}
}

func TestMasterRunTwice(t *testing.T) {
	m := startMaster(t, MasterConfig{}, newTable(t), newFakeSender())
	if err := m.Run(context.Background()); err == nil {
		t.Error("second Run succeeded")
	}
}

func TestEmitterSkips(t *testing.T) {
	tx := newFakeSender()
	for _, tc := range []struct {
		name        string
		v0          bool
		e           persist.Entry
		skipped     uint64
		unencodable uint64
	}{
		{"one-packet connection", false, persist.Entry{Proto: 17, Client: ap("192.0.2.1:53"), Virtual: ap("192.0.2.100:53"),
			DestAddr: ap("198.51.100.1:53"), Flags: persist.FlagOnePacket}, 1, 0},
		{"IPv6 in v0", true, persist.Entry{Proto: 6, Client: ap("[2001:db8::1]:0"), Virtual: ap("[2001:db8::100]:80"),
			DestAddr: ap("[2001:db8::11]:80"), Flags: persist.FlagTemplate}, 1, 0},
		{"mixed families", false, persist.Entry{Proto: 6, Client: ap("192.0.2.1:0"), Virtual: ap("192.0.2.100:80"),
			DestAddr: ap("[2001:db8::11]:80"), Flags: persist.FlagTemplate}, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewMaster(MasterConfig{V0: tc.v0, Logger: quietLog}, newTable(t), tx)
			if err != nil {
				t.Fatal(err)
			}
			em, err := m.newEmitter()
			if err != nil {
				t.Fatal(err)
			}
			if sent, added := em.add(&tc.e, 10); sent || added {
				t.Errorf("add = %v, %v", sent, added)
			}
			em.flush()
			st := m.Stats()
			if st.EntriesSkipped != tc.skipped || st.EntriesUnencodable != tc.unencodable || st.DatagramsSent != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}
