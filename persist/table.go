package persist

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lbha/lbha/dest"
)

// Errors callers branch on.
var (
	// ErrNoDest means the scheduler found no destination: the kernel
	// answers the client with ICMP port unreachable.
	ErrNoDest = errors.New("no destination available")
	// ErrExists means a connection with the packet's key is already in the
	// table; Schedule returns its Ref.
	ErrExists = errors.New("connection exists")
	// ErrFull means the table reached MaxEntries or a shard's capacity.
	ErrFull = errors.New("table full")
	// ErrNotFound means a Ref no longer names an entry: it expired or was
	// removed.
	ErrNotFound = errors.New("entry not found")
	// ErrInvalid means the arguments cannot describe an entry (bad address,
	// family mismatch, unknown protocol or state, missing or over-long PE
	// data). The kernel drops such packets without an ICMP error.
	ErrInvalid = errors.New("invalid argument")
)

// Clock tells the table the time. Tests inject a fake one.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Config configures a Table. The zero value of every field selects the
// default that DefaultConfig spells out.
type Config struct {
	// Shards is the number of lock shards, a power of two from 1 to 4096.
	// Zero means 64. Each shard holds at most 16,777,214 entries.
	Shards int
	// Tick is the expiry granularity: an entry goes at the first tick at or
	// after its deadline, so at most one Tick late when Expire runs every
	// Tick. Zero means 100 ms. From 1 ms to 1 minute.
	Tick time.Duration
	// Clock supplies the time; nil means the system clock.
	Clock Clock
	// ExpireQuiescentTemplate is the sysctl expire_quiescent_template: a
	// template whose destination has weight 0 is invalidated at its next
	// use instead of keeping its clients on the quiesced server.
	ExpireQuiescentTemplate bool
	// SyncThreshold is the first value of the sysctl sync_threshold, which
	// ApplySync stores as the entry's packet count. Zero means 3.
	SyncThreshold uint32
	// Timeouts overrides state timeouts as ipvsadm --set does; zero fields
	// keep the kernel defaults.
	Timeouts Timeouts
	// MaxEntries caps connections plus templates, split evenly across the
	// shards. Zero means no cap beyond the shards' capacity.
	MaxEntries int
}

// DefaultConfig returns the configuration the zero Config stands for.
func DefaultConfig() Config {
	return Config{
		Shards:        64,
		Tick:          100 * time.Millisecond,
		Clock:         systemClock{},
		SyncThreshold: 3,
	}
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Shards == 0 {
		c.Shards = d.Shards
	}
	if c.Tick == 0 {
		c.Tick = d.Tick
	}
	if c.Clock == nil {
		c.Clock = d.Clock
	}
	if c.SyncThreshold == 0 {
		c.SyncThreshold = d.SyncThreshold
	}
	return c
}

// Validate checks the configuration after defaults are applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Shards < 1 || c.Shards > 4096 || c.Shards&(c.Shards-1) != 0 {
		return fmt.Errorf("persist: config: Shards %d is not a power of two in 1..4096", c.Shards)
	}
	if c.Tick < time.Millisecond || c.Tick > time.Minute {
		return fmt.Errorf("persist: config: Tick %v outside 1ms..1m", c.Tick)
	}
	if c.MaxEntries < 0 {
		return fmt.Errorf("persist: config: MaxEntries %d is negative", c.MaxEntries)
	}
	for name, d := range map[string]time.Duration{"TCP": c.Timeouts.TCP, "TCPFin": c.Timeouts.TCPFin, "UDP": c.Timeouts.UDP} {
		if d < 0 {
			return fmt.Errorf("persist: config: Timeouts.%s %v is negative", name, d)
		}
	}
	return nil
}

// Table is the connection and template table. Create it with New.
type Table struct {
	cfg       Config
	clock     Clock
	epoch     time.Time
	tick      int64 // nanoseconds
	shardMask uint64
	shards    []*shard
	h         hasher
	timeouts  timeoutTable
	dests     *registry
	observer  atomic.Pointer[func(Event)]
}

type shard struct {
	mu      sync.RWMutex
	id      uint16
	h       hasher
	tick    int64
	limit   int // 0 = none
	slab    slab
	index   []uint32
	indexed int
	pe      map[uint32][]byte
	wheel   wheel
	conns   int
	tmpls   int
}

