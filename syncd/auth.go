package syncd

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Authentication of lbha-to-lbha sync traffic.
//
// A signed datagram is the kernel message followed by a trailer of
// TrailerLen bytes:
//
//	off  len  field
//	  0    4  magic "LBHA"
//	  4    4  key id: the first 4 bytes of SHA-256("lbha sync key id" || key)
//	  8    8  sender id, random per Master, big-endian
//	 16    8  sequence number, big-endian
//	 24   32  HMAC-SHA256(key, message || bytes 0..23 of the trailer)
//
// The kernel message keeps its own header, whose size field does not count
// the trailer, so a kernel backup drops signed datagrams at its size check:
// the kernel-compatible mode is plain. Sequence numbers start at the wall
// clock in nanoseconds when the Master starts and grow by one per
// datagram, so a restarted sender continues above everything it sent
// before. A receiver keeps, per sender id, the highest sequence number seen
// and a bitmap of the 64 below it (the IPsec anti-replay window), and
// accepts each sequence number once. The window is not keyed by source
// address as well: addresses are trivially spoofed on a LAN, and a window
// per address would let a datagram replayed from another address through.

// TrailerLen is the length of the authentication trailer.
const TrailerLen = 56

// MinKeyLen is the shortest key accepted: HMAC-SHA256 gains nothing from
// keys longer than its block, and shorter ones are guessable.
const MinKeyLen = 32

const (
	keyIDLen   = 4
	tagLen     = sha256.Size
	signedLen  = TrailerLen - tagLen // trailer bytes covered by the tag
	replayBits = 64
	// maxReplayStates bounds the per-sender replay state; only senders
	// that hold a key can create one.
	maxReplayStates = 1024
)

var trailerMagic = [4]byte{'L', 'B', 'H', 'A'}

// Auth holds the shared keys of lbha-to-lbha sync authentication: the
// current key signs, and the previous key verifies too. The zero Auth is
// unusable; nil means authentication is off.
//
// A rotation without loss: give every node the new key as its previous
// key (it now verifies both), then make it every node's current key with
// the old one as previous, then drop the old one. A resync is signed with
// whichever key signed the backup's hello.
type Auth struct {
	keys []authKey // keys[0] signs
}

type authKey struct {
	id  [keyIDLen]byte
	key []byte
}

// NewAuth returns an Auth signing with current and verifying with current
// and, if not nil, previous. Keys are at least MinKeyLen bytes.
func NewAuth(current, previous []byte) (*Auth, error) {
	a := &Auth{}
	for i, k := range [][]byte{current, previous} {
		if k == nil && i == 1 {
			continue
		}
		if len(k) < MinKeyLen {
			return nil, fmt.Errorf("syncd: auth: key of %d bytes, need at least %d", len(k), MinKeyLen)
		}
		a.keys = append(a.keys, authKey{id: keyID(k), key: bytes.Clone(k)})
	}
	if len(a.keys) == 2 && a.keys[0].id == a.keys[1].id {
		// The same key twice (a rotation not begun yet) is one key.
		a.keys = a.keys[:1]
	}
	return a, nil
}

// LoadAuth reads the current key from currentFile and, if previousFile is
// not empty, the previous key from it; see ParseKey.
func LoadAuth(currentFile, previousFile string) (*Auth, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("syncd: auth: %w", err)
		}
		k, err := ParseKey(b)
		if err != nil {
			return nil, fmt.Errorf("syncd: auth: %s: %w", name, err)
		}
		return k, nil
	}
	cur, err := read(currentFile)
	if err != nil {
		return nil, err
	}
	var prev []byte
	if previousFile != "" {
		if prev, err = read(previousFile); err != nil {
			return nil, err
		}
	}
	return NewAuth(cur, prev)
}

// ParseKey returns the key in a key file's contents: hex digits (blanks
// around them ignored) that decode to at least MinKeyLen bytes, or else the
// raw bytes, at least MinKeyLen of them.
func ParseKey(b []byte) ([]byte, error) {
	if t := bytes.TrimSpace(b); len(t)%2 == 0 {
		k := make([]byte, hex.DecodedLen(len(t)))
		if _, err := hex.Decode(k, t); err == nil && len(k) >= MinKeyLen {
			return k, nil
		}
	}
	if len(b) < MinKeyLen {
		return nil, fmt.Errorf("key of %d bytes, need %d raw bytes or %d hex digits", len(b), MinKeyLen, 2*MinKeyLen)
	}
	return bytes.Clone(b), nil
}

func keyID(k []byte) [keyIDLen]byte {
	h := sha256.New()
	h.Write([]byte("lbha sync key id"))
	h.Write(k)
	var id [keyIDLen]byte
	copy(id[:], h.Sum(nil))
	return id
}

