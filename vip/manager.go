package vip

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// kernel is the seam between the Manager's bookkeeping and the host. The
// real one (kernel_linux.go) talks rtnetlink and raw sockets in one network
// namespace; tests substitute a fake. Methods may be called concurrently.
type kernel interface {
	// add creates the address with the given lifetime (0: forever) and
	// fails with errExists when it is already there.
	add(v VIP, lifetime time.Duration) error
	// lookup reports whether the address is on the interface and whether
	// its lifetime is infinite.
	lookup(v VIP) (present, permanent bool, err error)
	// replace creates the address or resets its lifetime.
	replace(v VIP, lifetime time.Duration) error
	// remove deletes the address; an address or interface already gone is
	// not an error.
	remove(v VIP) error
	// announce sends one gratuitous ARP (IPv4) or unsolicited neighbour
	// advertisement (IPv6) for v.
	announce(v VIP) (announcement, error)
	close() error
}

// announcement says what announce sent.
type announcement int

const (
	sentNothing announcement = iota // the link has no Ethernet address: nothing to announce
	sentGARP
	sentNA
)

// errExists is kernel.add's "address already present".
var errExists = errors.New("address already present")

// errClosed is returned by Set after Close.
var errClosed = errors.New("vip: manager closed")

// renewMargin is how much earlier than Lifetime a renewal counts as too
// late. The kernel may delete an address up to 20 ms before its lifetime
// (ADDRCONF_TIMER_FUZZ_MINUS, HZ/50); the rest covers clock skew between
// jiffies and the monotonic clock.
const renewMargin = 100 * time.Millisecond

// Manager holds VIPs on behalf of the master. All methods are safe for
// concurrent use.
type Manager struct {
	cfg Config
	k   kernel
	log *slog.Logger
	now func() time.Time // monotonic; replaced in tests

	// mu serialises Set, Close and renewals with each other, so that a
	// renewal can never re-add an address a concurrent Set is removing.
	mu     sync.Mutex
	held   map[VIP]*holding
	closed bool

	ctx    context.Context // cancelled by Close; parent of every goroutine
	cancel context.CancelFunc
	wg     sync.WaitGroup

	c struct {
		adds, addErrors, removes, removeErrors, renewals, renewErrors,
		expired, garps, nas, announceErrors atomic.Uint64
	}
}

// holding is the state of one held VIP.
type holding struct {
	// mu is held across each announcement, and taken to set gone, so that
	// no announcement for a VIP is sent once its removal has started.
	mu   sync.Mutex
	gone bool

	// leaving marks a VIP whose removal failed: it may still be on the
	// interface, is no longer renewed (so the kernel drops it within
	// Lifetime anyway) and its removal is retried every RenewEvery.
	leaving bool
	// confirmed is when the last successful add or renewal was issued; the
	// kernel's lifetime countdown started no earlier.
	confirmed time.Time
	stop      context.CancelFunc // ends the takeover burst
}

// New validates cfg, opens the kernel interfaces in the configured network
// namespace and starts the renewal and refresh loops. It holds nothing
// until Set. Close releases everything.
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	k, err := newKernel(cfg)
	if err != nil {
		return nil, err
	}
	m := newManager(cfg, k, time.Now)
	m.start()
	return m, nil
}

// newManager builds a Manager without starting its loops; cfg must be
// validated and defaulted.
func newManager(cfg Config, k kernel, now func() time.Time) *Manager {
	m := &Manager{cfg: cfg, k: k, log: cfg.Logger, now: now, held: map[VIP]*holding{}}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m
}

// start runs the renewal and refresh loops until Close. They are separate
// goroutines so that a slow announcement can never delay a renewal.
func (m *Manager) start() {
	m.wg.Add(2)
	go m.every(m.cfg.RenewEvery, m.renew)
	go m.every(m.cfg.Refresh, m.refresh)
}

