package sched

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/lbha/lbha/dest"
	"pgregory.net/rapid"
)

func TestRR(t *testing.T) {
	tests := []struct {
		name  string
		specs []spec
		n     int
		want  string
	}{
		{"equal", []spec{{w: 1}, {w: 1}, {w: 1}}, 7, "ABCABCA"},
		{"weights ignored", []spec{{w: 5}, {w: 1}}, 4, "ABAB"},
		{"quiesced skipped", []spec{{w: 1}, {w: 0}, {w: 1}}, 4, "ACAC"},
		{"overloaded skipped", []spec{{w: 1}, {w: 1, act: 1, over: true}, {w: 1}}, 4, "ACAC"},
		{"single", []spec{{w: 0}, {w: 3}}, 3, "BBB"},
		{"none eligible", []spec{{w: 0}, {w: 1, inact: 2, over: true}}, 2, "--"},
		{"empty", nil, 2, "--"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := mkDests(t, tt.specs...)
			s := mustNew(t, "rr", 0, Options{}, ds)
			if diff := cmp.Diff(tt.want, letters(picks(s, ds, Packet{}, tt.n))); diff != "" {
				t.Errorf("picks (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRRUpdate(t *testing.T) {
	tests := []struct {
		name   string
		before int    // picks before the update on A B C D
		keep   []int  // indexes of A B C D kept, in order
		add    int    // new destinations appended
		want   string // picks after, lettered by the new list
	}{
		{"no change keeps position", 2, []int{0, 1, 2, 3}, 0, "CDAB"},
		{"remove last chosen moves to previous", 2, []int{0, 2, 3}, 0, "BCA"},
		{"remove last chosen and its predecessor", 3, []int{0, 3}, 0, "BA"},
		{"remove first when it was last chosen", 1, []int{1, 2, 3}, 0, "ABC"},
		{"remove another keeps position", 2, []int{1, 2, 3}, 0, "BCA"},
		{"append keeps position", 4, []int{0, 1, 2, 3}, 1, "EABCD"},
		{"fresh scheduler starts at head", 0, []int{2, 3}, 0, "ABA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := weights(t, 1, 1, 1, 1, 1)
			s := mustNew(t, "rr", 0, Options{}, ds[:4])
			picks(s, ds, Packet{}, tt.before)
			var next []*dest.Dest
			for _, i := range tt.keep {
				next = append(next, ds[i])
			}
			next = append(next, ds[4:4+tt.add]...)
			if err := s.Update(next); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, letters(picks(s, next, Packet{}, len(tt.want)))); diff != "" {
				t.Errorf("picks after update (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRRProperty: every run of n picks visits each eligible destination
// exactly once, in list order.
func TestRRProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ws := rapid.SliceOfN(rapid.IntRange(0, 3), 1, 10).Draw(t, "weights")
		ds := weights(t, ws...)
		s := mustNew(t, "rr", 0, Options{}, ds)
		var elig []int
		for i, w := range ws {
			if w > 0 {
				elig = append(elig, i)
			}
		}
		skip := rapid.IntRange(0, 5).Draw(t, "skip")
		picks(s, ds, Packet{}, skip)
		got := picks(s, ds, Packet{}, 2*len(ws))
		for k, i := range got {
			if len(elig) == 0 {
				if i != -1 {
					t.Fatalf("picked %d with nothing eligible", i)
				}
				continue
			}
			if want := elig[(skip+k)%len(elig)]; i != want {
				t.Fatalf("pick %d = %d, want %d (eligible %v)", skip+k, i, want, elig)
			}
		}
	})
}
