package sched

import (
	"fmt"
	"net/netip"
	"testing"
)

// BenchmarkPick measures one Pick per iteration on a service of 10 or 100
// destinations with mixed weights and loads (none idle, so nq scans the whole
// list). Sources and destination addresses cycle through 256 values; the
// lblc/lblcr caches are warmed first.
func BenchmarkPick(b *testing.B) {
	var pkts [256]Packet
	for i := range pkts {
		pkts[i] = Packet{
			Proto:   ProtoTCP,
			Src:     netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}),
			SrcPort: uint16(32768 + i),
			Dst:     netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}),
		}
	}
	for _, name := range Names() {
		for _, n := range []int{10, 100} {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				specs := make([]spec, n)
				for i := range specs {
					specs[i] = spec{w: 1 + i%5, act: 1 + (i*7)%11, inact: (i * 13) % 17}
				}
				ds := mkDests(b, specs...)
				var f Flags
				switch name {
				case "sh":
					f = SHFallback | SHPort
				case "mh":
					f = MHFallback | MHPort
				}
				s := mustNew(b, name, f, Options{}, ds)
				for _, p := range pkts { // warm lblc/lblcr caches
					s.Pick(p)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if s.Pick(pkts[i&255]) == nil {
						b.Fatal("nil pick")
					}
					i++
				}
			})
		}
	}
}
