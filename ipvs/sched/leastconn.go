package sched

import (
	"sync/atomic"

	"github.com/lbha/lbha/dest"
)

// stateless is a scheduler whose choice depends only on the list and the
// destinations' live counters: Update publishes an immutable copy that Pick
// reads without a lock.
type stateless struct {
	name  string
	dests atomic.Pointer[[]*dest.Dest]
	pick  func(ds []*dest.Dest) *dest.Dest
}

func newStateless(name string, pick func([]*dest.Dest) *dest.Dest) *stateless {
	s := &stateless{name: name, pick: pick}
	s.dests.Store(new([]*dest.Dest))
	return s
}

func (s *stateless) Name() string { return s.name }

func (s *stateless) Update(ds []*dest.Dest) error {
	ds, err := checkDests(ds)
	if err != nil {
		return err
	}
	s.dests.Store(&ds)
	return nil
}

func (s *stateless) Pick(Packet) *dest.Dest { return s.pick(*s.dests.Load()) }

// pickLC is ip_vs_lc: the smallest overhead among usable destinations.
func pickLC(ds []*dest.Dest) *dest.Dest {
	var least *dest.Dest
	var loh int64
	for _, d := range ds {
		if !usable(d) {
			continue
		}
		if doh := d.Overhead(); least == nil || doh < loh {
			least, loh = d, doh
		}
	}
	return least
}

// pickWLC is ip_vs_wlc, also the fallback of lblc and lblcr: the smallest
// overhead/weight, compared as loh×w_d > doh×w_least.
func pickWLC(ds []*dest.Dest) *dest.Dest { return weightedLeast(ds, false) }

// pickSED is ip_vs_sed: as wlc with overhead = activeconns+1, so an idle
// heavy server beats an idle light one.
func pickSED(ds []*dest.Dest) *dest.Dest { return weightedLeast(ds, true) }

func sedOverhead(d *dest.Dest) int64 { return int64(d.ActiveConns()) + 1 }

// weightedLeast is the two-stage loop shared by wlc, sed, lblc and lblcr:
// the first usable destination is the candidate, later ones replace it only
// when strictly less loaded per unit of weight. sed selects sed's overhead;
// a flag rather than a function value keeps the loop free of indirect calls.
func weightedLeast(ds []*dest.Dest, sed bool) *dest.Dest {
	overhead := func(d *dest.Dest) int64 {
		if sed {
			return sedOverhead(d)
		}
		return d.Overhead()
	}
	var least *dest.Dest
	var loh, lw int64
	for _, d := range ds {
		if d.Overloaded() {
			continue
		}
		w := int64(d.Weight())
		if least == nil {
			if w > 0 {
				least, loh, lw = d, overhead(d), w
			}
			continue
		}
		// The kernel does not test w > 0 here: with w = 0 the left side is
		// 0 and cannot exceed a non-negative right side. The explicit test
		// keeps a quiesced server out even if a counter went negative.
		if doh := overhead(d); w > 0 && loh*w > doh*lw {
			least, loh, lw = d, doh, w
		}
	}
	return least
}

// pickNQ is ip_vs_nq: the first usable destination with no active
// connection wins at once; otherwise the sed rule.
func pickNQ(ds []*dest.Dest) *dest.Dest {
	var least *dest.Dest
	var loh, lw int64
	for _, d := range ds {
		if !usable(d) {
			continue
		}
		if d.ActiveConns() == 0 {
			return d
		}
		doh, w := sedOverhead(d), int64(d.Weight())
		if least == nil || loh*w > doh*lw {
			least, loh, lw = d, doh, w
		}
	}
	return least
}

// pickFO is ip_vs_fo: the highest weight among usable destinations, the
// first one on a tie.
func pickFO(ds []*dest.Dest) *dest.Dest {
	var best *dest.Dest
	hw := 0
	for _, d := range ds {
		if w := d.Weight(); w > hw && !d.Overloaded() {
			best, hw = d, w
		}
	}
	return best
}

// pickOVF is ip_vs_ovf: the highest weight among usable destinations whose
// active connections do not exceed their weight, the first one on a tie.
func pickOVF(ds []*dest.Dest) *dest.Dest {
	var best *dest.Dest
	hw := 0
	for _, d := range ds {
		w := d.Weight()
		if w == 0 || d.Overloaded() || d.ActiveConns() > w {
			continue
		}
		if best == nil || w > hw {
			best, hw = d, w
		}
	}
	return best
}

// twos is ip_vs_twos, the power of two choices: two destinations drawn at
// random in proportion to weight, the less loaded per unit of weight wins.
type twos struct {
	dests atomic.Pointer[[]*dest.Dest]
	rand  func() uint32
}

func (s *twos) Name() string { return "twos" }

func (s *twos) Update(ds []*dest.Dest) error {
	ds, err := checkDests(ds)
	if err != nil {
		return err
	}
	s.dests.Store(&ds)
	return nil
}

func (s *twos) Pick(Packet) *dest.Dest {
	p := s.dests.Load()
	if p == nil {
		return nil
	}
	ds := *p
	var choice1, choice2 *dest.Dest
	var total uint32
	for _, d := range ds {
		if usable(d) {
			total += uint32(d.Weight())
			choice1 = d
		}
	}
	if choice1 == nil {
		return nil
	}
	// r in [0, total]: the kernel adds 1 so total itself can be drawn. Both
	// 0 and 1..w0 land on the first destination, a bias kept as is.
	total++
	r1, r2 := int64(s.rand()%total), int64(s.rand()%total)
	var w1, w2, oh1, oh2 int64 = -1, -1, 0, 0
	for _, d := range ds {
		if d.Overloaded() {
			continue
		}
		w := int64(d.Weight())
		if w <= 0 {
			continue
		}
		r1 -= w
		r2 -= w
		if r1 <= 0 && w1 == -1 {
			choice1, w1, oh1 = d, w, d.Overhead()
		}
		if r2 <= 0 && w2 == -1 {
			choice2, w2, oh2 = d, w, d.Overhead()
		}
		if w1 != -1 && w2 != -1 {
			break
		}
	}
	// The kernel multiplies in int and so overflows past 2^31; 64 bits
	// keep the comparison exact. Weights changing between the two loops
	// can leave a choice unset, hence the guards.
	if choice2 != nil && w1 != -1 && w2*oh1 > w1*oh2 {
		choice1 = choice2
	}
	return choice1
}
