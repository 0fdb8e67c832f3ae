package syncd

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbha/lbha/internal/netlab"
	"github.com/lbha/lbha/persist"
	"github.com/lbha/lbha/syncd/wire"
)

// syncLab is a master, a backup and a stranger ("x") on one switch, each
// with sync0 in 203.0.113.0/24.
type syncLab struct {
	m, b, x *netlab.Node
}

var labTransport = TransportConfig{Interface: "sync0"}

func newSyncLab(tb testing.TB) *syncLab {
	tb.Helper()
	l := netlab.New(tb)
	sw := l.Switch()
	s := &syncLab{m: l.Node("m"), b: l.Node("b"), x: l.Node("x")}
	s.m.Attach(sw, "sync0", "203.0.113.2/24")
	s.b.Attach(sw, "sync0", "203.0.113.3/24")
	s.x.Attach(sw, "sync0", "203.0.113.4/24")
	return s
}

// sender opens a multicast sender in node n.
func labSender(tb testing.TB, n *netlab.Node) *Sender {
	tb.Helper()
	var tx *Sender
	if err := n.Do(func() (err error) { tx, err = DialSender(labTransport); return err }); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { tx.Close() })
	return tx
}

// startLabMaster runs a Master in the master node with its resync
// listener, and returns the listener's address. wrap, if set, stands
// between the Master and its socket.
func (s *syncLab) startLabMaster(tb testing.TB, tbl *persist.Table, cfg MasterConfig, wrap func(DatagramSender) DatagramSender) (*Master, string) {
	tb.Helper()
	var tx DatagramSender = labSender(tb, s.m)
	if wrap != nil {
		tx = wrap(tx)
	}
	var ln net.Listener
	if err := s.m.Do(func() (err error) { ln, err = ListenResync(labTransport, ""); return err }); err != nil {
		tb.Fatal(err)
	}
	cfg.ResyncListener = ln
	return startMaster(tb, cfg, tbl, tx), ln.Addr().String()
}

// startLabBackup runs a Backup in node n; its resync connections are
// dialled from n too.
func startLabBackup(tb testing.TB, n *netlab.Node, tbl *persist.Table, cfg BackupConfig, resolve persist.Resolver) *Backup {
	tb.Helper()
	var rx *Receiver
	if err := n.Do(func() (err error) { rx, err = ListenReceiver(labTransport); return err }); err != nil {
		tb.Fatal(err)
	}
	cfg.ResyncDial = func(ctx context.Context, addr string) (c net.Conn, err error) {
		derr := n.Do(func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, "tcp", addr)
			return err
		})
		if err == nil && derr != nil {
			err = derr
		}
		return c, err
	}
	return startBackup(tb, cfg, tbl, rx, resolve)
}

// arrivals records when each template first appears in a backup's table.
type arrivals struct {
	mu sync.Mutex
	at map[netip.Addr]time.Time
}

func watchArrivals(tbl *persist.Table) *arrivals {
	a := &arrivals{at: map[netip.Addr]time.Time{}}
	tbl.SetObserver(func(ev persist.Event) {
		if ev.Kind != persist.EventCreated || !ev.Entry.Template() {
			return
		}
		now := time.Now()
		a.mu.Lock()
		if _, ok := a.at[ev.Entry.Client.Addr()]; !ok {
			a.at[ev.Entry.Client.Addr()] = now
		}
		a.mu.Unlock()
	})
	return a
}

func (a *arrivals) len() int { a.mu.Lock(); defer a.mu.Unlock(); return len(a.at) }

// lags returns, for each created template, the time from its creation on
// the master to its arrival on the backup, sorted.
func (a *arrivals) lags(created map[netip.Addr]time.Time) (lags []time.Duration, missing int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for c, t0 := range created {
		t1, ok := a.at[c]
		if !ok {
			missing++
			continue
		}
		lags = append(lags, t1.Sub(t0))
	}
	slices.Sort(lags)
	return lags, missing
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(p*float64(len(sorted))), len(sorted)-1)]
}