// New returns an empty table.
func New(cfg Config) (*Table, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	t := &Table{
		cfg:       cfg,
		clock:     cfg.Clock,
		epoch:     cfg.Clock.Now(),
		tick:      int64(cfg.Tick),
		shardMask: uint64(cfg.Shards - 1),
		shards:    make([]*shard, cfg.Shards),
		h:         newHasher(),
		timeouts:  newTimeoutTable(cfg.Timeouts),
		dests:     newRegistry(),
	}
	limit := 0
	if cfg.MaxEntries > 0 {
		limit = max(1, (cfg.MaxEntries+cfg.Shards-1)/cfg.Shards)
	}
	for i := range t.shards {
		t.shards[i] = &shard{
			id:    uint16(i),
			h:     t.h,
			tick:  t.tick,
			limit: limit,
			pe:    make(map[uint32][]byte),
		}
	}
	return t, nil
}

// Ref names one entry for as long as it lives; a Ref to an entry that has
// gone reports ErrNotFound. The zero Ref names nothing.
type Ref uint64

func makeRef(shard uint16, gen uint16, i uint32) Ref {
	return Ref(uint64(shard)<<48 | uint64(gen)<<32 | uint64(i))
}

func (r Ref) parts() (shard uint16, gen uint16, i uint32) {
	return uint16(r >> 48), uint16(r >> 32), uint32(r)
}

// Entry is a copy of one table entry.
type Entry struct {
	Ref      Ref
	Proto    uint8
	Client   netip.AddrPort // caddr:cport; masked network and port 0 for templates
	Virtual  netip.AddrPort // vaddr:vport; see Key for fwmark templates
	DestAddr netip.AddrPort // daddr:dport
	Flags    Flags
	State    State
	Fwmark   uint32
	Timeout  time.Duration // configured timeout, what the sync protocol sends
	Expires  time.Duration // remaining lifetime
	// Dest is the bound destination, nil for an entry created by the sync
	// protocol before its destination was configured.
	Dest *dest.Dest
	// Control is the template controlling a connection (0 if none).
	Control Ref
	// NControl is the number of connections a template controls.
	NControl int
	InPkts   uint32
	// PEData is the persistence-engine datum of a template (the SIP
	// Call-ID). It is shared with the table: do not modify it.
	PEData []byte
}

// Template reports whether the entry is a persistence template.
func (e *Entry) Template() bool { return e.Flags&FlagTemplate != 0 }

// StateName returns the state as ipvsadm -Lc shows it.
func (e *Entry) StateName() string { return StateName(e.Proto, e.Flags, e.State) }

// EventKind says what happened to an entry.
type EventKind uint8

// Event kinds.
const (
	EventCreated EventKind = iota + 1
	EventUpdated           // state, flags, binding or timer changed
	EventRemoved           // expired or removed
)

