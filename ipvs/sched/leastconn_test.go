package sched

import (
	"testing"

	"github.com/lbha/lbha/dest"
	"pgregory.net/rapid"
)

func TestLeastConn(t *testing.T) {
	tests := []struct {
		sched string
		name  string
		specs []spec
		want  int // index, -1 = nil
	}{
		{"lc", "fewest connections", []spec{{w: 1, act: 2}, {w: 5, act: 1}}, 1},
		{"lc", "weight ignored", []spec{{w: 9, act: 1}, {w: 1, act: 1}}, 0},
		{"lc", "active weighs 256 inactive", []spec{{w: 1, act: 1}, {w: 1, inact: 255}}, 1},
		{"lc", "tie to first", []spec{{w: 1, act: 1}, {w: 1, inact: 256}}, 0},
		{"lc", "weight 0 skipped", []spec{{w: 0}, {w: 1, act: 1}}, 1},
		{"lc", "overloaded skipped", []spec{{w: 1, inact: 1, over: true}, {w: 1, act: 1}}, 1},
		{"lc", "none", []spec{{w: 0}, {w: 0}}, -1},

		{"wlc", "per weight", []spec{{w: 1, act: 1}, {w: 2, act: 1}}, 1},
		{"wlc", "tie to first", []spec{{w: 1, act: 1}, {w: 1, act: 1}}, 0},
		{"wlc", "cross-multiplied tie to first", []spec{{w: 2, act: 2}, {w: 1, act: 1}}, 0},
		{"wlc", "idle servers: first", []spec{{w: 1}, {w: 5}}, 0},
		{"wlc", "weight 0 skipped although idle", []spec{{w: 0}, {w: 1, act: 5}}, 1},
		{"wlc", "first candidate after quiesced", []spec{{w: 0}, {w: 1, act: 3}, {w: 1, act: 2}}, 2},
		{"wlc", "quiesced later ignored", []spec{{w: 1, act: 3}, {w: 0}}, 0},
		{"wlc", "overloaded skipped", []spec{{w: 1, inact: 1, over: true}, {w: 1, act: 1}}, 1},
		{"wlc", "overloaded first candidate skipped", []spec{{w: 3, act: 1, over: true}, {w: 1, act: 4}, {w: 1, act: 5}}, 1},
		{"wlc", "inactive counts 1/256", []spec{{w: 1, act: 1}, {w: 1, inact: 255}}, 1},
		{"wlc", "none", []spec{{w: 0}, {w: 2, act: 1, over: true}}, -1},

		{"sed", "idle heavy beats idle light", []spec{{w: 1}, {w: 5}}, 1},
		{"sed", "inactive ignored", []spec{{w: 1, inact: 100}, {w: 1, act: 1}}, 0},
		{"sed", "cross-multiplied tie to first", []spec{{w: 2, act: 1}, {w: 1}}, 0},
		{"sed", "per weight", []spec{{w: 1, act: 1}, {w: 3, act: 2}}, 1},
		{"sed", "weight 0 skipped", []spec{{w: 0}, {w: 1, act: 9}}, 1},
		{"sed", "overloaded skipped", []spec{{w: 9, inact: 1, over: true}, {w: 1, act: 9}}, 1},
		{"sed", "none", []spec{{w: 0}}, -1},

		{"nq", "idle wins at once", []spec{{w: 5, act: 1}, {w: 1}, {w: 9}}, 1},
		{"nq", "idle with inactive still idle", []spec{{w: 5, act: 2}, {w: 1, inact: 50}}, 1},
		{"nq", "no idle: sed rule", []spec{{w: 1, act: 2}, {w: 3, act: 2}}, 1},
		{"nq", "no idle: tie to first", []spec{{w: 1, act: 2}, {w: 2, act: 5}}, 0},
		{"nq", "idle quiesced skipped", []spec{{w: 0}, {w: 1, act: 1}}, 1},
		{"nq", "idle overloaded skipped", []spec{{w: 1, inact: 1, over: true}, {w: 1, act: 1}}, 1},
		{"nq", "none", []spec{{w: 0}, {w: 0}}, -1},

		{"fo", "highest weight", []spec{{w: 1}, {w: 3}, {w: 2}}, 1},
		{"fo", "tie to first", []spec{{w: 1}, {w: 3}, {w: 3}}, 1},
		{"fo", "load ignored", []spec{{w: 1}, {w: 3, act: 1000}}, 1},
		{"fo", "overloaded skipped", []spec{{w: 1}, {w: 3, act: 1, over: true}, {w: 2}}, 2},
		{"fo", "none", []spec{{w: 0}, {w: 5, act: 1, over: true}}, -1},

		{"ovf", "highest weight within capacity", []spec{{w: 3, act: 3}, {w: 5, act: 6}}, 0},
		{"ovf", "active equal to weight ok", []spec{{w: 2}, {w: 5, act: 5}}, 1},
		{"ovf", "tie to first", []spec{{w: 4, act: 1}, {w: 4}}, 0},
		{"ovf", "overloaded skipped", []spec{{w: 2}, {w: 5, act: 1, over: true}}, 0},
		{"ovf", "weight 0 skipped", []spec{{w: 0}}, -1},
		{"ovf", "all beyond capacity", []spec{{w: 1, act: 2}, {w: 2, act: 3}}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.sched+"/"+tt.name, func(t *testing.T) {
			ds := mkDests(t, tt.specs...)
			s := mustNew(t, tt.sched, 0, Options{}, ds)
			if got := index(ds, s.Pick(Packet{})); got != tt.want {
				t.Errorf("picked %d, want %d", got, tt.want)
			}
		})
	}
}

