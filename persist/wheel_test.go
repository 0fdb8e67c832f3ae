package persist

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

// newWheelShard returns a bare shard whose entries carry deadlines in ticks
// (tick = 1 ns), for driving the wheel directly.
func newWheelShard() *shard {
	return &shard{tick: 1, pe: map[uint32][]byte{}}
}

func (sh *shard) addTimer(tb fataler, due uint64) uint32 {
	i, e, ok := sh.slab.alloc()
	if !ok {
		tb.Fatal("slab full")
	}
	e.setDeadline(int64(due))
	sh.schedule(i, due)
	return i
}

// fireAll advances to target and returns the ids fired with the tick each
// fired at.
func (sh *shard) fireAll(target uint64) map[uint32]uint64 {
	got := map[uint32]uint64{}
	sh.advance(target, func(i uint32) bool {
		got[i] = sh.wheel.cur
		sh.unschedule(i)
		sh.slab.release(i)
		return true
	})
	return got
}

func TestWheelFiresOnTheDueTick(t *testing.T) {
	dues := []uint64{1, 2, 63, 64, 65, 127, 128, 4095, 4096, 4097, 64 * 64 * 64, 64*64*64 + 1, 1 << 24, 1<<24 + 63, 1<<30 + 5}
	tests := []struct {
		name  string
		steps func(last uint64) []uint64 // successive advance targets
	}{
		{"tick by tick to 5000, then jumps", func(last uint64) []uint64 {
			var s []uint64
			for i := uint64(1); i <= 5000; i++ {
				s = append(s, i)
			}
			for _, d := range dues {
				if d > 5000 {
					s = append(s, d-1, d)
				}
			}
			return s
		}},
		{"exactly each due tick", func(last uint64) []uint64 { return dues }},
		{"one big jump", func(last uint64) []uint64 { return []uint64{last + 1000} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sh := newWheelShard()
			want := map[uint32]uint64{}
			for _, d := range dues {
				want[sh.addTimer(t, d)] = d
			}
			got := map[uint32]uint64{}
			for _, target := range tt.steps(dues[len(dues)-1]) {
				for i, at := range sh.fireAll(target) {
					got[i] = at
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("fired at (-want +got):\n%s", diff)
			}
			if sh.wheel.count != 0 {
				t.Errorf("%d timers left", sh.wheel.count)
			}
		})
	}
}

func TestWheelOrderAndRestart(t *testing.T) {
	sh := newWheelShard()
	a := sh.addTimer(t, 100)
	b := sh.addTimer(t, 5000)
	c := sh.addTimer(t, 300000)
	sh.fireAll(50)
	// Restart b earlier and c later; unschedule a.
	sh.unschedule(b)
	sh.slab.at(b).setDeadline(60)
	sh.schedule(b, 60)
	sh.unschedule(c)
	sh.slab.at(c).setDeadline(400000)
	sh.schedule(c, 400000)
	sh.unschedule(a)
	var order []string
	sh.advance(1<<20, func(i uint32) bool {
		order = append(order, fmt.Sprintf("%d@%d", i, sh.wheel.cur))
		sh.unschedule(i)
		return true
	})
	want := []string{fmt.Sprintf("%d@60", b), fmt.Sprintf("%d@400000", c)}
	if diff := cmp.Diff(want, order); diff != "" {
		t.Errorf("firing order (-want +got):\n%s", diff)
	}
}

func TestWheelStopAndResume(t *testing.T) {
	sh := newWheelShard()
	var ids []uint32
	for range 10 {
		ids = append(ids, sh.addTimer(t, 4096))
	}
	var fired []uint32
	budget := 3
	for calls := 0; len(fired) < 10; calls++ {
		if calls > 10 {
			t.Fatal("advance makes no progress")
		}
		n := budget
		sh.advance(5000, func(i uint32) bool {
			if n == 0 {
				return false
			}
			n--
			if sh.wheel.cur != 4096 {
				t.Errorf("fired at tick %d, want 4096", sh.wheel.cur)
			}
			fired = append(fired, i)
			sh.unschedule(i)
			return true
		})
	}
	slices.Sort(fired)
	if diff := cmp.Diff(ids, fired); diff != "" {
		t.Errorf("fired (-want +got):\n%s", diff)
	}
}

// TestPropWheel compares the wheel with a plain list of due ticks under
// random schedules, restarts and advances.
func TestPropWheel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sh := newWheelShard()
		due := map[uint32]uint64{}
		for range rapid.IntRange(1, 200).Draw(t, "ops") {
			now := sh.wheel.cur
			delta := func() uint64 {
				return rapid.SampledFrom([]uint64{0, 1, 2, 63, 64, 65, 4095, 4096, 4097, 262144, 1 << 30}).Draw(t, "delta") +
					uint64(rapid.IntRange(0, 3).Draw(t, "jitter"))
			}
			switch rapid.IntRange(0, 2).Draw(t, "op") {
			case 0:
				d := now + delta()
				i := sh.addTimer(t, d)
				due[i] = max(d, now)
			case 1:
				if len(due) == 0 {
					continue
				}
				keys := make([]uint32, 0, len(due))
				for k := range due {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				i := rapid.SampledFrom(keys).Draw(t, "restart")
				// Restart later or earlier, through the lazy path.
				d := now + delta()
				if rapid.Bool().Draw(t, "earlier") && d > now+1 {
					d = now + 1
				}
				sh.slab.at(i).setDeadline(int64(d))
				sh.reschedule(i)
				due[i] = max(d, now)
			case 2:
				target := now + delta()
				for i, at := range sh.fireAll(target) {
					want, ok := due[i]
					if !ok {
						t.Fatalf("fired unknown timer %d", i)
					}
					if at != want {
						t.Fatalf("timer due %d fired at %d", want, at)
					}
					delete(due, i)
				}
				for i, d := range due {
					if d <= target {
						t.Fatalf("timer %d due %d not fired by %d", i, d, target)
					}
				}
			}
			if sh.wheel.count != len(due) {
				t.Fatalf("wheel holds %d, model %d", sh.wheel.count, len(due))
			}
		}
	})
}

