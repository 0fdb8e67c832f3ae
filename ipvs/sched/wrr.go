package sched

import (
	"sync"

	"github.com/lbha/lbha/dest"
)

// wrr is ip_vs_wrr. Passes over the list with a current weight cw that
// starts at mw and drops by di (the gcd of the positive weights) after each
// pass; a pass picks the next destination whose weight is at least cw. mw is
// the largest weight minus (di-1), so the last pass runs with cw = 1 and
// still finds a destination whose weight fell below di since the last
// Update.
type wrr struct {
	mu    sync.Mutex
	dests []*dest.Dest
	cl    int // index of the current destination; -1 = list head
	cw    int // current weight
	mw    int // maximum weight - (di-1); 0 = nothing to schedule
	di    int // decreasing interval: gcd of positive weights, 1 if none
}

func (s *wrr) Name() string { return "wrr" }

// Update is ip_vs_wrr_dest_changed: back to the list head, recompute di and
// mw, and bring cw back into range: mw if it is above mw or 0, else, when
// di > 1, onto the step grid (cw/di)*di+1.
func (s *wrr) Update(ds []*dest.Dest) error {
	ds, err := checkDests(ds)
	if err != nil {
		return err
	}
	g, maxw := 0, 0
	for _, d := range ds {
		w := d.Weight()
		if w > 0 {
			g = gcd(g, w)
		}
		maxw = max(maxw, w)
	}
	if g == 0 {
		g = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dests, s.cl, s.di, s.mw = ds, -1, g, maxw-(g-1)
	if s.cw > s.mw || s.cw == 0 {
		s.cw = s.mw
	} else if s.di > 1 {
		s.cw = (s.cw/s.di)*s.di + 1
	}
	return nil
}

func (s *wrr) Pick(Packet) *dest.Dest {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mw <= 0 {
		return nil
	}
	n := len(s.dests)
	last, stop := s.cl, -2 // -2: no stop mark yet
	lastPass, restarted := false, false
	i := s.cl
	for {
		for i++; i < n; i++ {
			d := s.dests[i]
			if !d.Overloaded() && d.Weight() >= s.cw {
				s.cl = i
				return d
			}
			if i == stop {
				s.cl = i
				return nil
			}
		}
		i = -1 // walked off the end: back at the head
		s.cw -= s.di
		if s.cw <= 0 {
			s.cw = s.mw
			// Either the pass that just ended was already the cw = 1
			// pass, or we started at the head so the whole list has been
			// tried at every weight: nothing is eligible.
			if lastPass || last == -1 {
				s.cl = -1
				return nil
			}
			restarted = true
		}
		lastPass = s.cw <= s.di
		if lastPass && restarted && last != -1 {
			// The entries after last were tried with cw = 1 before the
			// restart; this final pass need only reach last.
			stop = last
		}
	}
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
