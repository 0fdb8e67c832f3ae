package sched

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/lbha/lbha/dest"
)

// Cache geometry and garbage-collection timing shared by ip_vs_lblc and
// ip_vs_lblcr.
const (
	cacheBits    = 10 // CONFIG_IP_VS_LBLC_TAB_BITS / _LBLCR_TAB_BITS
	cacheSize    = 1 << cacheBits
	cacheMask    = cacheSize - 1
	cacheMaxSize = cacheSize * 16 // entries above this trigger partial GC

	checkInterval = 60 * time.Second // CHECK_EXPIRE_INTERVAL: the GC timer
	entryTimeout  = 6 * time.Minute  // ENTRY_TIMEOUT: idle limit of partial GC
	fullEvery     = 30               // COUNT_FOR_FULL_EXPIRATION: ticks per full check

	// A clock that leaps further than this is not replayed tick by tick;
	// one full check at the new time stands in for the missed ones.
	maxReplay = 100 * 365 * 24 * time.Hour
)

// cacheEntry maps a destination IP address to a server (lblc) or a server
// set (lblcr).
type cacheEntry struct {
	next    *cacheEntry
	addr    netip.Addr
	lastuse time.Time

	dest *dest.Dest // lblc

	set     []*dest.Dest // lblcr, most recently added first
	lastmod time.Time    // lblcr: last insertion into or removal from set
}

// cache is the kernel's ip_vs_lblc_table / ip_vs_lblcr_table: 1024 hash
// chains, newest entry first, with the periodic GC state.
type cache struct {
	exp      time.Duration // lblc_expiration / lblcr_expiration
	bucket   [cacheSize]*cacheEntry
	entries  int // the kernel's entry counter, which drives GC (see add)
	live     int // entries really in the chains
	rover    int // bucket where the last GC pass stopped
	counter  int // GC ticks since the last full check, from 1
	nextTick time.Time
}

func (c *cache) init(now time.Time, exp time.Duration) {
	c.exp, c.counter, c.nextTick = exp, 1, now.Add(checkInterval)
}

// cacheBucket is ip_vs_lblc_hashkey/ip_vs_lblcr_hashkey of current kernels
// (hash_32; older lblc took the low bits of addr×2654435761). The bucket
// only decides the order in which GC visits entries.
func cacheBucket(a netip.Addr) uint32 { return hash32(fold(a), cacheBits) }

func (c *cache) get(a netip.Addr) *cacheEntry {
	for e := c.bucket[cacheBucket(a)]; e != nil; e = e.next {
		if e.addr == a {
			return e
		}
	}
	return nil
}

// add links e at the head of its chain and counts it.
func (c *cache) add(e *cacheEntry) {
	h := cacheBucket(e.addr)
	e.next, c.bucket[h] = c.bucket[h], e
	c.entries++
	c.live++
}

// unlink removes e from its chain without touching the kernel's entry
// counter: ip_vs_lblc_new replaces an entry that way, so in the kernel the
// counter creeps up by one per replacement and GC starts earlier than the
// real table size warrants. The quirk is kept to match the kernel's cache
// lifetime.
func (c *cache) unlink(e *cacheEntry) {
	for p := &c.bucket[cacheBucket(e.addr)]; *p != nil; p = &(*p).next {
		if *p == e {
			*p = e.next
			c.live--
			return
		}
	}
}

// sweep deletes the entries of bucket j idle at t for at least idle and
// returns how many went.
func (c *cache) sweep(j int, t time.Time, idle time.Duration) int {
	n := 0
	for p := &c.bucket[j]; *p != nil; {
		if e := *p; !t.Before(e.lastuse.Add(idle)) {
			*p = e.next
			n++
		} else {
			p = &e.next
		}
	}
	c.entries -= n
	c.live -= n
	return n
}

