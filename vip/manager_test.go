package vip

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"pgregory.net/rapid"
)

var (
	v4a    = mustVIP("192.0.2.10/24", "eth0")
	v4a32  = mustVIP("192.0.2.10/32", "eth0")
	v4b    = mustVIP("192.0.2.11/24", "eth0")
	v4c    = mustVIP("198.51.100.1/32", "eth1")
	v6a    = mustVIP("2001:db8::10/64", "eth0")
	v6a128 = mustVIP("2001:db8::10/128", "eth0")
	v6b    = mustVIP("2001:db8::11/64", "eth1")
)

// quiet is a configuration whose timers stay out of the way of tests that
// drive renewals by hand.
func quiet() Config {
	c := DefaultConfig()
	c.Burst = 1
	return c
}

// TestSetStates walks a fake kernel through a sequence of desired sets and
// checks, at every step, the calls made, the kernel state reached and the
// held set returned.
func TestSetStates(t *testing.T) {
	m, f := testManager(t, quiet(), nil)
	steps := []struct {
		name    string
		desired []VIP
		ops     []string
		state   []string
	}{
		{
			name:    "add v4 and v6",
			desired: []VIP{v6a, v4a},
			ops:     []string{"add 192.0.2.10/24 dev eth0 3s", "add 2001:db8::10/64 dev eth0 3s"},
			state:   []string{"192.0.2.10/24 dev eth0 3s", "2001:db8::10/64 dev eth0 3s"},
		},
		{
			name:    "same again costs nothing",
			desired: []VIP{v4a, v6a},
			state:   []string{"192.0.2.10/24 dev eth0 3s", "2001:db8::10/64 dev eth0 3s"},
		},
		{
			name:    "duplicates in the list are one VIP",
			desired: []VIP{v4a, v6a, v4a},
			state:   []string{"192.0.2.10/24 dev eth0 3s", "2001:db8::10/64 dev eth0 3s"},
		},
		{
			name:    "drop v6, add another v4",
			desired: []VIP{v4a, v4b},
			ops:     []string{"add 192.0.2.11/24 dev eth0 3s", "remove 2001:db8::10/64 dev eth0"},
			state:   []string{"192.0.2.10/24 dev eth0 3s", "192.0.2.11/24 dev eth0 3s"},
		},
		{
			name:    "prefix change adds the new one before removing the old",
			desired: []VIP{v4a32, v4b},
			ops:     []string{"add 192.0.2.10/32 dev eth0 3s", "remove 192.0.2.10/24 dev eth0"},
			state:   []string{"192.0.2.10/32 dev eth0 3s", "192.0.2.11/24 dev eth0 3s"},
		},
		{
			name:    "IPv6 back",
			desired: []VIP{v4a32, v4b, v6a},
			ops:     []string{"add 2001:db8::10/64 dev eth0 3s"},
			state:   []string{"192.0.2.10/32 dev eth0 3s", "192.0.2.11/24 dev eth0 3s", "2001:db8::10/64 dev eth0 3s"},
		},
		{
			name:    "IPv6 one address per interface",
			desired: []VIP{v4a32, v4b, v6a128},
			ops: []string{
				"add 2001:db8::10/128 dev eth0 3s", "lookup 2001:db8::10/128 dev eth0",
				"replace 2001:db8::10/128 dev eth0 3s", "remove 2001:db8::10/64 dev eth0",
			},
			state: []string{"192.0.2.10/32 dev eth0 3s", "192.0.2.11/24 dev eth0 3s", "2001:db8::10/128 dev eth0 3s"},
		},
		{
			name:    "empty removes everything",
			desired: nil,
			ops: []string{
				"remove 192.0.2.10/32 dev eth0", "remove 192.0.2.11/24 dev eth0",
				"remove 2001:db8::10/128 dev eth0",
			},
		},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			held, err := m.Set(context.Background(), s.desired)
			if err != nil {
				t.Fatalf("Set: %v", err)
			}
			if diff := cmp.Diff(s.ops, f.takeLog()); diff != "" {
				t.Errorf("kernel calls (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(s.state, f.state()); diff != "" {
				t.Errorf("kernel state (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(sortedKeys(setOf(s.desired)), held, cmpVIP); diff != "" {
				t.Errorf("held (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(held, m.Held(), cmpVIP); diff != "" {
				t.Errorf("Held() differs from Set's result (-Set +Held):\n%s", diff)
			}
		})
	}
}

// cmpVIP compares VIPs by value and treats nil and empty lists alike.
var cmpVIP = cmp.Options{cmp.Comparer(func(a, b VIP) bool { return a == b }), cmpopts.EquateEmpty()}

func setOf(vs []VIP) map[VIP]bool {
	s := map[VIP]bool{}
	for _, v := range vs {
		s[v] = true
	}
	return s
}

func TestSetRejects(t *testing.T) {
	tests := []struct {
		name    string
		desired []VIP
		held    []VIP
		errs    []string
	}{
		{
			name:    "loopback",
			desired: []VIP{mustVIP("127.0.0.5/8", "lo"), v4a},
			held:    []VIP{v4a},
			errs:    []string{"desired[0] 127.0.0.5/8 dev lo: vip: Prefix: 127.0.0.5 is a loopback address"},
		},
		{
			name:    "no interface",
			desired: []VIP{v4a, mustVIP("192.0.2.20/24", "")},
			held:    []VIP{v4a},
			errs:    []string{"desired[1] 192.0.2.20/24 dev : vip: Interface: is required"},
		},
		{
			name:    "zero VIP",
			desired: []VIP{{}},
			errs:    []string{"desired[0] invalid Prefix dev : vip: Prefix: not a valid address"},
		},
		{
			name:    "same address twice with different prefix lengths",
			desired: []VIP{v4a, v4a32},
			held:    []VIP{v4a},
			errs:    []string{"desired[1] 192.0.2.10/32 dev eth0: same address as 192.0.2.10/24 dev eth0"},
		},
		{
			name:    "operator's permanent address",
			desired: []VIP{mustVIP("192.0.2.50/24", "eth0"), v4b},
			held:    []VIP{v4b},
			errs:    []string{"vip: add 192.0.2.50/24 dev eth0: the address is already configured permanently by someone else"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, f := testManager(t, quiet(), nil)
			f.addForeign(mustVIP("192.0.2.50/24", "eth0"), true)
			held, err := m.Set(context.Background(), tt.desired)
			if diff := cmp.Diff(tt.held, held, cmpVIP); diff != "" {
				t.Errorf("held (-want +got):\n%s", diff)
			}
			if err == nil {
				t.Fatalf("Set succeeded, want errors %q", tt.errs)
			}
			for _, want := range tt.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"192.0.2.50/24 dev eth0 forever"}, f.state()); diff != "" {
				t.Errorf("after Close, kernel state (-want +got):\n%s", diff)
			}
		})
	}
}

