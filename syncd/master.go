package syncd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lbha/lbha/persist"
	"github.com/lbha/lbha/syncd/wire"
)

// Defaults of MasterConfig.
const (
	// DefaultFlushInterval bounds how long a change waits for more changes
	// to share its datagram. The kernel waits up to 2 s; lbha's goal is a
	// template on the backup within a few milliseconds.
	DefaultFlushInterval = 5 * time.Millisecond
	// DefaultRefreshInterval is the period of the sweep that re-sends every
	// live entry: packets restart a timer without a change event, so
	// without the sweep a busy entry could expire on a backup first.
	DefaultRefreshInterval = 30 * time.Second
	// DefaultRefreshRate paces the sweep, in datagrams per second: about
	// 80,000 entries/s, a million entries in 13 s, far below the rate at
	// which a 4 MiB receive buffer starts losing datagrams.
	DefaultRefreshRate = 2000
	// DefaultMaxPending bounds the queued changes; beyond it changes are
	// dropped and counted, and the sweep repairs the backups later.
	DefaultMaxPending = 1 << 20
)

// DatagramSender sends one sync datagram; *Sender is one. Send may be
// called from several goroutines at once.
type DatagramSender interface {
	Send(b []byte) error
}

// maxLener is implemented by transports that know the kernel's sync_maxlen
// for their interface and group (*Sender, *Receiver).
type maxLener interface {
	MaxLen(configured int) int
}

// Threshold is the kernel's sysctl sync_threshold pair, for a master that
// sends what a kernel master would (see Master.Note).
type Threshold struct {
	// Threshold is the packet count at which a connection is sent
	// (default 3).
	Threshold uint32
	// Period repeats the send every Period packets (default 50); 0 sends
	// once, at Threshold.
	Period uint32
}

// DefaultThreshold is the kernel's default sync_threshold, "3 50".
var DefaultThreshold = Threshold{Threshold: 3, Period: 50}

// MasterConfig configures a Master. The zero value of each field selects
// its default.
type MasterConfig struct {
	// SyncID is the sync id stamped on every message (ipvsadm --syncid).
	SyncID uint8
	// V0 sends version 0 messages (sysctl sync_version=0) instead of
	// version 1; entries v0 cannot carry (IPv6) are skipped, as the
	// kernel skips them.
	V0 bool
	// MaxLen is the configured sync_maxlen; 0 selects the kernel's default
	// for the sender's group (1472 bytes over IPv4). With Auth the
	// trailer comes out of this budget, so that a datagram never grows
	// past what backups expect.
	MaxLen int
	// FlushInterval bounds how long a change may wait before it is sent;
	// a full datagram goes at once. Default DefaultFlushInterval.
	FlushInterval time.Duration
	// RefreshInterval is the period of the refresh sweep; default
	// DefaultRefreshInterval, negative disables it.
	RefreshInterval time.Duration
	// RefreshRate is the sweep's pace in datagrams per second; default
	// DefaultRefreshRate.
	RefreshRate int
	// MaxPending bounds the queued changes; default DefaultMaxPending.
	MaxPending int
	// Threshold, when set, turns on the kernel-compatible mode: changes
	// are not sent as they happen; the dataplane reports inbound packets
	// with Note, which applies the kernel's sync_threshold decision.
	Threshold *Threshold
	// ResyncListener, when set, serves full resyncs to backups; the Master
	// closes it when it stops. See ListenResync.
	ResyncListener net.Listener
	// ResyncKeepalive is how often an idle resync connection carries a
	// keepalive, so that a backup notices a dead master; default 1 s.
	ResyncKeepalive time.Duration
	// Auth signs datagrams and resync frames; nil sends them plain, as the
	// kernel does.
	Auth *Auth
	// Logger receives the Master's log; nil means slog.Default().
	Logger *slog.Logger
}

