package sched

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/lbha/lbha/dest"
)

var ip = netip.MustParseAddr

// The expected buckets were computed by hand from the spec's formula,
// hash_32(x, b) = (x × 0x61C88647 mod 2^32) >> (32-b), shown per case.
func TestBuckets(t *testing.T) {
	tests := []struct {
		name       string
		got, want  uint32
		derivation string
	}{
		{"sh 192.0.2.10", shBucket(ip("192.0.2.10"), 0), 162, "0xC000020A × φ = 0xA2E1CCC6, top 8 bits 0xA2"},
		{"sh 192.0.2.10 port 40000", shBucket(ip("192.0.2.10"), 40000), 70, "0xC000020A + 40000 = 0xC0009E4A, × φ = 0x46D6A286"},
		{"sh 2001:db8::1 (XOR fold)", shBucket(ip("2001:db8::1"), 0), 63, "0x20010DB8 ^ 0 ^ 0 ^ 1 = 0x20010DB9, × φ = 0x3F01A44F"},
		{"sh sum wraps at 2^32", shBucket(ip("255.255.255.255"), 65535), 194, "0xFFFFFFFF + 0xFFFF = 0xFFFE mod 2^32, × φ = 0xC2B5F372"},
		{"sh 0.0.0.0", shBucket(ip("0.0.0.0"), 0), 0, "0 × φ = 0"},
		{"dh 10.0.0.1", dhBucket(ip("10.0.0.1")), 39, "0x0A000001 × φ = 0x27C88647"},
		{"dh 198.51.100.7", dhBucket(ip("198.51.100.7")), 171, "0xC6336407 × φ = 0xAB1467F1"},
		{"lblc 192.0.2.10 (10 bits)", cacheBucket(ip("192.0.2.10")), 651, "0xA2E1CCC6 >> 22 = 0x28B"},
		{"invalid address folds to 0", shBucket(netip.Addr{}, 0), 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("bucket = %d, want %d (%s)", tt.got, tt.want, tt.derivation)
			}
		})
	}
}

// shOwners returns, per bucket of an sh or dh table, the index of the destination in it.
func shOwners(t *testing.T, s Scheduler, ds []*dest.Dest) []int {
	t.Helper()
	var b []*dest.Dest
	switch s := s.(type) {
	case *sh:
		b = s.tab.Load().b[:]
	case *dh:
		b = s.tab.Load().b[:]
	}
	out := make([]int, len(b))
	for i, d := range b {
		out[i] = index(ds, d)
	}
	return out
}

func TestSHTable(t *testing.T) {
	// Weights 2, 0, 3 tile as A A B C C C, repeated: 42 full rounds and
	// A A B C in the last 4 buckets.
	ds := weights(t, 2, 0, 3)
	s := mustNew(t, "sh", 0, Options{}, ds)
	owners := shOwners(t, s, ds)
	if diff := cmp.Diff([]int{0, 0, 1, 2, 2, 2, 0, 0, 1, 2, 2, 2}, owners[:12]); diff != "" {
		t.Errorf("first buckets (-want +got):\n%s", diff)
	}
	count := map[int]int{}
	for _, o := range owners {
		count[o]++
	}
	if diff := cmp.Diff(map[int]int{0: 86, 1: 43, 2: 127}, count); diff != "" {
		t.Errorf("buckets per destination (-want +got):\n%s", diff)
	}
	// Weights are read at Update time: a later change alone does not
	// retile.
	ds[0].SetWeight(1)
	if diff := cmp.Diff(owners, shOwners(t, s, ds)); diff != "" {
		t.Errorf("table changed without Update (-want +got):\n%s", diff)
	}
	_ = s.Update(ds)
	if diff := cmp.Diff([]int{0, 1, 2, 2, 2, 0}, shOwners(t, s, ds)[:6]); diff != "" {
		t.Errorf("after Update (-want +got):\n%s", diff)
	}
}

