package persist

import (
	"fmt"
	"strings"

	"github.com/lbha/lbha/dest"
)

// Flags are connection flags with the kernel's IP_VS_CONN_F_* bit values, so
// they can be copied to and from the sync protocol unchanged.
type Flags uint32

// Connection flags.
const (
	FlagFwdMask   Flags = 0x0007 // forwarding method, a dest.Method
	FlagSync      Flags = 0x0020 // entry created or updated by the sync protocol
	FlagHashed    Flags = 0x0040 // kernel-internal; never stored here
	FlagNoOutput  Flags = 0x0080 // no reply packet seen yet (non-NAT methods)
	FlagInactive  Flags = 0x0100 // counted in the destination's inactive connections
	FlagOutSeq    Flags = 0x0200
	FlagInSeq     Flags = 0x0400
	FlagNoCport   Flags = 0x0800 // client port not known yet
	FlagTemplate  Flags = 0x1000 // persistence template
	FlagOnePacket Flags = 0x2000 // one-packet scheduling: never stored, never synced
	FlagNFCT      Flags = 0x10000

	// BackupMask is IP_VS_CONN_F_BACKUP_MASK, the flags a v1 sync receiver
	// keeps from the wire.
	BackupMask Flags = 0x1F87
	// BackupUpdateMask is IP_VS_CONN_F_BACKUP_UPD_MASK, the flags a sync
	// update may change on an existing entry.
	BackupUpdateMask Flags = 0x0700
)

// Method returns the forwarding method encoded in the flags.
func (f Flags) Method() dest.Method { return dest.Method(f & FlagFwdMask) }

// String lists the flag names, e.g. "Route|NOOUTPUT|INACTIVE|TEMPLATE".
func (f Flags) String() string {
	var b strings.Builder
	b.WriteString(f.Method().String())
	for _, n := range flagNames {
		if f&n.f != 0 {
			b.WriteByte('|')
			b.WriteString(n.name)
		}
	}
	if rest := f &^ knownFlags; rest != 0 {
		fmt.Fprintf(&b, "|%#x", uint32(rest))
	}
	return b.String()
}

var flagNames = []struct {
	f    Flags
	name string
}{
	{FlagSync, "SYNC"},
	{FlagHashed, "HASHED"},
	{FlagNoOutput, "NOOUTPUT"},
	{FlagInactive, "INACTIVE"},
	{FlagOutSeq, "OUT_SEQ"},
	{FlagInSeq, "IN_SEQ"},
	{FlagNoCport, "NO_CPORT"},
	{FlagTemplate, "TEMPLATE"},
	{FlagOnePacket, "ONE_PACKET"},
	{FlagNFCT, "NFCT"},
}

const knownFlags = FlagFwdMask | FlagSync | FlagHashed | FlagNoOutput | FlagInactive |
	FlagOutSeq | FlagInSeq | FlagNoCport | FlagTemplate | FlagOnePacket | FlagNFCT

// destConnFlags returns the flags a connection inherits from its
// destination, as the kernel's __ip_vs_update_dest computes dest->conn_flags:
// the forwarding method, INACTIVE (a new connection starts inactive) and,
// for every method but NAT, NOOUTPUT (the director never sees replies).
func destConnFlags(d *dest.Dest) Flags {
	f := Flags(d.Method)&FlagFwdMask | FlagInactive
	if d.Method != dest.Masq {
		f |= FlagNoOutput
	}
	return f
}