// A finite-lifetime address already present is what a crashed predecessor
// leaves behind: it is taken over, renewed and removed like our own.
func TestSetTakesOverPredecessorAddress(t *testing.T) {
	m, f := testManager(t, quiet(), nil)
	f.addForeign(v4a, false)
	held, err := m.Set(context.Background(), []VIP{v4a})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]VIP{v4a}, held, cmpVIP); diff != "" {
		t.Errorf("held (-want +got):\n%s", diff)
	}
	want := []string{"add 192.0.2.10/24 dev eth0 3s", "lookup 192.0.2.10/24 dev eth0", "replace 192.0.2.10/24 dev eth0 3s"}
	if diff := cmp.Diff(want, f.takeLog()); diff != "" {
		t.Errorf("kernel calls (-want +got):\n%s", diff)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := f.state(); len(got) != 0 {
		t.Errorf("after Close the kernel still has %q", got)
	}
}

func TestSetCancelledContextStillRemoves(t *testing.T) {
	m, f := testManager(t, quiet(), nil)
	if _, err := m.Set(context.Background(), []VIP{v4a}); err != nil {
		t.Fatal(err)
	}
	f.takeLog()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	held, err := m.Set(ctx, []VIP{v4b})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if len(held) != 0 {
		t.Errorf("held = %v, want nothing", held)
	}
	if diff := cmp.Diff([]string{"remove 192.0.2.10/24 dev eth0"}, f.takeLog()); diff != "" {
		t.Errorf("kernel calls (-want +got):\n%s", diff)
	}
	if got := m.Counters().AddErrors; got != 1 {
		t.Errorf("AddErrors = %d, want 1", got)
	}
}

