package wire

import "net/netip"

// Message versions, the values of the kernel's sysctl sync_version.
const (
	V0 uint8 = 0
	V1 uint8 = 1
)

// Header and entry sizes.
const (
	HeaderLenV0 = 4  // nr_conns, syncid, size
	HeaderLenV1 = 8  // reserved, syncid, size, nr_conns, version, spare
	entryLenV4  = 36 // struct ip_vs_sync_v4
	entryLenV6  = 72 // struct ip_vs_sync_v6
	entryLenV0  = 24 // SIMPLE_CONN_SIZE
	seqLen      = 24 // struct ip_vs_sync_conn_options: two ip_vs_seq
	entryLenV0S = entryLenV0 + seqLen
)

// MaxEntries is the most entries one message carries: nr_conns is 8 bits
// wide in both versions.
const MaxEntries = 255

// Limits of the optional parameters (IP_VS_PEDATA_MAXLEN,
// IP_VS_PENAME_MAXLEN).
const (
	MaxPEDataLen = 255
	MaxPENameLen = 16
)

// Connection flags (IP_VS_CONN_F_* in include/uapi/linux/ip_vs.h).
const (
	FlagFwdMask   uint32 = 0x0007  // forwarding method, see package dest
	FlagSync      uint32 = 0x0020  // created by the sync protocol
	FlagHashed    uint32 = 0x0040  // in the connection table; senders clear it
	FlagNoOutput  uint32 = 0x0080  // no output packets expected (DR, tunnel)
	FlagInactive  uint32 = 0x0100  // not (or no longer) established
	FlagOutSeq    uint32 = 0x0200  // outgoing sequence numbers are adjusted
	FlagInSeq     uint32 = 0x0400  // incoming sequence numbers are adjusted
	FlagNoCPort   uint32 = 0x0800  // client port not known yet
	FlagTemplate  uint32 = 0x1000  // persistence template
	FlagOnePacket uint32 = 0x2000  // one-packet scheduling; never synced
	FlagNFCT      uint32 = 0x10000 // tracked by conntrack; lost in v0
	FlagSeqMask          = FlagInSeq | FlagOutSeq

	// BackupMask is IP_VS_CONN_F_BACKUP_MASK: the flags a v1 backup keeps.
	BackupMask uint32 = 0x1F87
	// BackupUpdateMask is IP_VS_CONN_F_BACKUP_UPD_MASK: the flags an update
	// of an existing connection may change on the backup.
	BackupUpdateMask uint32 = 0x0700
)

// Template states (IP_VS_CTPL_S_*). A template in any other state is
// refused by a backup.
const (
	TemplateNone    uint16 = 0
	TemplateAssured uint16 = 1
	templateLast    uint16 = 2
)

// Option types of v1 entries (IPVS_OPT_*).
const (
	optSeqData uint8 = 1
	optPEData  uint8 = 2
	optPEName  uint8 = 3
	// optParam marks an option the receiver may ignore when it does not
	// know it (IPVS_OPT_F_PARAM); without it an unknown option refuses the
	// entry.
	optParam uint8 = 0x40
	// optExpires is an lbha extension: the entry's remaining lifetime in
	// seconds (4 bytes), sent in full resyncs so that a backup can run the
	// timer for the time left while keeping the configured timeout. It
	// carries the optional bit, so kernel backups skip it (their decoder
	// masks the bit, finds type 0x10 unknown and ignores it).
	optExpires uint8 = optParam | 0x10
	expiresLen       = 4
)

// Type byte of v1 entries: bit 0 selects the IPv6 layout (STYPE_F_INET6).
const typeInet6 uint8 = 0x01

// Message is one sync datagram.
type Message struct {
	// Version is V0 or V1.
	Version uint8
	// SyncID is the master's sync id; a backup with a non-zero sync id
	// drops messages carrying another one.
	SyncID uint8
	// Size is the header's size field as decoded. Encoding ignores it and
	// writes the real length.
	Size uint16
	// Count is the header's nr_conns as decoded, which exceeds
	// len(Entries) when entries were skipped or dropped. Encoding ignores it
	// and writes len(Entries).
	Count uint8
	// Entries are the connections and templates, in wire order.
	Entries []Entry
}