func TestNetnsLiveSync(t *testing.T) {
	s := newSyncLab(t)
	master, backup, self := newTable(t), newTable(t), newTable(t)
	m, _ := s.startLabMaster(t, master, MasterConfig{RefreshInterval: -1}, nil)
	resolve, _, _ := testResolver()
	b := startLabBackup(t, s.b, backup, BackupConfig{}, resolve)
	// A backup next to the master hears nothing of it: multicast loopback
	// is off, so the master never applies its own datagrams.
	own := startLabBackup(t, s.m, self, BackupConfig{}, resolve)
	arr := watchArrivals(backup)

	const n = 300
	created := map[netip.Addr]time.Time{}
	for i := range n {
		created[clientAddr(i, false).Addr()] = time.Now()
		schedule(t, master, i, false)
	}
	last := time.Now()
	if !netlab.WaitFor(2*time.Second, func() bool { return tableLen(backup) == 2*n }) {
		t.Fatalf("backup holds %d of %d entries: %+v", tableLen(backup), 2*n, b.Stats())
	}
	lags, missing := arr.lags(created)
	if missing > 0 {
		t.Fatalf("%d templates never arrived", missing)
	}
	t.Logf("lag of %d templates: p50 %v p99 %v max %v", n, percentile(lags, 0.5), percentile(lags, 0.99), slices.Max(lags))
	arr.mu.Lock()
	var lastArrival time.Time
	for _, at := range arr.at {
		if at.After(lastArrival) {
			lastArrival = at
		}
	}
	arr.mu.Unlock()
	if d := lastArrival.Sub(last); d > 100*time.Millisecond {
		t.Errorf("last template arrived %v after the last was created, want within 100 ms", d)
	}
	assertConverged(t, master, backup)
	if st := own.Stats(); st.DatagramsReceived != 0 || tableLen(self) != 0 {
		t.Errorf("the master's own host received %d datagrams", st.DatagramsReceived)
	}
	ms, bs := m.Stats(), b.Stats()
	if bs.DatagramsReceived != ms.DatagramsSent || bs.EntriesApplied != ms.EntriesSent {
		t.Errorf("sent %d datagrams, %d entries; received %d, applied %d", ms.DatagramsSent, ms.EntriesSent, bs.DatagramsReceived, bs.EntriesApplied)
	}
}

// TestNetnsBackupRestart restarts the backup while the master keeps
// creating templates; the new backup converges through the resync.
func TestNetnsBackupRestart(t *testing.T) {
	s := newSyncLab(t)
	master := newTable(t)
	for i := range 500 { // before anyone listens: only a resync delivers these
		schedule(t, master, i, i%4 == 0)
	}
	_, addr := s.startLabMaster(t, master, MasterConfig{RefreshInterval: -1}, nil)
	resolve, _, _ := testResolver()
	b1 := startLabBackup(t, s.b, newTable(t), BackupConfig{ResyncAddr: addr}, resolve)

	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 500; !stop.Load(); i++ {
			schedule(t, master, i, i%4 == 0)
			if i%10 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	})
	if !netlab.WaitFor(5*time.Second, b1.Warm) {
		t.Fatal("first backup not warm")
	}
	time.Sleep(100 * time.Millisecond)
	b1.Close() // mid-stream
	time.Sleep(100 * time.Millisecond)
	backup := newTable(t)
	var warmAt time.Time
	b2 := startLabBackup(t, s.b, backup, BackupConfig{ResyncAddr: addr, OnWarm: func(w bool) {
		if w {
			warmAt = time.Now()
		}
	}}, resolve)
	if !netlab.WaitFor(5*time.Second, b2.Warm) {
		t.Fatalf("restarted backup not warm: %+v", b2.Stats())
	}
	time.Sleep(100 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	time.Sleep(100 * time.Millisecond) // the last changes' flush
	st := b2.Stats()
	t.Logf("resync of %d entries, warm at %v; %d live datagrams; %d resync copies superseded by live updates",
		st.ResyncTotal, warmAt.Format(time.StampMicro), st.DatagramsReceived, st.ResyncStale)
	assertConverged(t, master, backup)
}

