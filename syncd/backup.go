package syncd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/lbha/lbha/persist"
	"github.com/lbha/lbha/syncd/wire"
)

// DatagramReceiver receives one sync datagram; *Receiver is one. Read
// returns ErrTruncated for a datagram longer than buf, and an error
// wrapping net.ErrClosed once Close was called.
type DatagramReceiver interface {
	Read(buf []byte) (n int, from netip.AddrPort, err error)
	Close() error
}

// BackupConfig configures a Backup. The zero value of each field selects
// its default.
type BackupConfig struct {
	// SyncID is the backup's sync id: 0 accepts every message, otherwise
	// only messages carrying it (ipvsadm --syncid).
	SyncID int
	// PENames are the registered persistence engines; nil means "sip".
	PENames []string
	// MaxLen is the configured sync_maxlen, which sizes the receive
	// buffer: 0 selects the kernel's default for the receiver's interface
	// MTU (1472 bytes on a 1500-byte link). Longer datagrams are dropped.
	MaxLen int
	// ResyncAddr is the master's resync address (host:port). Empty
	// disables the full resync; the Backup then never reports warm.
	ResyncAddr string
	// ResyncDial opens the resync connection; nil dials TCP in the calling
	// thread's network namespace.
	ResyncDial func(ctx context.Context, addr string) (net.Conn, error)
	// ResyncBackoff is the first wait after a failed resync connection,
	// doubled per failure up to ResyncMaxBackoff; defaults 100 ms and 5 s.
	ResyncBackoff    time.Duration
	ResyncMaxBackoff time.Duration
	// ProgressInterval is how often resync progress is logged; default
	// 1 s.
	ProgressInterval time.Duration
	// OnProgress, if set, is called after each resync batch with the
	// entries processed and the total the master announced.
	OnProgress func(done, total uint64)
	// OnWarm, if set, is called when the Backup becomes warm (a full
	// resync reached its end marker) and when it stops being warm (the
	// resync connection broke, or Run returned).
	//
	// Both callbacks run on the goroutine that applies entries: they must
	// return quickly.
	OnWarm func(warm bool)
	// Auth requires and checks authentication of datagrams and of the
	// resync stream; nil accepts plain traffic only, as the kernel does.
	Auth *Auth
	// Logger receives the Backup's log; nil means slog.Default().
	Logger *slog.Logger
}

