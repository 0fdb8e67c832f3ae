package persist

import "math/bits"

// Each shard expires its entries with a hierarchical timer wheel: wheelLevels
// levels of 64 slots, level l slot s holding the entries due in the tick
// range whose digit l (6 bits) is s. An entry sits at the highest level
// where its due tick and the wheel's current tick differ, so it is touched
// once per level at most on its way down: O(1) per entry. Lists are doubly
// linked through the slab (entry.wprev/wnext), so a timer restart is an O(1)
// unlink and link. Per-level occupancy bitmaps let the wheel jump straight
// to the next tick that has work, so an idle or sparse table costs nothing
// per tick.
const (
	wheelBits   = 6
	wheelSlots  = 1 << wheelBits
	wheelLevels = 6 // 2^36 ticks: over 200 years at 100 ms
	wheelSpan   = 1 << (wheelBits * wheelLevels)
)

type wheel struct {
	cur   uint64 // last tick processed
	heads [wheelLevels][wheelSlots]uint32
	occ   [wheelLevels]uint64
	count int
}

func digit(t uint64, level int) uint64 { return t >> (wheelBits * level) & (wheelSlots - 1) }

// schedule puts entry i on the list for tick due. A tick already reached
// goes to level 0's current slot, which advance fires first.
func (sh *shard) schedule(i uint32, due uint64) {
	w := &sh.wheel
	if due < w.cur {
		due = w.cur
	}
	if due-w.cur >= wheelSpan {
		due = w.cur + wheelSpan - 1
	}
	level := max(bits.Len64(due^w.cur)-1, 0) / wheelBits
	slot := digit(due, level)
	e := sh.slab.at(i)
	e.setWheelSlot(uint16(level*wheelSlots) + uint16(slot))
	head := &w.heads[level][slot]
	e.wprev = 0
	e.wnext = *head
	if *head != 0 {
		sh.slab.at(*head - 1).wprev = i + 1
	}
	*head = i + 1
	w.occ[level] |= 1 << slot
	w.count++
}

// unschedule takes entry i off its wheel list, if it is on one.
func (sh *shard) unschedule(i uint32) {
	e := sh.slab.at(i)
	id := e.wheelSlot()
	if id == metaNoSlot {
		return
	}
	w := &sh.wheel
	level, slot := int(id/wheelSlots), id%wheelSlots
	if e.wprev != 0 {
		sh.slab.at(e.wprev - 1).wnext = e.wnext
	} else {
		w.heads[level][slot] = e.wnext
		if e.wnext == 0 {
			w.occ[level] &^= 1 << slot
		}
	}
	if e.wnext != 0 {
		sh.slab.at(e.wnext - 1).wprev = e.wprev
	}
	e.wprev, e.wnext = 0, 0
	e.setWheelSlot(metaNoSlot)
	w.count--
}

// slotStart returns the first tick the slot with id (level*64 + slot)
// stands for, in the rotation the wheel is in.
func (w *wheel) slotStart(id uint16) uint64 {
	level, slot := int(id/wheelSlots), uint64(id%wheelSlots)
	shift := wheelBits * level
	return w.cur>>(shift+wheelBits)<<(shift+wheelBits) | slot<<shift
}

// nextEvent returns the first tick after cur at which some slot must be
// cascaded or fired, and false if the wheel is empty.
func (w *wheel) nextEvent() (uint64, bool) {
	if w.count == 0 {
		return 0, false
	}
	best, found := uint64(0), false
	for l := range wheelLevels {
		// Slots above the current digit, within the current rotation of
		// level l. schedule never puts anything at or below it, except in
		// level 0's current slot, which advance drains before asking.
		// (For d = 63 the shift yields 0 and the mask all ones.)
		d := digit(w.cur, l)
		above := w.occ[l] &^ (1<<(d+1) - 1)
		if above == 0 {
			continue
		}
		s := uint64(bits.TrailingZeros64(above))
		shift := wheelBits * l
		t := w.cur>>(shift+wheelBits)<<(shift+wheelBits) | s<<shift
		if !found || t < best {
			best, found = t, true
		}
	}
	return best, found
}

// advance moves the wheel to tick target. For every entry due on the way it
// calls fire, which must unschedule the entry (and may schedule it again,
// later). fire returns false to stop early; advance then returns false and
// a later call resumes with the rest of the slot.
func (sh *shard) advance(target uint64, fire func(i uint32) bool) bool {
	w := &sh.wheel
	for {
		// Level 0's current slot holds what is due now: entries scheduled
		// for a tick already reached, entries cascaded down at this tick,
		// and the rest of a slot an earlier call stopped firing.
		slot := digit(w.cur, 0)
		for w.heads[0][slot] != 0 {
			i := w.heads[0][slot] - 1
			if due := sh.dueTick(sh.slab.at(i).deadline()); due > w.cur {
				// Restarted later since it was filed (see reschedule).
				sh.unschedule(i)
				sh.schedule(i, due)
				continue
			}
			if !fire(i) {
				return false
			}
		}
		t, ok := w.nextEvent()
		if !ok || t > target {
			if target > w.cur {
				w.cur = target
			}
			return true
		}
		w.cur = t
		// Cascade the higher levels whose slot starts at t, highest first:
		// their entries land on lower levels, those due at t in level 0's
		// current slot, fired at the top of the loop.
		for l := wheelLevels - 1; l >= 1; l-- {
			if t&(1<<(wheelBits*l)-1) != 0 {
				continue
			}
			slot := digit(t, l)
			head := w.heads[l][slot]
			w.heads[l][slot] = 0
			w.occ[l] &^= 1 << slot
			for head != 0 {
				i := head - 1
				e := sh.slab.at(i)
				head = e.wnext
				e.setWheelSlot(metaNoSlot)
				e.wprev, e.wnext = 0, 0
				w.count--
				sh.schedule(i, sh.dueTick(e.deadline()))
			}
		}
	}
}