// TestWLCProducts64 needs 64-bit products: 10 240 000 × 65535 does not fit
// in 32 bits.
func TestWLCProducts64(t *testing.T) {
	ds := mkDests(t, spec{w: 65535, act: 40001}, spec{w: 65535, act: 40000})
	for _, name := range []string{"wlc", "lblc", "lblcr"} {
		s := mustNew(t, name, 0, Options{}, ds)
		if got := index(ds, s.Pick(Packet{})); got != 1 {
			t.Errorf("%s: picked %d, want 1", name, got)
		}
	}
}

// reference states each rule declaratively: the first eligible destination
// that no other eligible destination beats.
var reference = map[string]struct {
	eligible func(d *dest.Dest) bool
	better   func(a, b *dest.Dest) bool
}{
	"lc":  {usable, func(a, b *dest.Dest) bool { return a.Overhead() < b.Overhead() }},
	"wlc": {usable, func(a, b *dest.Dest) bool { return a.Overhead()*int64(b.Weight()) < b.Overhead()*int64(a.Weight()) }},
	"sed": {usable, func(a, b *dest.Dest) bool {
		return sedOverhead(a)*int64(b.Weight()) < sedOverhead(b)*int64(a.Weight())
	}},
	"nq": {usable, func(a, b *dest.Dest) bool {
		if (a.ActiveConns() == 0) != (b.ActiveConns() == 0) {
			return a.ActiveConns() == 0
		}
		if a.ActiveConns() == 0 {
			return false // idle servers: the first one
		}
		return sedOverhead(a)*int64(b.Weight()) < sedOverhead(b)*int64(a.Weight())
	}},
	"fo": {usable, func(a, b *dest.Dest) bool { return a.Weight() > b.Weight() }},
	"ovf": {func(d *dest.Dest) bool { return usable(d) && d.ActiveConns() <= d.Weight() },
		func(a, b *dest.Dest) bool { return a.Weight() > b.Weight() }},
}

