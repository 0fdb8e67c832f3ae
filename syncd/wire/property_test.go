package wire

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

// drawer is where the generators take their choices from: rapid in the
// property tests, the raw fuzz input in FuzzRoundTrip (rapid's per-draw
// logging would make every fuzz execution slow).
type drawer interface {
	// intRange returns a value in [lo, hi].
	intRange(lo, hi int, label string) int
	u32(label string) uint32
	// bytes returns between lo and hi bytes.
	bytes(lo, hi int, label string) []byte
}

type rapidDrawer struct{ t *rapid.T }

func (d rapidDrawer) intRange(lo, hi int, label string) int {
	return rapid.IntRange(lo, hi).Draw(d.t, label)
}
func (d rapidDrawer) u32(label string) uint32 { return rapid.Uint32().Draw(d.t, label) }
func (d rapidDrawer) bytes(lo, hi int, label string) []byte {
	return rapid.SliceOfN(rapid.Byte(), lo, hi).Draw(d.t, label)
}

// byteDrawer consumes a fuzz input; once it is exhausted every draw is the
// smallest value, so any input yields a message.
type byteDrawer struct{ b []byte }

func (d *byteDrawer) next() byte {
	if len(d.b) == 0 {
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *byteDrawer) intRange(lo, hi int, _ string) int {
	v := uint32(d.next()) | uint32(d.next())<<8
	return lo + int(v%uint32(hi-lo+1))
}

func (d *byteDrawer) u32(string) uint32 {
	return uint32(d.next()) | uint32(d.next())<<8 | uint32(d.next())<<16 | uint32(d.next())<<24
}

func (d *byteDrawer) bytes(lo, hi int, label string) []byte {
	p := make([]byte, d.intRange(lo, hi, label))
	for i := range p {
		p[i] = d.next()
	}
	return p
}

func drawBool(d drawer, label string) bool { return d.intRange(0, 1, label) == 1 }

// genAddr draws an IPv4 or IPv6 address.
func genAddr(d drawer, v6 bool, label string) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte(d.bytes(16, 16, label)))
	}
	return netip.AddrFrom4([4]byte(d.bytes(4, 4, label)))
}

// genEntry draws an entry that a backup accepts and that version can
// carry, in the form decoding produces it (v0: 16-bit flags, no timeout,
// fwmark or PE; SEQ exactly when the flags say so).
func genEntry(d drawer, version uint8) Entry {
	var e Entry
	v6 := version == V1 && drawBool(d, "v6")
	template := drawBool(d, "template")
	e.Flags = d.u32("flags")
	if version == V0 {
		e.Flags &= 0xFFFF
	}
	if template {
		e.Flags |= FlagTemplate
		e.Protocol = []uint8{0, 6, 17, 132}[d.intRange(0, 3, "proto")]
		e.State = uint16(d.intRange(0, int(templateLast)-1, "state"))
	} else {
		e.Flags &^= FlagTemplate
		e.Protocol = []uint8{6, 17, 132, 50, 51}[d.intRange(0, 4, "proto")]
		e.State = uint16(d.intRange(0, int(stateCount(e.Protocol))-1, "state"))
	}
	e.CPort = uint16(d.intRange(0, 0xFFFF, "cport"))
	e.VPort = uint16(d.intRange(0, 0xFFFF, "vport"))
	e.DPort = uint16(d.intRange(0, 0xFFFF, "dport"))
	e.CAddr = genAddr(d, v6, "caddr")
	e.VAddr = genAddr(d, v6, "vaddr")
	e.DAddr = genAddr(d, v6, "daddr")
	seq := func() *Seq {
		return &Seq{d.u32("s0"), d.u32("s1"), d.u32("s2"), d.u32("s3"), d.u32("s4"), d.u32("s5")}
	}
	if version == V0 {
		if e.Flags&FlagSeqMask != 0 {
			e.Seq = seq()
		}
		return e
	}
	e.FWMark = d.u32("fwmark")
	e.Timeout = d.u32("timeout")
	if drawBool(d, "seq") {
		e.Seq = seq()
	}
	switch d.intRange(0, 2, "pe") {
	case 1: // a SIP template's Call-ID
		e.PEData = d.bytes(1, MaxPEDataLen, "pedata")
		e.PEName = "sip"
	case 2: // a name alone is carried but not checked
		e.PEName = string(d.bytes(1, MaxPENameLen, "pename"))
	}
	return e
}

