package sched

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/lbha/lbha/dest"
	"pgregory.net/rapid"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

func mhTable(s Scheduler) []*dest.Dest { return *s.(*mh).tab.Load() }

func TestMHTableSize(t *testing.T) {
	for index, want := range map[int]int{0: 4093, 8: 251, 12: 4093, 13: 8191, 17: 131071} {
		s := mustNew(t, "mh", 0, Options{MHTableIndex: index}, weights(t, 1))
		if got := len(mhTable(s)); got != want {
			t.Errorf("MHTableIndex %d: %d slots, want %d", index, got, want)
		}
	}
}

func TestMHTurns(t *testing.T) {
	tests := []struct {
		lw   []int
		want []int
	}{
		{[]int{1, 2, 3}, []int{1, 2, 3}},
		{[]int{4, 8, 12}, []int{1, 2, 3}}, // divided by the gcd
		{[]int{1, 63}, []int{1, 63}},      // fls(63) = 6: no shift
		{[]int{1, 127}, []int{1, 63}},     // fls(127) = 7: shift 1, 1>>1 = 0 -> 1
		{[]int{1, 1000}, []int{1, 62}},    // fls(1000) = 10: shift 4
		{[]int{0, 5}, []int{0, 1}},        // never weighted: no slot
		{[]int{65535, 1}, []int{63, 1}},   // fls(65535) = 16: shift 10
		{[]int{0, 0}, nil},                // nothing weighted
		{nil, nil},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, mhTurns(tt.lw, 6)); diff != "" {
			t.Errorf("mhTurns(%v) (-want +got):\n%s", tt.lw, diff)
		}
	}
}

func TestMHPopulate(t *testing.T) {
	tests := []struct {
		name string
		ws   []int
	}{
		{"one", []int{1}},
		{"equal", []int{1, 1, 1, 1}},
		{"weighted", []int{1, 2, 3, 4}},
		{"gcd", []int{10, 20, 30}},
		{"shifted", []int{1, 1000, 500}},
		{"with quiesced", []int{3, 0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := weights(t, tt.ws...)
			s := mustNew(t, "mh", 0, Options{}, ds)
			tab := mhTable(s)
			count := make([]int, len(ds))
			for i, d := range tab {
				if d == nil {
					t.Fatalf("slot %d empty", i)
				}
				count[index(ds, d)]++
			}
			// Rounds give each destination `turns` slots; the last round
			// may stop part-way, so each share is within turns of exact.
			lw := make([]int, len(ds))
			for i, d := range ds {
				lw[i] = d.LastWeight()
			}
			turns := mhTurns(lw, 6)
			total := 0
			for _, x := range turns {
				total += x
			}
			for i, c := range count {
				exact := float64(len(tab)) * float64(turns[i]) / float64(total)
				if d := float64(c) - exact; d > float64(turns[i]) || d < -float64(turns[i]) {
					t.Errorf("dest %d (weight %d): %d slots, want %.1f ± %d", i, tt.ws[i], c, exact, turns[i])
				}
			}
		})
	}
}

func TestMHNoWeight(t *testing.T) {
	// Destinations added with weight 0 never had a weight: no slots, so
	// nothing is picked even with fallback.
	ds := weights(t, 0, 0)
	s := mustNew(t, "mh", MHFallback, Options{}, ds)
	for i, d := range mhTable(s) {
		if d != nil {
			t.Fatalf("slot %d holds %v", i, d)
		}
	}
	if d := s.Pick(Packet{Src: ip("192.0.2.1")}); d != nil {
		t.Errorf("picked %v", d)
	}
	// A zero-weight newcomer next to a weighted one gets no slot either.
	ds = append(weights(t, 2), mkDest(t, 1, spec{w: 0}))
	if err := s.Update(ds); err != nil {
		t.Fatal(err)
	}
	for i, d := range mhTable(s) {
		if d != ds[0] {
			t.Fatalf("slot %d holds %v, want %v", i, d, ds[0])
		}
	}
}

func TestMHTooManyDests(t *testing.T) {
	s := mustNew(t, "mh", 0, Options{MHTableIndex: 8}, weights(t, 1))
	err := s.Update(weights(t, repeat(1, 252)...))
	if err == nil || !strings.Contains(err.Error(), "252 destinations exceed the 251-slot table") {
		t.Fatalf("Update error = %v", err)
	}
	if err := s.Update(weights(t, repeat(1, 251)...)); err != nil {
		t.Fatalf("251 destinations: %v", err)
	}
}

