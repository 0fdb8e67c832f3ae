package sched

import (
	"fmt"
	"math/bits"
	"sync/atomic"

	"github.com/lbha/lbha/dest"
)

// mhPrimes are the table sizes selectable by CONFIG_IP_VS_MH_TAB_INDEX
// (8..17).
var mhPrimes = [...]int{251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071}

// The fixed hsiphash keys of ip_vs_mh's generate_hash_secret: both words of
// each key hold the same constant.
const (
	mhKey1 = 2654435761
	mhKey2 = 2654446892
)

// mh is ip_vs_mh, Maglev hashing.
type mh struct {
	size           int  // M, a prime
	bits           uint // IP_VS_MH_TAB_BITS = CONFIG_IP_VS_MH_TAB_INDEX / 2
	fallback, port bool
	tab            atomic.Pointer[[]*dest.Dest] // M slots; nil slot = empty
}

func newMH(index int, fallback, port bool) *mh {
	s := &mh{size: mhPrimes[index-8], bits: uint(index / 2), fallback: fallback, port: port}
	s.tab.Store(new([]*dest.Dest))
	return s
}

func (s *mh) Name() string { return "mh" }

// mhHash is ip_vs_mh_hashkey: hsiphash of offset+port+addr_fold.
func mhHash(fold uint32, port uint16, key uint64, offset uint32) uint32 {
	return hsiphash32(offset+uint32(port)+fold, key, key)
}

// Update rebuilds the lookup table (ip_vs_mh_dest_changed). Each
// destination's share comes from its last non-zero weight, so quiescing a
// server (weight 0) keeps its slots and only the lookup skips it; a server
// that never had a weight gets no slot.
func (s *mh) Update(ds []*dest.Dest) error {
	if len(ds) > s.size {
		return fmt.Errorf("sched: mh: update: %d destinations exceed the %d-slot table", len(ds), s.size)
	}
	ds, err := checkDests(ds)
	if err != nil {
		return err
	}
	t := s.populate(ds)
	s.tab.Store(&t)
	return nil
}

type mhSetup struct {
	perm, skip uint32 // next preferred slot, step along the permutation
	turns      int    // slots claimed per round
}

// mhTurns returns the slots each destination claims per populate round
// from the last non-zero weights lw: lw/gcd shifted right until the largest
// fits in tabBits bits (IP_VS_MH_TAB_BITS), at least 1 for any weight ever
// set, 0 for a destination that never had one. nil means no weight at all.
func mhTurns(lw []int, tabBits uint) []int {
	g, maxw := 0, 0
	for _, w := range lw {
		if w > 0 {
			g = gcd(g, w)
			maxw = max(maxw, w)
		}
	}
	if g == 0 {
		return nil
	}
	rshift := max(bits.Len(uint(maxw/g))-int(tabBits), 0)
	turns := make([]int, len(lw))
	for i, w := range lw {
		if t := (w / g) >> rshift; t > 0 {
			turns[i] = t
		} else if w != 0 {
			turns[i] = 1
		}
	}
	return turns
}

func (s *mh) populate(ds []*dest.Dest) []*dest.Dest {
	m := uint32(s.size)
	table := make([]*dest.Dest, m)
	lw := make([]int, len(ds))
	for i, d := range ds {
		lw[i] = d.LastWeight()
	}
	turns := mhTurns(lw, s.bits)
	if turns == nil {
		return table // no weight ever: every slot empty
	}
	setup := make([]mhSetup, len(ds))
	for i, d := range ds {
		f := fold(d.Addr)
		setup[i] = mhSetup{
			perm:  mhHash(f, d.Port, mhKey1, 0) % m,
			skip:  mhHash(f, d.Port, mhKey2, 0)%(m-1) + 1,
			turns: turns[i],
		}
	}
	// Round-robin over the list; each destination claims its next `turns`
	// free slots along its own permutation offset, offset+skip, ...
	for n := uint32(0); ; {
		for i := range setup {
			st := &setup[i]
			for range st.turns {
				for table[st.perm] != nil {
					if st.perm += st.skip; st.perm >= m {
						st.perm -= m
					}
				}
				table[st.perm] = ds[i]
				if n++; n == m {
					return table
				}
			}
		}
	}
}

func (s *mh) Pick(p Packet) *dest.Dest {
	t := *s.tab.Load()
	if len(t) == 0 {
		return nil
	}
	var port uint16
	if s.port && hasPorts(p.Proto) {
		port = p.SrcPort
	}
	f, m := fold(p.Src), uint32(len(t))
	h := mhHash(f, port, mhKey1, 0) % m
	d := t[h]
	if d == nil {
		return nil
	}
	if usable(d) {
		return d
	}
	if !s.fallback {
		return nil
	}
	// mh-fallback re-hashes the key with the offset (h+k) mod M added,
	// k = 0..M-1, and takes the first usable slot; an empty slot ends the
	// search.
	for k := range m {
		d := t[mhHash(f, port, mhKey1, (h+k)%m)%m]
		if d == nil {
			break
		}
		if usable(d) {
			return d
		}
	}
	return nil
}