func TestSetAddFailure(t *testing.T) {
	m, f := testManager(t, quiet(), nil)
	f.failAdd[v4b] = errors.New("no such device")
	held, err := m.Set(context.Background(), []VIP{v4a, v4b})
	if err == nil || !strings.Contains(err.Error(), "vip: add 192.0.2.11/24 dev eth0: no such device") {
		t.Errorf("err = %v", err)
	}
	if diff := cmp.Diff([]VIP{v4a}, held, cmpVIP); diff != "" {
		t.Errorf("held (-want +got):\n%s", diff)
	}
	if got := m.Counters(); got.Adds != 1 || got.AddErrors != 1 {
		t.Errorf("counters = %+v, want Adds 1 AddErrors 1", got)
	}
}

// A VIP whose removal fails stays held but is no longer renewed, so the
// kernel drops it within Lifetime even if removal keeps failing; the
// removal is retried at every renewal tick.
func TestRemoveFailureRetried(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	m, f := testManager(t, quiet(), clock.now)
	if _, err := m.Set(context.Background(), []VIP{v4a, v4b}); err != nil {
		t.Fatal(err)
	}
	f.takeLog()
	f.failRemove[v4a] = errors.New("EBUSY")
	held, err := m.Set(context.Background(), []VIP{v4b})
	if err == nil || !strings.Contains(err.Error(), "vip: remove 192.0.2.10/24 dev eth0: EBUSY") {
		t.Errorf("err = %v", err)
	}
	if diff := cmp.Diff([]VIP{v4a, v4b}, held, cmpVIP); diff != "" {
		t.Errorf("held after failed removal (-want +got):\n%s", diff)
	}

	clock.advance(time.Second)
	m.renew()
	want := []string{
		"remove 192.0.2.10/24 dev eth0", // the failed Set
		"remove 192.0.2.10/24 dev eth0", // retried, not renewed
		"replace 192.0.2.11/24 dev eth0 3s",
	}
	if diff := cmp.Diff(want, f.takeLog()); diff != "" {
		t.Errorf("kernel calls (-want +got):\n%s", diff)
	}

	delete(f.failRemove, v4a)
	clock.advance(time.Second)
	m.renew()
	if diff := cmp.Diff([]VIP{v4b}, m.Held(), cmpVIP); diff != "" {
		t.Errorf("held after successful retry (-want +got):\n%s", diff)
	}
	if got := m.Counters(); got.RemoveErrors != 2 || got.Removes != 1 {
		t.Errorf("counters = %+v, want RemoveErrors 2 Removes 1", got)
	}
}

// A VIP whose removal is pending and that is wanted again is simply renewed.
func TestLeavingVIPWantedAgain(t *testing.T) {
	m, f := testManager(t, quiet(), nil)
	if _, err := m.Set(context.Background(), []VIP{v4a}); err != nil {
		t.Fatal(err)
	}
	f.failRemove[v4a] = errors.New("EBUSY")
	if _, err := m.Set(context.Background(), nil); err == nil {
		t.Fatal("removal did not fail")
	}
	f.takeLog()
	held, err := m.Set(context.Background(), []VIP{v4a})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]VIP{v4a}, held, cmpVIP); diff != "" {
		t.Errorf("held (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"replace 192.0.2.10/24 dev eth0 3s"}, f.takeLog()); diff != "" {
		t.Errorf("kernel calls (-want +got):\n%s", diff)
	}
}