func (k EventKind) String() string {
	switch k {
	case EventCreated:
		return "created"
	case EventUpdated:
		return "updated"
	case EventRemoved:
		return "removed"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is a change reported to the observer.
type Event struct {
	Kind  EventKind
	Entry Entry
	// Sync is set when ApplySync or Rebind caused the change. The kernel's
	// master never re-sends what it received, so a sync daemon skips these.
	Sync bool
}

// SetObserver registers the change feed; nil removes it. There is one
// observer at a time.
//
// fn runs synchronously with the entry's shard lock held, so events of one
// entry arrive in order. It must not block and must not call any Table
// method (that may deadlock); a sync daemon copies the event into its own
// queue and returns. Updates are reported when an entry's state, flags,
// binding or configured timeout change, when a template's timer is
// restarted by a new connection, kept alive at expiry, invalidated or
// assured; packets that only restart a timer (Touch) are not reported.
func (t *Table) SetObserver(fn func(Event)) {
	if fn == nil {
		t.observer.Store(nil)
		return
	}
	t.observer.Store(&fn)
}

func (t *Table) emit(kind EventKind, sh *shard, i uint32, now int64, sync bool) {
	fn := t.observer.Load()
	if fn == nil {
		return
	}
	(*fn)(Event{Kind: kind, Entry: t.view(sh, i, now), Sync: sync})
}

// now returns nanoseconds since the table's epoch.
func (t *Table) now() int64 { return t.since(t.clock.Now()) }

func (t *Table) since(at time.Time) int64 { return int64(at.Sub(t.epoch)) }

func (sh *shard) dueTick(deadline int64) uint64 {
	if deadline <= 0 {
		return 0
	}
	return uint64((deadline + sh.tick - 1) / sh.tick)
}

func (t *Table) shardOf(h uint64) *shard { return t.shards[h&t.shardMask] }

// entryAt returns the live entry a Ref names; the caller holds sh.mu.
func (sh *shard) entryAt(gen uint16, i uint32) (*entry, bool) {
	if i >= sh.slab.top {
		return nil, false
	}
	e := sh.slab.at(i)
	if !e.used() || e.gen != gen {
		return nil, false
	}
	return e, true
}

func (t *Table) shardFor(r Ref) (*shard, uint16, uint32, bool) {
	s, gen, i := r.parts()
	if int(s) >= len(t.shards) || gen == 0 {
		return nil, 0, 0, false
	}
	return t.shards[s], gen, i, true
}

// view copies an entry out; the caller holds sh.mu.
func (t *Table) view(sh *shard, i uint32, now int64) Entry {
	e := sh.slab.at(i)
	v6 := e.key.v6()
	en := Entry{
		Ref:      makeRef(sh.id, e.gen, i),
		Proto:    e.key.proto(),
		Client:   netip.AddrPortFrom(e.key.c.addr(v6), e.key.cport()),
		Virtual:  netip.AddrPortFrom(e.key.v.addr(v6), e.key.vport()),
		DestAddr: netip.AddrPortFrom(e.daddr.addr(e.meta&metaDestV6 != 0), e.dport),
		Flags:    e.flags,
		State:    e.state,
		Fwmark:   e.fwmark,
		Timeout:  time.Duration(e.timeout) * time.Millisecond,
		Expires:  time.Duration(max(e.deadline()-now, 0)),
		Dest:     t.dests.get(e.dest),
		InPkts:   e.inPkts,
	}
	if e.key.template() {
		en.NControl = int(e.link)
		if e.key.hasPE() {
			en.PEData = sh.pe[i]
		}
	} else if e.link != 0 {
		en.Control = makeRef(e.linkShard, e.linkGen, e.link-1)
	}
	return en
}

// Lookup finds the entry with key k: a connection, or with k.Template a
// template (kernel ip_vs_conn_in_get / ip_vs_ct_in_get). It returns the
// entry's destination too (nil if unbound). Invalidated templates are never
// found.
func (t *Table) Lookup(k *Key) (Ref, *dest.Dest, bool) {
	var pk key
	if k == nil {
		return 0, nil, false
	}
	if err := k.pack(&pk); err != nil {
		return 0, nil, false
	}
	h := t.h.hash(&pk, k.PEData)
	sh := t.shardOf(h)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	i, ok := sh.find(&pk, k.PEData, h)
	if !ok {
		return 0, nil, false
	}
	e := sh.slab.at(i)
	return makeRef(sh.id, e.gen, i), t.dests.get(e.dest), true
}

// Get returns a copy of the entry r names.
func (t *Table) Get(r Ref) (Entry, bool) {
	sh, gen, i, ok := t.shardFor(r)
	if !ok {
		return Entry{}, false
	}
	now := t.now()
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if _, ok := sh.entryAt(gen, i); !ok {
		return Entry{}, false
	}
	return t.view(sh, i, now), true
}

// Len returns the number of connections and templates in the table.
func (t *Table) Len() (conns, templates int) {
	for _, sh := range t.shards {
		sh.mu.RLock()
		conns += sh.conns
		templates += sh.tmpls
		sh.mu.RUnlock()
	}
	return conns, templates
}

// rangeBatch bounds how long Range holds a shard lock.
const rangeBatch = 256

// Range calls fn with a copy of every entry until fn returns false. It
// holds a shard lock only while copying a small batch, never while fn runs,
// so fn may call the Table. Like /proc/net/ip_vs_conn it is not a snapshot:
// entries created or removed meanwhile may or may not be seen, and an entry
// reallocated during the walk may be seen twice.
func (t *Table) Range(fn func(Entry) bool) {
	buf := make([]Entry, 0, rangeBatch)
	for _, sh := range t.shards {
		for next := uint32(0); ; {
			buf = buf[:0]
			now := t.now()
			sh.mu.RLock()
			top := sh.slab.top
			for ; next < top && len(buf) < rangeBatch; next++ {
				if sh.slab.at(next).used() {
					buf = append(buf, t.view(sh, next, now))
				}
			}
			sh.mu.RUnlock()
			for _, e := range buf {
				if !fn(e) {
					return
				}
			}
			if next >= top {
				break
			}
		}
	}
}

// bind binds entry e to d as ip_vs_bind_dest does: the entry inherits the
// destination's connection flags (an entry created by sync keeps its
// INACTIVE bit unless it is a template, and takes method and NOOUTPUT from
// the local destination), and the destination counts it.
func (t *Table) bind(e *entry, d *dest.Dest) {
	cf := destConnFlags(d)
	f := e.flags
	if f&FlagSync != 0 {
		if f&FlagTemplate == 0 {
			cf &^= FlagInactive
		}
		f &^= FlagFwdMask | FlagNoOutput
	}
	f |= cf
	e.flags = f
	e.dest = t.dests.acquire(d)
	d.Bind(f&FlagTemplate != 0, f&FlagInactive != 0)
}

// unbind reverses bind (ip_vs_unbind_dest).
func (t *Table) unbind(e *entry) {
	if e.dest == 0 {
		return
	}
	if d := t.dests.get(e.dest); d != nil {
		d.Unbind(e.flags&FlagTemplate != 0, e.flags&FlagInactive != 0)
	}
	t.dests.release(e.dest)
	e.dest = 0
}

// setActive moves a bound connection between the active and inactive
// counts when its state calls for it (set_tcp_state, set_sctp_state).
// Unbound connections keep their flag, as in the kernel.
func (t *Table) setActive(e *entry, active bool) bool {
	if e.dest == 0 || (e.flags&FlagInactive == 0) == active {
		return false
	}
	d := t.dests.get(e.dest)
	if d == nil {
		return false
	}
	if active {
		e.flags &^= FlagInactive
	} else {
		e.flags |= FlagInactive
	}
	d.SetInactive(!active)
	return true
}

// restart restarts the entry's timer with its configured timeout.
func (sh *shard) restart(i uint32, now int64) {
	e := sh.slab.at(i)
	e.setDeadline(now + int64(e.timeout)*int64(time.Millisecond))
	sh.reschedule(i)
}

// reschedule files entry i by its deadline. A deadline that moved later
// leaves the entry where it is: when its slot comes up, advance files it
// again by the deadline it then has. This keeps the frequent restarts (a
// template on every new connection, a connection on every packet) from
// touching the neighbours on the wheel list, two cache misses each.
func (sh *shard) reschedule(i uint32) {
	e := sh.slab.at(i)
	due := sh.dueTick(e.deadline())
	if id := e.wheelSlot(); id != metaNoSlot && due >= sh.wheel.slotStart(id) {
		return
	}
	sh.unschedule(i)
	sh.schedule(i, due)
}

// insert allocates and indexes an entry with key k.
func (sh *shard) insert(k *key, pe []byte, h uint64) (uint32, *entry, error) {
	if sh.limit > 0 && sh.slab.live >= sh.limit {
		return 0, nil, ErrFull
	}
	i, e, ok := sh.slab.alloc()
	if !ok {
		return 0, nil, ErrFull
	}
	e.key = *k
	if k.hasPE() {
		sh.pe[i] = append([]byte(nil), pe...)
	}
	sh.indexInsert(i, h)
	if k.template() {
		sh.tmpls++
	} else {
		sh.conns++
	}
	return i, e, nil
}

// ctlRef names a template whose n_control must drop after a controlled
// connection went away. The decrement is applied once the connection's
// shard lock is released, so no two shard locks are ever held together.
type ctlRef struct {
	shard uint16
	gen   uint16
	i     uint32
	drop  bool // forced deletion: drop the template too if now unused and not assured
}

// remove unlinks and frees entry i (the end of ip_vs_conn_expire). For a
// controlled connection it returns the template whose n_control the caller
// must decrement once it has released this shard's lock.
func (t *Table) remove(sh *shard, i uint32, now int64, force bool) (ctlRef, bool) {
	e := sh.slab.at(i)
	t.emit(EventRemoved, sh, i, now, false)
	if !e.invalid() {
		sh.indexRemove(i, sh.hashOf(i))
	}
	sh.unschedule(i)
	t.unbind(e)
	var ctl ctlRef
	hasCtl := false
	if e.key.template() {
		sh.tmpls--
	} else {
		sh.conns--
		if e.link != 0 {
			ctl, hasCtl = ctlRef{shard: e.linkShard, gen: e.linkGen, i: e.link - 1, drop: force}, true
		}
	}
	if e.key.hasPE() {
		delete(sh.pe, i)
	}
	sh.slab.release(i)
	return ctl, hasCtl
}

// expire runs the timer of entry i, which fired at time at: a template
// that still controls connections is kept for another 60 s (and keeps that
// timeout); anything else is removed. It reports whether the entry was
// removed, and the template to release as remove does.
func (t *Table) expire(sh *shard, i uint32, at, now int64) (removed bool, ctl ctlRef, hasCtl bool) {
	e := sh.slab.at(i)
	if e.key.template() && e.link > 0 {
		// The kernel restarts the timer from the moment it fired. When
		// Expire ran late, the template would have been kept again every
		// 60 s since: keep that phase without looping.
		const ka = int64(keepAliveTimeout)
		next := at + ka
		if next <= now {
			next += ((now-next)/ka + 1) * ka
		}
		e.timeout = uint32(keepAliveTimeout / time.Millisecond)
		e.setDeadline(next)
		sh.reschedule(i)
		t.emit(EventUpdated, sh, i, now, false)
		return false, ctlRef{}, false
	}
	ctl, hasCtl = t.remove(sh, i, now, false)
	return true, ctl, hasCtl
}

// release decrements a template's n_control after a controlled connection
// went away. A forced deletion also drops a template that then controls
// nothing and is not ASSURED.
func (t *Table) release(c ctlRef, now int64) {
	sh := t.shards[c.shard]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.entryAt(c.gen, c.i)
	if !ok || !e.key.template() {
		return
	}
	if e.link > 0 {
		e.link--
	}
	if c.drop && e.link == 0 && e.state != TemplateAssured {
		t.remove(sh, c.i, now, false) // a template has no template to release
	}
}

// assure marks a template ASSURED (ip_vs_control_assure_ct).
func (t *Table) assure(c ctlRef, now int64) {
	sh := t.shards[c.shard]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.entryAt(c.gen, c.i); ok && e.key.template() && e.state != TemplateAssured {
		e.state = TemplateAssured
		t.emit(EventUpdated, sh, c.i, now, false)
	}
}

// SetState moves connection r into state s, the outcome of the kernel's
// protocol state machine for a packet: the destination's active and
// inactive counts follow (TCP ESTABLISHED, SYN_SENT, SYN_RECV and SYNACK
// are active, SCTP ESTABLISHED is, UDP never is), the timer restarts with
// the state's timeout, and entering TCP or SCTP ESTABLISHED makes the
// controlling template ASSURED.
func (t *Table) SetState(r Ref, s State) error {
	sh, gen, i, ok := t.shardFor(r)
	if !ok {
		return fmt.Errorf("persist: set state: %w", ErrNotFound)
	}
	now := t.now()
	sh.mu.Lock()
	e, ok := sh.entryAt(gen, i)
	if !ok {
		sh.mu.Unlock()
		return fmt.Errorf("persist: set state: %w", ErrNotFound)
	}
	proto := e.key.proto()
	if e.key.template() {
		sh.mu.Unlock()
		return fmt.Errorf("persist: set state: entry is a template: %w", ErrInvalid)
	}
	if err := validState(proto, false, s); err != nil {
		sh.mu.Unlock()
		return fmt.Errorf("persist: set state: %w", err)
	}
	changed := e.state != s
	var ctl ctlRef
	assure := false
	if changed {
		t.setActive(e, stateActive(proto, s))
		if stateAssures(proto, s) && e.link != 0 {
			ctl, assure = ctlRef{shard: e.linkShard, gen: e.linkGen, i: e.link - 1}, true
		}
		e.state = s
	}
	if ms, ok := t.timeouts.lookup(proto, s); ok {
		changed = changed || e.timeout != ms
		e.timeout = ms
	}
	sh.restart(i, now)
	if changed {
		t.emit(EventUpdated, sh, i, now, false)
	}
	sh.mu.Unlock()
	if assure {
		t.assure(ctl, now)
	}
	return nil
}

// Touch records a packet of connection r and restarts its timer, as every
// packet does in the kernel. An inbound packet (client to server) counts in
// in_pkts, whose new value Touch returns for the sync decision. A reply
// (server to client) clears NOOUTPUT and, for UDP, makes the controlling
// template ASSURED. Touch on a template restarts its timer only.
func (t *Table) Touch(r Ref, reply bool) (uint32, error) {
	sh, gen, i, ok := t.shardFor(r)
	if !ok {
		return 0, fmt.Errorf("persist: touch: %w", ErrNotFound)
	}
	now := t.now()
	sh.mu.Lock()
	e, ok := sh.entryAt(gen, i)
	if !ok {
		sh.mu.Unlock()
		return 0, fmt.Errorf("persist: touch: %w", ErrNotFound)
	}
	var ctl ctlRef
	assure := false
	if !e.key.template() {
		if reply {
			if e.flags&FlagNoOutput != 0 {
				e.flags &^= FlagNoOutput
				t.emit(EventUpdated, sh, i, now, false)
			}
			if e.key.proto() == ProtoUDP && e.link != 0 {
				ctl, assure = ctlRef{shard: e.linkShard, gen: e.linkGen, i: e.link - 1}, true
			}
		} else {
			e.inPkts++
		}
	}
	pkts := e.inPkts
	sh.restart(i, now)
	sh.mu.Unlock()
	if assure {
		t.assure(ctl, now)
	}
	return pkts, nil
}

// Remove expires entry r now, by the rules of its timer (the kernel's
// ip_vs_conn_expire_now): a template that still controls connections is
// kept for another 60 s instead. It reports whether r named an entry.
func (t *Table) Remove(r Ref) bool {
	return t.removeRef(r, false)
}

// Drop deletes entry r as the kernel's ip_vs_conn_del does when it flushes
// connections or reschedules one (expire_nodest_conn, conn_reuse_mode): a
// connection goes, and so does its template if the template then controls
// nothing and is not ASSURED. A template that still controls connections is
// kept for another 60 s, as with Remove.
func (t *Table) Drop(r Ref) bool {
	return t.removeRef(r, true)
}

func (t *Table) removeRef(r Ref, force bool) bool {
	sh, gen, i, ok := t.shardFor(r)
	if !ok {
		return false
	}
	now := t.now()
	var ctl ctlRef
	hasCtl := false
	sh.mu.Lock()
	e, ok := sh.entryAt(gen, i)
	if ok {
		if e.key.template() && e.link > 0 {
			t.expire(sh, i, now, now)
		} else {
			ctl, hasCtl = t.remove(sh, i, now, force)
		}
	}
	sh.mu.Unlock()
	if hasCtl {
		t.release(ctl, now)
	}
	return ok
}

// expireBatch bounds how many entries Expire handles per shard lock hold,
// so a mass expiry does not stall the dataplane on that shard.
const expireBatch = 512

// Expire runs every timer due at now and returns how many entries were
// removed. Call it once per Tick (Run does): entries then go at most one
// Tick after their deadline. Shards are processed one after another, so
// when Expire runs less often than that, a connection and its template in
// different shards may expire in either order within one call.
func (t *Table) Expire(now time.Time) int {
	ns := t.since(now)
	if ns < 0 {
		return 0
	}
	target := uint64(ns / t.tick)
	removed := 0
	var pend []ctlRef
	for _, sh := range t.shards {
		for {
			budget := expireBatch
			sh.mu.Lock()
			done := sh.advance(target, func(i uint32) bool {
				if budget == 0 {
					return false
				}
				budget--
				at := min(sh.slab.at(i).deadline(), ns)
				gone, ctl, hasCtl := t.expire(sh, i, at, ns)
				if gone {
					removed++
				}
				if hasCtl {
					pend = append(pend, ctl)
				}
				return true
			})
			sh.mu.Unlock()
			for _, c := range pend {
				t.release(c, ns)
			}
			pend = pend[:0]
			if done {
				break
			}
		}
	}
	return removed
}

// Run calls Expire every Tick of real time, with the table's clock, until
// ctx is done; it returns ctx.Err().
func (t *Table) Run(ctx context.Context) error {
	tk := time.NewTicker(t.cfg.Tick)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tk.C:
			t.Expire(t.clock.Now())
		}
	}
}