// genMessage draws a message that encodes (at most 60 entries keeps it
// under 65535 bytes).
func genMessage(d drawer) Message {
	m := Message{Version: uint8(d.intRange(0, 1, "version")), SyncID: uint8(d.intRange(0, 255, "syncid"))}
	n := d.intRange(0, 60, "n")
	for range n {
		m.Entries = append(m.Entries, genEntry(d, m.Version))
	}
	return m
}

// roundTrip checks decode(encode(m)) == m.
func roundTrip(t fatalfer, m Message) {
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	got, problems, err := Decode(b)
	if err != nil || problems != nil {
		t.Fatalf("Decode: %v %v", problems, err)
	}
	m.Size, m.Count = uint16(len(b)), uint8(len(m.Entries))
	if m.Version != got.Version || m.SyncID != got.SyncID || m.Size != got.Size || m.Count != got.Count || !entriesEqual(m.Entries, got.Entries) {
		t.Fatalf("decode(encode(m)) (-want +got):\n%s", cmp.Diff(m, got, cmpOpts...))
	}
}

func TestRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { roundTrip(t, genMessage(rapidDrawer{t})) })
}

// TestBuilderProperty checks that a stream of entries fed to a Builder
// comes out, over as many messages as needed, unchanged and in order, each
// message within maxlen (or holding a single entry) and 255 entries.
func TestBuilderProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		version := uint8(rapid.IntRange(0, 1).Draw(t, "version"))
		maxLen := rapid.IntRange(1, 12000).Draw(t, "maxlen")
		entries := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) Entry { return genEntry(rapidDrawer{t}, version) }), 0, 400).Draw(t, "entries")
		b, err := NewBuilder(version, 9, maxLen)
		if err != nil {
			t.Fatal(err)
		}
		var msgs [][]byte
		var want []Entry
		flush := func() {
			if b.Len() > 0 {
				msgs = append(msgs, append([]byte(nil), b.Bytes()...))
			}
			b.Reset()
		}
		for i := range entries {
			ok, err := b.Add(&entries[i])
			if errors.Is(err, ErrSkipped) {
				if entries[i].Flags&FlagOnePacket == 0 {
					t.Fatalf("entry %d skipped without the one-packet flag", i)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				if b.Len() == 0 {
					t.Fatalf("entry %d refused by an empty message", i)
				}
				flush()
				if ok, err := b.Add(&entries[i]); !ok || err != nil {
					t.Fatalf("entry %d refused by an empty message: %v", i, err)
				}
			}
			want = append(want, entries[i])
		}
		flush()
		var got []Entry
		for k, msg := range msgs {
			m, problems, err := Decoder{SyncID: 9}.Decode(msg)
			if err != nil || problems != nil {
				t.Fatalf("message %d: %v %v", k, problems, err)
			}
			if len(m.Entries) > MaxEntries {
				t.Fatalf("message %d has %d entries", k, len(m.Entries))
			}
			if len(msg) > maxLen && len(m.Entries) > 1 {
				t.Fatalf("message %d of %d bytes > maxlen %d with %d entries", k, len(msg), maxLen, len(m.Entries))
			}
			got = append(got, m.Entries...)
		}
		if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
			t.Fatalf("entries through the Builder (-want +got):\n%s", diff)
		}
	})
}

// TestMutationProperty corrupts one byte of a valid datagram: decoding
// must not panic, and whatever it accepts must re-encode to something that
// decodes to the same entries.
func TestMutationProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := genMessage(rapidDrawer{t})
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		i := rapid.IntRange(0, len(b)-1).Draw(t, "at")
		b[i] = rapid.Byte().Draw(t, "byte")
		checkDecode(t, b)
	})
}