// fullCheck is ip_vs_lblc_full_check: every chain, from the one after the
// rover, loses its entries idle for the expiration time. The walk ends where
// it started, so the rover does not move.
func (c *cache) fullCheck(t time.Time) {
	for range cacheSize {
		c.rover = (c.rover + 1) & cacheMask
		c.sweep(c.rover, t, c.exp)
	}
}

// partialCheck is the over-size branch of ip_vs_lblc_check_expire: from the
// chain after the rover, drop entries idle for entryTimeout until a third
// more than the excess (at most half the nominal size) went, whole chains at
// a time.
func (c *cache) partialCheck(t time.Time) {
	goal := min((c.entries-cacheMaxSize)*4/3, cacheMaxSize/2)
	for range cacheSize {
		c.rover = (c.rover + 1) & cacheMask
		goal -= c.sweep(c.rover, t, entryTimeout)
		if goal <= 0 {
			break
		}
	}
}

// expire replays the kernel's GC timer ticks due by now. Each tick either
// runs a full check (every 30th tick), or counts, or, while the entry
// counter exceeds 16384, runs a partial check without counting. Runs of
// ticks that change nothing are skipped arithmetically; back-to-back full
// checks with no lookup in between collapse into the last one, which
// removes a superset of what the earlier ones would.
func (c *cache) expire(now time.Time) {
	if now.Sub(c.nextTick) > maxReplay {
		c.fullCheck(now)
		c.counter, c.nextTick = 1, now.Add(checkInterval)
		return
	}
	for !now.Before(c.nextTick) {
		t := c.nextTick
		pending := int64(now.Sub(t)/checkInterval) + 1 // ticks due, t included
		switch {
		case c.counter%fullEvery == 0:
			c.fullCheck(t)
			c.counter, c.nextTick = 1, t.Add(checkInterval)
		case c.entries > cacheMaxSize:
			c.partialCheck(t)
			c.nextTick = t.Add(checkInterval)
			if c.live == 0 && c.entries > cacheMaxSize {
				// Nothing left to remove and still over the limit: the
				// remaining partial passes walk empty chains back to the
				// same rover.
				c.nextTick = t.Add(time.Duration(pending) * checkInterval)
			}
		default:
			steps := int64(fullEvery - c.counter%fullEvery) // counting ticks before a full check
			if pending < steps {
				c.counter += int(pending)
				c.nextTick = t.Add(time.Duration(pending) * checkInterval)
				return
			}
			c.counter += int(steps)
			c.nextTick = t.Add(time.Duration(steps) * checkInterval)
			if cycles := (pending - steps - 1) / fullEvery; cycles > 0 {
				c.nextTick = c.nextTick.Add(time.Duration(cycles*fullEvery) * checkInterval)
			}
		}
	}
}

// lbOverloaded is lblc/lblcr's is_overloaded: more active connections than
// weight while some server of the service is below half its weight.
func lbOverloaded(d *dest.Dest, ds []*dest.Dest) bool {
	if d.ActiveConns() <= d.Weight() {
		return false
	}
	for _, x := range ds {
		if int64(x.ActiveConns())*2 < int64(x.Weight()) {
			return true
		}
	}
	return false
}

// locality holds what lblc and lblcr share: the list, membership (a
// destination removed from the list counts as unavailable, as a kernel dest
// in the trash lacks IP_VS_DEST_F_AVAILABLE) and the cache.
type locality struct {
	mu     sync.Mutex
	now    func() time.Time
	dests  []*dest.Dest
	member map[*dest.Dest]struct{}
	c      cache
}

func (l *locality) init(now func() time.Time, exp time.Duration) {
	l.now = now
	l.member = map[*dest.Dest]struct{}{}
	l.c.init(now(), exp)
}

