package sched

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"

	"github.com/lbha/lbha/dest"
)

// goldenRatio32 is the kernel's GOLDEN_RATIO_32 (include/linux/hash.h).
const goldenRatio32 = 0x61C88647

// hash32 is the kernel's hash_32(val, bits): multiply by the golden ratio
// and keep the top bits.
func hash32(val uint32, bits uint) uint32 { return val * goldenRatio32 >> (32 - bits) }

// fold is the schedulers' addr_fold in host order: an IPv4 address as a
// number, an IPv6 address as the XOR of its four 32-bit words. (XOR commutes
// with the byte swap, so folding big-endian words equals the kernel's
// ntohl of the folded network-order words.) An invalid address folds to 0.
func fold(a netip.Addr) uint32 {
	if a.Is4() {
		b := a.As4()
		return binary.BigEndian.Uint32(b[:])
	}
	if a.Is6() {
		b := a.As16()
		return binary.BigEndian.Uint32(b[0:]) ^ binary.BigEndian.Uint32(b[4:]) ^
			binary.BigEndian.Uint32(b[8:]) ^ binary.BigEndian.Uint32(b[12:])
	}
	return 0
}

// shBits is CONFIG_IP_VS_SH_TAB_BITS and dhBits CONFIG_IP_VS_DH_TAB_BITS,
// both 8 by default.
const (
	shBits = 8
	shSize = 1 << shBits
	dhBits = 8
	dhSize = 1 << dhBits
)

// shTable is the 256-bucket table of ip_vs_sh_reassign.
type shTable struct{ b [shSize]*dest.Dest }

// sh is ip_vs_sh, source hashing.
type sh struct {
	fallback, port bool
	tab            atomic.Pointer[shTable]
}

func (s *sh) Name() string { return "sh" }

// Update retiles the table: walking the list round-robin, each destination
// takes max(weight, 1) consecutive buckets, the weight read now.
func (s *sh) Update(ds []*dest.Dest) error {
	ds, err := checkDests(ds)
	if err != nil {
		return err
	}
	t := new(shTable)
	if len(ds) > 0 {
		p, n := 0, 0
		for i := range t.b {
			d := ds[p]
			t.b[i] = d
			if n++; n >= d.Weight() {
				p, n = (p+1)%len(ds), 0
			}
		}
	}
	s.tab.Store(t)
	return nil
}

// shBucket is ip_vs_sh_hashkey with offset 0.
func shBucket(addr netip.Addr, port uint16) uint32 {
	return hash32(uint32(port)+fold(addr), shBits)
}

func (s *sh) Pick(p Packet) *dest.Dest {
	t := s.tab.Load()
	var port uint16
	if s.port && hasPorts(p.Proto) {
		port = p.SrcPort
	}
	h := shBucket(p.Src, port)
	d := t.b[h]
	if d == nil {
		return nil
	}
	if usable(d) {
		return d
	}
	if !s.fallback {
		return nil
	}
	// sh-fallback: the kernel's loop adds the offset (h+k) mod 256 to the
	// hash h again, so it probes (2h+k) mod 256, stopping at an empty bucket.
	for k := range uint32(shSize) {
		d := t.b[(2*h+k)%shSize]
		if d == nil {
			break
		}
		if usable(d) {
			return d
		}
	}
	return nil
}

// dhTable is the 256-bucket table of ip_vs_dh_reassign.
type dhTable struct{ b [dhSize]*dest.Dest }

// dh is ip_vs_dh, destination hashing.
type dh struct {
	tab atomic.Pointer[dhTable]
}

func (s *dh) Name() string { return "dh" }

// Update deals the buckets round-robin, one per destination, weights
// ignored.
func (s *dh) Update(ds []*dest.Dest) error {
	ds, err := checkDests(ds)
	if err != nil {
		return err
	}
	t := new(dhTable)
	if len(ds) > 0 {
		for i := range t.b {
			t.b[i] = ds[i%len(ds)]
		}
	}
	s.tab.Store(t)
	return nil
}

// dhBucket is ip_vs_dh_hashkey.
func dhBucket(addr netip.Addr) uint32 { return hash32(fold(addr), dhBits) }

// Pick has no fallback: the bucket's destination must be available, have a
// positive weight and no OVERLOAD, or nothing is chosen.
func (s *dh) Pick(p Packet) *dest.Dest {
	d := s.tab.Load().b[dhBucket(p.Dst)]
	if d == nil || !d.Available() || !usable(d) {
		return nil
	}
	return d
}
