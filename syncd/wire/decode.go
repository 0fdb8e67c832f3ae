package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Action is what a kernel backup does with a datagram that fails a check.
type Action uint8

// The three outcomes of a failed check, from the widest to the narrowest.
const (
	// DropDatagram: nothing of the datagram is used.
	DropDatagram Action = iota + 1
	// DropRest: the entries before the failing one are kept, it and all
	// after it are lost.
	DropRest
	// SkipEntry: only the failing entry is ignored.
	SkipEntry
)

func (a Action) String() string {
	switch a {
	case DropDatagram:
		return "datagram dropped"
	case DropRest:
		return "rest of datagram dropped"
	case SkipEntry:
		return "entry skipped"
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// Reason says which check failed. Problem.Value carries the offending value
// where the reason names one.
type Reason uint8

// Reasons, in the order the kernel checks them.
const (
	ReasonShort           Reason = iota + 1 // datagram shorter than 4 bytes; Value: length
	ReasonSizeMismatch                      // header size differs from the datagram length; Value: header size
	ReasonSyncID                            // header syncid differs from the backup's; Value: header syncid
	ReasonTruncated                         // entry runs past the datagram (v1: 36 bytes, v0: 24 or 48); Value: bytes left
	ReasonEntryOverrun                      // v1 ver_size reaches past the datagram; Value: entry size
	ReasonEntryVersion                      // v1 entry version nibble not 0; Value: version
	ReasonAddrType                          // v1 type byte neither 0 nor IPv6; Value: type
	ReasonEntryTooSmall                     // v1 fixed part longer than the entry size; Value: entry size
	ReasonOptionTruncated                   // option header or data past the entry end; Value: option type
	ReasonOptionZeroLen                     // option length 0; Value: option type
	ReasonBadSeqOption                      // SEQ option not 24 bytes; Value: length
	ReasonPENameTooLong                     // PE name over 16 bytes; Value: length
	ReasonDuplicateOption                   // SEQ, PE_DATA or PE_NAME repeated; Value: option type
	ReasonUnknownOption                     // unknown option without the optional bit; Value: option type
	ReasonProtocol                          // protocol IPVS does not know; Value: protocol
	ReasonState                             // state past the protocol's states; Value: state
	ReasonTemplateState                     // template state not NONE or ASSURED; Value: state
	ReasonPEWithoutName                     // PE data without a PE name
	ReasonUnknownPE                         // PE name not registered
)

var reasonText = [...]string{
	ReasonShort:           "datagram shorter than a header",
	ReasonSizeMismatch:    "header size differs from datagram length",
	ReasonSyncID:          "syncid does not match",
	ReasonTruncated:       "entry truncated",
	ReasonEntryOverrun:    "entry size past end of datagram",
	ReasonEntryVersion:    "unknown entry version",
	ReasonAddrType:        "unknown address type",
	ReasonEntryTooSmall:   "entry size smaller than its fixed part",
	ReasonOptionTruncated: "option truncated",
	ReasonOptionZeroLen:   "option of length 0",
	ReasonBadSeqOption:    "SEQ option length not 24",
	ReasonPENameTooLong:   "PE name longer than 16 bytes",
	ReasonDuplicateOption: "option repeated",
	ReasonUnknownOption:   "unknown mandatory option",
	ReasonProtocol:        "protocol not supported",
	ReasonState:           "invalid protocol state",
	ReasonTemplateState:   "invalid template state",
	ReasonPEWithoutName:   "PE data without PE name",
	ReasonUnknownPE:       "persistence engine not registered",
}

func (r Reason) String() string {
	if int(r) < len(reasonText) && reasonText[r] != "" {
		return reasonText[r]
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// Problem is a check of the backup's validation that a datagram failed.
type Problem struct {
	Action Action
	Reason Reason
	// Index is the entry's position in the message (0-based), or -1 for a
	// header check.
	Index int
	// Offset is the byte offset of the entry in the datagram, 0 for a
	// header check.
	Offset int
	// Value is the offending value; see the Reason constants.
	Value int
}

func (p *Problem) Error() string {
	var what string
	switch p.Reason {
	case ReasonPEWithoutName, ReasonUnknownPE:
		what = p.Reason.String()
	case ReasonOptionTruncated, ReasonOptionZeroLen, ReasonDuplicateOption, ReasonUnknownOption, ReasonAddrType:
		what = fmt.Sprintf("%s 0x%02x", p.Reason, p.Value)
	default:
		what = fmt.Sprintf("%s (%d)", p.Reason, p.Value)
	}
	if p.Index < 0 {
		return fmt.Sprintf("wire: %s: %s", what, p.Action)
	}
	return fmt.Sprintf("wire: entry %d at offset %d: %s: %s", p.Index, p.Offset, what, p.Action)
}

// Unwrap returns io.ErrUnexpectedEOF for the checks that find the datagram
// too short.
func (p *Problem) Unwrap() error {
	switch p.Reason {
	case ReasonShort, ReasonTruncated, ReasonEntryOverrun, ReasonOptionTruncated:
		return io.ErrUnexpectedEOF
	}
	return nil
}

// Decoder parses datagrams exactly as a kernel backup daemon validates
// them. The zero value accepts every sync id and knows the "sip"
// persistence engine.
type Decoder struct {
	// SyncID is the backup's sync id: 0 accepts every message; otherwise a
	// message must carry exactly this id (so a value above 255 matches
	// nothing).
	SyncID int
	// PENames are the registered persistence engines: an entry with PE
	// data whose PE_NAME is not among them is skipped. nil means the only
	// engine the kernel ships, "sip"; an empty, non-nil slice registers
	// none.
	PENames []string
}

// Decode parses one datagram; see DecodeInto.
func (d Decoder) Decode(b []byte) (Message, []Problem, error) {
	var m Message
	probs, err := d.DecodeInto(&m, b)
	return m, probs, err
}

// DecodeInto parses one datagram into m, reusing m.Entries' storage.
//
// err is non-nil, a *Problem with Action DropDatagram, when a header check
// fails; m then holds no entries. Otherwise m holds the entries a backup
// would accept, with their wire flags, and problems lists the entries it
// would skip and, last, the check that made it drop the rest of the
// datagram, if any.
//
// PEData is copied out of b; PEName and Seq do not alias b either. The
// memory used is proportional to len(b).
func (d Decoder) DecodeInto(m *Message, b []byte) (problems []Problem, err error) {
	m.Entries = m.Entries[:0]
	m.Version, m.SyncID, m.Size, m.Count = 0, 0, 0, 0
	if len(b) < HeaderLenV0 {
		return nil, &Problem{Action: DropDatagram, Reason: ReasonShort, Index: -1, Value: len(b)}
	}
	m.SyncID = b[1]
	m.Size = be.Uint16(b[2:])
	if int(m.Size) != len(b) {
		return nil, &Problem{Action: DropDatagram, Reason: ReasonSizeMismatch, Index: -1, Value: int(m.Size)}
	}
	if d.SyncID != 0 && int(m.SyncID) != d.SyncID {
		return nil, &Problem{Action: DropDatagram, Reason: ReasonSyncID, Index: -1, Value: int(m.SyncID)}
	}
	// A kernel reads the v1 fields of shorter datagrams from stale buffer
	// bytes; either way no entry of such a datagram can be accepted, so
	// treating it as v0 changes nothing but the report.
	if len(b) >= HeaderLenV1 && b[0] == 0 && b[5] == V1 && b[6] == 0 && b[7] == 0 {
		m.Version = V1
		m.Count = b[4]
		reserve(m, (len(b)-HeaderLenV1)/entryLenV4)
		return d.decodeV1(m, b), nil
	}
	m.Version = V0
	m.Count = b[0]
	reserve(m, (len(b)-HeaderLenV0)/entryLenV0)
	return decodeV0(m, b), nil
}

// reserve makes room for the entries announced, but no more than fit in
// the datagram, so that a lying header cannot make decoding allocate more
// than the datagram's size warrants.
func reserve(m *Message, fit int) {
	if n := min(int(m.Count), fit); cap(m.Entries) < n {
		m.Entries = make([]Entry, 0, n)
	}
}

// seqBound is the most entries with SEQ data the datagram can hold: 48
// bytes each in v0, more in v1.
func seqBound(m *Message, b []byte) int {
	return min(int(m.Count), len(b)/entryLenV0S+1)
}

// arena hands out the per-datagram copies of option data, so that decoding
// a datagram allocates a bounded number of times however many entries carry
// options.
type arena struct {
	bytes []byte
	seqs  []Seq
	count int // entries announced, to size seqs
}

// copyBytes copies p, which lies within the last rest bytes of the
// datagram: one buffer of rest bytes holds every copy still to come.
func (a *arena) copyBytes(p []byte, rest int) []byte {
	if cap(a.bytes)-len(a.bytes) < len(p) {
		a.bytes = make([]byte, 0, max(rest, len(p)))
	}
	l := len(a.bytes)
	a.bytes = append(a.bytes, p...)
	return a.bytes[l:len(a.bytes):len(a.bytes)]
}

func (a *arena) seq(s Seq) *Seq {
	if len(a.seqs) == cap(a.seqs) {
		a.seqs = make([]Seq, 0, max(a.count, 1))
	}
	a.seqs = append(a.seqs, s)
	return &a.seqs[len(a.seqs)-1]
}

func (d Decoder) peRegistered(name []byte) (string, bool) {
	// The kernel copies the name into a NUL-terminated buffer before looking
	// it up, so bytes after an embedded NUL do not take part.
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	names := d.PENames
	if names == nil {
		names = defaultPENames
	}
	for _, n := range names {
		if string(name) == n {
			return n, true
		}
	}
	return "", false
}

// decodeV1 walks the entries of a v1 datagram as ip_vs_process_message and
// ip_vs_proc_sync_conn do.
func (d Decoder) decodeV1(m *Message, b []byte) []Problem {
	var problems []Problem
	ar := arena{count: seqBound(m, b)}
	off := HeaderLenV1
	for i := 0; i < int(m.Count); i++ {
		if off+entryLenV4 > len(b) {
			return dropRest(problems, i, off, ReasonTruncated, max(len(b)-off, 0))
		}
		verSize := be.Uint16(b[off+2:])
		size := int(verSize & 0x0FFF)
		end := off + size
		if end > len(b) {
			return dropRest(problems, i, off, ReasonEntryOverrun, size)
		}
		if v := verSize >> 12; v != 0 {
			return dropRest(problems, i, off, ReasonEntryVersion, int(v))
		}
		typ := b[off]
		fixed := entryLenV4
		switch {
		case typ&typeInet6 != 0:
			fixed = entryLenV6
		case typ != 0:
			return dropRest(problems, i, off, ReasonAddrType, int(typ))
		}
		if off+fixed > end {
			return dropRest(problems, i, off, ReasonEntryTooSmall, size)
		}

		// Options. The walk stops at the first unknown mandatory option, so
		// options after it are not checked: the entry is only skipped.
		var (
			seq                []byte
			peData, peName     []byte
			hasPEData, hasName bool
			unknown            = -1
			expires            uint32
			dropReason         Reason
			dropValue          int
			p                  = off + fixed
		)
	walk:
		for p < end {
			if p+2 > end {
				dropReason, dropValue = ReasonOptionTruncated, int(b[p])
				break
			}
			typ, l := b[p], int(b[p+1])
			p += 2
			if l == 0 {
				dropReason, dropValue = ReasonOptionZeroLen, int(typ)
				break
			}
			if p+l > end {
				dropReason, dropValue = ReasonOptionTruncated, int(typ)
				break
			}
			data := b[p : p+l]
			if typ == optExpires && l == expiresLen {
				expires = be.Uint32(data)
				p += l
				continue
			}
			switch typ &^ optParam {
			case optSeqData:
				if l != seqLen {
					dropReason, dropValue = ReasonBadSeqOption, l
					break walk
				}
				if seq != nil {
					dropReason, dropValue = ReasonDuplicateOption, int(typ)
					break walk
				}
				seq = data
			case optPEData:
				// A u8 length never exceeds MaxPEDataLen.
				if hasPEData {
					dropReason, dropValue = ReasonDuplicateOption, int(typ)
					break walk
				}
				peData, hasPEData = data, true
			case optPEName:
				if l > MaxPENameLen {
					dropReason, dropValue = ReasonPENameTooLong, l
					break walk
				}
				if hasName {
					dropReason, dropValue = ReasonDuplicateOption, int(typ)
					break walk
				}
				peName, hasName = data, true
			default:
				if typ&optParam == 0 {
					unknown = int(typ)
					break walk
				}
			}
			p += l
		}
		if dropReason != 0 {
			return dropRest(problems, i, off, dropReason, dropValue)
		}

		// Filled in place: copying a finished Entry into the slice costs
		// write barriers for its pointers while the GC runs.
		m.Entries = append(m.Entries, Entry{
			Protocol: b[off+1],
			Flags:    be.Uint32(b[off+4:]),
			State:    be.Uint16(b[off+8:]),
			CPort:    be.Uint16(b[off+10:]),
			VPort:    be.Uint16(b[off+12:]),
			DPort:    be.Uint16(b[off+14:]),
			FWMark:   be.Uint32(b[off+16:]),
			Timeout:  be.Uint32(b[off+20:]),
		})
		e := &m.Entries[len(m.Entries)-1]
		r, v := Reason(0), 0
		switch {
		case unknown >= 0:
			r, v = ReasonUnknownOption, unknown
		case !stateValid(e, &r, &v):
		case hasPEData && !hasName:
			r = ReasonPEWithoutName
		}
		regName, registered := "", false
		if r == 0 && hasName {
			regName, registered = d.peRegistered(peName)
		}
		if r == 0 && hasPEData && !registered {
			r = ReasonUnknownPE
		}
		if r != 0 {
			m.Entries = m.Entries[:len(m.Entries)-1]
			problems = append(problems, Problem{Action: SkipEntry, Reason: r, Index: i, Offset: off, Value: v})
			off += (size + 3) &^ 3
			continue
		}
		if fixed == entryLenV6 {
			e.CAddr = netip.AddrFrom16([16]byte(b[off+24 : off+40]))
			e.VAddr = netip.AddrFrom16([16]byte(b[off+40 : off+56]))
			e.DAddr = netip.AddrFrom16([16]byte(b[off+56 : off+72]))
		} else {
			e.CAddr = netip.AddrFrom4([4]byte(b[off+24 : off+28]))
			e.VAddr = netip.AddrFrom4([4]byte(b[off+28 : off+32]))
			e.DAddr = netip.AddrFrom4([4]byte(b[off+32 : off+36]))
		}
		if seq != nil {
			e.Seq = ar.seq(getSeq(seq, binary.BigEndian))
		}
		e.Expires = expires
		if hasPEData {
			e.PEData = ar.copyBytes(peData, len(b)-off)
		}
		if hasName {
			// Reuse the registered name's string when it is the same, so
			// that decoding SIP templates does not allocate one per entry.
			if registered && regName == string(peName) {
				e.PEName = regName
			} else {
				e.PEName = string(peName)
			}
		}
		off += (size + 3) &^ 3
	}
	return problems
}

func dropRest(problems []Problem, i, off int, r Reason, v int) []Problem {
	return append(problems, Problem{Action: DropRest, Reason: r, Index: i, Offset: off, Value: v})
}

// stateValid applies the protocol and state checks both versions share.
// On failure it sets *r and *v and returns false.
func stateValid(e *Entry, r *Reason, v *int) bool {
	if e.Flags&FlagTemplate != 0 {
		// The kernel source only logs this, but a 6.1 backup was seen not
		// to install such a template (spec A.12 g).
		if e.State >= templateLast {
			*r, *v = ReasonTemplateState, int(e.State)
			return false
		}
		return true
	}
	n := stateCount(e.Protocol)
	if n == 0 {
		*r, *v = ReasonProtocol, int(e.Protocol)
		return false
	}
	if e.State >= n {
		*r, *v = ReasonState, int(e.State)
		return false
	}
	return true
}

// decodeV0 walks the entries of a v0 datagram as
// ip_vs_process_message_v0 does.
func decodeV0(m *Message, b []byte) []Problem {
	var problems []Problem
	ar := arena{count: seqBound(m, b)}
	off := HeaderLenV0
	for i := 0; i < int(m.Count); i++ {
		if off+entryLenV0 > len(b) {
			return append(problems, Problem{Action: DropRest, Reason: ReasonTruncated, Index: i, Offset: off, Value: len(b) - off})
		}
		flags := be.Uint16(b[off+20:])
		n := entryLenV0
		if uint32(flags)&FlagSeqMask != 0 {
			n = entryLenV0S
			if off+n > len(b) {
				return append(problems, Problem{Action: DropRest, Reason: ReasonTruncated, Index: i, Offset: off, Value: len(b) - off})
			}
		}
		e := Entry{
			Protocol: b[off+1],
			CPort:    be.Uint16(b[off+2:]),
			VPort:    be.Uint16(b[off+4:]),
			DPort:    be.Uint16(b[off+6:]),
			CAddr:    netip.AddrFrom4([4]byte(b[off+8 : off+12])),
			VAddr:    netip.AddrFrom4([4]byte(b[off+12 : off+16])),
			DAddr:    netip.AddrFrom4([4]byte(b[off+16 : off+20])),
			Flags:    uint32(flags),
			State:    be.Uint16(b[off+22:]),
		}
		if n == entryLenV0S {
			e.Seq = ar.seq(getSeq(b[off+24:off+48], binary.LittleEndian))
		}
		if r, v := Reason(0), 0; stateValid(&e, &r, &v) {
			m.Entries = append(m.Entries, e)
		} else {
			problems = append(problems, Problem{Action: SkipEntry, Reason: r, Index: i, Offset: off, Value: v})
		}
		off += n
	}
	return problems
}

// Decode parses one datagram with the zero Decoder: every sync id accepted,
// the "sip" persistence engine registered.
func Decode(b []byte) (Message, []Problem, error) {
	return Decoder{}.Decode(b)
}

// UnmarshalBinary decodes a datagram (encoding.BinaryUnmarshaler) with the
// zero Decoder and fails if a backup would not accept all of it: the
// error joins every Problem (each a *Problem). m then still holds the
// entries that were accepted.
func (m *Message) UnmarshalBinary(b []byte) error {
	problems, err := Decoder{}.DecodeInto(m, b)
	if err != nil {
		return err
	}
	if len(problems) == 0 {
		return nil
	}
	errs := make([]error, len(problems))
	for i := range problems {
		errs[i] = &problems[i]
	}
	return errors.Join(errs...)
}