// Update swaps the list; the cache is kept, as the kernel's lblc/lblcr have
// no add/del/upd hooks.
func (l *locality) Update(ds []*dest.Dest) error {
	ds, err := checkDests(ds)
	if err != nil {
		return err
	}
	m := make(map[*dest.Dest]struct{}, len(ds))
	for _, d := range ds {
		m[d] = struct{}{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dests, l.member = ds, m
	return nil
}

func (l *locality) available(d *dest.Dest) bool {
	_, ok := l.member[d]
	return ok && d.Available()
}

// lblc is ip_vs_lblc, locality-based least-connection: one server per
// destination address, kept while it is usable.
type lblc struct{ locality }

func newLBLC(now func() time.Time, exp time.Duration) *lblc {
	s := &lblc{}
	s.init(now, exp)
	return s
}

func (s *lblc) Name() string { return "lblc" }

func (s *lblc) Pick(p Packet) *dest.Dest {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.c.expire(now)
	en := s.c.get(p.Dst)
	if en != nil {
		en.lastuse = now
		// The cached server is reused whatever its OVERLOAD flag: only
		// availability, weight and lblc's own overload test count.
		if d := en.dest; s.available(d) && d.Weight() > 0 && !lbOverloaded(d, s.dests) {
			return d
		}
	}
	d := pickWLC(s.dests)
	if d == nil {
		return nil
	}
	if en != nil {
		if en.dest == d {
			return d
		}
		s.c.unlink(en)
	}
	s.c.add(&cacheEntry{addr: p.Dst, dest: d, lastuse: now})
	return d
}

// lblcr is ip_vs_lblcr, locality-based least-connection with replication:
// a set of servers per destination address, grown when its best member is
// overloaded and shrunk after the set has been stable for the expiration
// time.
type lblcr struct{ locality }

func newLBLCR(now func() time.Time, exp time.Duration) *lblcr {
	s := &lblcr{}
	s.init(now, exp)
	return s
}

func (s *lblcr) Name() string { return "lblcr" }

func (s *lblcr) Pick(p Packet) *dest.Dest {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.c.expire(now)
	en := s.c.get(p.Dst)
	if en == nil {
		d := pickWLC(s.dests)
		if d == nil {
			return nil
		}
		s.c.add(&cacheEntry{addr: p.Dst, lastuse: now, set: []*dest.Dest{d}, lastmod: now})
		return d
	}
	en.lastuse = now
	d := s.setMin(en.set)
	if len(en.set) > 1 && now.After(en.lastmod.Add(s.c.exp)) {
		// The set has been stable long enough: drop its most loaded
		// member, even if that is d, which is still returned below.
		if m := setMax(en.set); m != nil {
			i := slices.Index(en.set, m)
			en.set = slices.Delete(en.set, i, i+1)
			en.lastmod = now
		}
	}
	if d != nil && !lbOverloaded(d, s.dests) {
		return d
	}
	d = pickWLC(s.dests)
	if d == nil {
		return nil
	}
	if !slices.Contains(en.set, d) {
		en.set = slices.Insert(en.set, 0, d)
		en.lastmod = now
	}
	return d
}

// setMin is ip_vs_dest_set_min: weighted least-connection among the set's
// available members without OVERLOAD.
func (s *lblcr) setMin(set []*dest.Dest) *dest.Dest {
	var least *dest.Dest
	var loh, lw int64
	for _, d := range set {
		if d.Overloaded() {
			continue
		}
		w := int64(d.Weight())
		if least == nil {
			if w > 0 && s.available(d) {
				least, loh, lw = d, d.Overhead(), w
			}
			continue
		}
		if doh := d.Overhead(); w > 0 && loh*w > doh*lw && s.available(d) {
			least, loh, lw = d, doh, w
		}
	}
	return least
}

// setMax is ip_vs_dest_set_max: the most loaded member per unit of weight
// among those with a positive weight, availability and OVERLOAD ignored.
func setMax(set []*dest.Dest) *dest.Dest {
	var most *dest.Dest
	var moh, mw int64
	for _, d := range set {
		w := int64(d.Weight())
		if w <= 0 {
			continue
		}
		if doh := d.Overhead(); most == nil || moh*w < doh*mw {
			most, moh, mw = d, doh, w
		}
	}
	return most
}
