package sched

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lbha/lbha/dest"
	"pgregory.net/rapid"
)

var t0 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time      { return c.now }
func (c *fakeClock) Add(d time.Duration) { c.now = c.now.Add(d) }
func (c *fakeClock) Set(d time.Duration) { c.now = t0.Add(d) }
func newClock() *fakeClock               { return &fakeClock{now: t0} }
func pkt(dst string) Packet              { return Packet{Proto: ProtoTCP, Src: ip("192.0.2.1"), Dst: ip(dst)} }
func bindActive(d *dest.Dest, n int) {
	for range n {
		d.Bind(false, false)
	}
}
func lblcOf(s Scheduler) *lblc   { return s.(*lblc) }
func lblcrOf(s Scheduler) *lblcr { return s.(*lblcr) }
func cachedSet(s Scheduler, dst string) []*dest.Dest {
	if e := lblcrOf(s).c.get(ip(dst)); e != nil {
		return e.set
	}
	return nil
}

func TestLBLC(t *testing.T) {
	tests := []struct {
		name string
		// setup runs after A (weight 1) was cached for the address; B has
		// weight 1, C weight 4, all idle.
		setup func(s Scheduler, ds []*dest.Dest)
		want  int
	}{
		{name: "cached reused although more loaded", setup: func(_ Scheduler, ds []*dest.Dest) { bindActive(ds[0], 1) }, want: 0},
		{name: "cached reused at active == weight", setup: func(_ Scheduler, ds []*dest.Dest) {
			bindActive(ds[0], 1)
			bindActive(ds[2], 9)
		}, want: 0},
		{name: "lblc overload: active > weight and a server below half", setup: func(_ Scheduler, ds []*dest.Dest) {
			bindActive(ds[0], 2) // C: 0*2 < 4
		}, want: 1},
		{name: "active > weight but nobody below half", setup: func(_ Scheduler, ds []*dest.Dest) {
			bindActive(ds[0], 2)
			bindActive(ds[1], 1) // 2 < 1 false
			bindActive(ds[2], 2) // 4 < 4 false
		}, want: 0},
		{name: "OVERLOAD flag ignored for the cached server", setup: func(_ Scheduler, ds []*dest.Dest) {
			ds[0].SetThresholds(1, 0)
			ds[0].Bind(false, true)
		}, want: 0},
		{name: "quiesced cached server replaced", setup: func(_ Scheduler, ds []*dest.Dest) { ds[0].SetWeight(0) }, want: 1},
		{name: "unavailable cached server replaced", setup: func(_ Scheduler, ds []*dest.Dest) {
			ds[0].SetAvailable(false)
			bindActive(ds[0], 1) // reused if it were available
		}, want: 1},
		{name: "cached server removed from the list", setup: func(s Scheduler, ds []*dest.Dest) { _ = s.Update(ds[1:]) }, want: 1},
		{name: "removed then re-added: cache revived", setup: func(s Scheduler, ds []*dest.Dest) {
			_ = s.Update(ds[1:])
			_ = s.Update(ds)
			bindActive(ds[0], 1)
		}, want: 0},
		{name: "nothing eligible", setup: func(_ Scheduler, ds []*dest.Dest) {
			for _, d := range ds {
				d.SetWeight(0)
			}
		}, want: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := weights(t, 1, 1, 4)
			clk := newClock()
			s := mustNew(t, "lblc", 0, Options{Now: clk.Now}, ds)
			if got := index(ds, s.Pick(pkt("198.51.100.1"))); got != 0 {
				t.Fatalf("first pick %d, want 0 (wlc, first on a tie)", got)
			}
			tt.setup(s, ds)
			clk.Add(time.Second)
			if got := index(ds, s.Pick(pkt("198.51.100.1"))); got != tt.want {
				t.Fatalf("picked %d, want %d", got, tt.want)
			}
			if tt.want >= 0 {
				// Whatever was chosen is what the cache holds now.
				if e := lblcOf(s).c.get(ip("198.51.100.1")); e == nil || e.dest != ds[tt.want] {
					t.Errorf("cache holds %v, want %v", e, ds[tt.want])
				}
			}
		})
	}
}

// TestLBLCEntryCounterDrift: replacing an entry adds to the kernel's entry
// counter without taking the old entry off it.
func TestLBLCEntryCounterDrift(t *testing.T) {
	ds := weights(t, 1, 1)
	clk := newClock()
	s := mustNew(t, "lblc", 0, Options{Now: clk.Now}, ds)
	s.Pick(pkt("198.51.100.1"))
	ds[0].SetWeight(0)
	s.Pick(pkt("198.51.100.1")) // replaced by B
	c := &lblcOf(s).c
	if c.live != 1 || c.entries != 2 {
		t.Errorf("live %d entries %d, want 1 and 2", c.live, c.entries)
	}
}