// slotOwners maps each mh slot to the index of its destination.
func slotOwners(s Scheduler, ds []*dest.Dest) []int {
	tab := mhTable(s)
	out := make([]int, len(tab))
	for i, d := range tab {
		out[i] = index(ds, d)
	}
	return out
}

// keyOwners maps n client addresses to the index of the destination picked.
func keyOwners(s Scheduler, ds []*dest.Dest, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = index(ds, s.Pick(Packet{Src: netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)})}))
	}
	return out
}

// TestMHQuiesce: weight 0 keeps the slots (last_weight), so only the
// quiesced server's keys stop being served; with mh-fallback they go
// elsewhere and come back when the weight returns.
func TestMHQuiesce(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		t.Run(fmt.Sprintf("fallback=%v", fallback), func(t *testing.T) {
			var f Flags
			if fallback {
				f = MHFallback
			}
			ds := weights(t, 1, 2, 3)
			s := mustNew(t, "mh", f, Options{}, ds)
			before := slotOwners(s, ds)
			owners := keyOwners(s, ds, 2000)
			ds[1].SetWeight(0)
			if err := s.Update(ds); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(before, slotOwners(s, ds)); diff != "" {
				t.Fatalf("table changed on quiesce (-before +after):\n%s", diff)
			}
			moved := 0
			for i, got := range keyOwners(s, ds, 2000) {
				switch {
				case owners[i] != 1 && got != owners[i]:
					t.Fatalf("key %d moved from %d to %d", i, owners[i], got)
				case owners[i] == 1 && !fallback && got != -1:
					t.Fatalf("key %d of the quiesced server went to %d without fallback", i, got)
				case owners[i] == 1 && fallback && (got == -1 || got == 1):
					t.Fatalf("key %d of the quiesced server: fallback gave %d", i, got)
				case owners[i] == 1:
					moved++
				}
			}
			if fallback && moved == 0 {
				t.Fatal("no key of the quiesced server tested")
			}
			ds[1].SetWeight(2)
			if err := s.Update(ds); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(owners, keyOwners(s, ds, 2000)); diff != "" {
				t.Fatalf("keys not back after unquiesce (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMHRemoveProperty: removing a server moves all of its slots and few of
// the others. Maglev's disruption is near-minimal, not minimal: the other
// servers' permutations compete for the freed slots in a new order, so a
// few percent of their slots change hands too (measured at most 4.5% for
// up to 32 servers of weight 1..5, 12% with weights up to 200); the bound
// below is loose on purpose but far from the (n-1)/n of modulo hashing.
func TestMHRemoveProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ws := rapid.SliceOfN(rapid.IntRange(1, 5), 2, 32).Draw(t, "weights")
		ds := weights(t, ws...)
		s := mustNew(t, "mh", 0, Options{}, ds)
		before := slices.Clone(mhTable(s))
		k := rapid.IntRange(0, len(ds)-1).Draw(t, "removed")
		if err := s.Update(slices.Delete(slices.Clone(ds), k, k+1)); err != nil {
			t.Fatal(err)
		}
		after := mhTable(s)
		moved, others := 0, 0
		for i, d := range before {
			if after[i] == nil || after[i] == ds[k] {
				t.Fatalf("slot %d holds %v after removing %v", i, after[i], ds[k])
			}
			if d != ds[k] {
				others++
				if after[i] != d {
					moved++
				}
			}
		}
		if float64(moved) > 0.2*float64(others) {
			t.Fatalf("removing dest %d moved %d of the other %d slots", k, moved, others)
		}
	})
}

func TestMHPort(t *testing.T) {
	ds := weights(t, 1, 1, 1, 1)
	distinct := func(s Scheduler, proto uint8) int {
		seen := map[*dest.Dest]bool{}
		for port := range 64 {
			seen[s.Pick(Packet{Proto: proto, Src: ip("192.0.2.7"), SrcPort: uint16(1024 + port)})] = true
		}
		return len(seen)
	}
	plain := mustNew(t, "mh", 0, Options{}, ds)
	port := mustNew(t, "mh", MHPort, Options{}, ds)
	if n := distinct(plain, ProtoTCP); n != 1 {
		t.Errorf("without mh-port one client reached %d servers, want 1", n)
	}
	if n := distinct(port, ProtoICMP); n != 1 {
		t.Errorf("mh-port with ICMP reached %d servers, want 1", n)
	}
	if n := distinct(port, ProtoUDP); n < 2 {
		t.Errorf("mh-port with UDP reached %d servers, want several", n)
	}
}

// ProtoICMP is only needed by the tests.
const ProtoICMP = 1

// TestMHFallbackProbe follows the spec's probe sequence by hand: slot k is
// hsiphash(v + (h+k) mod M) mod M, the first usable destination wins.
func TestMHFallbackProbe(t *testing.T) {
	ds := weights(t, 1, 1, 1, 1, 1)
	s := mustNew(t, "mh", MHFallback, Options{MHTableIndex: 8}, ds)
	tab := mhTable(s)
	const m = 251
	for i := range 200 {
		src := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		v := fold(src)
		h := hsiphash32(v, mhKey1, mhKey1) % m
		owner := tab[h]
		owner.SetWeight(0)
		var want *dest.Dest
		for k := range uint32(m) {
			if d := tab[hsiphash32(v+(h+k)%m, mhKey1, mhKey1)%m]; usable(d) {
				want = d
				break
			}
		}
		if got := s.Pick(Packet{Src: src}); got != want {
			t.Fatalf("%v: fallback picked %v, want %v", src, got, want)
		}
		owner.SetWeight(1)
	}
}

// TestMHGolden pins the lookup of a small service so that the qemu tier can
// compare it with a real kernel (bit-exactness is not yet confirmed there).
// Regenerate with go test -run TestMHGolden -update.
func TestMHGolden(t *testing.T) {
	ds := []*dest.Dest{
		dest.New(ip("10.0.0.1"), 80, dest.Route, 1),
		dest.New(ip("10.0.0.2"), 80, dest.Route, 2),
		dest.New(ip("10.0.0.3"), 80, dest.Route, 3),
		dest.New(ip("2001:db8::11"), 80, dest.Route, 1),
	}
	s := mustNew(t, "mh", 0, Options{}, ds)
	sp := mustNew(t, "mh", MHPort, Options{}, ds)
	var b strings.Builder
	b.WriteString("# mh, M=4093, dests 10.0.0.1:80 w1, 10.0.0.2:80 w2, 10.0.0.3:80 w3, [2001:db8::11]:80 w1 (in that order).\n")
	b.WriteString("# Produced by this package, NOT yet confirmed against a kernel.\n")
	for i, d := range mhTable(s)[:16] {
		fmt.Fprintf(&b, "slot %d %s\n", i, d)
	}
	for i := range 16 {
		src := netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})
		fmt.Fprintf(&b, "client %s %s\n", src, s.Pick(Packet{Src: src}))
	}
	for i := range 8 {
		p := Packet{Proto: ProtoTCP, Src: ip("192.0.2.1"), SrcPort: uint16(40000 + i)}
		fmt.Fprintf(&b, "client-port %s:%d %s\n", p.Src, p.SrcPort, sp.Pick(p))
	}
	const file = "testdata/mh-golden.txt"
	if *update {
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), b.String()); diff != "" {
		t.Errorf("mh lookup (-golden +got):\n%s", diff)
	}
}

// TestMHQuiesceProperty: setting any weights to 0 leaves the table as it
// was, because turns come from the last non-zero weight.
func TestMHQuiesceProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ws := rapid.SliceOfN(rapid.IntRange(1, 300), 1, 24).Draw(t, "weights")
		ds := weights(t, ws...)
		s := mustNew(t, "mh", 0, Options{MHTableIndex: 10}, ds)
		before := slotOwners(s, ds)
		for _, i := range rapid.SliceOfNDistinct(rapid.IntRange(0, len(ds)-1), 1, len(ds), rapid.ID).Draw(t, "quiesced") {
			ds[i].SetWeight(0)
		}
		if err := s.Update(ds); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(before, slotOwners(s, ds)); diff != "" {
			t.Fatalf("table changed on quiesce (-before +after):\n%s", diff)
		}
	})
}
