package persist

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/lbha/lbha/dest"
)

// SyncEntry is one connection or template received from a sync master,
// decoded from either protocol version.
type SyncEntry struct {
	Proto    uint8
	Client   netip.AddrPort
	Virtual  netip.AddrPort
	DestAddr netip.AddrPort
	// Flags as received after the version's mask (v1: wire & BackupMask;
	// v0: the 16-bit flags). ApplySync adds FlagSync and clears
	// FlagHashed.
	Flags Flags
	State State
	// Fwmark is the connection's mark (v1 only; 0 from v0).
	Fwmark uint32
	// Expires, when positive, is the remaining lifetime (a full resync):
	// the timer runs for Expires while the entry keeps Timeout as its
	// configured timeout, so that a later restart (a new connection
	// through a template, after a take-over) uses the configured value.
	// Zero starts the timer with the full timeout, as live sync does.
	Expires time.Duration
	// Timeout is the configured timeout in seconds; 0 (always so in v0)
	// selects the state's default, 180 s for templates.
	Timeout uint32
	// PEData is the persistence-engine datum of a template. The receiver
	// has already checked that a known engine name came with it.
	PEData []byte
}

// DestQuery asks the caller's service configuration for the destination of
// a synced entry, which the kernel's ip_vs_find_dest answers by looking up
// the fwmark service first (using Fwmark), then (Proto, Virtual), then the
// TCP-FTP and port-zero fallbacks; for fwmark services with a non-NAT
// method it tries destination port 0 first, and it tries both the
// destination port and port 0 in every case.
type DestQuery struct {
	Proto    uint8
	Virtual  netip.AddrPort
	DestAddr netip.AddrPort
	Fwmark   uint32
	Flags    Flags
}

// Resolver finds the local destination of a synced entry, nil if none is
// configured. It runs with a shard lock held and must not call the Table.
type Resolver func(DestQuery) *dest.Dest