// TestRenew drives the renewal step on a fake clock: a timely renewal
// pushes the lifetime back; one that comes too late, or whose kernel call
// ran past the lifetime, gives the VIP up instead of resurrecting it.
func TestRenew(t *testing.T) {
	tests := []struct {
		name        string
		lifetime    time.Duration
		wait        time.Duration // since the add, before renew runs
		replaceTook time.Duration // how long the renewal's kernel call takes
		failReplace bool
		ops         []string
		held        []VIP
		counters    Counters
	}{
		{
			name: "in time", lifetime: 3 * time.Second, wait: time.Second,
			ops:      []string{"replace 192.0.2.10/24 dev eth0 3s"},
			held:     []VIP{v4a},
			counters: Counters{Adds: 1, Renewals: 1},
		},
		{
			name: "just in time", lifetime: 3 * time.Second, wait: 3*time.Second - renewMargin - time.Millisecond,
			ops:      []string{"replace 192.0.2.10/24 dev eth0 3s"},
			held:     []VIP{v4a},
			counters: Counters{Adds: 1, Renewals: 1},
		},
		{
			name: "too late: frozen", lifetime: 3 * time.Second, wait: 3*time.Second - renewMargin,
			ops:      []string{"remove 192.0.2.10/24 dev eth0"},
			counters: Counters{Adds: 1, Removes: 1, Expired: 1},
		},
		{
			name: "too late: frozen much longer", lifetime: 2 * time.Second, wait: time.Hour,
			ops:      []string{"remove 192.0.2.10/24 dev eth0"},
			counters: Counters{Adds: 1, Removes: 1, Expired: 1},
		},
		{
			name: "renewal call ran past the lifetime", lifetime: 3 * time.Second, wait: time.Second, replaceTook: 2 * time.Second,
			ops:      []string{"replace 192.0.2.10/24 dev eth0 3s", "remove 192.0.2.10/24 dev eth0"},
			counters: Counters{Adds: 1, Removes: 1, Expired: 1},
		},
		{
			name: "failed renewal keeps the VIP until its deadline", lifetime: 3 * time.Second, wait: time.Second, failReplace: true,
			ops:      []string{"replace 192.0.2.10/24 dev eth0 3s"},
			held:     []VIP{v4a},
			counters: Counters{Adds: 1, RenewErrors: 1},
		},
		{
			name: "forever needs no renewal", lifetime: 0, wait: time.Hour,
			held:     []VIP{v4a},
			counters: Counters{Adds: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(1000, 0)}
			cfg := quiet()
			cfg.Lifetime = tt.lifetime
			m, f := testManager(t, cfg, clock.now)
			if _, err := m.Set(context.Background(), []VIP{v4a}); err != nil {
				t.Fatal(err)
			}
			f.takeLog()
			if tt.failReplace {
				f.failReplace[v4a] = errors.New("ENOBUFS")
			}
			f.onReplace = func(VIP) { clock.advance(tt.replaceTook) }
			clock.advance(tt.wait)
			m.renew()
			if diff := cmp.Diff(tt.ops, f.takeLog()); diff != "" {
				t.Errorf("kernel calls (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.held, m.Held(), cmpVIP); diff != "" {
				t.Errorf("held (-want +got):\n%s", diff)
			}
			got := m.Counters()
			got.GARPs, got.NAs = 0, 0 // the takeover burst races with the test
			if diff := cmp.Diff(tt.counters, got); diff != "" {
				t.Errorf("counters (-want +got):\n%s", diff)
			}
		})
	}
}

// A failed renewal is not counted as one: the next renewal measures from
// the last good one, so repeated failures end in expiry.
func TestRenewFailuresEndInExpiry(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	m, f := testManager(t, quiet(), clock.now)
	if _, err := m.Set(context.Background(), []VIP{v4a}); err != nil {
		t.Fatal(err)
	}
	f.failReplace[v4a] = errors.New("ENOBUFS")
	for range 3 {
		clock.advance(time.Second)
		m.renew()
	}
	if got := m.Held(); len(got) != 0 {
		t.Errorf("held = %v after 3 s of failed renewals with a 3 s lifetime", got)
	}
	if got := m.Counters(); got.RenewErrors != 2 || got.Expired != 1 {
		t.Errorf("counters = %+v, want RenewErrors 2 Expired 1", got)
	}
}

// waitFor polls cond every millisecond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

func TestBurst(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Burst = 4
	cfg.Spacing = 30 * time.Millisecond
	m, f := testManager(t, cfg, nil)
	start := time.Now()
	if _, err := m.Set(context.Background(), []VIP{v4a, v6a}); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return len(f.sentFor(v4a)) == 4 && len(f.sentFor(v6a)) == 4 }) {
		t.Fatalf("sent %d and %d announcements, want 4 each", len(f.sentFor(v4a)), len(f.sentFor(v6a)))
	}
	time.Sleep(3 * cfg.Spacing) // nothing more may follow
	for _, v := range []VIP{v4a, v6a} {
		t.Run(v.String(), func(t *testing.T) {
			sent := f.sentFor(v)
			if len(sent) != 4 {
				t.Fatalf("sent %d announcements, want 4", len(sent))
			}
			// The first goes out at once, not after a spacing.
			if d := sent[0].Sub(start); d >= cfg.Spacing {
				t.Errorf("first announcement %v after Set, want immediately", d)
			}
			for i := 1; i < len(sent); i++ {
				if gap := sent[i].Sub(sent[i-1]); gap < cfg.Spacing {
					t.Errorf("gap %d = %v, want at least %v", i, gap, cfg.Spacing)
				}
			}
		})
	}
	if got := m.Counters(); got.GARPs != 4 || got.NAs != 4 {
		t.Errorf("counters = %+v, want 4 GARPs and 4 NAs", got)
	}
}