func TestLBLCExpiry(t *testing.T) {
	ds := weights(t, 1, 1)
	clk := newClock()
	s := mustNew(t, "lblc", 0, Options{Now: clk.Now}, ds)
	clk.Set(10 * time.Second)
	s.Pick(pkt("198.51.100.1")) // cached on A at t0+10s
	bindActive(ds[0], 1)        // wlc would now choose B
	c := &lblcOf(s).c
	// Full checks run on every 30th GC tick: t0+30m, t0+1h, ... The entry
	// reaches 24h idle at t0+24h0m10s; the first full check after that is
	// at t0+24h30m.
	c.expire(t0.Add(24*time.Hour + 29*time.Minute + 59*time.Second))
	if c.get(ip("198.51.100.1")) == nil {
		t.Fatal("entry gone before the full check at 24h30m")
	}
	clk.Set(24*time.Hour + 30*time.Minute)
	if got := index(ds, s.Pick(pkt("198.51.100.1"))); got != 1 {
		t.Fatalf("after expiry picked %d, want 1 (fresh wlc)", got)
	}
	if c.counter != 1 || !c.nextTick.Equal(t0.Add(24*time.Hour+31*time.Minute)) {
		t.Errorf("counter %d next tick %v, want 1 and t0+24h31m", c.counter, c.nextTick.Sub(t0))
	}
}

func TestLBLCExpirationOption(t *testing.T) {
	ds := weights(t, 1, 1)
	clk := newClock()
	s := mustNew(t, "lblc", 0, Options{Now: clk.Now, LBLCExpiration: 10 * time.Minute}, ds)
	s.Pick(pkt("198.51.100.1"))
	c := &lblcOf(s).c
	c.expire(t0.Add(29 * time.Minute))
	if c.live != 1 {
		t.Fatalf("entry gone before the first full check")
	}
	c.expire(t0.Add(30 * time.Minute))
	if c.live != 0 {
		t.Fatalf("entry idle 30m kept past a 10m expiration")
	}
}

// TestCachePartialGC: above 16384 entries every tick runs a partial pass
// that drops entries idle for 6 minutes, a third more than the excess.
func TestCachePartialGC(t *testing.T) {
	ds := weights(t, 1)
	clk := newClock()
	s := mustNew(t, "lblc", 0, Options{Now: clk.Now}, ds)
	const n = 17000
	for i := range n {
		s.Pick(pkt(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}).String()))
	}
	c := &lblcOf(s).c
	c.expire(t0.Add(5 * time.Minute))
	if c.live != n || c.counter != 1 {
		t.Fatalf("after 5 ticks live %d counter %d, want %d and 1 (nothing idle 6m yet)", c.live, c.counter, n)
	}
	c.expire(t0.Add(6 * time.Minute))
	goal := (n - cacheMaxSize) * 4 / 3
	if c.live > n-goal || c.live < n-goal-64 {
		t.Fatalf("after the 6m tick live %d, want just under %d", c.live, n-goal)
	}
	if c.live != c.entries {
		t.Fatalf("live %d != entries %d", c.live, c.entries)
	}
	c.expire(t0.Add(7 * time.Minute))
	if c.counter != 2 {
		t.Errorf("counter %d after the table shrank, want 2", c.counter)
	}
}

// TestCacheReplay: replaying many ticks at once (with the arithmetic
// shortcuts) ends in the same state as running the timer minute by minute.
func TestCacheReplay(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		exp := time.Duration(rapid.IntRange(1, 48*60).Draw(t, "expMinutes")) * time.Minute
		var a, b cache
		a.init(t0, exp)
		b.init(t0, exp)
		n := rapid.IntRange(0, 40).Draw(t, "entries")
		for i := range n {
			age := time.Duration(rapid.IntRange(0, 3*24*3600).Draw(t, "createdAtSeconds")) * time.Second
			addr := netip.AddrFrom4([4]byte{198, 18, 0, byte(i)})
			a.add(&cacheEntry{addr: addr, lastuse: t0.Add(age)})
			b.add(&cacheEntry{addr: addr, lastuse: t0.Add(age)})
		}
		// The kernel's counter may run ahead of the real entries (see
		// cache.unlink); past 16384 it switches the timer to partial passes.
		drift := rapid.SampledFrom([]int{0, 5, cacheMaxSize, cacheMaxSize + 30}).Draw(t, "drift")
		a.entries += drift
		b.entries += drift
		// Start from an arbitrary point of the counter cycle.
		start := time.Duration(rapid.IntRange(0, 90).Draw(t, "startMinutes")) * time.Minute
		a.expire(t0.Add(start))
		b.expire(t0.Add(start))
		end := start + time.Duration(rapid.IntRange(0, 7*24*60).Draw(t, "jumpMinutes"))*time.Minute +
			time.Duration(rapid.IntRange(0, 59).Draw(t, "jumpSeconds"))*time.Second
		for m := start; m <= end; m += time.Minute {
			a.expire(t0.Add(m))
		}
		a.expire(t0.Add(end))
		b.expire(t0.Add(end))
		if diff := cmp.Diff(cacheState(&a), cacheState(&b)); diff != "" {
			t.Fatalf("minute by minute vs one jump (-step +jump):\n%s", diff)
		}
	})
}

type cacheSnap struct {
	Addrs                   []string
	Entries, Live, Rover, C int
	Next                    time.Duration
}

