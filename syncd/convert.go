package syncd

import (
	"net/netip"
	"time"

	"github.com/lbha/lbha/persist"
	"github.com/lbha/lbha/syncd/wire"
)

// sipPE is the only persistence engine the kernel ships; templates with
// PE data are sent with this name.
const sipPE = "sip"

// invalidPort marks an invalidated template (vport and dport 0xFFFF).
const invalidPort = 0xFFFF

// convertible reports whether a master sends e at all: invalidated
// templates never match again anywhere, so copying them would only leave
// junk on the backup, and an entry without lifetime is already gone.
func convertible(e *persist.Entry) bool {
	if e.Template() && e.Virtual.Port() == invalidPort && e.DestAddr.Port() == invalidPort {
		return false
	}
	return true
}

// toWire fills w with e as a master sends it, with the given timeout in
// seconds. It reports false when the addresses are not of one family,
// which the wire cannot describe.
func toWire(w *wire.Entry, e *persist.Entry, timeout uint32) bool {
	c, v, d := e.Client.Addr().Unmap(), e.Virtual.Addr().Unmap(), e.DestAddr.Addr().Unmap()
	if c.Is4() != v.Is4() || c.Is4() != d.Is4() {
		return false
	}
	*w = wire.Entry{
		Protocol: e.Proto,
		// HASHED is kernel-internal (the table never stores it), and the
		// table keeps no sequence adjustments, so claiming IN_SEQ or
		// OUT_SEQ without data would make v0 misframe and v1 adjust by
		// zero.
		Flags:   uint32(e.Flags) &^ (wire.FlagHashed | wire.FlagSeqMask),
		State:   uint16(e.State),
		CPort:   e.Client.Port(),
		VPort:   e.Virtual.Port(),
		DPort:   e.DestAddr.Port(),
		FWMark:  e.Fwmark,
		Timeout: timeout,
		CAddr:   c,
		VAddr:   v,
		DAddr:   d,
	}
	if len(e.PEData) > 0 {
		w.PEData = e.PEData
		w.PEName = sipPE
	}
	return true
}

// seconds rounds d up to whole seconds, saturating: a kernel master sends
// timeout/HZ, which whole-second timeouts make exact, and rounding up keeps
// a sub-second remainder from reading as 0, "the state's default".
func seconds(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	s := (d + time.Second - 1) / time.Second
	if s > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(s)
}

// fromWire converts an accepted entry of a message of the given version
// into what the table applies: the flags a kernel backup keeps, PE data
// only with a name (the decoder already refused unknown engines).
func fromWire(s *persist.SyncEntry, w *wire.Entry, version uint8) {
	*s = persist.SyncEntry{
		Proto:    w.Protocol,
		Client:   netip.AddrPortFrom(w.CAddr, w.CPort),
		Virtual:  netip.AddrPortFrom(w.VAddr, w.VPort),
		DestAddr: netip.AddrPortFrom(w.DAddr, w.DPort),
		Flags:    persist.Flags(wire.BackupFlags(version, w.Flags)),
		State:    persist.State(w.State),
		Fwmark:   w.FWMark,
		Timeout:  w.Timeout,
		Expires:  time.Duration(w.Expires) * time.Second,
	}
	if len(w.PEData) > 0 && w.PEName != "" {
		// The decoder's copy may be reused by the next decode.
		s.PEData = append([]byte(nil), w.PEData...)
	}
}

// entryKey identifies a table entry as persist.Key does, in a comparable
// form.
type entryKey struct {
	proto    uint8
	template bool
	client   netip.AddrPort
	virtual  netip.AddrPort
	pe       string
}

func syncKey(s *persist.SyncEntry) entryKey {
	return entryKey{
		proto:    s.Proto,
		template: s.Flags&persist.FlagTemplate != 0,
		client:   s.Client,
		virtual:  s.Virtual,
		pe:       string(s.PEData),
	}
}

// estimateLen is the encoded length of e plus the padding before it, for
// deciding when a datagram's worth of changes is queued.
func estimateLen(e *persist.Entry, v0 bool) int {
	if v0 {
		return 24
	}
	n := 36
	if e.Client.Addr().Unmap().Is6() {
		n = 72
	}
	if l := len(e.PEData); l > 0 {
		n += 2 + l + 2 + len(sipPE)
	}
	return (n + 3) &^ 3
}