func (m *Manager) every(d time.Duration, fn func()) {
	defer m.wg.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// Set makes desired the set of VIPs held, and returns the set actually
// held afterwards, sorted, together with every error met on the way
// (joined). It is idempotent: VIPs already held are left alone, so calling
// Set again with the same list costs no kernel call. New VIPs are added
// before unwanted ones are removed, so a VIP that only changes its prefix
// length is never absent. Invalid entries and addresses that belong to
// someone else are reported and skipped; the rest is still applied.
//
// Each VIP added starts a takeover burst of announcements, sent from a
// goroutine so that Set does not wait for it; the burst ends early when
// the VIP is removed or the Manager closed.
//
// ctx bounds additions only: once it is done the remaining additions fail
// with its error, while removals always run, since withdrawing is the safe
// direction.
//
// A VIP given up because its renewal came too late (Counters.Expired) is
// added again by the next Set that asks for it; callers are expected to
// call Set again whenever they re-check that they are master, which costs
// nothing when nothing changed.
func (m *Manager) Set(ctx context.Context, desired []VIP) ([]VIP, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errClosed
	}
	var errs []error
	want := make(map[VIP]bool, len(desired))
	type ifAddr struct {
		addr   netip.Addr
		ifname string
	}
	sameAddr := map[ifAddr]VIP{}
	for i, v := range desired {
		if err := v.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("vip: desired[%d] %s: %w", i, v, err))
			continue
		}
		// One address on one interface with two prefix lengths is
		// ambiguous (IPv6 keeps one of them): keep the first.
		k := ifAddr{v.Prefix.Addr(), v.Interface}
		if w, ok := sameAddr[k]; ok && w != v {
			errs = append(errs, fmt.Errorf("vip: desired[%d] %s: same address as %s", i, v, w))
			continue
		}
		sameAddr[k] = v
		want[v] = true
	}

	for _, v := range sortedKeys(want) {
		if h, ok := m.held[v]; ok && !h.leaving {
			continue
		}
		if err := ctx.Err(); err != nil {
			m.c.addErrors.Add(1)
			errs = append(errs, fmt.Errorf("vip: add %s: %w", v, err))
			continue
		}
		if err := m.acquire(v); err != nil {
			m.c.addErrors.Add(1)
			errs = append(errs, err)
		}
	}
	for _, v := range sortedKeys(m.held) {
		if want[v] {
			continue
		}
		if err := m.release(v, m.held[v]); err != nil {
			errs = append(errs, err)
		}
	}
	return m.heldLocked(), errors.Join(errs...)
}

// acquire adds v (or takes over a predecessor's copy) and starts its
// takeover burst. m.mu is held.
func (m *Manager) acquire(v VIP) error {
	t0 := m.now()
	if h, ok := m.held[v]; ok && h.leaving {
		// Our own address whose removal failed: it is ours, just renew it.
		if err := m.k.replace(v, m.cfg.Lifetime); err != nil {
			return fmt.Errorf("vip: add %s: %w", v, err)
		}
		delete(m.held, v)
	} else if err := m.k.add(v, m.cfg.Lifetime); errors.Is(err, errExists) {
		present, permanent, err := m.k.lookup(v)
		switch {
		case err != nil:
			return fmt.Errorf("vip: add %s: already present, and looking it up: %w", v, err)
		case present && permanent:
			return fmt.Errorf("vip: add %s: the address is already configured permanently by someone else; not managing it", v)
		}
		// Either a finite-lifetime address left by a predecessor, to take
		// over, or one that vanished since add: replace covers both.
		t0 = m.now()
		if err := m.k.replace(v, m.cfg.Lifetime); err != nil {
			return fmt.Errorf("vip: take over %s: %w", v, err)
		}
	} else if err != nil {
		return fmt.Errorf("vip: add %s: %w", v, err)
	}
	m.c.adds.Add(1)
	ctx, stop := context.WithCancel(m.ctx)
	h := &holding{confirmed: t0, stop: stop}
	m.held[v] = h
	m.log.Info("vip: added", "vip", v.String(), "lifetime", m.cfg.Lifetime)
	m.wg.Add(1)
	go m.burst(ctx, v, h)
	return nil
}

// release stops announcing v and removes it. When removal fails, v stays
// held as leaving: no longer renewed, retried later. m.mu is held.
func (m *Manager) release(v VIP, h *holding) error {
	h.stop()
	h.mu.Lock()
	h.gone = true
	h.mu.Unlock()
	if err := m.k.remove(v); err != nil {
		m.c.removeErrors.Add(1)
		if !h.leaving {
			m.log.Warn("vip: remove failed; no longer renewing, will retry", "vip", v.String(), "err", err)
		}
		h.leaving = true
		return fmt.Errorf("vip: remove %s: %w", v, err)
	}
	m.c.removes.Add(1)
	delete(m.held, v)
	m.log.Info("vip: removed", "vip", v.String())
	return nil
}

// renew pushes back the lifetime of every held VIP and retries pending
// removals. A VIP whose previous renewal is too old to be trusted is given
// up rather than renewed: the kernel may already have dropped it, and
// re-adding it could give the segment two holders (a master that was
// frozen while another took over).
func (m *Manager) renew() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	deadline := m.cfg.Lifetime - renewMargin
	for _, v := range sortedKeys(m.held) {
		h := m.held[v]
		if h.leaving {
			_ = m.release(v, h)
			continue
		}
		if m.cfg.Lifetime == 0 {
			continue // permanent: nothing to renew
		}
		if late := m.now().Sub(h.confirmed); late >= deadline {
			m.expire(v, h, late)
			continue
		}
		t0 := m.now()
		err := m.k.replace(v, m.cfg.Lifetime)
		// The replace may have run after the kernel dropped the address,
		// in which case it created it anew: undo that.
		if late := m.now().Sub(h.confirmed); late >= deadline {
			m.expire(v, h, late)
			continue
		}
		if err != nil {
			m.c.renewErrors.Add(1)
			m.log.Warn("vip: renewal failed", "vip", v.String(), "err", err)
			continue
		}
		m.c.renewals.Add(1)
		h.confirmed = t0
	}
}