func (c MasterConfig) withDefaults() MasterConfig {
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = DefaultRefreshInterval
	}
	if c.RefreshRate == 0 {
		c.RefreshRate = DefaultRefreshRate
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.ResyncKeepalive == 0 {
		c.ResyncKeepalive = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks the configuration after defaults are applied.
func (c MasterConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.MaxLen < 0:
		return fmt.Errorf("syncd: master: MaxLen %d is negative", c.MaxLen)
	case c.FlushInterval < 0:
		return fmt.Errorf("syncd: master: FlushInterval %v is negative", c.FlushInterval)
	case c.RefreshRate < 0:
		return fmt.Errorf("syncd: master: RefreshRate %d is negative", c.RefreshRate)
	case c.MaxPending < 0:
		return fmt.Errorf("syncd: master: MaxPending %d is negative", c.MaxPending)
	case c.ResyncKeepalive < 0:
		return fmt.Errorf("syncd: master: ResyncKeepalive %v is negative", c.ResyncKeepalive)
	case c.Auth != nil && len(c.Auth.keys) == 0:
		return errors.New("syncd: master: Auth has no key; use NewAuth")
	}
	if t := c.Threshold; t != nil && t.Period != 0 && t.Threshold >= t.Period {
		// The kernel refuses this write to sync_threshold.
		return fmt.Errorf("syncd: master: sync threshold %d not below period %d", t.Threshold, t.Period)
	}
	return nil
}

// Master sends the table's changes to the backups.
//
// It subscribes to the table's change feed and, as a kernel master, never
// sends removals nor what the sync protocol itself applied (Event.Sync).
// Repeated changes of one entry while it waits are coalesced into its
// latest state. A datagram leaves when it is full or when its oldest change
// has waited FlushInterval.
type Master struct {
	cfg    MasterConfig
	table  *persist.Table
	tx     DatagramSender
	log    *slog.Logger
	maxLen int // the builder's budget, trailer excluded
	header int
	stats  counters
	sender uint64
	seq    *atomic.Uint64

	mu     sync.Mutex
	items  []persist.Entry // pending changes in arrival order; Ref 0 = withdrawn
	index  map[persist.Ref]int
	bytes  int       // estimated encoded size of items
	oldest time.Time // when the oldest pending change arrived
	spare  []persist.Entry
	wake   chan struct{}

	live *emitter // used by the flusher only

	runMu   sync.Mutex
	started bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewMaster returns a Master sending table's changes through tx. It takes
// over the table's observer while it runs.
func NewMaster(cfg MasterConfig, table *persist.Table, tx DatagramSender) (*Master, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if table == nil || tx == nil {
		return nil, errors.New("syncd: master: nil table or sender")
	}
	cfg = cfg.withDefaults()
	maxLen := wire.MasterMaxLen(cfg.MaxLen, false)
	if ml, ok := tx.(maxLener); ok {
		maxLen = ml.MaxLen(cfg.MaxLen)
	}
	if cfg.Auth != nil {
		maxLen = max(maxLen-TrailerLen, 1)
	}
	m := &Master{
		cfg:    cfg,
		table:  table,
		tx:     tx,
		log:    cfg.Logger.With("component", "syncd.master"),
		maxLen: maxLen,
		header: wire.HeaderLenV1,
		index:  map[persist.Ref]int{},
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	if cfg.V0 {
		m.header = wire.HeaderLenV0
	}
	m.sender, m.seq = newSenderState()
	var err error
	if m.live, err = m.newEmitter(); err != nil {
		return nil, err
	}
	return m, nil
}

// Stats returns the Master's counters.
func (m *Master) Stats() Stats { return m.stats.snapshot() }

// Run sends changes until ctx is done or Close is called, then sends what
// is still queued and returns. It may be called once.
func (m *Master) Run(ctx context.Context) error {
	m.runMu.Lock()
	if m.started {
		m.runMu.Unlock()
		return errors.New("syncd: master: Run called twice or after Close")
	}
	m.started = true
	ctx, m.cancel = context.WithCancel(ctx)
	m.runMu.Unlock()
	defer close(m.done)

	m.table.SetObserver(m.observe)
	var wg sync.WaitGroup
	wg.Go(func() { m.flushLoop(ctx) })
	if m.cfg.RefreshInterval > 0 {
		wg.Go(func() { m.refreshLoop(ctx) })
	}
	if m.cfg.ResyncListener != nil {
		wg.Go(func() { m.serveResync(ctx, m.cfg.ResyncListener) })
	}
	<-ctx.Done()
	m.table.SetObserver(nil)
	wg.Wait()
	m.flush(true) // what was queued before the observer went
	return nil
}

// Close stops Run and waits for it to return, and closes the resync
// listener. It does not close the sender, which the caller owns.
func (m *Master) Close() error {
	m.runMu.Lock()
	started, cancel := m.started, m.cancel
	m.started = true // a later Run fails
	m.runMu.Unlock()
	if cancel != nil {
		cancel()
	}
	if started && cancel != nil {
		<-m.done
	} else if m.cfg.ResyncListener != nil {
		_ = m.cfg.ResyncListener.Close()
	}
	return nil
}

// observe is the table's observer. It runs under a shard lock, so it only
// records the change and wakes the flusher.
func (m *Master) observe(ev persist.Event) {
	if ev.Sync {
		return // never echo what a master sent us
	}
	e := &ev.Entry
	if ev.Kind == persist.EventRemoved || !convertible(e) {
		// The kernel sends no removals; a change still queued for an
		// entry that is gone would only recreate it on the backups.
		m.withdraw(e.Ref)
		return
	}
	if m.cfg.Threshold != nil && !forcedSend(e) {
		return
	}
	m.enqueue(e)
}

// enqueue queues e, replacing a queued older state of the same entry.
func (m *Master) enqueue(e *persist.Entry) {
	m.mu.Lock()
	if i, ok := m.index[e.Ref]; ok {
		m.items[i] = *e
		m.mu.Unlock()
		return
	}
	if len(m.items) >= m.cfg.MaxPending {
		m.mu.Unlock()
		m.stats.queueOverflows.Add(1)
		return
	}
	m.index[e.Ref] = len(m.items)
	m.items = append(m.items, *e)
	first := len(m.items) == 1
	if first {
		m.oldest = time.Now()
	}
	m.bytes += estimateLen(e, m.cfg.V0)
	wake := first || m.fullLocked()
	m.mu.Unlock()
	if wake {
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
}

func (m *Master) withdraw(r persist.Ref) {
	m.mu.Lock()
	if i, ok := m.index[r]; ok {
		m.items[i].Ref = 0
		delete(m.index, r)
	}
	m.mu.Unlock()
}

// fullLocked reports whether at least one datagram's worth is queued.
func (m *Master) fullLocked() bool {
	return m.header+m.bytes >= m.maxLen || len(m.index) >= wire.MaxEntries
}

func (m *Master) flushLoop(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		m.mu.Lock()
		n, full, oldest := len(m.items), m.fullLocked(), m.oldest
		m.mu.Unlock()
		if n == 0 {
			select {
			case <-m.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		if full {
			m.flush(false)
			continue
		}
		wait := m.cfg.FlushInterval - time.Since(oldest)
		if wait <= 0 {
			m.flush(true)
			continue
		}
		t.Reset(wait)
		select {
		case <-t.C:
		case <-m.wake:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// flush sends the queued changes. Unless all is set, it sends only full
// datagrams and queues the rest again, with its age.
func (m *Master) flush(all bool) {
	m.mu.Lock()
	items, oldest := m.items, m.oldest
	m.items, m.spare = m.spare[:0], nil
	clear(m.index)
	m.bytes, m.oldest = 0, time.Time{}
	m.mu.Unlock()

	em := m.live
	var cur []int // items in the datagram being built
	sentAny := false
	for i := range items {
		e := &items[i]
		if e.Ref == 0 {
			continue
		}
		sent, added := em.add(e, seconds(e.Timeout))
		if sent {
			cur = cur[:0]
			sentAny = true
		}
		if added {
			cur = append(cur, i)
		}
	}
	// The fullness estimate may exceed the real size by some padding, or
	// count entries the version skips; a "full" queue that fills no
	// datagram goes as it is rather than spinning.
	if all || !sentAny || em.b.Len() == 0 {
		em.flush()
		cur = cur[:0]
	} else {
		em.b.Reset()
	}

	m.mu.Lock()
	if len(cur) > 0 {
		m.requeueLocked(items, cur, oldest)
	}
	clear(items) // drop references to PE data and destinations
	m.spare = items[:0]
	m.mu.Unlock()
}

// requeueLocked puts the entries of a partial datagram back at the front
// of the queue. A newer change of the same entry queued meanwhile wins.
func (m *Master) requeueLocked(items []persist.Entry, idx []int, oldest time.Time) {
	q := make([]persist.Entry, 0, len(idx)+len(m.items))
	for _, i := range idx {
		if _, newer := m.index[items[i].Ref]; !newer {
			q = append(q, items[i])
		}
	}
	q = append(q, m.items...)
	clear(m.index)
	m.bytes = 0
	for i := range q {
		if q[i].Ref != 0 {
			m.index[q[i].Ref] = i
			m.bytes += estimateLen(&q[i], m.cfg.V0)
		}
	}
	m.items = q
	if m.oldest.IsZero() || oldest.Before(m.oldest) {
		m.oldest = oldest
	}
}

func (m *Master) refreshLoop(ctx context.Context) {
	t := time.NewTicker(m.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := m.Refresh(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("refresh sweep failed", "err", err)
			}
		case <-ctx.Done():
			return
		}
	}
}

// Refresh re-sends every live entry of the table, paced at RefreshRate
// datagrams per second, with its configured timeout, which restarts its
// timer on the backups. Run calls it every RefreshInterval. Entries this
// node received while it was a backup are included: after a take-over the
// new backups must keep them too.
func (m *Master) Refresh(ctx context.Context) error {
	em, err := m.newEmitter()
	if err != nil {
		return err
	}
	pace := time.Second / time.Duration(m.cfg.RefreshRate)
	next := time.Now()
	m.table.Range(func(e persist.Entry) bool {
		if ctx.Err() != nil {
			return false
		}
		if !convertible(&e) || e.Expires <= 0 {
			return true
		}
		if sent, _ := em.add(&e, seconds(e.Timeout)); sent {
			next = next.Add(pace)
			if d := time.Until(next); d > time.Millisecond {
				sleep(ctx, d)
			} else if d < -time.Second {
				next = time.Now() // fell behind: do not burst to catch up
			}
		}
		return true
	})
	em.flush()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("syncd: refresh: %w", err)
	}
	m.stats.refreshes.Add(1)
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// emitter fills datagrams and sends them. Each goroutine that sends has
// its own.
type emitter struct {
	m   *Master
	b   *wire.Builder
	sig *signer
	out []byte
	w   wire.Entry
}

func (m *Master) newEmitter() (*emitter, error) {
	version := wire.V1
	if m.cfg.V0 {
		version = wire.V0
	}
	b, err := wire.NewBuilder(version, m.cfg.SyncID, m.maxLen)
	if err != nil {
		return nil, fmt.Errorf("syncd: master: %w", err)
	}
	em := &emitter{m: m, b: b}
	if m.cfg.Auth != nil {
		em.sig = m.cfg.Auth.newSigner(m.sender, m.seq)
	}
	return em, nil
}

// add appends e with the given timeout, first sending the current
// datagram if e does not fit. It reports whether a datagram was sent and
// whether e was added.
func (em *emitter) add(e *persist.Entry, timeout uint32) (sent, added bool) {
	if !toWire(&em.w, e, timeout) {
		em.m.stats.entriesUnencodable.Add(1)
		return false, false
	}
	ok, err := em.b.Add(&em.w)
	if err == nil && !ok {
		em.flush()
		sent = true
		ok, err = em.b.Add(&em.w)
	}
	switch {
	case errors.Is(err, wire.ErrSkipped):
		em.m.stats.entriesSkipped.Add(1)
	case err != nil:
		em.m.stats.entriesUnencodable.Add(1)
	}
	return sent, ok && err == nil
}

// flush sends the current datagram, if it has entries, and starts a new
// one.
func (em *emitter) flush() {
	n := em.b.Len()
	if n == 0 {
		return
	}
	msg := em.b.Bytes()
	if em.sig != nil {
		em.out = append(em.out[:0], msg...)
		msg = em.sig.sign(em.out, 0)
		em.out = msg
	}
	if err := em.m.tx.Send(msg); err != nil {
		em.m.stats.sendErrors.Add(1)
		em.m.log.Debug("send failed", "err", err)
	} else {
		em.m.stats.datagramsSent.Add(1)
		em.m.stats.entriesSent.Add(uint64(n))
	}
	em.b.Reset()
}
