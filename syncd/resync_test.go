package syncd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbha/lbha/persist"
)

func listenLoopback(t testing.TB, addr string) net.Listener {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	// The address of a master that just stopped may take a moment to
	// come free.
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal(err)
	return nil
}

// warmRecorder records a Backup's warm transitions and progress.
type warmRecorder struct {
	mu       sync.Mutex
	warm     []bool
	progress [][2]uint64
}

func (w *warmRecorder) onWarm(v bool) { w.mu.Lock(); w.warm = append(w.warm, v); w.mu.Unlock() }
func (w *warmRecorder) onProgress(d, n uint64) {
	w.mu.Lock()
	w.progress = append(w.progress, [2]uint64{d, n})
	w.mu.Unlock()
}
func (w *warmRecorder) transitions() []bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]bool(nil), w.warm...)
}

// assertConverged checks that backup holds exactly master's entries, as
// synced: same keys, destinations, flags (plus SYNC) and states, and
// lifetimes within a second.
func assertConverged(t testing.TB, master, backup *persist.Table) {
	t.Helper()
	if diff := cmp.Diff(tableViews(master, true), tableViews(backup, false)); diff != "" {
		t.Fatalf("backup table differs from the master's (-master +backup):\n%s", diff)
	}
	ml, bl := lifetimes(master), lifetimes(backup)
	for k, want := range ml {
		if d := bl[k] - want; d < -time.Second || d > time.Second {
			t.Errorf("%s: lifetime %v on the backup, %v on the master", k, bl[k], want)
		}
	}
}

func TestResync(t *testing.T) {
	for _, tc := range []struct {
		name string
		auth *Auth
	}{
		{"plain", nil},
		{"authenticated", mustAuth(t, key(1), nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			master := newTable(t)
			const clients = 600 // 1200 entries: several frames of 255
			for i := range clients {
				s := schedule(t, master, i, i%5 == 0)
				if i%3 == 0 {
					if err := master.SetState(s.Conn, persist.TCPEstablished); err != nil {
						t.Fatal(err)
					}
				}
			}
			ln := listenLoopback(t, "")
			m := startMaster(t, MasterConfig{RefreshInterval: -1, ResyncListener: ln, Auth: tc.auth}, master, newFakeSender())

			backup := newTable(t)
			resolve, _, _ := testResolver()
			var rec warmRecorder
			b := startBackup(t, BackupConfig{ResyncAddr: ln.Addr().String(), Auth: tc.auth,
				OnWarm: rec.onWarm, OnProgress: rec.onProgress}, backup, newFakeReceiver(), resolve)
			if !waitFor(5*time.Second, b.Warm) {
				t.Fatalf("backup not warm: %+v", b.Stats())
			}
			assertConverged(t, master, backup)
			st := b.Stats()
			if st.ResyncDone != 2*clients || st.ResyncTotal != 2*clients || st.ResyncsCompleted != 1 || !st.Warm {
				t.Errorf("backup stats %+v", st)
			}
			rec.mu.Lock()
			last := rec.progress[len(rec.progress)-1]
			rec.mu.Unlock()
			if last != [2]uint64{2 * clients, 2 * clients} {
				t.Errorf("last progress %v", last)
			}
			if diff := cmp.Diff([]bool{true}, rec.transitions()); diff != "" {
				t.Errorf("warm transitions (-want +got):\n%s", diff)
			}
			if ms := m.Stats(); ms.ResyncsServed != 1 || ms.ResyncsRefused != 0 {
				t.Errorf("master stats %+v", ms)
			}
		})
	}
}

