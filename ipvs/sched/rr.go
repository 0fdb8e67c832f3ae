package sched

import (
	"sync"

	"github.com/lbha/lbha/dest"
)

// rr is ip_vs_rr: a circular walk that starts after the last chosen
// destination.
type rr struct {
	mu    sync.Mutex
	dests []*dest.Dest
	pos   int // index of the last chosen destination; -1 = list head
}

func (s *rr) Name() string { return "rr" }

func (s *rr) Update(ds []*dest.Dest) error {
	ds, err := checkDests(ds)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// The kernel keeps a pointer to the last chosen dest; only its removal
	// moves it, to the entry before it (ip_vs_rr_del_dest). Several removals
	// in one Update therefore land on the nearest earlier survivor.
	pos := -1
	for j := s.pos; j >= 0; j-- {
		if k := indexOf(ds, s.dests[j]); k >= 0 {
			pos = k
			break
		}
	}
	s.dests, s.pos = ds, pos
	return nil
}

func (s *rr) Pick(Packet) *dest.Dest {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.dests)
	// Entries after the last chosen, then from the head up to and including
	// the last chosen itself.
	for k, i := 0, s.pos; k < n; k++ {
		if i++; i == n {
			i = 0
		}
		if d := s.dests[i]; usable(d) {
			s.pos = i
			return d
		}
	}
	return nil
}

func indexOf(ds []*dest.Dest, d *dest.Dest) int {
	for i, x := range ds {
		if x == d {
			return i
		}
	}
	return -1
}