// No announcement for a VIP is sent once Set has started removing it.
func TestBurstStopsOnRemoval(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Burst = maxBurst
	cfg.Spacing = 5 * time.Millisecond
	m, f := testManager(t, cfg, nil)
	if _, err := m.Set(context.Background(), []VIP{v4a}); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return len(f.sentFor(v4a)) >= 3 }) {
		t.Fatal("burst did not start")
	}
	if _, err := m.Set(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	n := len(f.sentFor(v4a))
	time.Sleep(10 * cfg.Spacing)
	if got := len(f.sentFor(v4a)); got != n || n >= maxBurst {
		t.Errorf("%d announcements at removal, %d later; want no more after removal", n, got)
	}
	log := f.fullLog()
	removed := slices.Index(log, "remove 192.0.2.10/24 dev eth0")
	if i := slices.Index(log[removed:], "announce 192.0.2.10/24 dev eth0"); i >= 0 {
		t.Errorf("announcement after removal: %q", log[removed:])
	}
}

func TestAnnounceErrorsCounted(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Burst = 2
	cfg.Spacing = time.Millisecond
	m, f := testManager(t, cfg, nil)
	f.failAnnounce[v4a] = errors.New("ENETDOWN")
	if _, err := m.Set(context.Background(), []VIP{v4a}); err != nil {
		t.Fatalf("a failed announcement must not fail Set: %v", err)
	}
	if !waitFor(5*time.Second, func() bool { return m.Counters().AnnounceErrors == 2 }) {
		t.Errorf("counters = %+v, want AnnounceErrors 2", m.Counters())
	}
}

func TestRefresh(t *testing.T) {
	cfg := quiet()
	cfg.Refresh = 20 * time.Millisecond
	m, f := testManager(t, cfg, nil)
	m.start()
	if _, err := m.Set(context.Background(), []VIP{v4a, v6b}); err != nil {
		t.Fatal(err)
	}
	// One from the burst, then one per Refresh.
	if !waitFor(5*time.Second, func() bool { return len(f.sentFor(v4a)) >= 4 && len(f.sentFor(v6b)) >= 4 }) {
		t.Fatalf("sent %d and %d announcements, want periodic ones", len(f.sentFor(v4a)), len(f.sentFor(v6b)))
	}
	if _, err := m.Set(context.Background(), []VIP{v6b}); err != nil {
		t.Fatal(err)
	}
	n := len(f.sentFor(v4a))
	time.Sleep(5 * cfg.Refresh)
	if got := len(f.sentFor(v4a)); got != n {
		t.Errorf("refreshes continued for a removed VIP: %d then %d", n, got)
	}
}

// The loops renew real addresses on the real clock.
func TestLoopsRenew(t *testing.T) {
	cfg := quiet()
	cfg.Lifetime = time.Second
	cfg.RenewEvery = 10 * time.Millisecond
	m, f := testManager(t, cfg, nil)
	m.start()
	if _, err := m.Set(context.Background(), []VIP{v4a}); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return m.Counters().Renewals >= 3 }) {
		t.Fatalf("counters = %+v, want renewals", m.Counters())
	}
	if diff := cmp.Diff([]string{"192.0.2.10/24 dev eth0 1s"}, f.state()); diff != "" {
		t.Errorf("kernel state (-want +got):\n%s", diff)
	}
}

