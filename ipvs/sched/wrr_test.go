package sched

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

func TestWRR(t *testing.T) {
	tests := []struct {
		name  string
		specs []spec
		want  string
	}{
		{"spec example 4,3,2", []spec{{w: 4}, {w: 3}, {w: 2}}, "AABABCABC" + "AABABCABC"},
		{"gcd 2", []spec{{w: 4}, {w: 2}}, "AABAAB"},
		{"equal weights", []spec{{w: 2}, {w: 2}, {w: 2}}, "ABCABC"},
		{"quiesced never", []spec{{w: 2}, {w: 0}, {w: 1}}, "AACAAC"},
		{"overloaded skipped", []spec{{w: 4, act: 1, over: true}, {w: 3}, {w: 2}}, "BBCBC" + "BBCBC"},
		{"all quiesced", []spec{{w: 0}, {w: 0}}, "---"},
		{"all overloaded", []spec{{w: 2, act: 1, over: true}, {w: 1, act: 1, over: true}}, "---"},
		{"empty", nil, "--"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := mkDests(t, tt.specs...)
			s := mustNew(t, "wrr", 0, Options{}, ds)
			if diff := cmp.Diff(tt.want, letters(picks(s, ds, Packet{}, len(tt.want)))); diff != "" {
				t.Errorf("picks (-want +got):\n%s", diff)
			}
		})
	}
}

// TestWRRLiveChanges covers weights changing and OVERLOAD coming and going
// without an Update, which the kernel also meets between its hooks.
func TestWRRLiveChanges(t *testing.T) {
	ds := weights(t, 4, 3, 2)
	s := mustNew(t, "wrr", 0, Options{}, ds)
	picks(s, ds, Packet{}, 4) // A A B A, cl = A, cw = 2
	// Every weight drops to 0 behind the scheduler's back: it must give up,
	// not spin, and recover when a weight returns.
	for _, d := range ds {
		d.SetWeight(0)
	}
	if got := letters(picks(s, ds, Packet{}, 2)); got != "--" {
		t.Fatalf("all weights 0: picks %q, want --", got)
	}
	ds[2].SetWeight(1)
	if got := letters(picks(s, ds, Packet{}, 3)); got != "CCC" {
		t.Fatalf("C back at weight 1 (below di of the last Update): picks %q, want CCC", got)
	}
}

func TestWRRUpdate(t *testing.T) {
	type state struct{ CL, CW, MW, DI int }
	tests := []struct {
		name   string
		before []int // weights at the first Update
		picks  int
		after  []int // weights at the second Update
		want   state
		next   string
	}{
		// 4,3,2 after A A: cw = 3. New weights 2,2,2: di 2, mw 1; cw > mw.
		{"cw above new mw", []int{4, 3, 2}, 2, []int{2, 2, 2}, state{-1, 1, 1, 2}, "ABC"},
		// 4,3,2 after A: cw = 4. New weights 8,4,4: di 4, mw 5; cw = 4/4*4+1.
		{"cw onto di grid", []int{4, 3, 2}, 1, []int{8, 4, 4}, state{-1, 5, 5, 4}, "AABCA"},
		// 6,3 (di 3, mw 4) after A: cw = 4 -> 4/3*3+1 = 4.
		{"cw already on grid", []int{6, 3}, 1, []int{6, 3, 3}, state{-1, 4, 4, 3}, "AABC"},
		// di 1 leaves cw alone; the position goes back to the head.
		{"di 1 keeps cw", []int{4, 3, 2}, 3, []int{5, 3, 2}, state{-1, 3, 5, 1}, "ABABC"},
		{"all quiesced", []int{4, 3, 2}, 3, []int{0, 0, 0}, state{-1, 0, 0, 1}, "--"},
		{"from empty", nil, 0, []int{3, 1}, state{-1, 3, 3, 1}, "AAAB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := weights(t, 0, 0, 0)
			s := mustNew(t, "wrr", 0, Options{}, nil)
			for i, w := range tt.before {
				ds[i].SetWeight(w)
			}
			if err := s.Update(ds[:len(tt.before)]); err != nil {
				t.Fatal(err)
			}
			picks(s, ds, Packet{}, tt.picks)
			for i, w := range tt.after {
				ds[i].SetWeight(w)
			}
			if err := s.Update(ds[:len(tt.after)]); err != nil {
				t.Fatal(err)
			}
			w := s.(*wrr)
			if diff := cmp.Diff(tt.want, state{w.cl, w.cw, w.mw, w.di}); diff != "" {
				t.Errorf("state after Update (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.next, letters(picks(s, ds, Packet{}, len(tt.next)))); diff != "" {
				t.Errorf("picks after Update (-want +got):\n%s", diff)
			}
		})
	}
}

// TestWRRUpdateBackFromZero: the cw == 0 left by an all-quiesced Update is
// reset to mw by the next one.
func TestWRRUpdateBackFromZero(t *testing.T) {
	ds := weights(t, 0, 0)
	s := mustNew(t, "wrr", 0, Options{}, ds)
	ds[0].SetWeight(2)
	ds[1].SetWeight(1)
	if err := s.Update(ds); err != nil {
		t.Fatal(err)
	}
	if got := letters(picks(s, ds, Packet{}, 6)); got != "AABAAB" {
		t.Errorf("picks %q, want AABAAB", got)
	}
}

// classicWRR is the textbook LVS weighted round-robin loop, a model the
// kernel's version must agree with when nothing changes between picks.
type classicWRR struct {
	w         []int
	i, cw, gd int
	maxw      int
}

func newClassicWRR(w []int) *classicWRR {
	c := &classicWRR{w: w, i: -1}
	for _, x := range w {
		if x > 0 {
			c.gd = gcd(c.gd, x)
		}
		c.maxw = max(c.maxw, x)
	}
	return c
}

func (c *classicWRR) next() int {
	if c.maxw == 0 {
		return -1
	}
	for {
		c.i = (c.i + 1) % len(c.w)
		if c.i == 0 {
			c.cw -= c.gd
			if c.cw <= 0 {
				c.cw = c.maxw
			}
		}
		if c.w[c.i] >= c.cw {
			return c.i
		}
	}
}

func TestWRRProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ws := rapid.SliceOfN(rapid.IntRange(0, 12), 1, 8).Draw(t, "weights")
		ds := weights(t, ws...)
		s := mustNew(t, "wrr", 0, Options{}, ds)
		model := newClassicWRR(ws)
		g, sum := 0, 0
		for _, w := range ws {
			if w > 0 {
				g = gcd(g, w)
				sum += w
			}
		}
		cycle := 1
		if g > 0 {
			cycle = sum / g
		}
		count := make([]int, len(ws))
		for k := range 3 * cycle {
			got, want := index(ds, s.Pick(Packet{})), model.next()
			if got != want {
				t.Fatalf("pick %d = %d, classic model %d", k, got, want)
			}
			if got >= 0 {
				count[got]++
			}
		}
		// Over whole cycles every destination gets exactly its share.
		for i, w := range ws {
			want := 0
			if g > 0 {
				want = 3 * w / g
			}
			if count[i] != want {
				t.Fatalf("dest %d (weight %d) picked %d times in 3 cycles, want %d", i, w, count[i], want)
			}
		}
	})
}
