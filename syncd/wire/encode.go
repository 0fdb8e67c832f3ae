package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

var be = binary.BigEndian

// ErrSkipped reports an entry that a kernel master never puts in a message
// of the version at hand: Builder.Add returns it for one-packet connections
// and, in v0, for IPv6 ones; AppendBinary for IPv6 ones in v0, the only
// entries v0 cannot carry at all. Nothing was written. A v0 sender must then
// not send the entry's controlling template either, as the kernel does.
var ErrSkipped = errors.New("entry not sent in this sync version")

// entryLen validates e for the given version and returns its encoded
// length, excluding inter-entry padding. It does not allocate unless it
// fails.
func (e *Entry) entryLen(version uint8) (int, error) {
	c4, v4, d4 := e.CAddr.Is4(), e.VAddr.Is4(), e.DAddr.Is4()
	c6, v6, d6 := e.CAddr.Is6(), e.VAddr.Is6(), e.DAddr.Is6()
	if !(c4 && v4 && d4) && !(c6 && v6 && d6) {
		return 0, fmt.Errorf("addresses %v, %v, %v are not all IPv4 or all IPv6", e.CAddr, e.VAddr, e.DAddr)
	}
	switch version {
	case V1:
		n := entryLenV4
		if c6 {
			n = entryLenV6
		}
		if e.Seq != nil {
			n += 2 + seqLen
		}
		if l := len(e.PEData); l > 0 {
			if l > MaxPEDataLen {
				return 0, fmt.Errorf("PE data of %d bytes exceeds %d", l, MaxPEDataLen)
			}
			n += 2 + l
		}
		if l := len(e.PEName); l > 0 {
			if l > MaxPENameLen {
				return 0, fmt.Errorf("PE name of %d bytes exceeds %d", l, MaxPENameLen)
			}
			n += 2 + l
		}
		if e.Expires != 0 {
			n += 2 + expiresLen
		}
		return n, nil
	case V0:
		if c6 {
			return 0, fmt.Errorf("v0 carries no IPv6 connection: %w", ErrSkipped)
		}
		// The receiver finds the sequence data by the flags alone, so the
		// two must agree or the next entry would be misread.
		hasSeqFlag := e.Flags&FlagSeqMask != 0
		if hasSeqFlag != (e.Seq != nil) {
			return 0, fmt.Errorf("v0 sequence data must be present exactly when flags 0x%x has IN_SEQ or OUT_SEQ", e.Flags)
		}
		if hasSeqFlag {
			return entryLenV0S, nil
		}
		return entryLenV0, nil
	}
	return 0, fmt.Errorf("unknown version %d", version)
}

// putEntry writes e into p, which is exactly e's entry length for version.
// Every byte of p is written, so p may hold stale data.
func (e *Entry) putEntry(p []byte, version uint8) {
	if version == V0 {
		p[0] = 0
		p[1] = e.Protocol
		be.PutUint16(p[2:], e.CPort)
		be.PutUint16(p[4:], e.VPort)
		be.PutUint16(p[6:], e.DPort)
		c, v, d := e.CAddr.As4(), e.VAddr.As4(), e.DAddr.As4()
		copy(p[8:12], c[:])
		copy(p[12:16], v[:])
		copy(p[16:20], d[:])
		be.PutUint16(p[20:], uint16(e.Flags)) // v0 has room for the low 16 bits only
		be.PutUint16(p[22:], e.State)
		if len(p) == entryLenV0S {
			// The kernel copies struct ip_vs_sync_conn_options without
			// converting it, so v0 carries host order; x86 is little-endian.
			putSeq(p[24:], e.Seq, binary.LittleEndian)
		}
		return
	}
	if e.CAddr.Is6() {
		p[0] = typeInet6
	} else {
		p[0] = 0
	}
	p[1] = e.Protocol
	be.PutUint16(p[2:], uint16(len(p))) // entry version 0 in the top 4 bits
	be.PutUint32(p[4:], e.Flags)
	be.PutUint16(p[8:], e.State)
	be.PutUint16(p[10:], e.CPort)
	be.PutUint16(p[12:], e.VPort)
	be.PutUint16(p[14:], e.DPort)
	be.PutUint32(p[16:], e.FWMark)
	be.PutUint32(p[20:], e.Timeout)
	var o int
	if e.CAddr.Is6() {
		c, v, d := e.CAddr.As16(), e.VAddr.As16(), e.DAddr.As16()
		copy(p[24:40], c[:])
		copy(p[40:56], v[:])
		copy(p[56:72], d[:])
		o = entryLenV6
	} else {
		c, v, d := e.CAddr.As4(), e.VAddr.As4(), e.DAddr.As4()
		copy(p[24:28], c[:])
		copy(p[28:32], v[:])
		copy(p[32:36], d[:])
		o = entryLenV4
	}
	// Options in the kernel's order: SEQ, PE_DATA, PE_NAME.
	if e.Seq != nil {
		p[o], p[o+1] = optSeqData, seqLen
		putSeq(p[o+2:], e.Seq, binary.BigEndian)
		o += 2 + seqLen
	}
	if l := len(e.PEData); l > 0 {
		p[o], p[o+1] = optPEData, uint8(l)
		o += 2 + copy(p[o+2:], e.PEData)
	}
	if l := len(e.PEName); l > 0 {
		p[o], p[o+1] = optPEName, uint8(l)
		o += 2 + copy(p[o+2:], e.PEName)
	}
	if e.Expires != 0 {
		p[o], p[o+1] = optExpires, expiresLen
		be.PutUint32(p[o+2:], e.Expires)
	}
}

