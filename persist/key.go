package persist

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math/bits"
	"math/rand/v2"
	"net/netip"
)

// MaxPEData is the longest persistence-engine datum (IP_VS_PEDATA_MAXLEN).
const MaxPEData = 255

// Key identifies an entry: the kernel's (af, protocol, caddr, cport, vaddr,
// vport), whether the entry is a template, and for templates of a service
// with a persistence engine the engine's data (the SIP Call-ID), compared
// byte for byte.
//
// The address family is that of Client and Virtual, which must agree
// (IPv4-mapped IPv6 addresses count as IPv4). For a fwmark template Proto is
// 0 and Virtual holds the mark as an address of the family whose first four
// bytes are the mark, big-endian (see [FwmarkAddr]).
type Key struct {
	Proto    uint8
	Client   netip.AddrPort
	Virtual  netip.AddrPort
	Template bool
	PEData   []byte
}

// FwmarkAddr returns the virtual address the kernel gives a fwmark template:
// the mark big-endian in the first four bytes, the rest zero. ipvsadm -Lc
// shows it as 0.0.0.<mark> for IPv4.
func FwmarkAddr(mark uint32, ipv6 bool) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint32(b[:4], mark)
	if ipv6 {
		return netip.AddrFrom16(b)
	}
	return netip.AddrFrom4([4]byte(b[:4]))
}

// addrw is an address in the kernel's layout (union nf_inet_addr: IPv4 in
// the first four bytes, the rest zero), held as four little-endian words of
// those bytes. It is a struct, not an array, so that it travels in
// registers: an array result goes through memory, and reading it back
// wider than it was written stalls store forwarding.
type addrw struct{ w0, w1, w2, w3 uint32 }

// addrWords converts an address; IPv4-mapped IPv6 addresses count as IPv4.
func addrWords(a netip.Addr) (w addrw, v6 bool, ok bool) {
	if a.Is4() {
		b := a.As4()
		w.w0 = binary.LittleEndian.Uint32(b[:])
		return w, false, true
	}
	if !a.IsValid() {
		return w, false, false
	}
	b := a.As16()
	if a.Is4In6() {
		w.w0 = binary.LittleEndian.Uint32(b[12:])
		return w, false, true
	}
	le := binary.LittleEndian
	return addrw{le.Uint32(b[0:]), le.Uint32(b[4:]), le.Uint32(b[8:]), le.Uint32(b[12:])}, true, true
}

func (w addrw) bytes() (b [16]byte) {
	le := binary.LittleEndian
	le.PutUint32(b[0:], w.w0)
	le.PutUint32(b[4:], w.w1)
	le.PutUint32(b[8:], w.w2)
	le.PutUint32(b[12:], w.w3)
	return b
}

func (w *addrw) eq(o *addrw) bool {
	return w.w0 == o.w0 && w.w1 == o.w1 && w.w2 == o.w2 && w.w3 == o.w3
}

// lo and hi are the address as two 64-bit words.
func (w *addrw) lo() uint64 { return uint64(w.w0) | uint64(w.w1)<<32 }
func (w *addrw) hi() uint64 { return uint64(w.w2) | uint64(w.w3)<<32 }

func (w addrw) addr(v6 bool) netip.Addr {
	b := w.bytes()
	if v6 {
		return netip.AddrFrom16(b)
	}
	return netip.AddrFrom4([4]byte(b[:4]))
}

// key is the lookup key, compared as a whole.
type key struct {
	c, v  addrw  // client and virtual address
	ports uint32 // cport<<16 | vport
	pk    uint16 // proto | kind<<8
}

// Bits of the kind byte.
const (
	kindV6       = 1 << 0
	kindTemplate = 1 << 1
	kindPE       = 1 << 2 // template keyed by persistence-engine data too
)

// Unset port value the kernel writes into an invalidated template.
const invalidPort = 0xFFFF