// TestResyncLifetime checks that a resync carries each entry's remaining
// lifetime for its timer and its configured timeout for later restarts.
func TestResyncLifetime(t *testing.T) {
	clk := &stepClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	master, err := persist.New(persist.Config{Clock: clk, Tick: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	schedule(t, master, 1, false)
	clk.advance(100 * time.Second) // 260 s of the template's 360 left
	schedule(t, master, 2, false)
	ln := listenLoopback(t, "")
	startMaster(t, MasterConfig{RefreshInterval: -1, ResyncListener: ln}, master, newFakeSender())
	backup := newTable(t)
	b := startBackup(t, BackupConfig{ResyncAddr: ln.Addr().String()}, backup, newFakeReceiver(), nil)
	if !waitFor(5*time.Second, b.Warm) {
		t.Fatal("not warm")
	}
	got := map[string]time.Duration{}
	backup.Range(func(e persist.Entry) bool {
		if e.Template() {
			got[e.Client.Addr().String()] = e.Expires.Round(time.Second)
			if e.Timeout != 360*time.Second {
				t.Errorf("%v: configured timeout %v on the backup, want 360s", e.Client, e.Timeout)
			}
		}
		return true
	})
	want := map[string]time.Duration{"10.0.0.1": 260 * time.Second, "10.0.0.2": 360 * time.Second}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("template lifetimes on the backup (-want +got):\n%s", diff)
	}
}

type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *stepClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestResyncMasterRestart checks that a backup notices a master that went
// away, stops being warm, and resyncs from the restarted master.
func TestResyncMasterRestart(t *testing.T) {
	master := newTable(t)
	for i := range 50 {
		schedule(t, master, i, false)
	}
	ln := listenLoopback(t, "")
	addr := ln.Addr().String()
	m1, err := NewMaster(MasterConfig{RefreshInterval: -1, ResyncListener: ln, ResyncKeepalive: 50 * time.Millisecond, Logger: quietLog},
		master, newFakeSender())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m1.Run(context.Background()) }()

	backup := newTable(t)
	var rec warmRecorder
	resolve, _, _ := testResolver()
	b := startBackup(t, BackupConfig{ResyncAddr: addr, OnWarm: rec.onWarm, ResyncBackoff: 20 * time.Millisecond,
		ResyncMaxBackoff: 100 * time.Millisecond}, backup, newFakeReceiver(), resolve)
	if !waitFor(5*time.Second, b.Warm) {
		t.Fatal("not warm")
	}
	m1.Close()
	<-done
	if !waitFor(5*time.Second, func() bool { return !b.Warm() }) {
		t.Fatal("still warm after the master stopped")
	}
	for i := 50; i < 80; i++ {
		schedule(t, master, i, false)
	}
	startMaster(t, MasterConfig{RefreshInterval: -1, ResyncListener: listenLoopback(t, addr)}, master, newFakeSender())
	if !waitFor(10*time.Second, b.Warm) {
		t.Fatalf("not warm again: %+v", b.Stats())
	}
	assertConverged(t, master, backup)
	if diff := cmp.Diff([]bool{true, false, true}, rec.transitions()); diff != "" {
		t.Errorf("warm transitions (-want +got):\n%s", diff)
	}
	if st := b.Stats(); st.ResyncsCompleted != 2 {
		t.Errorf("ResyncsCompleted = %d", st.ResyncsCompleted)
	}
}

func TestResyncRefused(t *testing.T) {
	k1, k2 := mustAuth(t, key(1), nil), mustAuth(t, key(2), nil)
	for _, tc := range []struct {
		name           string
		master, backup *Auth
	}{
		{"wrong key", k1, k2},
		{"backup without a key", k1, nil},
		{"master without a key", nil, k1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			master := newTable(t)
			schedule(t, master, 1, false)
			ln := listenLoopback(t, "")
			m := startMaster(t, MasterConfig{RefreshInterval: -1, ResyncListener: ln, Auth: tc.master}, master, newFakeSender())
			backup := newTable(t)
			b := startBackup(t, BackupConfig{ResyncAddr: ln.Addr().String(), Auth: tc.backup, ResyncBackoff: 10 * time.Millisecond,
				ResyncMaxBackoff: 20 * time.Millisecond}, backup, newFakeReceiver(), nil)
			if !waitFor(3*time.Second, func() bool { return m.Stats().ResyncsRefused >= 2 && b.Stats().ResyncFailures >= 2 }) {
				t.Fatalf("master stats %+v\nbackup stats %+v", m.Stats(), b.Stats())
			}
			if b.Warm() || tableLen(backup) != 0 || b.Stats().ResyncsCompleted != 0 {
				t.Errorf("refused backup warm %v with %d entries", b.Warm(), tableLen(backup))
			}
		})
	}
}