func putSeq(p []byte, s *Seq, order binary.ByteOrder) {
	order.PutUint32(p[0:], s.InInitSeq)
	order.PutUint32(p[4:], s.InDelta)
	order.PutUint32(p[8:], s.InPreviousDelta)
	order.PutUint32(p[12:], s.OutInitSeq)
	order.PutUint32(p[16:], s.OutDelta)
	order.PutUint32(p[20:], s.OutPreviousDelta)
}

func getSeq(p []byte, order binary.ByteOrder) Seq {
	return Seq{
		InInitSeq:        order.Uint32(p[0:]),
		InDelta:          order.Uint32(p[4:]),
		InPreviousDelta:  order.Uint32(p[8:]),
		OutInitSeq:       order.Uint32(p[12:]),
		OutDelta:         order.Uint32(p[16:]),
		OutPreviousDelta: order.Uint32(p[20:]),
	}
}

// pad returns the number of zero bytes a v1 sender writes at offset off
// before the next entry: entries start on 4-byte boundaries of the message.
func pad(off int) int { return -off & 3 }

// grow extends b by n bytes and returns the new slice and the added part.
func grow(b []byte, n int) ([]byte, []byte) {
	l := len(b)
	b = slices.Grow(b, n)[:l+n]
	return b, b[l:]
}

// putHeader writes the header of a message of len(msg) bytes holding n
// entries at the start of msg.
func putHeader(msg []byte, version, syncID uint8, n int) {
	if version == V0 {
		msg[0] = uint8(n)
		msg[1] = syncID
		be.PutUint16(msg[2:], uint16(len(msg)))
		return
	}
	msg[0] = 0 // reserved: a v0-only receiver reads it as nr_conns and ignores the message
	msg[1] = syncID
	be.PutUint16(msg[2:], uint16(len(msg)))
	msg[4] = uint8(n)
	msg[5] = V1
	msg[6], msg[7] = 0, 0
}