func (c BackupConfig) withDefaults() BackupConfig {
	if c.ResyncDial == nil {
		c.ResyncDial = resyncDialer
	}
	if c.ResyncBackoff == 0 {
		c.ResyncBackoff = 100 * time.Millisecond
	}
	if c.ResyncMaxBackoff == 0 {
		c.ResyncMaxBackoff = 5 * time.Second
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks the configuration after defaults are applied.
func (c BackupConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.SyncID < 0:
		return fmt.Errorf("syncd: backup: SyncID %d is negative", c.SyncID)
	case c.MaxLen < 0:
		return fmt.Errorf("syncd: backup: MaxLen %d is negative", c.MaxLen)
	case c.ResyncBackoff < 0 || c.ResyncMaxBackoff < c.ResyncBackoff:
		return fmt.Errorf("syncd: backup: resync backoff %v..%v out of order", c.ResyncBackoff, c.ResyncMaxBackoff)
	case c.ProgressInterval < 0:
		return fmt.Errorf("syncd: backup: ProgressInterval %v is negative", c.ProgressInterval)
	case c.Auth != nil && len(c.Auth.keys) == 0:
		return errors.New("syncd: backup: Auth has no key; use NewAuth")
	}
	return nil
}

// Backup applies what a master sends to the backup's table, as the kernel's
// backup daemon does: each datagram is validated check by check
// (wire.Decoder), and each accepted entry applied with Table.ApplySync.
//
// One goroutine applies everything, live datagrams and resync batches
// alike, and is the only writer of the table, so that a resync entry can
// never overwrite a newer live update: a resync entry whose key was
// updated live since the resync began is skipped.
type Backup struct {
	cfg     BackupConfig
	table   *persist.Table
	rx      DatagramReceiver
	resolve persist.Resolver
	log     *slog.Logger
	dec     wire.Decoder
	bufLen  int
	ver     *verifier
	stats   counters

	// in carries everything to the applying goroutine in the order it was
	// received, so that a live update received after a resync began is
	// known to be newer than the resync's copy. tokens bounds the resync
	// batches in flight, so that live updates never queue behind more
	// than a few of them.
	in     chan batch
	tokens chan struct{}

	runMu   sync.Mutex
	started bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// batchKind says what a batch for the applying goroutine carries.
type batchKind uint8

const (
	batchLive batchKind = iota
	batchResyncStart
	batchResyncEntries
	batchResyncEnd
	batchResyncAbort
)

type batch struct {
	kind    batchKind
	entries []persist.SyncEntry
	n       uint64 // start: total announced; end: count sent
}

// NewBackup returns a Backup applying what rx receives to table, finding
// destinations with resolve (the backup's service configuration; nil
// leaves entries unbound). The Backup owns rx and closes it when Run
// returns: closing is the only way to interrupt a blocked read.
func NewBackup(cfg BackupConfig, table *persist.Table, rx DatagramReceiver, resolve persist.Resolver) (*Backup, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if table == nil || rx == nil {
		return nil, errors.New("syncd: backup: nil table or receiver")
	}
	cfg = cfg.withDefaults()
	b := &Backup{
		cfg:     cfg,
		table:   table,
		rx:      rx,
		resolve: resolve,
		log:     cfg.Logger.With("component", "syncd.backup"),
		dec:     wire.Decoder{SyncID: cfg.SyncID, PENames: cfg.PENames},
		bufLen:  wire.BackupMaxLen(cfg.MaxLen, 1500, false),
		in:      make(chan batch, 256),
		tokens:  make(chan struct{}, resyncInFlight),
		done:    make(chan struct{}),
	}
	if ml, ok := rx.(maxLener); ok {
		b.bufLen = ml.MaxLen(cfg.MaxLen)
	}
	if cfg.Auth != nil {
		b.ver = newVerifier(cfg.Auth)
	}
	return b, nil
}

// Stats returns the Backup's counters.
func (b *Backup) Stats() Stats { return b.stats.snapshot() }

// Warm reports whether a full resync completed and its connection to the
// master is still up.
func (b *Backup) Warm() bool { return b.stats.warm.Load() }

// Run receives and applies until ctx is done or Close is called; it closes
// the receiver before returning. It may be called once.
func (b *Backup) Run(ctx context.Context) error {
	b.runMu.Lock()
	if b.started {
		b.runMu.Unlock()
		return errors.New("syncd: backup: Run called twice or after Close")
	}
	b.started = true
	ctx, b.cancel = context.WithCancel(ctx)
	b.runMu.Unlock()
	defer close(b.done)

	stop := context.AfterFunc(ctx, func() { b.rx.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { b.applyLoop(ctx) })
	wg.Go(func() { b.readLoop(ctx) })
	if b.cfg.ResyncAddr != "" {
		wg.Go(func() { b.resyncLoop(ctx) })
	}
	wg.Wait()
	b.rx.Close()
	if b.stats.warm.Swap(false) && b.cfg.OnWarm != nil {
		b.cfg.OnWarm(false)
	}
	return nil
}

// Close stops Run and waits for it to return.
func (b *Backup) Close() error {
	b.runMu.Lock()
	started, cancel := b.started, b.cancel
	b.started = true
	b.runMu.Unlock()
	if cancel != nil {
		cancel()
		<-b.done
	} else if !started {
		return b.rx.Close()
	}
	return nil
}

// readLoop receives datagrams until the receiver is closed.
func (b *Backup) readLoop(ctx context.Context) {
	buf := make([]byte, b.bufLen)
	var m wire.Message
	for {
		n, _, err := b.rx.Read(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			if errors.Is(err, ErrTruncated) {
				b.stats.truncated.Add(1)
				continue
			}
			b.stats.readErrors.Add(1)
			b.log.Debug("read failed", "err", err)
			sleep(ctx, 10*time.Millisecond) // no busy loop on a broken socket
			continue
		}
		b.stats.datagramsReceived.Add(1)
		entries := b.receive(&m, buf[:n])
		if len(entries) == 0 {
			continue
		}
		select {
		case b.in <- batch{kind: batchLive, entries: entries}:
		case <-ctx.Done():
			return
		}
	}
}

// receive authenticates and decodes one datagram and returns its entries
// ready to apply. Every reason to drop anything is counted.
func (b *Backup) receive(m *wire.Message, d []byte) []persist.SyncEntry {
	if b.ver != nil {
		msg, res := b.ver.verify(d)
		switch res {
		case authMissing:
			b.stats.authMissing.Add(1)
			return nil
		case authForged:
			b.stats.authForged.Add(1)
			return nil
		case authReplayed:
			b.stats.replayed.Add(1)
			return nil
		}
		d = msg
	}
	return b.decode(m, d)
}

// decode decodes a kernel message and converts its accepted entries.
func (b *Backup) decode(m *wire.Message, d []byte) []persist.SyncEntry {
	problems, err := b.dec.DecodeInto(m, d)
	if err != nil {
		var p *wire.Problem
		if errors.As(err, &p) {
			b.stats.problem(p)
		}
		return nil
	}
	for i := range problems {
		b.stats.problem(&problems[i])
	}
	if len(m.Entries) == 0 {
		return nil
	}
	b.stats.entriesReceived.Add(uint64(len(m.Entries)))
	out := make([]persist.SyncEntry, len(m.Entries))
	for i := range m.Entries {
		fromWire(&out[i], &m.Entries[i], m.Version)
	}
	return out
}

// resyncState is the applying goroutine's view of the current resync.
type resyncState struct {
	active  bool
	total   uint64
	done    uint64
	start   time.Time
	lastLog time.Time
	touched map[entryKey]struct{} // keys updated live since the start
}

// resyncInFlight bounds the resync batches queued for the applying
// goroutine: a live update waits behind at most this many (255 entries
// each, a fraction of a millisecond apiece).
const resyncInFlight = 4

// applyLoop is the table's only writer.
func (b *Backup) applyLoop(ctx context.Context) {
	var rs resyncState
	for {
		select {
		case bt := <-b.in:
			b.apply(&rs, &bt)
			if bt.kind != batchLive {
				<-b.tokens
			}
		case <-ctx.Done():
			return
		}
	}
}

func (b *Backup) apply(rs *resyncState, bt *batch) {
	switch bt.kind {
	case batchLive:
		for i := range bt.entries {
			e := &bt.entries[i]
			if rs.active {
				rs.touched[syncKey(e)] = struct{}{}
			}
			b.applyOne(e)
		}
	case batchResyncStart:
		*rs = resyncState{active: true, total: bt.n, start: time.Now(), touched: map[entryKey]struct{}{}}
		rs.lastLog = rs.start
		b.stats.resyncTotal.Store(bt.n)
		b.stats.resyncDone.Store(0)
		b.log.Info("resync started", "total", bt.n)
	case batchResyncEntries:
		if !rs.active {
			return
		}
		for i := range bt.entries {
			e := &bt.entries[i]
			if _, newer := rs.touched[syncKey(e)]; newer {
				b.stats.resyncStale.Add(1)
			} else {
				b.applyOne(e)
			}
		}
		rs.done += uint64(len(bt.entries))
		b.stats.resyncDone.Store(rs.done)
		if b.cfg.OnProgress != nil {
			b.cfg.OnProgress(rs.done, rs.total)
		}
		if now := time.Now(); now.Sub(rs.lastLog) >= b.cfg.ProgressInterval {
			rs.lastLog = now
			b.log.Info("resync progress", "done", rs.done, "total", rs.total)
		}
	case batchResyncEnd:
		if !rs.active {
			return
		}
		if rs.done != bt.n {
			// Entries the decoder refused; counted by reason.
			b.log.Warn("resync entries lost", "received", rs.done, "sent", bt.n)
		}
		b.log.Info("resync complete", "entries", rs.done, "total", rs.total, "took", time.Since(rs.start))
		*rs = resyncState{}
		b.stats.resyncsCompleted.Add(1)
		if !b.stats.warm.Swap(true) && b.cfg.OnWarm != nil {
			b.cfg.OnWarm(true)
		}
	case batchResyncAbort:
		if rs.active {
			b.stats.resyncFailures.Add(1)
		}
		*rs = resyncState{}
		if b.stats.warm.Swap(false) && b.cfg.OnWarm != nil {
			b.cfg.OnWarm(false)
		}
	}
}

func (b *Backup) applyOne(e *persist.SyncEntry) {
	ref, err := b.table.ApplySync(e, b.resolve)
	switch {
	case err != nil:
		b.stats.applyErrors.Add(1)
		b.log.Debug("entry refused", "err", err)
	case ref == 0:
		b.stats.entriesIgnored.Add(1)
	default:
		b.stats.entriesApplied.Add(1)
	}
}
