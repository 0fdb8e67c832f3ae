package dest

import (
	"net/netip"
	"sync"
	"testing"
)

func newDest(w int) *Dest { return New(netip.MustParseAddr("198.51.100.11"), 80, Route, w) }

func TestWeightClampAndLastWeight(t *testing.T) {
	d := newDest(5)
	for _, tt := range []struct{ set, want, last int }{
		{0, 0, 5}, {70000, MaxWeight, MaxWeight}, {-3, 0, MaxWeight}, {7, 7, 7},
	} {
		d.SetWeight(tt.set)
		if d.Weight() != tt.want || d.LastWeight() != tt.last {
			t.Fatalf("SetWeight(%d): weight %d last %d, want %d %d", tt.set, d.Weight(), d.LastWeight(), tt.want, tt.last)
		}
	}
	if New(netip.MustParseAddr("198.51.100.1"), 1, Masq, 0).LastWeight() != 0 {
		t.Fatal("a destination created with weight 0 has a last weight")
	}
}

func TestCountersAndOverhead(t *testing.T) {
	d := newDest(1)
	d.Bind(false, false)
	d.Bind(false, false)
	d.Bind(false, true)
	d.Bind(true, false) // a template counts only in PersistConns
	if d.ActiveConns() != 2 || d.InactConns() != 1 || d.PersistConns() != 1 {
		t.Fatalf("counts %d/%d/%d", d.ActiveConns(), d.InactConns(), d.PersistConns())
	}
	if d.Overhead() != 2*256+1 {
		t.Fatalf("overhead %d, want 513", d.Overhead())
	}
	d.SetInactive(true)
	if d.ActiveConns() != 1 || d.InactConns() != 2 {
		t.Fatalf("after SetInactive: %d/%d", d.ActiveConns(), d.InactConns())
	}
	d.Unbind(false, true)
	d.Unbind(true, false)
	if d.InactConns() != 1 || d.PersistConns() != 0 {
		t.Fatalf("after Unbind: %d/%d", d.InactConns(), d.PersistConns())
	}
}

// The kernel's OVERLOAD rules: set at bind when active+inactive reaches the
// upper threshold; cleared at unbind below the lower threshold if set, else
// below 3/4 of the upper one.
func TestOverload(t *testing.T) {
	t.Run("upper only", func(t *testing.T) {
		d := newDest(1)
		d.SetThresholds(4, 0)
		for i := 0; i < 3; i++ {
			d.Bind(false, false)
		}
		if d.Overloaded() {
			t.Fatal("overloaded at 3 of 4")
		}
		d.Bind(false, true)
		if !d.Overloaded() {
			t.Fatal("not overloaded at 4 of 4")
		}
		d.Unbind(false, false) // 3: 3*4 = 12 is not < 4*3 = 12
		if !d.Overloaded() {
			t.Fatal("cleared at 3 of 4; the kernel needs total*4 < upper*3")
		}
		d.Unbind(false, false) // 2: 8 < 12
		if d.Overloaded() {
			t.Fatal("still overloaded at 2 of 4")
		}
	})
	t.Run("lower threshold", func(t *testing.T) {
		d := newDest(1)
		d.SetThresholds(4, 2)
		for i := 0; i < 4; i++ {
			d.Bind(false, false)
		}
		d.Unbind(false, false)
		d.Unbind(false, false) // 2 is not < 2
		if !d.Overloaded() {
			t.Fatal("cleared at the lower threshold itself")
		}
		d.Unbind(false, false)
		if d.Overloaded() {
			t.Fatal("still overloaded below the lower threshold")
		}
	})
	t.Run("templates never overload", func(t *testing.T) {
		d := newDest(1)
		d.SetThresholds(1, 0)
		d.Bind(true, false)
		if d.Overloaded() {
			t.Fatal("a template counted against the threshold")
		}
	})
	t.Run("raising or removing the threshold clears", func(t *testing.T) {
		d := newDest(1)
		d.SetThresholds(2, 0)
		d.Bind(false, false)
		d.Bind(false, false)
		if !d.Overloaded() {
			t.Fatal("not overloaded")
		}
		d.SetThresholds(10, 0)
		if d.Overloaded() {
			t.Fatal("raising the threshold did not clear OVERLOAD")
		}
		d.SetThresholds(2, 0)
		d.Bind(false, false)
		d.SetThresholds(0, 0)
		if d.Overloaded() {
			t.Fatal("removing the threshold did not clear OVERLOAD")
		}
	})
}

func TestAvailableAndMethod(t *testing.T) {
	d := newDest(1)
	if !d.Available() {
		t.Fatal("a new destination is not available")
	}
	d.SetAvailable(false)
	if d.Available() {
		t.Fatal("still available after removal")
	}
	if got := d.String(); got != "198.51.100.11:80" {
		t.Fatalf("String = %q", got)
	}
	for m, want := range map[Method]string{Masq: "Masq", Local: "Local", Tunnel: "Tunnel", Route: "Route", Bypass: "Bypass", 9: "Method(9)"} {
		if m.String() != want {
			t.Errorf("%d: %q, want %q", m, m.String(), want)
		}
	}
}

func TestConcurrentCounters(t *testing.T) {
	d := newDest(1)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				d.Bind(false, i%2 == 0)
				d.Unbind(false, i%2 == 0)
			}
		}()
	}
	wg.Wait()
	if d.ActiveConns() != 0 || d.InactConns() != 0 {
		t.Fatalf("counters drifted: %d/%d", d.ActiveConns(), d.InactConns())
	}
}