func referencePick(name string, ds []*dest.Dest) int {
	r := reference[name]
	for i, d := range ds {
		if !r.eligible(d) {
			continue
		}
		beaten := false
		for _, e := range ds {
			if r.eligible(e) && r.better(e, d) {
				beaten = true
				break
			}
		}
		if !beaten {
			return i
		}
	}
	return -1
}

func TestLeastConnProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(0, 8).Draw(t, "n")
		specs := make([]spec, n)
		for i := range specs {
			s := spec{
				w:     rapid.IntRange(0, 4).Draw(t, "w"),
				act:   rapid.IntRange(0, 4).Draw(t, "act"),
				inact: rapid.IntRange(0, 600).Draw(t, "inact"),
			}
			s.over = s.act+s.inact > 0 && rapid.IntRange(0, 4).Draw(t, "over") == 0
			specs[i] = s
		}
		ds := mkDests(t, specs...)
		for name := range reference {
			s := mustNew(t, name, 0, Options{}, ds)
			if got, want := index(ds, s.Pick(Packet{})), referencePick(name, ds); got != want {
				t.Fatalf("%s: picked %d, reference %d (specs %+v)", name, got, want, specs)
			}
		}
	})
}

// seq returns a Rand that yields vals in turn.
func seq(vals ...uint32) func() uint32 {
	i := 0
	return func() uint32 {
		v := vals[i%len(vals)]
		i++
		return v
	}
}

func TestTwos(t *testing.T) {
	// Weights 1, 2, 3: draws are taken modulo 7, and r <= 1 -> A,
	// 2..3 -> B, 4..6 -> C.
	tests := []struct {
		name  string
		specs []spec
		rand  []uint32
		want  int
	}{
		{"r 0 lands on first", []spec{{w: 1}, {w: 2}, {w: 3}}, []uint32{0, 0}, 0},
		{"equal load keeps choice1", []spec{{w: 1}, {w: 2}, {w: 3}}, []uint32{3, 6}, 1},
		{"r taken modulo total+1", []spec{{w: 1}, {w: 2}, {w: 3}}, []uint32{7 + 4, 7 + 1}, 2},
		{"choice2 less loaded per weight", []spec{{w: 1, act: 1}, {w: 2}, {w: 3}}, []uint32{1, 6}, 2},
		{"choice1 less loaded", []spec{{w: 1, act: 1}, {w: 2}, {w: 3}}, []uint32{6, 1}, 2},
		{"cross-multiplied tie keeps choice1", []spec{{w: 1, act: 1}, {w: 2, act: 2}, {w: 3}}, []uint32{0, 2}, 0},
		{"quiesced and overloaded not drawn", []spec{{w: 0}, {w: 9, act: 1, over: true}, {w: 2}}, []uint32{0, 2}, 2},
		{"none", []spec{{w: 0}, {w: 2, inact: 1, over: true}}, []uint32{0}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := mkDests(t, tt.specs...)
			s := mustNew(t, "twos", 0, Options{Rand: seq(tt.rand...)}, ds)
			if got := index(ds, s.Pick(Packet{})); got != tt.want {
				t.Errorf("picked %d, want %d", got, tt.want)
			}
		})
	}
}

func TestTwosProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 8).Draw(t, "n")
		specs := make([]spec, n)
		for i := range specs {
			specs[i] = spec{w: rapid.IntRange(0, 5).Draw(t, "w"), act: rapid.IntRange(0, 3).Draw(t, "act")}
		}
		ds := mkDests(t, specs...)
		r := rapid.SliceOfN(rapid.Uint32(), 2, 2).Draw(t, "rand")
		s := mustNew(t, "twos", 0, Options{Rand: seq(r...)}, ds)
		got := s.Pick(Packet{})
		if pickWLC(ds) == nil {
			if got != nil {
				t.Fatalf("picked %v with nothing eligible", got)
			}
			return
		}
		if got == nil || !usable(got) {
			t.Fatalf("picked %v, want an eligible destination", got)
		}
	})
}
