package persist

import (
	"sync"
	"sync/atomic"

	"github.com/lbha/lbha/dest"
)

// registry maps destinations to small integer ids so that slab entries hold
// a uint32 instead of a pointer the garbage collector would have to scan.
// Every bound entry holds one reference on its id; an id is recycled when
// the last entry bound to it goes away.
//
// Reads by id are lock-free: the slot array is replaced, never modified in
// place, when it grows, and a slot's destination only changes while nobody
// holds a reference to it.
type registry struct {
	mu    sync.RWMutex
	ids   map[*dest.Dest]uint32 // guarded by mu
	free  []uint32              // guarded by mu
	slots atomic.Pointer[[]*regSlot]
}

type regSlot struct {
	d    atomic.Pointer[dest.Dest]
	refs atomic.Int64
}

func newRegistry() *registry {
	r := &registry{ids: make(map[*dest.Dest]uint32)}
	// id 0 means "no destination".
	s := []*regSlot{new(regSlot)}
	r.slots.Store(&s)
	return r
}

// acquire returns d's id with one more reference, registering d if needed.
func (r *registry) acquire(d *dest.Dest) uint32 {
	r.mu.RLock()
	id, ok := r.ids[d]
	if ok {
		(*r.slots.Load())[id].refs.Add(1)
	}
	r.mu.RUnlock()
	if ok {
		return id
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if id, ok := r.ids[d]; ok {
		(*r.slots.Load())[id].refs.Add(1)
		return id
	}
	slots := *r.slots.Load()
	if n := len(r.free); n > 0 {
		id = r.free[n-1]
		r.free = r.free[:n-1]
	} else {
		id = uint32(len(slots))
		grown := make([]*regSlot, len(slots), 2*len(slots)+1)
		copy(grown, slots)
		grown = append(grown, new(regSlot))
		r.slots.Store(&grown)
		slots = grown
	}
	s := slots[id]
	s.d.Store(d)
	s.refs.Store(1)
	r.ids[d] = id
	return id
}

// release drops one reference on id.
func (r *registry) release(id uint32) {
	if id == 0 {
		return
	}
	s := (*r.slots.Load())[id]
	if s.refs.Add(-1) != 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// acquire may have revived the id between the decrement and the lock.
	if s.refs.Load() != 0 {
		return
	}
	d := s.d.Load()
	if cur, ok := r.ids[d]; ok && cur == id {
		delete(r.ids, d)
		s.d.Store(nil)
		r.free = append(r.free, id)
	}
}

// get returns the destination of an id the caller holds a reference to.
func (r *registry) get(id uint32) *dest.Dest {
	if id == 0 {
		return nil
	}
	slots := *r.slots.Load()
	if int(id) >= len(slots) {
		return nil
	}
	return slots[id].d.Load()
}

// len returns the number of registered destinations.
func (r *registry) len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.ids)
}