func cacheState(c *cache) cacheSnap {
	s := cacheSnap{Entries: c.entries, Live: c.live, Rover: c.rover, C: c.counter, Next: c.nextTick.Sub(t0)}
	for _, e := range c.bucket {
		for ; e != nil; e = e.next {
			s.Addrs = append(s.Addrs, e.addr.String())
		}
	}
	slices.Sort(s.Addrs)
	return s
}

func TestCacheClockLeap(t *testing.T) {
	var c cache
	c.init(t0, time.Hour)
	c.add(&cacheEntry{addr: ip("198.51.100.1"), lastuse: t0})
	far := t0.Add(200 * 365 * 24 * time.Hour)
	c.expire(far)
	if c.live != 0 || c.counter != 1 || !c.nextTick.Equal(far.Add(time.Minute)) {
		t.Errorf("after a 200-year leap: live %d counter %d next %v", c.live, c.counter, c.nextTick)
	}
	// A clock going backwards does nothing.
	c.expire(t0)
	if !c.nextTick.Equal(far.Add(time.Minute)) {
		t.Errorf("clock going back moved the timer")
	}
}

func TestLBLCR(t *testing.T) {
	ds := weights(t, 1, 1, 4)
	clk := newClock()
	s := mustNew(t, "lblcr", 0, Options{Now: clk.Now, LBLCRExpiration: time.Hour}, ds)
	const dst = "198.51.100.1"
	step := func(name string, want int, wantSet ...int) {
		t.Helper()
		if got := index(ds, s.Pick(pkt(dst))); got != want {
			t.Fatalf("%s: picked %d, want %d", name, got, want)
		}
		var set []int
		for _, d := range cachedSet(s, dst) {
			set = append(set, index(ds, d))
		}
		if diff := cmp.Diff(wantSet, set); diff != "" {
			t.Fatalf("%s: set (-want +got):\n%s", name, diff)
		}
	}
	step("first pick: wlc", 0, 0)
	bindActive(ds[0], 1)
	clk.Add(time.Minute)
	step("member kept at active == weight", 0, 0)
	bindActive(ds[0], 1) // A: 2 active > weight 1 while B is below half
	clk.Add(time.Minute)
	step("overloaded member: wlc over all, added at the head", 1, 1, 0)
	bindActive(ds[1], 1)
	clk.Add(time.Minute)
	step("least loaded member of the set", 1, 1, 0)
	ds[1].SetThresholds(1, 0)
	ds[1].Bind(false, true) // B OVERLOAD: skipped in the set and by wlc
	clk.Add(time.Minute)
	step("OVERLOAD member skipped, A overloaded: C joins", 2, 2, 1, 0)
	ds[1].SetThresholds(0, 0) // clears OVERLOAD
	// Nothing is dropped until the set has been unchanged for the
	// expiration (1h, strictly more); picks keep the entry in use.
	for range 6 {
		clk.Add(10 * time.Minute)
		step("set stable", 2, 2, 1, 0)
	}
	clk.Add(time.Minute)
	// A is the most loaded per weight (512/1 against B's 257/1 and C's
	// 0/4): dropped. C, chosen before the drop, is returned.
	step("stable set loses its most loaded member", 2, 2, 1)
	clk.Add(time.Minute)
	step("set changed just now: nothing dropped", 2, 2, 1)
}

func TestLBLCRDropsRemovedMember(t *testing.T) {
	// A member removed from the service is skipped by the set's min but
	// still counted, and dropped, by its max.
	ds := weights(t, 1, 1)
	clk := newClock()
	s := mustNew(t, "lblcr", 0, Options{Now: clk.Now, LBLCRExpiration: time.Minute}, ds)
	const dst = "198.51.100.1"
	s.Pick(pkt(dst)) // A
	bindActive(ds[0], 2)
	clk.Add(time.Second)
	s.Pick(pkt(dst)) // A overloaded (2 > 1, B idle): B added
	if got := len(cachedSet(s, dst)); got != 2 {
		t.Fatalf("set size %d, want 2", got)
	}
	_ = s.Update(ds[1:]) // A leaves the service
	clk.Add(2 * time.Minute)
	if got := index(ds, s.Pick(pkt(dst))); got != 1 {
		t.Fatalf("picked %d, want B", got)
	}
	if diff := cmp.Diff([]*dest.Dest{ds[1]}, cachedSet(s, dst), cmp.Comparer(func(a, b *dest.Dest) bool { return a == b })); diff != "" {
		t.Errorf("set after drop (-want +got):\n%s", diff)
	}
}

func TestLBLCRExpiry(t *testing.T) {
	ds := weights(t, 1)
	clk := newClock()
	s := mustNew(t, "lblcr", 0, Options{Now: clk.Now}, ds)
	s.Pick(pkt("198.51.100.1"))
	c := &lblcrOf(s).c
	c.expire(t0.Add(23*time.Hour + 59*time.Minute))
	if c.live != 1 {
		t.Fatal("entry gone early")
	}
	c.expire(t0.Add(24 * time.Hour))
	if c.live != 0 {
		t.Fatal("entry idle 24h kept at the full check")
	}
}