// TestResyncUnreachable checks the retry with backoff when no master
// listens.
func TestResyncUnreachable(t *testing.T) {
	ln := listenLoopback(t, "")
	addr := ln.Addr().String()
	ln.Close()
	var mu sync.Mutex
	var dials []time.Time
	dial := func(ctx context.Context, a string) (net.Conn, error) {
		mu.Lock()
		dials = append(dials, time.Now())
		mu.Unlock()
		return resyncDialer(ctx, a)
	}
	b := startBackup(t, BackupConfig{ResyncAddr: addr, ResyncDial: dial, ResyncBackoff: 10 * time.Millisecond,
		ResyncMaxBackoff: 80 * time.Millisecond}, newTable(t), newFakeReceiver(), nil)
	time.Sleep(500 * time.Millisecond)
	b.Close()
	mu.Lock()
	defer mu.Unlock()
	// Waits of about 10, 20, 40, 80, 80... ms with jitter of half: far
	// fewer dials than a busy loop, more than one.
	if len(dials) < 4 || len(dials) > 25 {
		t.Errorf("%d dials in 500 ms", len(dials))
	}
	if st := b.Stats(); st.ResyncFailures != uint64(len(dials)) {
		t.Errorf("ResyncFailures %d for %d dials", st.ResyncFailures, len(dials))
	}
}

func TestFrames(t *testing.T) {
	nonce := [nonceLen]byte{1, 2, 3}
	k := key(5)
	frames := []struct {
		typ byte
		p   []byte
	}{{frameHeader, putHeader(2, 1000)}, {frameEntries, []byte("entries")}, {frameEnd, putCount(2)}, {frameKeepalive, nil}}
	encode := func(key []byte) []byte {
		var buf bytes.Buffer
		fw := newFrameWriter(&buf, key, nonce)
		for _, f := range frames {
			if err := fw.write(f.typ, f.p); err != nil {
				t.Fatal(err)
			}
		}
		if err := fw.flush(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	readAll := func(b []byte, key []byte, n [nonceLen]byte) error {
		fr := newFrameReader(bytes.NewReader(b), key, n)
		for i, f := range frames {
			typ, p, err := fr.read()
			if err != nil {
				return err
			}
			if typ != f.typ || !bytes.Equal(p, f.p) {
				t.Fatalf("frame %d: type %d payload %q", i, typ, p)
			}
		}
		if _, _, err := fr.read(); err != io.EOF {
			return err
		}
		return nil
	}
	plain, tagged := encode(nil), encode(k)
	if err := readAll(plain, nil, nonce); err != nil {
		t.Fatalf("plain: %v", err)
	}
	if err := readAll(tagged, k, nonce); err != nil {
		t.Fatalf("tagged: %v", err)
	}
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	second := 5 + headerPayload + tagLen // offset of the second frame
	for _, tc := range []struct {
		name  string
		in    []byte
		key   []byte
		nonce [nonceLen]byte
	}{
		{"payload changed", flip(tagged, second+6), k, nonce},
		{"type changed", flip(tagged, second+4), k, nonce},
		{"tag changed", flip(tagged, len(tagged)-1), k, nonce},
		{"another connection's stream", tagged, k, [nonceLen]byte{9}},
		{"another key", tagged, key(6), nonce},
		{"frames reordered", append(bytes.Clone(tagged[second:]), tagged[:second]...), k, nonce},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := readAll(tc.in, tc.key, tc.nonce); !errors.Is(err, errAuth) {
				t.Errorf("err = %v, want an authentication failure", err)
			}
		})
	}
	if err := readAll(plain, k, nonce); err == nil {
		t.Error("a plain stream read as authenticated")
	}
}

func TestHello(t *testing.T) {
	a, other := mustAuth(t, key(1), nil), mustAuth(t, key(2), nil)
	rotated := mustAuth(t, key(2), key(1))
	h := hello{nonce: [nonceLen]byte{7}}
	for _, tc := range []struct {
		name     string
		in       []byte
		server   *Auth
		wantErr  bool
		wantAuth bool
	}{
		{"plain", h.marshal(nil), nil, false, false},
		{"authenticated", h.marshal(a), a, false, true},
		{"signed with the previous key", h.marshal(a), rotated, false, true},
		{"unknown key", h.marshal(other), a, true, false},
		{"plain to an authenticating master", h.marshal(nil), a, true, false},
		{"authenticated to a plain master", h.marshal(a), nil, true, false},
		{"tampered", func() []byte { b := h.marshal(a); b[9] ^= 1; return b }(), a, true, false},
		{"bad magic", append([]byte("XXXX"), h.marshal(nil)[4:]...), nil, true, false},
		{"short", h.marshal(nil)[:10], nil, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, key, err := readHello(bytes.NewReader(tc.in), tc.server)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if got.nonce != h.nonce || got.auth != tc.wantAuth || (key != nil) != tc.wantAuth {
				t.Errorf("hello %+v key %x", got, key)
			}
		})
	}
}
