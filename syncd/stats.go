package syncd

import (
	"sync/atomic"

	"github.com/lbha/lbha/syncd/wire"
)

// Stats are the counters of a Master or a Backup; the fields of the other
// role stay zero. A Stats value is a snapshot: each counter is read
// atomically, the set as a whole is not.
type Stats struct {
	// Master.
	DatagramsSent uint64
	EntriesSent   uint64
	// SendErrors counts datagrams the socket refused; they are lost.
	SendErrors uint64
	// EntriesSkipped counts entries the configured version cannot carry
	// (IPv6 in v0), as a kernel master skips them.
	EntriesSkipped uint64
	// EntriesUnencodable counts entries whose addresses mix families (a
	// destination of the other family): the wire cannot describe them.
	EntriesUnencodable uint64
	// QueueOverflows counts changes dropped because MaxPending changes were
	// already queued; the refresh sweep sends them later.
	QueueOverflows uint64
	// Refreshes counts completed refresh sweeps.
	Refreshes uint64
	// ResyncsServed counts full resyncs streamed to backups, up to the end
	// marker; ResyncsRefused counts connections refused at the hello
	// (malformed, or failing authentication).
	ResyncsServed  uint64
	ResyncsRefused uint64

	// Backup.
	DatagramsReceived uint64
	// EntriesReceived counts entries the decoder accepted, live and
	// resync; EntriesApplied those the table took, EntriesIgnored those
	// it deliberately ignored (the INACTIVE notice of a replaced
	// connection), ApplyErrors those it refused (table full, invalid).
	EntriesReceived uint64
	EntriesApplied  uint64
	EntriesIgnored  uint64
	ApplyErrors     uint64
	// Truncated counts datagrams longer than the receive buffer, dropped
	// as the kernel drops them.
	Truncated uint64
	// ReadErrors counts failed socket reads other than truncation.
	ReadErrors uint64
	// DroppedByReason counts, per failed check, the datagrams (header
	// checks) and entries the decoder refused, exactly as a kernel backup
	// would; DroppedByAction counts the same problems by outcome.
	// SyncIDMismatch repeats the ReasonSyncID count.
	DroppedByReason map[wire.Reason]uint64
	DroppedByAction map[wire.Action]uint64
	SyncIDMismatch  uint64
	// AuthMissing counts datagrams without a trailer while authentication
	// is on; AuthForged those whose key is unknown or whose tag is wrong;
	// Replayed those whose sequence number was already seen or is older
	// than the replay window.
	AuthMissing uint64
	AuthForged  uint64
	Replayed    uint64
	// ResyncStale counts resync entries not applied because a live update
	// of the same key arrived after the resync began.
	ResyncStale uint64
	// ResyncDone and ResyncTotal are the progress of the current (or last)
	// full resync: entries processed and the total the master announced.
	ResyncDone  uint64
	ResyncTotal uint64
	// ResyncsCompleted counts resyncs that reached the end marker,
	// ResyncFailures connections that broke or failed before it.
	ResyncsCompleted uint64
	ResyncFailures   uint64
	// Warm reports that a full resync completed and its connection to the
	// master is still up.
	Warm bool
}

// maxReason bounds the wire.Reason values counted; larger ones share the
// last slot so that a future reason cannot index out of range.
const maxReason = 32

// counters is the live, atomically updated form of Stats.
type counters struct {
	datagramsSent, entriesSent, sendErrors, entriesSkipped, entriesUnencodable atomic.Uint64
	queueOverflows, refreshes, resyncsServed, resyncsRefused                   atomic.Uint64

	datagramsReceived, entriesReceived, entriesApplied, entriesIgnored, applyErrors atomic.Uint64
	truncated, readErrors, syncIDMismatch                                           atomic.Uint64
	byReason                                                                        [maxReason]atomic.Uint64
	byAction                                                                        [4]atomic.Uint64
	authMissing, authForged, replayed, resyncStale                                  atomic.Uint64
	resyncDone, resyncTotal, resyncsCompleted, resyncFailures                       atomic.Uint64
	warm                                                                            atomic.Bool
}

// problem counts one decoder problem.
func (c *counters) problem(p *wire.Problem) {
	r := int(p.Reason)
	if r >= maxReason {
		r = maxReason - 1
	}
	c.byReason[r].Add(1)
	if a := int(p.Action); a < len(c.byAction) {
		c.byAction[a].Add(1)
	}
	if p.Reason == wire.ReasonSyncID {
		c.syncIDMismatch.Add(1)
	}
}

func (c *counters) snapshot() Stats {
	s := Stats{
		DatagramsSent:      c.datagramsSent.Load(),
		EntriesSent:        c.entriesSent.Load(),
		SendErrors:         c.sendErrors.Load(),
		EntriesSkipped:     c.entriesSkipped.Load(),
		EntriesUnencodable: c.entriesUnencodable.Load(),
		QueueOverflows:     c.queueOverflows.Load(),
		Refreshes:          c.refreshes.Load(),
		ResyncsServed:      c.resyncsServed.Load(),
		ResyncsRefused:     c.resyncsRefused.Load(),
		DatagramsReceived:  c.datagramsReceived.Load(),
		EntriesReceived:    c.entriesReceived.Load(),
		EntriesApplied:     c.entriesApplied.Load(),
		EntriesIgnored:     c.entriesIgnored.Load(),
		ApplyErrors:        c.applyErrors.Load(),
		Truncated:          c.truncated.Load(),
		ReadErrors:         c.readErrors.Load(),
		SyncIDMismatch:     c.syncIDMismatch.Load(),
		AuthMissing:        c.authMissing.Load(),
		AuthForged:         c.authForged.Load(),
		Replayed:           c.replayed.Load(),
		ResyncStale:        c.resyncStale.Load(),
		ResyncDone:         c.resyncDone.Load(),
		ResyncTotal:        c.resyncTotal.Load(),
		ResyncsCompleted:   c.resyncsCompleted.Load(),
		ResyncFailures:     c.resyncFailures.Load(),
		Warm:               c.warm.Load(),
	}
	for r := range c.byReason {
		if n := c.byReason[r].Load(); n > 0 {
			if s.DroppedByReason == nil {
				s.DroppedByReason = map[wire.Reason]uint64{}
			}
			s.DroppedByReason[wire.Reason(r)] = n
		}
	}
	for a := range c.byAction {
		if n := c.byAction[a].Load(); n > 0 {
			if s.DroppedByAction == nil {
				s.DroppedByAction = map[wire.Action]uint64{}
			}
			s.DroppedByAction[wire.Action(a)] = n
		}
	}
	return s
}