// TestIndex compares the index with a map under random inserts and
// deletions in one small shard, where probe runs are long.
func TestIndex(t *testing.T) {
	h := newHasher()
	sh := &shard{h: h, pe: map[uint32][]byte{}}
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[key]uint32{}
	mk := func(n int) key {
		return packKey(ProtoTCP, false, addrw{w0: uint32(n) & 0xFFFF}, uint16(n), addrw{w0: 10}, 80, false, false)
	}
	for step := range 20000 {
		k := mk(rng.IntN(3000))
		hk := h.hash(&k, nil)
		if i, ok := model[k]; ok {
			got, found := sh.find(&k, nil, hk)
			if !found || got != i {
				t.Fatalf("step %d: find = %d, %v; want %d", step, got, found, i)
			}
			sh.indexRemove(i, hk)
			sh.slab.release(i)
			delete(model, k)
			if _, found := sh.find(&k, nil, hk); found {
				t.Fatalf("step %d: found after removal", step)
			}
			continue
		}
		if _, found := sh.find(&k, nil, hk); found {
			t.Fatalf("step %d: found a key never inserted", step)
		}
		i, e, _ := sh.slab.alloc()
		e.key = k
		sh.indexInsert(i, hk)
		model[k] = i
	}
	if sh.indexed != len(model) {
		t.Fatalf("index holds %d, model %d", sh.indexed, len(model))
	}
	for k, i := range model {
		if got, ok := sh.find(&k, nil, h.hash(&k, nil)); !ok || got != i {
			t.Fatalf("final find = %d, %v; want %d", got, ok, i)
		}
	}
}