// ApplySync applies one received entry as the kernel's backup does
// (ip_vs_proc_conn):
//
//   - an existing connection whose destination differs is replaced, unless
//     the message is INACTIVE (then it is the expiry notice of a connection
//     already replaced, and is ignored: ApplySync returns Ref 0);
//   - an existing entry keeps its flags except INACTIVE and the sequence
//     bits (mask 0x0700), which the message sets; the destination counters
//     follow a change of INACTIVE; an unbound entry is bound if resolve now
//     finds its destination;
//   - a new entry is created with the message flags plus SYNC, bound to the
//     destination resolve finds (taking method and NOOUTPUT from it), or
//     left unbound;
//   - state and timeout come from the message, a zero timeout meaning the
//     state's default (180 s for templates), and the timer restarts.
//
// Synced entries are never linked to templates: after a take-over, new
// connections find the template by lookup.
func (t *Table) ApplySync(s *SyncEntry, resolve Resolver) (Ref, error) {
	if s == nil {
		return 0, fmt.Errorf("persist: apply sync: nil entry: %w", ErrInvalid)
	}
	caddr, v6, ok := addrWords(s.Client.Addr())
	if !ok {
		return 0, fmt.Errorf("persist: apply sync: client address: %w", ErrInvalid)
	}
	vaddr, vv6, ok := addrWords(s.Virtual.Addr())
	if !ok || vv6 != v6 {
		return 0, fmt.Errorf("persist: apply sync: virtual address: %w", ErrInvalid)
	}
	daddr, dv6, ok := addrWords(s.DestAddr.Addr())
	if !ok || dv6 != v6 {
		return 0, fmt.Errorf("persist: apply sync: destination address: %w", ErrInvalid)
	}
	flags := (s.Flags | FlagSync) &^ FlagHashed
	template := flags&FlagTemplate != 0
	if err := validState(s.Proto, template, s.State); err != nil {
		return 0, fmt.Errorf("persist: apply sync: %w", err)
	}
	if len(s.PEData) > MaxPEData {
		return 0, fmt.Errorf("persist: apply sync: persistence-engine data of %d bytes: %w", len(s.PEData), ErrInvalid)
	}
	var pe []byte
	if template && len(s.PEData) > 0 {
		pe = s.PEData
	}
	timeout := t.syncTimeout(s.Proto, template, s.State, s.Timeout)

	var k key
	k.set(s.Proto, v6, caddr, s.Client.Port(), vaddr, s.Virtual.Port(), template, pe != nil)
	h := t.h.hash(&k, pe)
	sh := t.shardOf(h)
	now := t.now()
	var ctl ctlRef
	hasCtl := false
	sh.mu.Lock()
	i, found := sh.find(&k, pe, h)
	if found && !template {
		e := sh.slab.at(i)
		if e.dport != s.DestAddr.Port() || !e.daddr.eq(&daddr) || (e.meta&metaDestV6 != 0) != dv6 {
			if flags&FlagInactive != 0 {
				sh.mu.Unlock()
				return 0, nil
			}
			ctl, hasCtl = t.remove(sh, i, now, false)
			found = false
		}
	}
	kind := EventUpdated
	if found {
		e := sh.slab.at(i)
		if (e.flags^flags)&FlagInactive != 0 && !template && e.dest != 0 {
			if d := t.dests.get(e.dest); d != nil {
				d.SetInactive(flags&FlagInactive != 0)
			}
		}
		e.flags = flags&BackupUpdateMask | e.flags&^BackupUpdateMask
		if e.dest == 0 && resolve != nil {
			if d := resolve(t.destQuery(e)); d != nil {
				t.bind(e, d)
			}
		}
	} else {
		var e *entry
		var err error
		i, e, err = sh.insert(&k, pe, h)
		if err != nil {
			sh.mu.Unlock()
			if hasCtl {
				t.release(ctl, now)
			}
			return 0, fmt.Errorf("persist: apply sync: %w", err)
		}
		e.dport = s.DestAddr.Port()
		e.daddr = daddr
		if dv6 {
			e.meta |= metaDestV6
		}
		e.flags = flags
		e.fwmark = s.Fwmark
		if resolve != nil {
			if d := resolve(t.destQuery(e)); d != nil {
				t.bind(e, d)
			}
		}
		kind = EventCreated
	}
	e := sh.slab.at(i)
	e.inPkts = t.cfg.SyncThreshold
	e.state = s.State
	e.timeout = timeout
	if s.Expires > 0 && s.Expires < time.Duration(timeout)*time.Millisecond {
		e.setDeadline(now + int64(s.Expires))
		sh.reschedule(i)
	} else {
		sh.restart(i, now)
	}
	ref := makeRef(sh.id, e.gen, i)
	t.emit(kind, sh, i, now, true)
	sh.mu.Unlock()
	if hasCtl {
		t.release(ctl, now)
	}
	return ref, nil
}

// syncTimeout returns the timeout in milliseconds ip_vs_proc_conn gives an
// entry.
func (t *Table) syncTimeout(proto uint8, template bool, s State, secs uint32) uint32 {
	if secs > 0 {
		return durationMillis(time.Duration(secs) * time.Second)
	}
	if !template {
		if ms, ok := t.timeouts.lookup(proto, s); ok {
			return ms
		}
	}
	return uint32(syncDefaultTimeout / time.Millisecond)
}

func (t *Table) destQuery(e *entry) DestQuery {
	v6 := e.key.v6()
	return DestQuery{
		Proto:    e.key.proto(),
		Virtual:  netip.AddrPortFrom(e.key.v.addr(v6), e.key.vport()),
		DestAddr: netip.AddrPortFrom(e.daddr.addr(e.meta&metaDestV6 != 0), e.dport),
		Fwmark:   e.fwmark,
		Flags:    e.flags,
	}
}

// Rebind binds every unbound entry whose destination resolve now finds, and
// returns how many it bound. Call it after services or destinations were
// added, so synced entries that arrived first start counting on their
// destinations (the kernel only retries at the entry's next sync message,
// which ApplySync does too).
func (t *Table) Rebind(resolve Resolver) int {
	if resolve == nil {
		return 0
	}
	n := 0
	for _, sh := range t.shards {
		now := t.now()
		sh.mu.Lock()
		for i := uint32(0); i < sh.slab.top; i++ {
			e := sh.slab.at(i)
			if !e.used() || e.dest != 0 {
				continue
			}
			if d := resolve(t.destQuery(e)); d != nil {
				t.bind(e, d)
				t.emit(EventUpdated, sh, i, now, true)
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}
