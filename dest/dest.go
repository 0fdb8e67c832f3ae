// Package dest owns the runtime state of a real server, a "destination" in
// IPVS terms: its address, forwarding method, weight, connection thresholds,
// availability, and the connection counters that schedulers read and the
// connection table maintains.
//
// The counters and the OVERLOAD flag follow the kernel's ip_vs_bind_dest and
// ip_vs_unbind_dest (net/netfilter/ipvs/ip_vs_conn.c): a connection counts as
// active or inactive, a persistence template counts in PersistConns only, and
// OVERLOAD is set at bind time when active+inactive reaches the upper
// threshold and cleared at unbind time by the lower-threshold rule.
//
// A Dest is safe for concurrent use: every mutable field is atomic, so a
// dataplane, a sync receiver and a reconciler may touch it at once without a
// lock. Compound updates (bind then check the threshold) are not atomic as a
// whole, exactly as in the kernel, which tolerates the same races.
package dest

import (
	"fmt"
	"net/netip"
	"sync/atomic"
)

// Method is a forwarding method, numbered as the kernel's
// IP_VS_CONN_F_FWD_MASK values so it can be copied to and from connection
// flags unchanged.
type Method uint8

// Forwarding methods.
const (
	Masq   Method = 0 // NAT ("masquerading"), ipvsadm -m
	Local  Method = 1 // local node; ipvsadm shows "Local", saves as -g
	Tunnel Method = 2 // IP-in-IP and friends, ipvsadm -i
	Route  Method = 3 // direct routing ("gatewaying"), ipvsadm -g
	Bypass Method = 4 // cache bypass; never configured by users
)

// String returns the name ipvsadm -L prints for the method.
func (m Method) String() string {
	switch m {
	case Masq:
		return "Masq"
	case Local:
		return "Local"
	case Tunnel:
		return "Tunnel"
	case Route:
		return "Route"
	case Bypass:
		return "Bypass"
	}
	return fmt.Sprintf("Method(%d)", uint8(m))
}

// Destination flag bits, as the kernel's IP_VS_DEST_F_*.
const (
	flagAvailable uint32 = 0x1
	flagOverload  uint32 = 0x2
)

// MaxWeight is the largest weight ipvsadm accepts.
const MaxWeight = 65535

// Dest is one real server of one virtual service.
//
// Addr, Port and Method are fixed at creation; a change of any of them is a
// different destination. Everything else may change while connections are
// bound to it.
type Dest struct {
	Addr   netip.Addr
	Port   uint16
	Method Method

	weight     atomic.Int32
	lastWeight atomic.Int32 // latest non-zero weight (mh keeps slots for quiesced servers)
	uThreshold atomic.Uint32
	lThreshold atomic.Uint32
	flags      atomic.Uint32

	active   atomic.Int32
	inactive atomic.Int32
	persist  atomic.Int32
}

// New returns an available destination with the given weight. The weight is
// clamped to 0..MaxWeight.
func New(addr netip.Addr, port uint16, method Method, weight int) *Dest {
	d := &Dest{Addr: addr, Port: port, Method: method}
	d.SetWeight(weight)
	d.flags.Store(flagAvailable)
	return d
}

// String returns addr:port in ipvsadm's numeric notation.
func (d *Dest) String() string {
	return netip.AddrPortFrom(d.Addr, d.Port).String()
}

// Weight returns the current weight; 0 means quiesced: no new clients except
// through a persistence template.
func (d *Dest) Weight() int { return int(d.weight.Load()) }

// LastWeight returns the latest non-zero weight the destination had, or 0 if
// it never had one.
func (d *Dest) LastWeight() int { return int(d.lastWeight.Load()) }

// SetWeight changes the weight, clamped to 0..MaxWeight.
func (d *Dest) SetWeight(w int) {
	w = min(max(w, 0), MaxWeight)
	d.weight.Store(int32(w))
	if w > 0 {
		d.lastWeight.Store(int32(w))
	}
}

// Thresholds returns the upper and lower connection thresholds (0 = unset).
func (d *Dest) Thresholds() (upper, lower uint32) {
	return d.uThreshold.Load(), d.lThreshold.Load()
}

