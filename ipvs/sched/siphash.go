package sched

import (
	"encoding/binary"
	"math/bits"
)

// SipHash initialisation constants, "somepseudorandomlygeneratedbytes".
const (
	sipC0 = 0x736f6d6570736575
	sipC1 = 0x646f72616e646f6d
	sipC2 = 0x6c7967656e657261
	sipC3 = 0x7465646279746573
)

type sipState struct{ v0, v1, v2, v3 uint64 }

func newSipState(k0, k1 uint64) sipState {
	return sipState{sipC0 ^ k0, sipC1 ^ k1, sipC2 ^ k0, sipC3 ^ k1}
}

func (s *sipState) round() {
	s.v0 += s.v1
	s.v1 = bits.RotateLeft64(s.v1, 13)
	s.v1 ^= s.v0
	s.v0 = bits.RotateLeft64(s.v0, 32)
	s.v2 += s.v3
	s.v3 = bits.RotateLeft64(s.v3, 16)
	s.v3 ^= s.v2
	s.v0 += s.v3
	s.v3 = bits.RotateLeft64(s.v3, 21)
	s.v3 ^= s.v0
	s.v2 += s.v1
	s.v1 = bits.RotateLeft64(s.v1, 17)
	s.v1 ^= s.v2
	s.v2 = bits.RotateLeft64(s.v2, 32)
}

func (s *sipState) compress(m uint64, c int) {
	s.v3 ^= m
	for range c {
		s.round()
	}
	s.v0 ^= m
}

func (s *sipState) finish(d int) uint64 {
	s.v2 ^= 0xff
	for range d {
		s.round()
	}
	return s.v0 ^ s.v1 ^ s.v2 ^ s.v3
}

// sipHash is SipHash-c-d of msg under the key (k0, k1), the key's two
// little-endian halves. mh only needs hsiphash32; this general form exists
// so that both can be checked against published vectors (SipHash-2-4 and
// the kernel's hsiphash).
func sipHash(c, d int, k0, k1 uint64, msg []byte) uint64 {
	s := newSipState(k0, k1)
	n := len(msg)
	for len(msg) >= 8 {
		s.compress(binary.LittleEndian.Uint64(msg), c)
		msg = msg[8:]
	}
	b := uint64(n) << 56
	for i, x := range msg {
		b |= uint64(x) << (8 * i)
	}
	s.compress(b, c)
	return s.finish(d)
}

// hsiphash32 is the 64-bit kernel's hsiphash(&v, 4, key): SipHash-1-3 over
// the four bytes of v in little-endian (x86-64, arm64) order, truncated to
// 32 bits. The key words are hsiphash_key_t's two unsigned longs.
func hsiphash32(v uint32, k0, k1 uint64) uint32 {
	s := newSipState(k0, k1)
	s.compress(4<<56|uint64(v), 1)
	return uint32(s.finish(3))
}