func TestSH(t *testing.T) {
	src := ip("192.0.2.10") // bucket 162; with port 40000, bucket 70
	tests := []struct {
		name  string
		flags Flags
		p     Packet
		tweak func(ds []*dest.Dest)
		want  int
	}{
		{name: "address only", p: Packet{Proto: ProtoTCP, Src: src, SrcPort: 40000}, want: 162},
		{name: "sh-port TCP", flags: SHPort, p: Packet{Proto: ProtoTCP, Src: src, SrcPort: 40000}, want: 70},
		{name: "sh-port UDP", flags: SHPort, p: Packet{Proto: ProtoUDP, Src: src, SrcPort: 40000}, want: 70},
		{name: "sh-port SCTP", flags: SHPort, p: Packet{Proto: ProtoSCTP, Src: src, SrcPort: 40000}, want: 70},
		{name: "sh-port ICMP has no port", flags: SHPort, p: Packet{Proto: 1, Src: src, SrcPort: 40000}, want: 162},
		{name: "IPv6 source", p: Packet{Src: ip("2001:db8::1")}, want: 63},
		{name: "quiesced, no fallback", p: Packet{Src: src}, tweak: quiesce(162), want: -1},
		{name: "overloaded, no fallback", p: Packet{Src: src}, tweak: overload(162), want: -1},
		// Fallback probes (2h + k) mod 256 = (324 + k) mod 256 = 68, 69, ...
		{name: "fallback probes 2h", flags: SHFallback, p: Packet{Src: src}, tweak: quiesce(162), want: 68},
		{name: "fallback skips unusable probes", flags: SHFallback, p: Packet{Src: src}, tweak: both(quiesce(162), quiesce(68), overload(69)), want: 70},
		{name: "fallback target fine", flags: SHFallback, p: Packet{Src: src}, want: 162},
		{name: "fallback with port", flags: SHFallback | SHPort, p: Packet{Proto: ProtoTCP, Src: src, SrcPort: 40000}, tweak: quiesce(70), want: 140},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// 256 destinations of weight 1: bucket i holds destination i.
			ds := weights(t, repeat(1, 256)...)
			s := mustNew(t, "sh", tt.flags, Options{}, ds)
			if tt.tweak != nil {
				tt.tweak(ds)
			}
			if got := index(ds, s.Pick(tt.p)); got != tt.want {
				t.Errorf("picked %d, want %d", got, tt.want)
			}
		})
	}
}

func TestSHFallbackExhausted(t *testing.T) {
	ds := weights(t, 1, 1)
	s := mustNew(t, "sh", SHFallback, Options{}, ds)
	for _, d := range ds {
		d.SetWeight(0)
	}
	if d := s.Pick(Packet{Src: ip("192.0.2.10")}); d != nil {
		t.Errorf("picked %v with every destination quiesced", d)
	}
	if err := s.Update(nil); err != nil {
		t.Fatal(err)
	}
	if d := s.Pick(Packet{Src: ip("192.0.2.10")}); d != nil {
		t.Errorf("picked %v from an empty table", d)
	}
}

func TestDH(t *testing.T) {
	dst := ip("10.0.0.1") // bucket 39
	tests := []struct {
		name  string
		n     int
		tweak func(ds []*dest.Dest)
		want  int
	}{
		{name: "one bucket per destination", n: 256, want: 39},
		{name: "round-robin deal", n: 5, want: 39 % 5},
		{name: "weights ignored", n: 3, tweak: func(ds []*dest.Dest) { ds[0].SetWeight(100) }, want: 0},
		{name: "quiesced", n: 256, tweak: quiesce(39), want: -1},
		{name: "overloaded", n: 256, tweak: overload(39), want: -1},
		{name: "unavailable", n: 256, tweak: func(ds []*dest.Dest) { ds[39].SetAvailable(false) }, want: -1},
		{name: "no fallback to a neighbour", n: 2, tweak: quiesce(1), want: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := weights(t, repeat(1, tt.n)...)
			s := mustNew(t, "dh", 0, Options{}, ds)
			if tt.tweak != nil {
				tt.tweak(ds)
			}
			if got := index(ds, s.Pick(Packet{Src: ip("192.0.2.1"), Dst: dst})); got != tt.want {
				t.Errorf("picked %d, want %d", got, tt.want)
			}
		})
	}
}

func repeat(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func quiesce(i int) func([]*dest.Dest) {
	return func(ds []*dest.Dest) { ds[i].SetWeight(0) }
}

func overload(i int) func([]*dest.Dest) {
	return func(ds []*dest.Dest) {
		ds[i].SetThresholds(1, 0)
		ds[i].Bind(false, false)
	}
}

func both(fs ...func([]*dest.Dest)) func([]*dest.Dest) {
	return func(ds []*dest.Dest) {
		for _, f := range fs {
			f(ds)
		}
	}
}
