//go:build linux

package kernel

import (
	"net/netip"
	"testing"

	"github.com/lbha/lbha/dest"
	"github.com/lbha/lbha/ipvs"
)

const (
	benchServices = 10_000
	benchDests    = 10
)

// benchState is n persistent TCP services with d direct-routing real
// servers each.
func benchState(n, d int) []ipvs.ServiceState {
	out := make([]ipvs.ServiceState, n)
	for i := range out {
		vip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		s := ipvs.ServiceState{Service: ipvs.Service{Key: ipvs.ServiceKey{Protocol: 6, Addr: vip, Port: 80},
			Scheduler: "wlc", Timeout: 300, Netmask: 0xffffff00}}
		for j := range d {
			rs := netip.AddrFrom4([4]byte{172, 16 + byte(j), byte(i >> 8), byte(i)})
			s.Dests = append(s.Dests, ipvs.Dest{Addr: netip.AddrPortFrom(rs, 8080), Method: dest.Route, Weight: 1 + j})
		}
		out[i] = s
	}
	return out
}

// BenchmarkReconcile10k programs 10,000 services with 10 real servers each
// from an empty dataplane: one State, a Plan and 110,000 Apply calls
// through the conversions, into the Fake.
func BenchmarkReconcile10k(b *testing.B) {
	desired := benchState(benchServices, benchDests)
	for range b.N {
		b.StopTimer()
		r := ipvs.NewReconciler(NewBackend(&Fake{}, ""))
		b.StartTimer()
		res, err := r.Reconcile(desired)
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Applied) != benchServices*(1+benchDests) {
			b.Fatalf("applied %d operations", len(res.Applied))
		}
	}
	b.ReportMetric(float64(benchServices*b.N)/b.Elapsed().Seconds(), "services/s")
}

// BenchmarkReconcile10kNoop is the periodic drift check of the same state
// once programmed: read it all back, convert, plan, apply nothing.
func BenchmarkReconcile10kNoop(b *testing.B) {
	desired := benchState(benchServices, benchDests)
	r := ipvs.NewReconciler(NewBackend(&Fake{}, ""))
	if _, err := r.Reconcile(desired); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		res, err := r.Reconcile(desired)
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Applied) != 0 {
			b.Fatalf("no-op reconcile applied %d operations", len(res.Applied))
		}
	}
	b.ReportMetric(float64(benchServices*b.N)/b.Elapsed().Seconds(), "services/s")
}
