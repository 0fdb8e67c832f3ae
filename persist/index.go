package persist

import "bytes"

// The index is open addressing with linear probing over uint32 slots. A
// slot holds 1 + the slab index in its low 24 bits and the top 8 bits of
// the key hash above, so most probes that do not match are rejected without
// touching the slab. Deletion shifts later entries back, so there are no
// tombstones and a lookup stops at the first empty slot.
const (
	idxBits    = 24
	idxMask    = 1<<idxBits - 1
	minIndex   = 16
	loadFactor = 4 // grow when count > len*3/loadFactor
)

func slotTag(h uint64) uint32 { return uint32(h>>56) << idxBits }

// slotPos uses hash bits that neither the shard choice (low bits) nor the
// tag (top bits) use.
func slotPos(h uint64, mask uint32) uint32 { return uint32(h>>24) & mask }

// find returns the slab index of the entry with key k (and PE data pe for
// PE templates).
func (sh *shard) find(k *key, pe []byte, h uint64) (uint32, bool) {
	if len(sh.index) == 0 {
		return 0, false
	}
	mask := uint32(len(sh.index) - 1)
	tag := slotTag(h)
	for p := slotPos(h, mask); ; p = (p + 1) & mask {
		v := sh.index[p]
		if v == 0 {
			return 0, false
		}
		if v&^idxMask != tag {
			continue
		}
		i := v&idxMask - 1
		if sh.slab.at(i).key.eq(k) && (!k.hasPE() || bytes.Equal(sh.pe[i], pe)) {
			return i, true
		}
	}
}

// indexInsert adds slab entry i, whose key hashes to h. The key must not
// already be indexed.
func (sh *shard) indexInsert(i uint32, h uint64) {
	if (sh.indexed+1)*loadFactor > len(sh.index)*3 {
		sh.indexGrow()
	}
	sh.place(i, h)
	sh.indexed++
}

func (sh *shard) place(i uint32, h uint64) {
	mask := uint32(len(sh.index) - 1)
	p := slotPos(h, mask)
	for sh.index[p] != 0 {
		p = (p + 1) & mask
	}
	sh.index[p] = slotTag(h) | (i + 1)
}

func (sh *shard) indexGrow() {
	old := sh.index
	n := max(len(old)*2, minIndex)
	sh.index = make([]uint32, n)
	for _, v := range old {
		if v != 0 {
			i := v&idxMask - 1
			sh.place(i, sh.hashOf(i))
		}
	}
}

// indexRemove takes slab entry i, whose key hashes to h, out of the index.
func (sh *shard) indexRemove(i uint32, h uint64) {
	if len(sh.index) == 0 {
		return
	}
	mask := uint32(len(sh.index) - 1)
	want := slotTag(h) | (i + 1)
	p := slotPos(h, mask)
	for sh.index[p] != want {
		if sh.index[p] == 0 {
			return // not indexed
		}
		p = (p + 1) & mask
	}
	// Backward-shift deletion: move each later member of the probe run
	// into the hole unless its home lies cyclically in (hole, its slot].
	hole := p
	for q := (p + 1) & mask; sh.index[q] != 0; q = (q + 1) & mask {
		home := slotPos(sh.hashOf(sh.index[q]&idxMask-1), mask)
		if (q-home)&mask >= (q-hole)&mask {
			sh.index[hole] = sh.index[q]
			hole = q
		}
	}
	sh.index[hole] = 0
	sh.indexed--
}

// hashOf recomputes the hash of a stored entry.
func (sh *shard) hashOf(i uint32) uint64 {
	e := sh.slab.at(i)
	return sh.h.hash(&e.key, sh.pe[i])
}