// AppendBinary appends the encoded message to b (encoding.BinaryAppender).
// Size and Count are ignored and written from the entries. It fails if an
// entry cannot be encoded in m.Version, if there are more than MaxEntries
// entries, or if the message would exceed 65535 bytes. It does not allocate
// when b has room for the message.
func (m *Message) AppendBinary(b []byte) ([]byte, error) {
	if m.Version != V0 && m.Version != V1 {
		return b, fmt.Errorf("wire: encode: unknown version %d", m.Version)
	}
	if len(m.Entries) > MaxEntries {
		return b, fmt.Errorf("wire: encode: %d entries exceed %d", len(m.Entries), MaxEntries)
	}
	start := len(b)
	hlen := HeaderLenV1
	if m.Version == V0 {
		hlen = HeaderLenV0
	}
	b, _ = grow(b, hlen)
	for i := range m.Entries {
		e := &m.Entries[i]
		n, err := e.entryLen(m.Version)
		if err != nil {
			return b[:start], fmt.Errorf("wire: encode entry %d: %w", i, err)
		}
		if m.Version == V1 && i > 0 {
			var p []byte
			b, p = grow(b, pad(len(b)-start))
			clear(p)
		}
		if len(b)-start+n > 0xFFFF {
			return b[:start], fmt.Errorf("wire: encode entry %d: message exceeds 65535 bytes", i)
		}
		var p []byte
		b, p = grow(b, n)
		e.putEntry(p, m.Version)
	}
	putHeader(b[start:], m.Version, m.SyncID, len(m.Entries))
	return b, nil
}

// MarshalBinary encodes the message (encoding.BinaryMarshaler); see
// AppendBinary.
func (m *Message) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(nil)
}

// Builder fills one sync message at a time the way a kernel master fills
// its sync buffer: entries are appended until the next one, with its
// padding, would pass maxLen; then the caller sends Bytes and calls Reset.
// It reuses its buffer, so in steady state it does not allocate.
//
// A Builder is not safe for concurrent use.
type Builder struct {
	version uint8
	syncID  uint8
	maxLen  int
	n       int
	buf     []byte
}

// NewBuilder returns a Builder of version V0 or V1 messages for the given
// sync id and sync_maxlen (see MasterMaxLen). maxLen is clamped to
// [1, 65535].
func NewBuilder(version, syncID uint8, maxLen int) (*Builder, error) {
	if version != V0 && version != V1 {
		return nil, fmt.Errorf("wire: new builder: unknown version %d", version)
	}
	maxLen = clamp(maxLen, 1, 0xFFFF)
	b := &Builder{version: version, syncID: syncID, maxLen: maxLen}
	b.buf = make([]byte, 0, max(maxLen, HeaderLenV1+entryLenV6))
	b.Reset()
	return b, nil
}

// Reset discards the current message and starts an empty one.
func (b *Builder) Reset() {
	hlen := HeaderLenV1
	if b.version == V0 {
		hlen = HeaderLenV0
	}
	b.buf = b.buf[:hlen]
	b.n = 0
}

// Add appends e to the message.
//
// It returns false, changing nothing, when the message already holds
// MaxEntries entries or when e and the padding before it would pass
// maxLen; the first entry of a message always fits, as the kernel sizes its
// buffer as max(sync_maxlen, header + first entry).
//
// It returns an error, writing nothing, for an entry the kernel does not
// send in this version (wrapping ErrSkipped: FlagOnePacket, or IPv6 in v0)
// and for an entry that cannot be encoded.
func (b *Builder) Add(e *Entry) (bool, error) {
	if e.Flags&FlagOnePacket != 0 {
		return false, fmt.Errorf("wire: add: one-packet connection: %w", ErrSkipped)
	}
	n, err := e.entryLen(b.version)
	if err != nil {
		return false, fmt.Errorf("wire: add: %w", err)
	}
	p := 0
	if b.version == V1 {
		p = pad(len(b.buf))
	}
	// The kernel's buffer holds max(maxLen, header+first entry) bytes; a
	// first entry larger than maxLen leaves no room for a second one, so
	// comparing with maxLen alone gives the same result.
	if b.n > 0 && (b.n >= MaxEntries || len(b.buf)+p+n > b.maxLen) {
		return false, nil
	}
	var q []byte
	b.buf, q = grow(b.buf, p+n)
	clear(q[:p])
	e.putEntry(q[p:], b.version)
	b.n++
	return true, nil
}

// Len returns the number of entries in the current message.
func (b *Builder) Len() int { return b.n }

// Size returns the length in bytes of the current message.
func (b *Builder) Size() int { return len(b.buf) }

// Bytes completes the header and returns the current message. The slice
// is valid until the next call of Add or Reset.
func (b *Builder) Bytes() []byte {
	putHeader(b.buf, b.version, b.syncID, b.n)
	return b.buf
}