// SetThresholds changes the thresholds. As in the kernel's
// __ip_vs_update_dest, OVERLOAD is cleared when the upper threshold is
// removed or raised above the current load.
func (d *Dest) SetThresholds(upper, lower uint32) {
	d.uThreshold.Store(upper)
	d.lThreshold.Store(lower)
	if upper == 0 || d.TotalConns() < int(upper) {
		d.clearFlag(flagOverload)
	}
}

// Available reports whether the destination is still configured. A removed
// destination stays reachable from the connections and templates bound to
// it, but is no longer available: templates pointing at it are invalid.
func (d *Dest) Available() bool { return d.flags.Load()&flagAvailable != 0 }

// SetAvailable marks the destination as configured or removed.
func (d *Dest) SetAvailable(ok bool) {
	if ok {
		d.setFlag(flagAvailable)
	} else {
		d.clearFlag(flagAvailable)
	}
}

// Overloaded reports the OVERLOAD flag: schedulers skip the destination.
func (d *Dest) Overloaded() bool { return d.flags.Load()&flagOverload != 0 }

// ActiveConns returns the number of bound connections not marked INACTIVE.
func (d *Dest) ActiveConns() int { return int(d.active.Load()) }

// InactConns returns the number of bound connections marked INACTIVE.
func (d *Dest) InactConns() int { return int(d.inactive.Load()) }

// PersistConns returns the number of bound persistence templates.
func (d *Dest) PersistConns() int { return int(d.persist.Load()) }

// TotalConns returns active + inactive connections, the figure the
// thresholds are compared with.
func (d *Dest) TotalConns() int { return d.ActiveConns() + d.InactConns() }

// Overhead returns the kernel's ip_vs_dest_conn_overhead: active connections
// weigh 256 times an inactive one.
func (d *Dest) Overhead() int64 {
	return int64(d.active.Load())<<8 + int64(d.inactive.Load())
}

// Bind accounts a connection (or, with template set, a persistence template)
// newly bound to the destination, then sets OVERLOAD if the upper threshold
// is reached.
func (d *Dest) Bind(template, inactive bool) {
	switch {
	case template:
		d.persist.Add(1)
	case inactive:
		d.inactive.Add(1)
	default:
		d.active.Add(1)
	}
	// As in the kernel, the check runs for templates too (they do not
	// count in the total, but an edited threshold takes effect here).
	if u := d.uThreshold.Load(); u != 0 && d.TotalConns() >= int(u) {
		d.setFlag(flagOverload)
	}
}

// Unbind reverses Bind for a connection leaving the table, then clears
// OVERLOAD by the kernel's rule: below the lower threshold if one is set,
// else below three quarters of the upper threshold, else unconditionally.
func (d *Dest) Unbind(template, inactive bool) {
	switch {
	case template:
		d.persist.Add(-1)
	case inactive:
		d.inactive.Add(-1)
	default:
		d.active.Add(-1)
	}
	total := d.TotalConns()
	switch l, u := d.lThreshold.Load(), d.uThreshold.Load(); {
	case l != 0:
		if total < int(l) {
			d.clearFlag(flagOverload)
		}
	case u != 0:
		if int64(total)*4 < int64(u)*3 {
			d.clearFlag(flagOverload)
		}
	default:
		d.clearFlag(flagOverload)
	}
}

// SetInactive moves one connection between the active and inactive counts,
// as the kernel does when a TCP connection leaves or re-enters ESTABLISHED.
func (d *Dest) SetInactive(inactive bool) {
	if inactive {
		d.active.Add(-1)
		d.inactive.Add(1)
	} else {
		d.inactive.Add(-1)
		d.active.Add(1)
	}
}

func (d *Dest) setFlag(f uint32) {
	for {
		old := d.flags.Load()
		if old&f == f || d.flags.CompareAndSwap(old, old|f) {
			return
		}
	}
}

func (d *Dest) clearFlag(f uint32) {
	for {
		old := d.flags.Load()
		if old&f == 0 || d.flags.CompareAndSwap(old, old&^f) {
			return
		}
	}
}