func TestClose(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Spacing = time.Hour // a burst in progress must not hold Close up
	m, f := testManager(t, cfg, nil)
	m.start()
	f.addForeign(v4c, true)
	if _, err := m.Set(context.Background(), []VIP{v4a, v6a, v4c}); err == nil {
		t.Fatal("taking the operator's address did not fail")
	}
	done := make(chan error, 1)
	go func() { done <- m.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs")
	}
	if diff := cmp.Diff([]string{"198.51.100.1/32 dev eth1 forever"}, f.state()); diff != "" {
		t.Errorf("kernel state after Close (-want +got):\n%s", diff)
	}
	if !f.closed {
		t.Error("kernel not closed")
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := m.Set(context.Background(), []VIP{v4a}); !errors.Is(err, errClosed) {
		t.Errorf("Set after Close: %v, want %v", err, errClosed)
	}
	if got := m.Held(); len(got) != 0 {
		t.Errorf("Held after Close = %v", got)
	}
	sent := len(f.sentFor(v4a))
	time.Sleep(20 * time.Millisecond)
	if got := len(f.sentFor(v4a)); got != sent {
		t.Errorf("announcements after Close: %d then %d", sent, got)
	}
}

func TestCloseReportsFailedRemoval(t *testing.T) {
	m, f := testManager(t, quiet(), nil)
	if _, err := m.Set(context.Background(), []VIP{v4a}); err != nil {
		t.Fatal(err)
	}
	f.failRemove[v4a] = errors.New("EPERM")
	if err := m.Close(); err == nil || !strings.Contains(err.Error(), "vip: remove 192.0.2.10/24 dev eth0: EPERM") {
		t.Errorf("Close = %v", err)
	}
}

// TestSetAnyStateToAnyState checks, for random sequences of desired sets
// (with invalid entries, an operator's address and kernel failures mixed
// in), that Set always reports exactly what the kernel holds on its behalf,
// reaches the desired set when nothing fails, adds before it removes, never
// adds what it already holds, and that Close leaves only the operator's
// address.
func TestSetAnyStateToAnyState(t *testing.T) {
	operator := mustVIP("203.0.113.7/24", "eth0")
	pool := []VIP{v4a, v4a32, v4b, v4c, v6a, v6a128, v6b, operator, mustVIP("127.0.0.9/8", "lo"), {}}
	rapid.Check(t, func(t *rapid.T) {
		f := newFakeKernel()
		f.addForeign(operator, true)
		cfg := quiet().withDefaults()
		m := newManager(cfg, f, time.Now)
		defer m.Close()
		steps := rapid.IntRange(1, 8).Draw(t, "steps")
		for i := range steps {
			desired := rapid.SliceOfN(rapid.SampledFrom(pool), 0, 6).Draw(t, "desired")
			failing := rapid.SliceOfN(rapid.SampledFrom(pool), 0, 2).Draw(t, "failing")
			clear(f.failAdd)
			clear(f.failRemove)
			for _, v := range failing {
				f.failAdd[v] = errors.New("injected")
				f.failRemove[v] = errors.New("injected")
			}
			before := setOf(m.Held())
			f.takeLog()
			held, err := m.Set(context.Background(), desired)

			var managed []VIP
			for _, line := range f.state() {
				if line != operator.String()+" forever" {
					managed = append(managed, parseState(t, line))
				}
			}
			slices.SortFunc(managed, compareVIP)
			if diff := cmp.Diff(managed, held, cmpVIP); diff != "" {
				t.Fatalf("step %d: held differs from the kernel (-kernel +held):\n%s", i, diff)
			}
			if err == nil && !cmp.Equal(sortedKeys(setOf(desired)), held, cmpVIP) {
				t.Fatalf("step %d: Set succeeded but holds %v, want %v", i, held, desired)
			}
			removing := false
			for _, op := range f.takeLog() {
				verb, rest, _ := strings.Cut(op, " ")
				switch verb {
				case "remove":
					removing = true
				case "add", "replace":
					if removing {
						t.Fatalf("step %d: %q after a removal", i, op)
					}
					// replace is how a VIP whose removal failed is taken back.
					if v := parseState(t, rest); verb == "add" && before[v] {
						t.Fatalf("step %d: %q of a VIP already held", i, op)
					}
				}
			}
		}
		if err := m.Close(); err != nil {
			// Only injected removal failures may survive Close.
			if !strings.Contains(err.Error(), "injected") {
				t.Fatalf("Close: %v", err)
			}
			return
		}
		if diff := cmp.Diff([]string{operator.String() + " forever"}, f.state()); diff != "" {
			t.Fatalf("after Close (-want +got):\n%s", diff)
		}
	})
}

// parseState reads back "PREFIX dev IFACE [lifetime]".
func parseState(t *rapid.T, line string) VIP {
	f := strings.Fields(line)
	if len(f) < 3 {
		t.Fatalf("bad state line %q", line)
	}
	return mustVIP(f[0], f[2])
}
