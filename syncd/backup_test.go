package syncd

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbha/lbha/persist"
	"github.com/lbha/lbha/syncd/wire"
)

func wireTemplate(i int, v6 bool) wire.Entry {
	c := clientAddr(i, v6)
	e := wire.Entry{Protocol: 6, Flags: 0x1183, State: 0, VPort: 80, DPort: 80, Timeout: 360,
		CAddr: c.Addr(), VAddr: testVIP, DAddr: testRS}
	if v6 {
		e.VAddr, e.DAddr = testVIP6, testRS6
	}
	return e
}

// datagram encodes entries as one message.
func datagram(t testing.TB, version, syncID uint8, entries ...wire.Entry) []byte {
	t.Helper()
	m := wire.Message{Version: version, SyncID: syncID, Entries: entries}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBackupApplies(t *testing.T) {
	tbl := newTable(t)
	rx := newFakeReceiver()
	resolve, d4, _ := testResolver()
	b := startBackup(t, BackupConfig{}, tbl, rx, resolve)

	sip := wireTemplate(3, false)
	sip.Protocol, sip.VPort, sip.DPort, sip.PEData, sip.PEName = 17, 5060, 5060, []byte("call@x"), "sip"
	conn := wireTemplate(4, false)
	conn.Flags, conn.State, conn.CPort, conn.Timeout = 0x0083, uint16(persist.TCPEstablished), 40000, 900
	rx.ch <- datagram(t, wire.V1, 0, wireTemplate(1, false), wireTemplate(2, true), sip, conn)
	v0 := wireTemplate(5, false)
	v0.Timeout = 0
	rx.ch <- datagram(t, wire.V0, 7, v0)

	if !waitFor(2*time.Second, func() bool { return tableLen(tbl) == 5 }) {
		t.Fatalf("table holds %d entries, want 5", tableLen(tbl))
	}
	got := map[string]persist.Entry{}
	tbl.Range(func(e persist.Entry) bool { got[e.Client.String()] = e; return true })
	check := func(client string, flags persist.Flags, timeout time.Duration, dest bool) {
		t.Helper()
		e, ok := got[client]
		if !ok {
			t.Errorf("%s missing", client)
			return
		}
		if e.Flags != flags || e.Timeout != timeout || (e.Dest != nil) != dest {
			t.Errorf("%s: flags %v timeout %v bound %v; want %v %v %v", client, e.Flags, e.Timeout, e.Dest != nil, flags, timeout, dest)
		}
	}
	check("10.0.0.1:0", 0x11A3, 360*time.Second, true)
	check("[2001:db8:c::2]:0", 0x11A3, 360*time.Second, true)
	check("10.0.0.3:0", 0x11A3, 360*time.Second, false) // no service 5060 here: unbound, method from the wire
	check("10.0.0.4:40000", 0x00A3, 900*time.Second, true)
	check("10.0.0.5:0", 0x11A3, 180*time.Second, true) // v0: no timeout, 180 s
	if pe := got["10.0.0.3:0"].PEData; string(pe) != "call@x" {
		t.Errorf("SIP template PE data %q", pe)
	}
	if d4.PersistConns() != 2 || d4.ActiveConns() != 1 {
		t.Errorf("destination counts persist %d active %d, want 2 and 1", d4.PersistConns(), d4.ActiveConns())
	}
	st := b.Stats()
	want := Stats{DatagramsReceived: 2, EntriesReceived: 5, EntriesApplied: 5}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	if b.Warm() {
		t.Error("warm without a resync")
	}
}

func TestBackupDrops(t *testing.T) {
	good := datagram(t, wire.V1, 5, wireTemplate(1, false))
	sizeMismatch := bytes.Clone(good)
	binary.BigEndian.PutUint16(sizeMismatch[2:], uint16(len(good)+4))
	badState := wireTemplate(2, false)
	badState.State = 2
	unknownPE := wireTemplate(3, false)
	unknownPE.PEData, unknownPE.PEName = []byte("x"), "h323"
	zeroLenOption := datagram(t, wire.V1, 5, wireTemplate(4, false), wireTemplate(5, false))
	zeroLenOption = append(zeroLenOption[:8+36], append([]byte{0, 6, 0, 38}, zeroLenOption[8+36+4:]...)...) // 2nd entry claims 38 bytes
	zeroLenOption = append(zeroLenOption, 1, 0)                                                             // an option of length 0
	binary.BigEndian.PutUint16(zeroLenOption[2:], uint16(len(zeroLenOption)))

	tests := []struct {
		name     string
		in       []byte
		reasons  map[wire.Reason]uint64
		actions  map[wire.Action]uint64
		syncID   uint64
		trunc    uint64
		accepted int
	}{
		{name: "too short", in: []byte{0, 5, 0}, reasons: map[wire.Reason]uint64{wire.ReasonShort: 1},
			actions: map[wire.Action]uint64{wire.DropDatagram: 1}},
		{name: "size mismatch", in: sizeMismatch, reasons: map[wire.Reason]uint64{wire.ReasonSizeMismatch: 1},
			actions: map[wire.Action]uint64{wire.DropDatagram: 1}},
		{name: "foreign sync id", in: datagram(t, wire.V1, 6, wireTemplate(1, false)), reasons: map[wire.Reason]uint64{wire.ReasonSyncID: 1},
			actions: map[wire.Action]uint64{wire.DropDatagram: 1}, syncID: 1},
		{name: "oversized", in: append(bytes.Clone(good), make([]byte, 1500)...), trunc: 1},
		{name: "template state 2 skipped, the rest kept", in: datagram(t, wire.V1, 5, badState, wireTemplate(6, false)),
			reasons: map[wire.Reason]uint64{wire.ReasonTemplateState: 1}, actions: map[wire.Action]uint64{wire.SkipEntry: 1}, accepted: 1},
		{name: "unknown engine skipped", in: datagram(t, wire.V1, 5, unknownPE),
			reasons: map[wire.Reason]uint64{wire.ReasonUnknownPE: 1}, actions: map[wire.Action]uint64{wire.SkipEntry: 1}},
		{name: "zero-length option drops the rest", in: zeroLenOption,
			reasons: map[wire.Reason]uint64{wire.ReasonOptionZeroLen: 1}, actions: map[wire.Action]uint64{wire.DropRest: 1}, accepted: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tbl := newTable(t)
			rx := newFakeReceiver()
			b := startBackup(t, BackupConfig{SyncID: 5}, tbl, rx, nil)
			rx.ch <- tc.in
			rx.ch <- good // a good datagram after it still applies
			if !waitFor(2*time.Second, func() bool { return b.Stats().EntriesApplied >= uint64(tc.accepted+1) }) {
				t.Fatalf("good datagram not applied: %+v", b.Stats())
			}
			st := b.Stats()
			if diff := cmp.Diff(tc.reasons, st.DroppedByReason); diff != "" {
				t.Errorf("dropped by reason (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.actions, st.DroppedByAction); diff != "" {
				t.Errorf("dropped by action (-want +got):\n%s", diff)
			}
			if st.SyncIDMismatch != tc.syncID || st.Truncated != tc.trunc {
				t.Errorf("syncid mismatches %d truncated %d, want %d %d", st.SyncIDMismatch, st.Truncated, tc.syncID, tc.trunc)
			}
			if n := tableLen(tbl); n != tc.accepted+1 {
				t.Errorf("table holds %d entries, want %d", n, tc.accepted+1)
			}
		})
	}
}

func TestBackupAuth(t *testing.T) {
	a := mustAuth(t, key(1), nil)
	tbl := newTable(t)
	rx := newFakeReceiver()
	b := startBackup(t, BackupConfig{Auth: a}, tbl, rx, nil)
	msg := datagram(t, wire.V1, 0, wireTemplate(1, false))
	signed := sign(a, 42, 1000, msg)
	steps := []struct {
		name string
		in   []byte
		want Stats
	}{
		{"plain", msg, Stats{DatagramsReceived: 1, AuthMissing: 1}},
		{"wrong key", sign(mustAuth(t, key(9), nil), 42, 1000, msg), Stats{DatagramsReceived: 2, AuthMissing: 1, AuthForged: 1}},
		{"signed", signed, Stats{DatagramsReceived: 3, AuthMissing: 1, AuthForged: 1, EntriesReceived: 1, EntriesApplied: 1}},
		{"replayed", signed, Stats{DatagramsReceived: 4, AuthMissing: 1, AuthForged: 1, EntriesReceived: 1, EntriesApplied: 1, Replayed: 1}},
	}
	for _, s := range steps {
		rx.ch <- s.in
		if !waitFor(2*time.Second, func() bool {
			return b.Stats().DatagramsReceived == s.want.DatagramsReceived && b.Stats().EntriesApplied == s.want.EntriesApplied
		}) {
			t.Fatalf("%s: not processed: %+v", s.name, b.Stats())
		}
		time.Sleep(5 * time.Millisecond)
		if diff := cmp.Diff(s.want, b.Stats()); diff != "" {
			t.Errorf("%s: stats (-want +got):\n%s", s.name, diff)
		}
	}
	if n := tableLen(tbl); n != 1 {
		t.Errorf("table holds %d entries, want 1", n)
	}
}

// TestBackupResyncOrder drives the applying goroutine's logic directly: a
// resync entry never overwrites a live update that arrived after the
// resync began.
func TestBackupResyncOrder(t *testing.T) {
	tbl := newTable(t)
	var warm []bool
	var progress [][2]uint64
	b, err := NewBackup(BackupConfig{Logger: quietLog,
		OnWarm:     func(w bool) { warm = append(warm, w) },
		OnProgress: func(d, n uint64) { progress = append(progress, [2]uint64{d, n}) },
	}, tbl, newFakeReceiver(), nil)
	if err != nil {
		t.Fatal(err)
	}
	entry := func(i int, s persist.State, timeout uint32) persist.SyncEntry {
		return persist.SyncEntry{Proto: 6, Client: clientAddr(i, false), Virtual: netip.AddrPortFrom(testVIP, 80),
			DestAddr: netip.AddrPortFrom(testRS, 80), Flags: 0x0083, State: s, Timeout: timeout}
	}
	state := func(i int) persist.State {
		ref, _, ok := tbl.Lookup(&persist.Key{Proto: 6, Client: clientAddr(i, false), Virtual: netip.AddrPortFrom(testVIP, 80)})
		if !ok {
			return 255
		}
		e, _ := tbl.Get(ref)
		return e.State
	}
	var rs resyncState
	// Before the resync: a live update of client 1.
	b.apply(&rs, &batch{kind: batchLive, entries: []persist.SyncEntry{entry(1, persist.TCPEstablished, 900)}})
	b.apply(&rs, &batch{kind: batchResyncStart, n: 3})
	// During it: client 2 closes; the resync's older copy must not undo it.
	b.apply(&rs, &batch{kind: batchLive, entries: []persist.SyncEntry{entry(2, persist.TCPFinWait, 120)}})
	b.apply(&rs, &batch{kind: batchResyncEntries, entries: []persist.SyncEntry{
		entry(1, persist.TCPCloseWait, 30), // newer than the pre-resync update: applied
		entry(2, persist.TCPEstablished, 900),
		entry(3, persist.TCPEstablished, 900),
	}})
	if len(warm) != 0 || b.Warm() {
		t.Fatal("warm before the end marker")
	}
	b.apply(&rs, &batch{kind: batchResyncEnd, n: 3})
	got := []persist.State{state(1), state(2), state(3)}
	want := []persist.State{persist.TCPCloseWait, persist.TCPFinWait, persist.TCPEstablished}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("states (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([][2]uint64{{3, 3}}, progress); diff != "" {
		t.Errorf("progress (-want +got):\n%s", diff)
	}
	st := b.Stats()
	if st.ResyncStale != 1 || st.ResyncDone != 3 || st.ResyncTotal != 3 || st.ResyncsCompleted != 1 || !st.Warm {
		t.Errorf("stats %+v", st)
	}
	// After the resync, live updates are no longer tracked.
	if len(rs.touched) != 0 || rs.active {
		t.Error("resync state kept after the end")
	}
	b.apply(&rs, &batch{kind: batchResyncAbort})
	if diff := cmp.Diff([]bool{true, false}, warm); diff != "" {
		t.Errorf("warm transitions (-want +got):\n%s", diff)
	}
	// Entries of a resync that was never started are ignored.
	b.apply(&rs, &batch{kind: batchResyncEntries, entries: []persist.SyncEntry{entry(9, persist.TCPEstablished, 900)}})
	if state(9) != 255 {
		t.Error("entry of an aborted resync applied")
	}
}

// TestBackupReceptionOrder checks, through the applying goroutine's
// queue, that a live update received after a resync began wins over the
// resync's copy queued after it.
func TestBackupReceptionOrder(t *testing.T) {
	tbl := newTable(t)
	b, err := NewBackup(BackupConfig{Logger: quietLog}, tbl, newFakeReceiver(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := persist.SyncEntry{Proto: 6, Client: clientAddr(1, false), Virtual: netip.AddrPortFrom(testVIP, 80),
		DestAddr: netip.AddrPortFrom(testRS, 80), Flags: 0x0083, State: persist.TCPFinWait, Timeout: 120}
	old := e
	old.State = persist.TCPEstablished
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.post(ctx, batch{kind: batchResyncStart, n: 1})
	b.in <- batch{kind: batchLive, entries: []persist.SyncEntry{e}}
	b.post(ctx, batch{kind: batchResyncEntries, entries: []persist.SyncEntry{old}})
	wg.Go(func() { b.applyLoop(ctx) })
	if !waitFor(2*time.Second, func() bool { return b.Stats().ResyncDone == 1 }) {
		t.Fatal("resync batch not applied")
	}
	cancel()
	wg.Wait()
	var got persist.State
	tbl.Range(func(e persist.Entry) bool { got = e.State; return true })
	if got != persist.TCPFinWait {
		t.Errorf("state %d: the resync copy overwrote the newer live update", got)
	}
	if len(b.tokens) != 0 {
		t.Errorf("%d resync tokens not returned", len(b.tokens))
	}
}

func TestBackupConfigValidate(t *testing.T) {
	for _, c := range []BackupConfig{
		{SyncID: -1}, {MaxLen: -1}, {ResyncBackoff: time.Second, ResyncMaxBackoff: time.Millisecond}, {Auth: &Auth{}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
