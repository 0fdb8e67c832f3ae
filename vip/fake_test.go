package vip

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeKernel models the kernel's address table the way rtnetlink behaves:
// IPv4 addresses are told apart by address and prefix length, IPv6 ones by
// address only; add refuses an existing address, replace creates or
// updates, remove of a missing address succeeds. It logs every call, in
// order, so tests can check what the Manager asked for.
type fakeKernel struct {
	mu     sync.Mutex
	addrs  map[fakeKey]fakeAddr
	log    []string
	sent   []sentRec
	closed bool

	failAdd, failReplace, failRemove, failAnnounce map[VIP]error
	// onReplace runs inside replace, before it changes anything: a test
	// uses it to make the call "take" time on a fake clock.
	onReplace func(VIP)
}

type fakeKey struct {
	addr   netip.Addr
	bits   int // IPv4 only
	ifname string
}

type fakeAddr struct {
	v         VIP
	lifetime  time.Duration // 0: forever
	permanent bool
}

type sentRec struct {
	v  VIP
	at time.Time
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{
		addrs:        map[fakeKey]fakeAddr{},
		failAdd:      map[VIP]error{},
		failReplace:  map[VIP]error{},
		failRemove:   map[VIP]error{},
		failAnnounce: map[VIP]error{},
	}
}

func keyOf(v VIP) fakeKey {
	k := fakeKey{addr: v.Prefix.Addr(), ifname: v.Interface}
	if k.addr.Is4() {
		k.bits = v.Prefix.Bits()
	}
	return k
}

func lft(d time.Duration) string {
	if d == 0 {
		return "forever"
	}
	return d.String()
}

func (f *fakeKernel) add(v VIP, lifetime time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, fmt.Sprintf("add %s %s", v, lft(lifetime)))
	if err := f.failAdd[v]; err != nil {
		return err
	}
	if _, ok := f.addrs[keyOf(v)]; ok {
		return errExists
	}
	f.addrs[keyOf(v)] = fakeAddr{v: v, lifetime: lifetime}
	return nil
}

func (f *fakeKernel) lookup(v VIP) (bool, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, "lookup "+v.String())
	a, ok := f.addrs[keyOf(v)]
	return ok, ok && (a.permanent || a.lifetime == 0), nil
}

func (f *fakeKernel) replace(v VIP, lifetime time.Duration) error {
	if f.onReplace != nil {
		f.onReplace(v)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, fmt.Sprintf("replace %s %s", v, lft(lifetime)))
	if err := f.failReplace[v]; err != nil {
		return err
	}
	f.addrs[keyOf(v)] = fakeAddr{v: v, lifetime: lifetime}
	return nil
}

func (f *fakeKernel) remove(v VIP) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, "remove "+v.String())
	a, ok := f.addrs[keyOf(v)]
	if !ok || a.v != v {
		return nil // the kernel answers EADDRNOTAVAIL: already gone
	}
	if err := f.failRemove[v]; err != nil {
		return err
	}
	delete(f.addrs, keyOf(v))
	return nil
}

func (f *fakeKernel) announce(v VIP) (announcement, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, "announce "+v.String())
	if err := f.failAnnounce[v]; err != nil {
		return sentNothing, err
	}
	f.sent = append(f.sent, sentRec{v, time.Now()})
	if v.Prefix.Addr().Is4() {
		return sentGARP, nil
	}
	return sentNA, nil
}

func (f *fakeKernel) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// addForeign puts an address there as an operator (permanent) or a crashed
// predecessor (finite lifetime) would have.
func (f *fakeKernel) addForeign(v VIP, permanent bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := fakeAddr{v: v, permanent: permanent}
	if !permanent {
		a.lifetime = time.Second
	}
	f.addrs[keyOf(v)] = a
}

// state renders the address table as sorted text lines.
func (f *fakeKernel) state() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, a := range f.addrs {
		life := lft(a.lifetime)
		if a.permanent {
			life = "forever"
		}
		out = append(out, a.v.String()+" "+life)
	}
	slices.Sort(out)
	return out
}

// takeLog returns the calls logged since the previous takeLog, leaving out
// announcements, which run on their own goroutines and would make the
// order nondeterministic.
func (f *fakeKernel) takeLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range f.log {
		if !strings.HasPrefix(l, "announce ") {
			out = append(out, l)
		}
	}
	f.log = nil
	return out
}

// fullLog returns every call logged so far, announcements included.
func (f *fakeKernel) fullLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.log)
}

func (f *fakeKernel) sentFor(v VIP) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Time
	for _, s := range f.sent {
		if s.v == v {
			out = append(out, s.at)
		}
	}
	return out
}

// fakeClock is a monotonic clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testManager builds a Manager on a fake kernel. Its loops are not started:
// tests call renew and refresh themselves, or start them.
func testManager(t *testing.T, cfg Config, clock func() time.Time) (*Manager, *fakeKernel) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	f := newFakeKernel()
	if clock == nil {
		clock = time.Now
	}
	m := newManager(cfg.withDefaults(), f, clock)
	t.Cleanup(func() { _ = m.Close() })
	return m, f
}

func mustVIP(s, ifname string) VIP {
	return VIP{Prefix: netip.MustParsePrefix(s), Interface: ifname}
}
