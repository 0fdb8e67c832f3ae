package syncd

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lbha/lbha/persist"
	"github.com/lbha/lbha/syncd/wire"
)

// captureSeeds returns the real-kernel datagrams kept in testdata.
func captureSeeds(f *testing.F) [][]byte {
	f.Helper()
	files, _ := filepath.Glob("wire/testdata/*.hex")
	var out [][]byte
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if b, err := parseHex(line); err == nil && len(b) > 0 {
				out = append(out, b)
			}
		}
	}
	return out
}

// parseHex reads the hex= word of a capture line.
func parseHex(line string) ([]byte, error) {
	_, after, ok := strings.Cut(line, "hex=")
	if !ok {
		return nil, io.EOF
	}
	s, _, _ := strings.Cut(strings.TrimSpace(after), " ")
	b := make([]byte, len(s)/2)
	for i := range b {
		var v byte
		for _, c := range []byte(s[2*i : 2*i+2]) {
			switch {
			case c >= '0' && c <= '9':
				v = v<<4 | (c - '0')
			case c >= 'a' && c <= 'f':
				v = v<<4 | (c - 'a' + 10)
			default:
				return nil, io.ErrUnexpectedEOF
			}
		}
		b[i] = v
	}
	return b, nil
}

// FuzzBackupReceive feeds arbitrary datagrams through a backup's receive
// path, plain and authenticated, and applies what it accepts: nothing may
// panic, and every accepted entry is accounted for exactly once.
func FuzzBackupReceive(f *testing.F) {
	for _, s := range captureSeeds(f) {
		f.Add(s, false)
	}
	a := mustAuth(f, key(1), nil)
	good := datagram(f, wire.V1, 0, wireTemplate(1, false), wireTemplate(2, true))
	f.Add(good, false)
	f.Add(sign(a, 1, 1, good), true)
	f.Add(sign(a, 1, 1, []byte{1, 2, 3}), true)
	f.Fuzz(func(t *testing.T, d []byte, auth bool) {
		cfg := BackupConfig{Logger: quietLog}
		if auth {
			cfg.Auth = a
		}
		tbl, err := persist.New(persist.Config{Shards: 1})
		if err != nil {
			t.Fatal(err)
		}
		b, err := NewBackup(cfg, tbl, newFakeReceiver(), nil)
		if err != nil {
			t.Fatal(err)
		}
		var m wire.Message
		entries := b.receive(&m, d)
		for i := range entries {
			b.applyOne(&entries[i])
		}
		st := b.Stats()
		if st.EntriesReceived != uint64(len(entries)) || st.EntriesApplied+st.EntriesIgnored+st.ApplyErrors != uint64(len(entries)) {
			t.Fatalf("%d entries, stats %+v", len(entries), st)
		}
		if n := tableLen(tbl); n > len(entries) {
			t.Fatalf("table holds %d entries from %d", n, len(entries))
		}
	})
}

// FuzzVerify checks the trailer parser: whatever it accepts is a signed
// message followed by exactly one trailer.
func FuzzVerify(f *testing.F) {
	a := mustAuth(f, key(1), key(2))
	f.Add(sign(a, 7, 100, []byte("message")))
	f.Add(sign(mustAuth(f, key(2), nil), 7, 100, []byte("message")))
	f.Add(append([]byte("message"), trailerMagic[:]...))
	f.Fuzz(func(t *testing.T, d []byte) {
		v := newVerifier(a)
		msg, res := v.verify(d)
		if res != authOK {
			if msg != nil {
				t.Fatalf("rejected datagram returned %d bytes", len(msg))
			}
			return
		}
		if len(msg) != len(d)-TrailerLen || !bytes.Equal(msg, d[:len(msg)]) {
			t.Fatal("accepted message is not the datagram minus its trailer")
		}
		if _, res := v.verify(d); res != authReplayed {
			t.Fatalf("second verify = %v, want a replay", res)
		}
	})
}

// FuzzFrameReader reads arbitrary streams as resync frames.
func FuzzFrameReader(f *testing.F) {
	nonce := [nonceLen]byte{1}
	for _, k := range [][]byte{nil, key(1)} {
		var buf bytes.Buffer
		fw := newFrameWriter(&buf, k, nonce)
		_ = fw.write(frameHeader, putHeader(1, 1000))
		_ = fw.write(frameEntries, datagram(f, wire.V1, 0, wireTemplate(1, false)))
		_ = fw.write(frameEnd, putCount(1))
		_ = fw.flush()
		f.Add(buf.Bytes(), k != nil)
	}
	f.Fuzz(func(t *testing.T, d []byte, auth bool) {
		var k []byte
		if auth {
			k = key(1)
		}
		fr := newFrameReader(bytes.NewReader(d), k, nonce)
		for read := 0; ; {
			_, p, err := fr.read()
			if err != nil {
				return
			}
			read += 5 + len(p)
			if read > len(d) {
				t.Fatalf("frames of %d bytes from %d", read, len(d))
			}
		}
	})
}

// FuzzReadHello parses arbitrary hellos.
func FuzzReadHello(f *testing.F) {
	a := mustAuth(f, key(1), nil)
	h := hello{nonce: [nonceLen]byte{3}}
	f.Add(h.marshal(nil), false)
	f.Add(h.marshal(a), true)
	f.Fuzz(func(t *testing.T, d []byte, auth bool) {
		var srv *Auth
		if auth {
			srv = a
		}
		got, key, err := readHello(bytes.NewReader(d), srv)
		if err == nil && (got.auth != auth || (key != nil) != auth) {
			t.Fatalf("accepted hello %+v with key %v on a master with auth %v", got, key != nil, auth)
		}
	})
}

// FuzzResyncClient plays arbitrary bytes as a master's resync stream to a
// backup's resync client and applying goroutine.
func FuzzResyncClient(f *testing.F) {
	var buf bytes.Buffer
	fw := newFrameWriter(&buf, nil, [nonceLen]byte{})
	_ = fw.write(frameHeader, putHeader(2, 1000))
	_ = fw.write(frameEntries, datagram(f, wire.V1, 0, wireTemplate(1, false), wireTemplate(2, false)))
	_ = fw.write(frameEnd, putCount(2))
	_ = fw.write(frameKeepalive, nil)
	_ = fw.flush()
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:20])
	f.Fuzz(func(t *testing.T, d []byte) {
		tbl, err := persist.New(persist.Config{Shards: 1})
		if err != nil {
			t.Fatal(err)
		}
		dial := func(ctx context.Context, _ string) (net.Conn, error) {
			c, s := net.Pipe()
			go func() {
				defer s.Close()
				if _, err := io.ReadFull(s, make([]byte, helloLen)); err != nil {
					return
				}
				_, _ = s.Write(d)
			}()
			return c, nil
		}
		b, err := NewBackup(BackupConfig{Logger: quietLog, ResyncAddr: "pipe", ResyncDial: dial}, tbl, newFakeReceiver(), nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { b.applyLoop(ctx) })
		completed, err := b.resyncOnce(ctx)
		if err == nil {
			t.Fatal("a stream that ended reported no error")
		}
		// Everything posted is applied before the abort that ends the
		// session; wait for the abort.
		waitFor(2*time.Second, func() bool { return len(b.tokens) == 0 })
		cancel()
		wg.Wait()
		st := b.Stats()
		if completed != (st.ResyncsCompleted == 1) || st.Warm {
			t.Fatalf("completed %v, stats %+v", completed, st)
		}
	})
}