// Entry is one connection or persistence template.
//
// The address family is that of the addresses: all three are IPv4, or all
// three are IPv6 (an IPv4-mapped IPv6 address counts as IPv6). Ports and
// addresses are host values; the codec converts them to network order.
type Entry struct {
	// Protocol is the IP protocol number; 0 (IPPROTO_IP) for the templates
	// of fwmark services.
	Protocol uint8
	// Flags are the connection flags as on the wire (Flag*). v0 carries
	// only the low 16 bits. Senders clear FlagHashed; the codec writes
	// what it is given.
	Flags uint32
	// State is the protocol state, or TemplateNone/TemplateAssured for a
	// template.
	State               uint16
	CPort, VPort, DPort uint16
	// FWMark is the firewall mark the connection was created with (v1 only).
	FWMark uint32
	// Timeout is the connection's configured timeout in seconds, not the
	// time left (v1 only; always 0 from v0, which a backup replaces with a
	// default).
	Timeout uint32
	// CAddr is the client address, masked for templates. VAddr is the
	// virtual address; for fwmark templates it holds the mark in its first
	// four bytes. DAddr is the real server.
	CAddr, VAddr, DAddr netip.Addr
	// Seq is the TCP sequence adjustment data, nil when absent. v1 sends it
	// as an option whenever Seq is set; v0 carries it exactly when Flags has
	// FlagInSeq or FlagOutSeq.
	Seq *Seq
	// PEData is the persistence engine's data (SIP: the Call-ID), at most
	// MaxPEDataLen bytes; empty when absent (v1 only).
	PEData []byte
	// PEName names the persistence engine, at most MaxPENameLen bytes;
	// empty when absent (v1 only).
	PEName string
	// Expires is an lbha extension (v1 only; 0 = absent): the remaining
	// lifetime in seconds, which full resyncs send next to Timeout as an
	// optional parameter. Kernel receivers skip it.
	Expires uint32
}

// Seq is struct ip_vs_sync_conn_options: the sequence number adjustments of
// both directions of a TCP connection whose payload a helper rewrote.
type Seq struct {
	InInitSeq, InDelta, InPreviousDelta    uint32
	OutInitSeq, OutDelta, OutPreviousDelta uint32
}

// IsIPv6 reports whether e uses the IPv6 entry layout.
func (e *Entry) IsIPv6() bool { return e.CAddr.Is6() }

// IsTemplate reports whether e is a persistence template.
func (e *Entry) IsTemplate() bool { return e.Flags&FlagTemplate != 0 }

// BackupFlags returns the flags a kernel backup stores for an entry that
// arrived with flags in a message of the given version. v1 keeps only
// BackupMask; v0 keeps its 16 bits but drops FlagHashed. Both mark the
// connection as synced.
func BackupFlags(version uint8, flags uint32) uint32 {
	if version == V1 {
		return flags&BackupMask | FlagSync
	}
	return (flags&0xFFFF | FlagSync) &^ FlagHashed
}

// ApplyBackupFlags replaces every entry's wire flags by the flags a kernel
// backup would store (BackupFlags).
func (m *Message) ApplyBackupFlags() {
	for i := range m.Entries {
		m.Entries[i].Flags = BackupFlags(m.Version, m.Entries[i].Flags)
	}
}

// defaultPENames are the persistence engines a Decoder knows when it is
// given none: the kernel ships only "sip".
var defaultPENames = []string{"sip"}

// stateCount is num_states of the protocols IPVS registers (TCP, UDP, SCTP,
// AH, ESP); 0 means IPVS does not know the protocol, and a backup refuses
// its non-template entries.
func stateCount(proto uint8) uint16 {
	switch proto {
	case 6: // TCP: NONE .. SYNACK
		return 11
	case 17: // UDP: NORMAL
		return 1
	case 132: // SCTP (6.x numbering): NONE .. CLOSED
		return 14
	case 50, 51: // ESP, AH
		return 1
	}
	return 0
}

// Header lengths of the transport below a sync message, used to derive
// sync_maxlen: IPv4 or IPv6 header plus UDP.
const (
	udp4Overhead = 20 + 8
	udp6Overhead = 40 + 8
)

// MasterMaxLen returns the sync_maxlen a kernel master uses: 1500 bytes of
// IP packet minus the headers when not configured (0), without looking at
// the device MTU, else the configured value clamped to [1, 65535-headers].
// v6 selects an IPv6 multicast group.
func MasterMaxLen(configured int, v6 bool) int {
	hlen := udp4Overhead
	if v6 {
		hlen = udp6Overhead
	}
	if configured == 0 {
		return 1500 - hlen
	}
	return clamp(configured, 1, 65535-hlen)
}

// BackupMaxLen returns the sync_maxlen, and so the receive buffer, of a
// kernel backup: the device MTU clamped to [1500, 65535] minus the headers
// when not configured (0), else the configured value clamped to
// [1024, 65535-headers]. A datagram longer than this is truncated by the
// receive and then dropped by the size check, so it must not be below the
// master's.
func BackupMaxLen(configured, mtu int, v6 bool) int {
	hlen := udp4Overhead
	if v6 {
		hlen = udp6Overhead
	}
	if configured == 0 {
		return clamp(mtu, 1500, 65535) - hlen
	}
	return clamp(configured, 1024, 65535-hlen)
}

func clamp(v, lo, hi int) int {
	return min(max(v, lo), hi)
}
