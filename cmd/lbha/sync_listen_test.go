package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbha/lbha/internal/netlab"
	"github.com/lbha/lbha/syncd"
	"github.com/lbha/lbha/syncd/wire"
)

// scriptReader hands out datagrams, then blocks until closed.
type scriptReader struct {
	datagrams [][]byte
	closed    chan struct{}
}

var listenFrom = netip.MustParseAddrPort("203.0.113.2:40000")

func (r *scriptReader) Read(buf []byte) (int, netip.AddrPort, error) {
	if len(r.datagrams) > 0 {
		d := r.datagrams[0]
		r.datagrams = r.datagrams[1:]
		return copy(buf, d), listenFrom, nil
	}
	<-r.closed
	return 0, netip.AddrPort{}, net.ErrClosed
}

func (r *scriptReader) Close() error {
	select {
	case <-r.closed:
	default:
		close(r.closed)
	}
	return nil
}

func listenMessage(t *testing.T, syncID uint8) []byte {
	t.Helper()
	m := wire.Message{Version: wire.V1, SyncID: syncID, Entries: []wire.Entry{{
		Protocol: 6, Flags: 0x1183, VPort: 80, DPort: 80, Timeout: 360,
		CAddr: netip.MustParseAddr("192.0.2.10"), VAddr: netip.MustParseAddr("192.0.2.100"), DAddr: netip.MustParseAddr("198.51.100.12"),
	}}}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func runListener(t *testing.T, asJSON bool, datagrams ...[]byte) (stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	at := time.Date(2026, 1, 2, 3, 4, 5, 600000000, time.UTC)
	l := syncListener{dec: wire.Decoder{SyncID: 1}, json: asJSON, maxLen: 1472, stdout: &out, stderr: &errb, now: func() time.Time { return at }}
	r := &scriptReader{datagrams: datagrams, closed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.run(ctx, r) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	return out.String(), errb.String()
}

func TestSyncListenShow(t *testing.T) {
	good := listenMessage(t, 1)
	signed := append(append(listenMessage(t, 1), "LBHA"...), make([]byte, syncd.TrailerLen-4)...)
	foreign := listenMessage(t, 2)
	big := append(listenMessage(t, 1), make([]byte, 1500)...)
	stdout, stderr := runListener(t, false, good, signed, foreign, big)
	row := "TCP 06:00  NONE        192.0.2.10:0       192.0.2.100:80     198.51.100.12:80   0x1183(DROUTE|NOOUTPUT|INACTIVE|TEMPLATE)\n"
	hdr := "pro expire state       source             virtual            destination        flags\n"
	want := "03:04:05.600000 203.0.113.2:40000: v1 syncid=1 size=44 count=1\n" + hdr + row +
		"\n03:04:05.600000 203.0.113.2:40000: [lbha auth trailer, not verified] v1 syncid=1 size=44 count=1\n" + hdr + row
	if diff := cmp.Diff(want, stdout); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	wantErr := []string{
		"lbha: sync listen: datagram 3 from 203.0.113.2:40000: wire: syncid does not match (2): datagram dropped",
		"lbha: sync listen: datagram 4 from 203.0.113.2:40000: 1544 bytes, longer than a kernel backup's 1472-byte buffer: a backup drops it",
		"lbha: sync listen: datagram 4 from 203.0.113.2:40000: wire: header size differs from datagram length (44): datagram dropped",
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != len(wantErr) {
		t.Fatalf("stderr:\n%s", stderr)
	}
	for i, w := range wantErr {
		if lines[i] != w {
			t.Errorf("stderr line %d = %q, want %q", i+1, lines[i], w)
		}
	}
}

func TestSyncListenJSON(t *testing.T) {
	signed := append(append(listenMessage(t, 1), "LBHA"...), make([]byte, syncd.TrailerLen-4)...)
	stdout, stderr := runListener(t, true, listenMessage(t, 1), signed)
	if stderr != "" {
		t.Errorf("stderr %q", stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines:\n%s", len(lines), stdout)
	}
	for i, line := range lines {
		var got map[string]any
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, line)
		}
		entries := got["entries"].([]any)
		delete(got, "entries")
		want := map[string]any{"time": "2026-01-02T03:04:05.6Z", "from": "203.0.113.2:40000",
			"version": 1.0, "syncid": 1.0, "size": 44.0, "count": 1.0}
		if i == 1 {
			want["auth_trailer"] = true
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("line %d (-want +got):\n%s", i+1, diff)
		}
		if e := entries[0].(map[string]any); len(entries) != 1 || e["caddr"] != "192.0.2.10" || e["timeout"] != 360.0 {
			t.Errorf("line %d entries %v", i+1, entries)
		}
	}
}

func TestSyncListenFlags(t *testing.T) {
	for _, args := range [][]string{
		{"listen"},
		{"listen", "--interface", "lbha-no-such-if0"},
		{"listen", "--interface", "lo", "--group", "192.0.2.1"},
		{"listen", "--interface", "lo", "--group", "nonsense"},
	} {
		if code, _, stderr := runSync(t, args...); code == 0 || !strings.Contains(stderr, "lbha:") {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
}

// TestSyncListenNetns runs the command in a backup's namespace while a
// master's socket sends.
func TestSyncListenNetns(t *testing.T) {
	l := netlab.New(t)
	sw := l.Switch()
	m, b := l.Node("m"), l.Node("b")
	m.Attach(sw, "sync0", "203.0.113.2/24")
	b.Attach(sw, "sync0", "203.0.113.3/24")
	var tx *syncd.Sender
	if err := m.Do(func() (err error) {
		tx, err = syncd.DialSender(syncd.TransportConfig{Interface: "sync0", Port: 8849})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()

	var out, errb netlab.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() {
		// The command opens its socket in the namespace of the thread
		// it runs on.
		_ = b.Do(func() error {
			code <- run(ctx, []string{"sync", "listen", "--interface", "sync0", "--port", "8849", "--syncid", "1", "--json"}, &out, &errb)
			return nil
		})
	}()
	msg := listenMessage(t, 1)
	if !netlab.WaitFor(5*time.Second, func() bool {
		_ = tx.Send(msg)
		time.Sleep(20 * time.Millisecond)
		return strings.Contains(out.String(), `"from":"203.0.113.2:`)
	}) {
		t.Fatalf("nothing printed; stderr %q", errb.String())
	}
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit %d, stderr %q", c, errb.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("listen did not stop when its context ended")
	}
	first, _, _ := strings.Cut(out.String(), "\n")
	var got struct {
		From    string `json:"from"`
		SyncID  int    `json:"syncid"`
		Entries []struct {
			CAddr string `json:"caddr"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(first), &got); err != nil {
		t.Fatal(err)
	}
	if got.SyncID != 1 || len(got.Entries) != 1 || got.Entries[0].CAddr != "192.0.2.10" {
		t.Errorf("printed %+v", got)
	}
}