// key returns the key with the given id.
func (a *Auth) key(id [keyIDLen]byte) ([]byte, bool) {
	for _, k := range a.keys {
		if k.id == id {
			return k.key, true
		}
	}
	return nil, false
}

// signer appends trailers. It is not safe for concurrent use; senders
// share only seq.
type signer struct {
	id     [keyIDLen]byte
	sender uint64
	seq    *atomic.Uint64
	mac    hash.Hash
	sum    []byte
}

func (a *Auth) newSigner(sender uint64, seq *atomic.Uint64) *signer {
	k := a.keys[0]
	return &signer{id: k.id, sender: sender, seq: seq, mac: hmac.New(sha256.New, k.key), sum: make([]byte, 0, tagLen)}
}

// sign appends the trailer for msg, which dst ends with, and returns the
// extended slice.
func (s *signer) sign(dst []byte, msgStart int) []byte {
	dst = append(dst, trailerMagic[:]...)
	dst = append(dst, s.id[:]...)
	dst = binary.BigEndian.AppendUint64(dst, s.sender)
	dst = binary.BigEndian.AppendUint64(dst, s.seq.Add(1))
	s.mac.Reset()
	s.mac.Write(dst[msgStart:])
	s.sum = s.mac.Sum(s.sum[:0])
	return append(dst, s.sum...)
}

// newSenderState returns a random sender id and a sequence counter
// starting at the wall clock.
func newSenderState() (uint64, *atomic.Uint64) {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	seq := new(atomic.Uint64)
	seq.Store(uint64(time.Now().UnixNano()))
	return binary.BigEndian.Uint64(b[:]), seq
}

// authResult is what verification made of a datagram.
type authResult uint8

const (
	authOK authResult = iota
	authMissing
	authForged
	authReplayed
)

// verifier checks trailers and keeps the replay windows. It is safe for
// concurrent use.
type verifier struct {
	auth *Auth
	mu   sync.Mutex
	macs map[[keyIDLen]byte]hash.Hash
	seen map[uint64]*replayWindow // by sender id
	sum  []byte
}

func newVerifier(a *Auth) *verifier {
	v := &verifier{auth: a, macs: map[[keyIDLen]byte]hash.Hash{}, seen: map[uint64]*replayWindow{}}
	for _, k := range a.keys {
		v.macs[k.id] = hmac.New(sha256.New, k.key)
	}
	return v
}

// verify checks the trailer of b and returns the kernel message without
// it. The replay window moves only for a datagram whose
// tag is right, so forgeries cannot shift it.
func (v *verifier) verify(b []byte) ([]byte, authResult) {
	if len(b) < TrailerLen {
		return nil, authMissing
	}
	msgLen := len(b) - TrailerLen
	tr := b[msgLen:]
	if [4]byte(tr[0:4]) != trailerMagic {
		return nil, authMissing
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	mac, ok := v.macs[[keyIDLen]byte(tr[4:8])]
	if !ok {
		return nil, authForged
	}
	mac.Reset()
	mac.Write(b[:msgLen+signedLen])
	v.sum = mac.Sum(v.sum[:0])
	if !hmac.Equal(v.sum, tr[signedLen:]) {
		return nil, authForged
	}
	k := binary.BigEndian.Uint64(tr[8:16])
	w := v.seen[k]
	if w == nil {
		if len(v.seen) >= maxReplayStates {
			for old := range v.seen {
				delete(v.seen, old) // any one: senders restart rarely
				break
			}
		}
		w = &replayWindow{}
		v.seen[k] = w
	}
	if !w.accept(binary.BigEndian.Uint64(tr[16:24])) {
		return nil, authReplayed
	}
	return b[:msgLen], authOK
}

// replayWindow accepts each sequence number once, within 64 of the highest
// seen (RFC 4303 §3.4.3).
type replayWindow struct {
	top  uint64
	bits uint64 // bit i: top-i was seen
	init bool
}

func (w *replayWindow) accept(seq uint64) bool {
	if !w.init {
		w.top, w.bits, w.init = seq, 1, true
		return true
	}
	if seq > w.top {
		if d := seq - w.top; d >= replayBits {
			w.bits = 1
		} else {
			w.bits = w.bits<<d | 1
		}
		w.top = seq
		return true
	}
	d := w.top - seq
	if d >= replayBits || w.bits&(1<<d) != 0 {
		return false
	}
	w.bits |= 1 << d
	return true
}

// errAuth reports a resync peer that failed authentication.
var errAuth = errors.New("authentication failed")