func (k *key) cport() uint16  { return uint16(k.ports >> 16) }
func (k *key) vport() uint16  { return uint16(k.ports) }
func (k *key) proto() uint8   { return uint8(k.pk) }
func (k *key) kind() uint8    { return uint8(k.pk >> 8) }
func (k *key) v6() bool       { return k.kind()&kindV6 != 0 }
func (k *key) template() bool { return k.kind()&kindTemplate != 0 }
func (k *key) hasPE() bool    { return k.kind()&kindPE != 0 }

func (k *key) setCport(p uint16) { k.ports = uint32(p)<<16 | k.ports&0xFFFF }
func (k *key) setVport(p uint16) { k.ports = k.ports&^0xFFFF | uint32(p) }

// set fills k in place. Keys are built through a pointer, never returned by
// value: a 40-byte result goes through a temporary copied with wide moves,
// which stall on the narrow stores that filled it.
func (k *key) set(proto uint8, v6 bool, c addrw, cport uint16, v addrw, vport uint16, template, pe bool) {
	var kind uint8
	if v6 {
		kind |= kindV6
	}
	if template {
		kind |= kindTemplate
	}
	if pe {
		kind |= kindPE
	}
	k.c = c
	k.v = v
	k.ports = uint32(cport)<<16 | uint32(vport)
	k.pk = uint16(proto) | uint16(kind)<<8
}

func packKey(proto uint8, v6 bool, c addrw, cport uint16, v addrw, vport uint16, template, pe bool) key {
	var k key
	k.set(proto, v6, c, cport, v, vport, template, pe)
	return k
}

// pack converts a Key into dst, checking the address families.
func (k *Key) pack(dst *key) error {
	c, cv6, ok := addrWords(k.Client.Addr())
	if !ok {
		return fmt.Errorf("client address: %w", ErrInvalid)
	}
	v, vv6, ok := addrWords(k.Virtual.Addr())
	if !ok {
		return fmt.Errorf("virtual address: %w", ErrInvalid)
	}
	if cv6 != vv6 {
		return fmt.Errorf("client and virtual address families differ: %w", ErrInvalid)
	}
	if len(k.PEData) > MaxPEData {
		return fmt.Errorf("persistence-engine data of %d bytes: %w", len(k.PEData), ErrInvalid)
	}
	pe := k.Template && len(k.PEData) > 0
	dst.set(k.Proto, cv6, c, k.Client.Port(), v, k.Virtual.Port(), k.Template, pe)
	return nil
}

// eq compares two keys field by field, in the widths they were written
// (== on the struct may compare wider, or call the runtime's memequal).
func (k *key) eq(o *key) bool {
	return k.c.eq(&o.c) && k.v.eq(&o.v) && k.ports == o.ports && k.pk == o.pk
}

// hasher hashes keys with per-table random secrets, so that clients, who
// choose their addresses and ports, cannot aim many keys at one shard or
// one probe chain without knowing the secrets. It is a multiply-fold
// construction (as in wyhash) over the key's five words: a few
// nanoseconds, where hash/maphash takes about 15.
type hasher struct {
	s    [6]uint64
	seed maphash.Seed // for persistence-engine data
}

func newHasher() hasher {
	h := hasher{seed: maphash.MakeSeed()}
	for i := range h.s {
		// Odd and with both halves non-zero, so no secret degenerates
		// the multiplication.
		h.s[i] = rand.Uint64() | 1<<63 | 1<<31 | 1
	}
	return h
}

// mum multiplies to 128 bits and folds the halves.
func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func (h *hasher) hash(k *key, pe []byte) uint64 {
	x := mum(k.c.lo()^h.s[0], k.c.hi()^h.s[1]) ^ mum(k.v.lo()^h.s[2], k.v.hi()^h.s[3])
	x = mum(x^h.s[4], uint64(k.ports)|uint64(k.pk)<<32^h.s[5])
	if k.hasPE() {
		// Mixed in so templates of one service that differ only by Call-ID
		// (the usual SIP case with netmask 0.0.0.0) spread over the table.
		x = mum(x^h.s[0], maphash.Bytes(h.seed, pe)^h.s[1])
	}
	return x
}