// expire gives up v after a renewal came too late. m.mu is held.
func (m *Manager) expire(v VIP, h *holding, late time.Duration) {
	m.c.expired.Add(1)
	m.log.Warn("vip: renewal came too late; giving the VIP up", "vip", v.String(),
		"since_last_renewal", late, "lifetime", m.cfg.Lifetime)
	if err := m.release(v, h); err != nil {
		m.log.Warn("vip: removing expired VIP", "vip", v.String(), "err", err)
	}
}

// burst sends the takeover announcements of v.
func (m *Manager) burst(ctx context.Context, v VIP, h *holding) {
	defer m.wg.Done()
	var t *time.Timer
	for i := 0; i < m.cfg.Burst; i++ {
		if i > 0 {
			if t == nil {
				t = time.NewTimer(m.cfg.Spacing)
				defer t.Stop()
			} else {
				t.Reset(m.cfg.Spacing)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		if !m.announce(v, h) {
			return
		}
	}
}

// refresh sends one announcement for every held VIP.
func (m *Manager) refresh() {
	m.mu.Lock()
	type pair struct {
		v VIP
		h *holding
	}
	var todo []pair
	for _, v := range sortedKeys(m.held) {
		todo = append(todo, pair{v, m.held[v]})
	}
	m.mu.Unlock()
	for _, p := range todo {
		if m.ctx.Err() != nil {
			return
		}
		m.announce(p.v, p.h)
	}
}

// announce sends one announcement for v unless it is no longer held, and
// reports whether it was still held.
func (m *Manager) announce(v VIP, h *holding) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gone {
		return false
	}
	kind, err := m.k.announce(v)
	switch {
	case err != nil:
		m.c.announceErrors.Add(1)
		m.log.Warn("vip: announcement failed", "vip", v.String(), "err", err)
	case kind == sentGARP:
		m.c.garps.Add(1)
		m.log.Debug("vip: sent gratuitous ARP", "vip", v.String())
	case kind == sentNA:
		m.c.nas.Add(1)
		m.log.Debug("vip: sent unsolicited neighbour advertisement", "vip", v.String())
	}
	return true
}

// Held returns the VIPs held, sorted: those added and renewed, plus any
// whose removal failed and is still being retried.
func (m *Manager) Held() []VIP {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.heldLocked()
}

func (m *Manager) heldLocked() []VIP { return sortedKeys(m.held) }

// Counters returns the event counts so far.
func (m *Manager) Counters() Counters {
	return Counters{
		Adds:           m.c.adds.Load(),
		AddErrors:      m.c.addErrors.Load(),
		Removes:        m.c.removes.Load(),
		RemoveErrors:   m.c.removeErrors.Load(),
		Renewals:       m.c.renewals.Load(),
		RenewErrors:    m.c.renewErrors.Load(),
		Expired:        m.c.expired.Load(),
		GARPs:          m.c.garps.Load(),
		NAs:            m.c.nas.Load(),
		AnnounceErrors: m.c.announceErrors.Load(),
	}
}

// Close stops every goroutine, removes every address the Manager added and
// releases its sockets. Addresses whose removal fails are reported; with a
// finite Lifetime the kernel drops them within Lifetime anyway. Close is
// idempotent; Set fails after it.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()

	// Stop the loops and bursts first, so that nothing renews or announces
	// an address while (or after) it is removed.
	m.cancel()
	m.wg.Wait()

	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, v := range sortedKeys(m.held) {
		if err := m.release(v, m.held[v]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := m.k.close(); err != nil {
		errs = append(errs, fmt.Errorf("vip: close: %w", err))
	}
	return errors.Join(errs...)
}

// sortedKeys returns the VIPs of m in a stable order (IPv4 first, then by
// address, prefix length and interface), so that logs, errors and results
// are reproducible.
func sortedKeys[T any](m map[VIP]T) []VIP {
	out := make([]VIP, 0, len(m))
	for v := range m {
		out = append(out, v)
	}
	slices.SortFunc(out, compareVIP)
	return out
}

func compareVIP(a, b VIP) int {
	return cmp.Or(
		a.Prefix.Addr().Compare(b.Prefix.Addr()),
		cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()),
		cmp.Compare(a.Interface, b.Interface),
	)
}
