package syncd

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func mustAuth(t testing.TB, cur, prev []byte) *Auth {
	t.Helper()
	a, err := NewAuth(cur, prev)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestParseKey(t *testing.T) {
	raw := []byte("0123456789abcdef0123456789abcdeX") // 32 bytes, not hex
	hex64 := hex.EncodeToString(key(7))
	tests := []struct {
		name    string
		in      []byte
		want    []byte
		wantErr bool
	}{
		{"hex", []byte(hex64), key(7), false},
		{"hex with a newline", []byte(hex64 + "\n"), key(7), false},
		{"upper-case hex", bytes.ToUpper([]byte(hex64)), key(7), false},
		{"raw bytes", raw, raw, false},
		{"raw bytes kept as they are, newline included", append(raw, '\n'), append(raw, '\n'), false},
		{"the hex of a short key is taken as 32 raw bytes", []byte(hex.EncodeToString(key(7)[:16])), []byte(hex.EncodeToString(key(7)[:16])), false},
		{"too short", []byte("secret"), nil, true},
		{"empty", nil, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKey(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("key (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadAuth(t *testing.T) {
	dir := t.TempDir()
	cur, prev := filepath.Join(dir, "cur"), filepath.Join(dir, "prev")
	if err := os.WriteFile(cur, []byte(hex.EncodeToString(key(1))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prev, key(2), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := LoadAuth(cur, prev)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.keys) != 2 || !bytes.Equal(a.keys[0].key, key(1)) || !bytes.Equal(a.keys[1].key, key(2)) {
		t.Errorf("keys %x", a.keys)
	}
	if _, err := LoadAuth(filepath.Join(dir, "missing"), ""); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := NewAuth(key(1)[:31], nil); err == nil {
		t.Error("31-byte key accepted")
	}
	if a := mustAuth(t, key(1), key(1)); len(a.keys) != 1 {
		t.Error("the same key twice counts twice")
	}
}

// sign signs msg as sender with seq.
func sign(a *Auth, sender, seq uint64, msg []byte) []byte {
	var s atomic.Uint64
	s.Store(seq - 1)
	return a.newSigner(sender, &s).sign(append([]byte(nil), msg...), 0)
}

func TestVerify(t *testing.T) {
	msg := []byte("kernel message")
	cur, prev, other := mustAuth(t, key(1), nil), mustAuth(t, key(2), nil), mustAuth(t, key(3), nil)
	rotating := mustAuth(t, key(1), key(2))
	tampered := sign(cur, 1, 100, msg)
	tampered[2] ^= 1
	tamperedSeq := sign(cur, 1, 100, msg)
	tamperedSeq[len(msg)+23] ^= 1
	tests := []struct {
		name string
		recv *Auth
		in   []byte
		want authResult
	}{
		{"signed", cur, sign(cur, 1, 100, msg), authOK},
		{"previous key verifies during rotation", rotating, sign(prev, 1, 100, msg), authOK},
		{"current key verifies during rotation", rotating, sign(cur, 1, 100, msg), authOK},
		{"unknown key", cur, sign(other, 1, 100, msg), authForged},
		{"retired key", cur, sign(prev, 1, 100, msg), authForged},
		{"message changed", cur, tampered, authForged},
		{"sequence changed", cur, tamperedSeq, authForged},
		{"plain kernel datagram", cur, msg, authMissing},
		{"long plain datagram", cur, bytes.Repeat([]byte{0}, 200), authMissing},
		{"empty", cur, nil, authMissing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(tc.recv)
			got, res := v.verify(tc.in)
			if res != tc.want {
				t.Fatalf("verify = %v, want %v", res, tc.want)
			}
			if res == authOK && !bytes.Equal(got, msg) {
				t.Errorf("message %q, want %q", got, msg)
			}
		})
	}
}

func TestVerifyReplay(t *testing.T) {
	a := mustAuth(t, key(1), nil)
	v := newVerifier(a)
	msg := []byte("m")
	steps := []struct {
		sender, seq uint64
		want        authResult
	}{
		{1, 1000, authOK},
		{1, 1000, authReplayed}, // the same datagram again
		{1, 1002, authOK},       // a gap
		{1, 1001, authOK},       // late, inside the window
		{1, 1001, authReplayed}, // late and again
		{1, 1100, authOK},       // far ahead
		{1, 1036, authReplayed}, // now older than the window (1100-64)
		{1, 1037, authOK},       // the window's oldest slot
		{2, 5, authOK},          // another sender has its own window
		{1, 1100, authReplayed}, // sender 1's state survived
		{2, 5, authReplayed},    // and sender 2's
		{1, 1 << 63, authOK},    // a huge jump clears the window
		{1, 1<<63 - 1, authOK},  // just below it was never seen
		{1, 1<<63 - 64, authReplayed},
	}
	for i, s := range steps {
		if _, got := v.verify(sign(a, s.sender, s.seq, msg)); got != s.want {
			t.Fatalf("step %d: sender %d seq %d: %v, want %v", i, s.sender, s.seq, got, s.want)
		}
	}
	// A forged datagram must not move the window.
	bad := sign(a, 1, 1<<63+500, msg)
	bad[0] ^= 1
	if _, got := v.verify(bad); got != authForged {
		t.Fatal(got)
	}
	if _, got := v.verify(sign(a, 1, 1<<63-2, msg)); got != authOK {
		t.Errorf("window moved by a forgery: %v", got)
	}
}

// TestReplayWindowModel compares the window with the set of everything
// ever accepted: it must accept exactly the numbers not seen before that
// lie within 64 of the highest.
func TestReplayWindowModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var w replayWindow
		seen := map[uint64]bool{}
		var top uint64
		base := rapid.Uint64Range(0, 1<<40).Draw(t, "base")
		for i, n := 0, rapid.IntRange(1, 300).Draw(t, "n"); i < n; i++ {
			seq := base + rapid.Uint64Range(0, 200).Draw(t, "offset")
			want := !seen[seq] && (len(seen) == 0 || seq > top || top-seq < replayBits)
			if got := w.accept(seq); got != want {
				t.Fatalf("accept(%d) = %v, want %v (top %d)", seq, got, want, top)
			}
			if want {
				seen[seq] = true
				top = max(top, seq)
			}
		}
	})
}

func TestSignerSequence(t *testing.T) {
	a := mustAuth(t, key(1), nil)
	sender, seq := newSenderState()
	start := seq.Load()
	s1, s2 := a.newSigner(sender, seq), a.newSigner(sender, seq)
	v := newVerifier(a)
	for i := range 10 {
		s := s1
		if i%2 == 1 {
			s = s2 // two goroutines' signers share the sequence
		}
		if _, res := v.verify(s.sign([]byte("x"), 0)); res != authOK {
			t.Fatalf("datagram %d: %v", i, res)
		}
	}
	if got := seq.Load(); got != start+10 {
		t.Errorf("sequence advanced to %d, want %d", got, start+10)
	}
}
