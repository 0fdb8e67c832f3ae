package persist

// entry is one slab record: a connection or a template. It holds no
// pointers, so the slab chunks are never scanned by the garbage collector.
// Every field is at most 4-byte aligned (the deadline is split in halves),
// which keeps it at 108 bytes.
type entry struct {
	key           // caddr, vaddr, cport, vport, proto, kind
	daddr   addrw // destination address, kernel layout
	flags   Flags
	fwmark  uint32
	timeout uint32 // configured timeout, milliseconds
	inPkts  uint32
	dlLo    uint32 // deadline, nanoseconds since the table epoch,
	dlHi    uint32 // split so the entry needs no 8-byte alignment
	dest    uint32 // registry id, 0 = unbound
	// link is, for a connection, 1 + the slab index of its template in shard
	// linkShard with generation linkGen (0 = not controlled); for a
	// template, its n_control count.
	link      uint32
	wprev     uint32 // wheel list links, 1 + slab index, 0 = none
	wnext     uint32 // also links the free list
	dport     uint16 // destination port
	linkShard uint16
	linkGen   uint16
	state     State
	gen       uint16 // bumped on every reuse of the slot, checked by Refs
	meta      uint16 // wheel slot id in the low bits, metaXxx flags above
}

// Bits of entry.meta above the wheel slot id.
const (
	metaSlotMask uint16 = 0x03FF
	metaNoSlot   uint16 = metaSlotMask // not on any wheel list
	metaUsed     uint16 = 1 << 15
	metaInvalid  uint16 = 1 << 14 // invalidated template, out of the index
	metaDestV6   uint16 = 1 << 13 // daddr is IPv6 (the kernel's daf)
)

func (e *entry) deadline() int64 { return int64(uint64(e.dlHi)<<32 | uint64(e.dlLo)) }
func (e *entry) setDeadline(ns int64) {
	e.dlLo, e.dlHi = uint32(ns), uint32(uint64(ns)>>32)
}

func (e *entry) used() bool        { return e.meta&metaUsed != 0 }
func (e *entry) invalid() bool     { return e.meta&metaInvalid != 0 }
func (e *entry) wheelSlot() uint16 { return e.meta & metaSlotMask }
func (e *entry) setWheelSlot(s uint16) {
	e.meta = e.meta&^metaSlotMask | s&metaSlotMask
}

// Slab geometry: fixed chunks so that entry addresses never move and growth
// never copies. 2048 entries of 108 bytes are exactly 27 pages, so the
// allocator wastes nothing on a chunk.
const (
	chunkBits = 11
	chunkSize = 1 << chunkBits
	chunkMask = chunkSize - 1

	// maxShardEntries bounds a shard: index slots keep 24 bits for 1 +
	// the slab index and 8 bits of hash tag.
	maxShardEntries = 1<<24 - 2
)

type chunk [chunkSize]entry

// slab is a shard's entry storage.
type slab struct {
	chunks []*chunk
	top    uint32 // slots ever handed out
	free   uint32 // head of the free list, 1 + index, 0 = empty
	live   int
}

func (s *slab) at(i uint32) *entry { return &s.chunks[i>>chunkBits][i&chunkMask] }

// alloc returns a cleared, used entry and its index, or false when the
// shard is full.
func (s *slab) alloc() (uint32, *entry, bool) {
	var i uint32
	switch {
	case s.free != 0:
		i = s.free - 1
		s.free = s.at(i).wnext
	case s.top < maxShardEntries:
		i = s.top
		if int(i>>chunkBits) == len(s.chunks) {
			s.chunks = append(s.chunks, new(chunk))
		}
		s.top++
	default:
		return 0, nil, false
	}
	e := s.at(i)
	gen := e.gen + 1
	if gen == 0 {
		gen = 1
	}
	*e = entry{gen: gen, meta: metaUsed | metaNoSlot}
	s.live++
	return i, e, true
}

// release puts an entry back on the free list. Its gen is kept so that the
// next user bumps it and stale Refs stop matching.
func (s *slab) release(i uint32) {
	e := s.at(i)
	gen := e.gen
	*e = entry{gen: gen, wnext: s.free}
	s.free = i + 1
	s.live--
}