// TestNetnsDrops sends malformed, oversized and foreign datagrams from a
// stranger's plain UDP socket.
func TestNetnsDrops(t *testing.T) {
	s := newSyncLab(t)
	backup := newTable(t)
	b := startLabBackup(t, s.b, backup, BackupConfig{SyncID: 5}, nil)
	tx := labSender(t, s.x)
	good := datagram(t, wire.V1, 5, wireTemplate(1, false))
	garbage := datagram(t, wire.V1, 5, wireTemplate(2, false), wireTemplate(3, false))
	garbage[8+36+2] = 0x10 // the second entry's version nibble
	for _, d := range [][]byte{
		{0, 5, 0}, // short
		append(good[:len(good):len(good)], 0, 0, 0),                                    // size mismatch
		datagram(t, wire.V1, 6, wireTemplate(4, false)),                                // another sync id
		append(datagram(t, wire.V1, 5, wireTemplate(5, false)), make([]byte, 3000)...), // longer than the buffer
		garbage,
	} {
		if err := tx.Send(d); err != nil {
			t.Fatal(err)
		}
	}
	if !netlab.WaitFor(3*time.Second, func() bool { return b.Stats().DatagramsReceived+b.Stats().Truncated == 5 }) {
		t.Fatalf("stats %+v", b.Stats())
	}
	if err := tx.Send(good); err != nil {
		t.Fatal(err)
	}
	if !netlab.WaitFor(3*time.Second, func() bool { return b.Stats().EntriesApplied == 2 }) {
		t.Fatalf("good datagram not applied: %+v", b.Stats())
	}
	st := b.Stats()
	want := map[wire.Reason]uint64{wire.ReasonShort: 1, wire.ReasonSizeMismatch: 1, wire.ReasonSyncID: 1, wire.ReasonEntryVersion: 1}
	if !mapsEqual(want, st.DroppedByReason) || st.Truncated != 1 || st.SyncIDMismatch != 1 {
		t.Errorf("drops by reason %v, truncated %d, syncid %d; want %v, 1, 1", st.DroppedByReason, st.Truncated, st.SyncIDMismatch, want)
	}
	var got []string
	backup.Range(func(e persist.Entry) bool { got = append(got, e.Client.String()); return true })
	slices.Sort(got)
	if !slices.Equal(got, []string{"10.0.0.1:0", "10.0.0.2:0"}) {
		t.Errorf("table holds %v; want the good datagram's and the garbage one's first entry", got)
	}
}

func mapsEqual[K comparable](a, b map[K]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// recorder keeps a copy of every datagram it forwards.
type recorder struct {
	next DatagramSender
	mu   sync.Mutex
	sent [][]byte
}

func (r *recorder) Send(b []byte) error {
	r.mu.Lock()
	r.sent = append(r.sent, append([]byte(nil), b...))
	r.mu.Unlock()
	return r.next.Send(b)
}

func (r *recorder) datagrams() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sent)
}

func TestNetnsAuth(t *testing.T) {
	s := newSyncLab(t)
	a := mustAuth(t, key(1), nil)
	master, backup := newTable(t), newTable(t)
	rec := &recorder{}
	_, addr := s.startLabMaster(t, master, MasterConfig{RefreshInterval: -1, Auth: a}, func(tx DatagramSender) DatagramSender {
		rec.next = tx
		return rec
	})
	resolve, _, _ := testResolver()
	b := startLabBackup(t, s.b, backup, BackupConfig{Auth: a, ResyncAddr: addr}, resolve)
	if !netlab.WaitFor(5*time.Second, b.Warm) {
		t.Fatal("authenticated resync did not complete")
	}
	for i := range 20 {
		schedule(t, master, i, false)
	}
	if !netlab.WaitFor(2*time.Second, func() bool { return tableLen(backup) == 40 }) {
		t.Fatalf("backup holds %d entries: %+v", tableLen(backup), b.Stats())
	}
	before := b.Stats()

	stranger := labSender(t, s.x)
	forger := mustAuth(t, key(2), nil)
	plain := datagram(t, wire.V1, 0, wireTemplate(100, false))
	for _, d := range [][]byte{
		sign(forger, 7, uint64(time.Now().UnixNano()), plain), // the wrong key
		plain,              // no trailer
		rec.datagrams()[0], // a replay of the master's first datagram
		rec.datagrams()[0][:len(rec.datagrams()[0])-1], // a truncated trailer
	} {
		if err := stranger.Send(d); err != nil {
			t.Fatal(err)
		}
	}
	if !netlab.WaitFor(3*time.Second, func() bool { return b.Stats().DatagramsReceived == before.DatagramsReceived+4 }) {
		t.Fatalf("stats %+v", b.Stats())
	}
	st := b.Stats()
	// The truncated trailer no longer starts where a trailer must: it is
	// missing, as far as the backup can tell.
	if st.AuthForged != 1 || st.AuthMissing != 2 || st.Replayed != 1 || st.EntriesApplied != before.EntriesApplied {
		t.Errorf("forged %d missing %d replayed %d applied %d; want 1, 2, 1 and no new entry",
			st.AuthForged, st.AuthMissing, st.Replayed, st.EntriesApplied-before.EntriesApplied)
	}
	if tableLen(backup) != 40 {
		t.Errorf("table holds %d entries", tableLen(backup))
	}
}
