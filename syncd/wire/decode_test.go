package wire

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Hand-made datagrams, built byte by byte without the encoder.

// rawEntry returns a v1 IPv4 entry whose client port is cport (used to
// identify it), with the given options appended and ver_size covering them.
func rawEntry(proto uint8, flags uint32, state, cport uint16, opts ...[]byte) []byte {
	e := make([]byte, 36)
	e[1] = proto
	binary.BigEndian.PutUint32(e[4:], flags)
	binary.BigEndian.PutUint16(e[8:], state)
	binary.BigEndian.PutUint16(e[10:], cport)
	binary.BigEndian.PutUint16(e[12:], 80)
	binary.BigEndian.PutUint16(e[14:], 8080)
	binary.BigEndian.PutUint32(e[20:], 300)
	copy(e[24:], []byte{192, 0, 2, 10, 192, 0, 2, 100, 198, 51, 100, 11})
	for _, o := range opts {
		e = append(e, o...)
	}
	binary.BigEndian.PutUint16(e[2:], uint16(len(e)))
	return e
}

func rawOpt(typ uint8, data []byte) []byte {
	return append([]byte{typ, uint8(len(data))}, data...)
}

// rawV1 assembles a v1 datagram with syncid 1, padding every entry but the
// last to 4 bytes.
func rawV1(entries ...[]byte) []byte {
	b := []byte{0, 1, 0, 0, uint8(len(entries)), 1, 0, 0}
	for i, e := range entries {
		if i > 0 {
			for len(b)%4 != 0 {
				b = append(b, 0)
			}
		}
		b = append(b, e...)
	}
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	return b
}

// conn is a TCP ESTABLISHED connection entry identified by its port.
func conn(cport uint16, opts ...[]byte) []byte { return rawEntry(6, 0, 1, cport, opts...) }

const (
	tcp = 6
	udp = 17
)

// TestKernelVerified reproduces every row of the table of datagrams sent
// to a real Linux 6.1 backup (spec A.12) and expects the same entries kept.
func TestKernelVerified(t *testing.T) {
	sip := append(rawOpt(optPEData, []byte("call-1@example.com")), rawOpt(optPEName, []byte("sip"))...)
	tmpl := func(proto uint8, state, cport uint16, opts ...[]byte) []byte {
		return rawEntry(proto, FlagTemplate|FlagInactive, state, cport, opts...)
	}
	with := func(b []byte, f func([]byte)) []byte { f(b); return b }

	v0 := []byte{1, 1, 0, 28,
		0, tcp, 0, 0, 0, 80, 0, 80, 192, 0, 2, 0, 192, 0, 2, 100, 198, 51, 100, 11, 0x11, 0x00, 0, 1}

	// m: a 42-byte entry (36 + a 6-byte optional option) followed by the
	// next one without the 2 bytes of padding.
	m := append(conn(1000, rawOpt(0x45, []byte{1, 2, 3, 4})), conn(1001)...)
	m = append([]byte{0, 1, 0, 0, 2, 1, 0, 0}, m...)
	binary.BigEndian.PutUint16(m[2:], uint16(len(m)))

	// n: the last entry padded too, the padding counted in the header size.
	n := append(rawV1(conn(1000, rawOpt(0x45, []byte{1, 2})), conn(1001, rawOpt(0x45, []byte{1, 2}))), 0, 0)
	binary.BigEndian.PutUint16(n[2:], uint16(len(n)))

	l2 := rawV1(conn(1000), with(conn(1001), func(e []byte) { e[0] = typeInet6 }), conn(1002))

	tests := []struct {
		name     string
		row      string
		data     []byte
		syncID   int
		kept     []uint16 // client ports of the entries kept
		problems []Problem
		err      *Problem
	}{
		{name: "one template", row: "a", data: rawV1(tmpl(tcp, 0, 0)), syncID: 1, kept: []uint16{0}},
		{name: "other syncid", row: "b", data: with(rawV1(conn(1000)), func(b []byte) { b[1] = 2 }), syncID: 1,
			err: &Problem{Action: DropDatagram, Reason: ReasonSyncID, Index: -1, Value: 2}},
		{name: "syncid 0 to a filtering backup", row: "b0", data: with(rawV1(conn(1000)), func(b []byte) { b[1] = 0 }), syncID: 1,
			err: &Problem{Action: DropDatagram, Reason: ReasonSyncID, Index: -1, Value: 0}},
		{name: "size plus 4", row: "c", data: with(rawV1(conn(1000)), func(b []byte) { b[3] += 4 }), syncID: 1,
			err: &Problem{Action: DropDatagram, Reason: ReasonSizeMismatch, Index: -1, Value: 48}},
		{name: "size minus 4", row: "c", data: with(rawV1(conn(1000)), func(b []byte) { b[3] -= 4 }), syncID: 1,
			err: &Problem{Action: DropDatagram, Reason: ReasonSizeMismatch, Index: -1, Value: 40}},
		{name: "unknown optional option", row: "d1", data: rawV1(conn(1000), conn(1001, rawOpt(0x45, []byte{9})), conn(1002)), syncID: 1,
			kept: []uint16{1000, 1001, 1002}},
		{name: "unknown mandatory option", row: "d2", data: rawV1(conn(1000), conn(1001, rawOpt(0x05, []byte{9})), conn(1002)), syncID: 1,
			kept:     []uint16{1000, 1002},
			problems: []Problem{{Action: SkipEntry, Reason: ReasonUnknownOption, Index: 1, Offset: 44, Value: 5}}},
		{name: "option of length 0", row: "e", data: rawV1(conn(1000), conn(1001, []byte{0x45, 0}), conn(1002)), syncID: 1,
			kept:     []uint16{1000},
			problems: []Problem{{Action: DropRest, Reason: ReasonOptionZeroLen, Index: 1, Offset: 44, Value: 0x45}}},
		{name: "entry version 1", row: "f", data: rawV1(conn(1000), with(conn(1001), func(e []byte) { e[2] |= 0x10 }), conn(1002)), syncID: 1,
			kept:     []uint16{1000},
			problems: []Problem{{Action: DropRest, Reason: ReasonEntryVersion, Index: 1, Offset: 44, Value: 1}}},
		{name: "template state 2", row: "g", data: rawV1(conn(1000), tmpl(tcp, 2, 1001), conn(1002)), syncID: 1,
			kept:     []uint16{1000, 1002},
			problems: []Problem{{Action: SkipEntry, Reason: ReasonTemplateState, Index: 1, Offset: 44, Value: 2}}},
		{name: "TCP state 11", row: "h", data: rawV1(conn(1000), rawEntry(tcp, 0, 11, 1001), conn(1002)), syncID: 1,
			kept:     []uint16{1000, 1002},
			problems: []Problem{{Action: SkipEntry, Reason: ReasonState, Index: 1, Offset: 44, Value: 11}}},
		{name: "SIP template", row: "i1", data: rawV1(tmpl(udp, 0, 0, sip)), syncID: 1, kept: []uint16{0}},
		{name: "PE data without name", row: "i2", data: rawV1(tmpl(udp, 0, 0, rawOpt(optPEData, []byte("x")))), syncID: 1,
			problems: []Problem{{Action: SkipEntry, Reason: ReasonPEWithoutName, Index: 0, Offset: 8}}},
		{name: "unknown PE name", row: "i3", data: rawV1(tmpl(udp, 0, 0, rawOpt(optPEData, []byte("x")), rawOpt(optPEName, []byte("nope")))), syncID: 1,
			problems: []Problem{{Action: SkipEntry, Reason: ReasonUnknownPE, Index: 0, Offset: 8}}},
		{name: "address type 2", row: "j", data: rawV1(conn(1000), with(conn(1001), func(e []byte) { e[0] = 2 }), conn(1002)), syncID: 1,
			kept:     []uint16{1000},
			problems: []Problem{{Action: DropRest, Reason: ReasonAddrType, Index: 1, Offset: 44, Value: 2}}},
		{name: "v0 template", row: "k", data: v0, syncID: 1, kept: []uint16{0}},
		{name: "v1 header with spare 1", row: "l", data: with(rawV1(conn(1000)), func(b []byte) { b[7] = 1 }), syncID: 1},
		{name: "IPv6 type in 36 bytes", row: "l2", data: l2, syncID: 1,
			kept:     []uint16{1000},
			problems: []Problem{{Action: DropRest, Reason: ReasonEntryTooSmall, Index: 1, Offset: 44, Value: 36}}},
		{name: "42-byte entry not padded", row: "m", data: m, syncID: 1,
			kept:     []uint16{1000},
			problems: []Problem{{Action: DropRest, Reason: ReasonTruncated, Index: 1, Offset: 52, Value: 34}}},
		{name: "last entry padded", row: "n", data: n, syncID: 1, kept: []uint16{1000, 1001}},
	}
	for _, tt := range tests {
		t.Run(tt.row+"/"+tt.name, func(t *testing.T) {
			got, problems, err := Decoder{SyncID: tt.syncID}.Decode(tt.data)
			var gotErr *Problem
			if err != nil && !errors.As(err, &gotErr) {
				t.Fatalf("error %v is not a *Problem", err)
			}
			if diff := cmp.Diff(tt.err, gotErr); diff != "" {
				t.Errorf("datagram error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.problems, problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			var kept []uint16
			for _, e := range got.Entries {
				kept = append(kept, e.CPort)
			}
			if diff := cmp.Diff(tt.kept, kept); diff != "" {
				t.Errorf("entries kept, by client port (-want +got):\n%s", diff)
			}
		})
	}
}

// TestWorkedExample decodes and re-encodes the bytes of spec A.11.
func TestWorkedExample(t *testing.T) {
	data, _ := hex.DecodeString(strings.Join(strings.Fields(`
		00 00 00 50 02 01 00 00 00 06 00 24 00 00 00 83
		00 01 c8 22 00 50 00 50 00 00 00 00 00 00 03 84
		c0 a8 01 0a 0a 00 00 64 0a 00 00 0b 00 06 00 24
		00 00 11 83 00 00 00 00 00 50 00 50 00 00 00 00
		00 00 01 68 c0 a8 01 0a 0a 00 00 64 0a 00 00 0b`), ""))
	a := netip.MustParseAddr
	want := Message{Version: V1, SyncID: 0, Size: 80, Count: 2, Entries: []Entry{
		{Protocol: tcp, Flags: 0x83, State: 1, CPort: 51234, VPort: 80, DPort: 80, Timeout: 900,
			CAddr: a("192.168.1.10"), VAddr: a("10.0.0.100"), DAddr: a("10.0.0.11")},
		{Protocol: tcp, Flags: 0x1183, State: 0, CPort: 0, VPort: 80, DPort: 80, Timeout: 360,
			CAddr: a("192.168.1.10"), VAddr: a("10.0.0.100"), DAddr: a("10.0.0.11")},
	}}
	var got Message
	if err := got.UnmarshalBinary(data); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("UnmarshalBinary (-want +got):\n%s", diff)
	}
	enc, err := want.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(data, enc); diff != "" {
		t.Errorf("MarshalBinary (-want +got):\n%s", diff)
	}
}

// TestDecodeChecks covers the checks the kernel table does not: short
// datagrams, truncated entries and options, duplicates, protocols, the
// syncid filter and the PE registry.
func TestDecodeChecks(t *testing.T) {
	seq := rawOpt(optSeqData, make([]byte, 24))
	truncated := rawV1(conn(1000), conn(1001))
	truncated = truncated[:len(truncated)-1]
	binary.BigEndian.PutUint16(truncated[2:], uint16(len(truncated)))
	overrun := rawV1(conn(1000), conn(1001, rawOpt(0x45, []byte{1, 2})))
	binary.BigEndian.PutUint16(overrun[44+2:], 36+5)
	v6 := make([]byte, 72)
	v6[0], v6[1] = typeInet6, tcp
	binary.BigEndian.PutUint16(v6[2:], 72)
	binary.BigEndian.PutUint16(v6[8:], 1)
	binary.BigEndian.PutUint16(v6[10:], 1001)
	v0seq := []byte{1, 7, 0, 52,
		0, tcp, 0x03, 0xe8, 0, 80, 0, 80, 192, 0, 2, 10, 192, 0, 2, 100, 198, 51, 100, 11, 0x06, 0x00, 0, 1}
	v0seq = append(v0seq, make([]byte, 24)...)
	v0seq[28] = 1 // in_seq.init_seq = 1 in little-endian

	tests := []struct {
		name     string
		data     []byte
		dec      Decoder
		kept     []uint16
		problems []Problem
		err      *Problem
	}{
		{name: "empty", data: nil, err: &Problem{Action: DropDatagram, Reason: ReasonShort, Index: -1, Value: 0}},
		{name: "3 bytes", data: []byte{0, 0, 0}, err: &Problem{Action: DropDatagram, Reason: ReasonShort, Index: -1, Value: 3}},
		{name: "v0 header only", data: []byte{0, 0, 0, 4}},
		{name: "v0 count beyond data", data: []byte{2, 0, 0, 4},
			problems: []Problem{{Action: DropRest, Reason: ReasonTruncated, Index: 0, Offset: 4, Value: 0}}},
		{name: "v1 count beyond data", data: with(rawV1(conn(1000)), func(b []byte) { b[4] = 2 }), kept: []uint16{1000},
			problems: []Problem{{Action: DropRest, Reason: ReasonTruncated, Index: 1, Offset: 44, Value: 0}}},
		{name: "v1 fewer entries counted than sent", data: with(rawV1(conn(1000), conn(1001)), func(b []byte) { b[4] = 1 }), kept: []uint16{1000}},
		{name: "entry truncated", data: truncated, kept: []uint16{1000},
			problems: []Problem{{Action: DropRest, Reason: ReasonTruncated, Index: 1, Offset: 44, Value: 35}}},
		{name: "ver_size past the end", data: overrun, kept: []uint16{1000},
			problems: []Problem{{Action: DropRest, Reason: ReasonEntryOverrun, Index: 1, Offset: 44, Value: 41}}},
		{name: "option header cut by entry end", data: rawV1(conn(1000), conn(1001, []byte{0x45})), kept: []uint16{1000},
			problems: []Problem{{Action: DropRest, Reason: ReasonOptionTruncated, Index: 1, Offset: 44, Value: 0x45}}},
		{name: "option data cut by entry end", data: rawV1(conn(1000), conn(1001, []byte{0x45, 3, 1})), kept: []uint16{1000},
			problems: []Problem{{Action: DropRest, Reason: ReasonOptionTruncated, Index: 1, Offset: 44, Value: 0x45}}},
		{name: "SEQ of 23 bytes", data: rawV1(conn(1000), conn(1001, rawOpt(optSeqData, make([]byte, 23)))), kept: []uint16{1000},
			problems: []Problem{{Action: DropRest, Reason: ReasonBadSeqOption, Index: 1, Offset: 44, Value: 23}}},
		{name: "SEQ twice", data: rawV1(conn(1000), conn(1001, seq, seq)), kept: []uint16{1000},
			problems: []Problem{{Action: DropRest, Reason: ReasonDuplicateOption, Index: 1, Offset: 44, Value: 1}}},
		{name: "SEQ with optional bit is SEQ", data: rawV1(conn(1000, rawOpt(0x41, make([]byte, 24))), conn(1001, seq, rawOpt(0x41, make([]byte, 24)))),
			kept:     []uint16{1000},
			problems: []Problem{{Action: DropRest, Reason: ReasonDuplicateOption, Index: 1, Offset: 72, Value: 0x41}}},
		{name: "PE data twice", data: rawV1(conn(1000, rawOpt(optPEData, []byte("a")), rawOpt(optPEData, []byte("b")))),
			problems: []Problem{{Action: DropRest, Reason: ReasonDuplicateOption, Index: 0, Offset: 8, Value: 2}}},
		{name: "PE name twice", data: rawV1(conn(1000, rawOpt(optPEName, []byte("sip")), rawOpt(optPEName, []byte("sip")))),
			problems: []Problem{{Action: DropRest, Reason: ReasonDuplicateOption, Index: 0, Offset: 8, Value: 3}}},
		{name: "PE name of 17 bytes", data: rawV1(conn(1000, rawOpt(optPEName, make([]byte, 17)))),
			problems: []Problem{{Action: DropRest, Reason: ReasonPENameTooLong, Index: 0, Offset: 8, Value: 17}}},
		{name: "unknown mandatory option hides a later bad one", data: rawV1(conn(1000, rawOpt(0x05, []byte{1}), []byte{0x45, 0}), conn(1001)),
			kept:     []uint16{1001},
			problems: []Problem{{Action: SkipEntry, Reason: ReasonUnknownOption, Index: 0, Offset: 8, Value: 5}}},
		{name: "bad option before unknown mandatory one", data: rawV1(conn(1000, []byte{0x45, 0}, rawOpt(0x05, []byte{1})), conn(1001)),
			problems: []Problem{{Action: DropRest, Reason: ReasonOptionZeroLen, Index: 0, Offset: 8, Value: 0x45}}},
		{name: "PE name without PE data is kept", data: rawV1(conn(1000, rawOpt(optPEName, []byte("whatever")))), kept: []uint16{1000}},
		{name: "PE name up to NUL", data: rawV1(rawEntry(udp, FlagTemplate, 0, 0, rawOpt(optPEData, []byte("c")), rawOpt(optPEName, []byte("sip\x00x")))), kept: []uint16{0}},
		{name: "PE registry without sip", dec: Decoder{PENames: []string{}}, data: rawV1(rawEntry(udp, FlagTemplate, 0, 0, rawOpt(optPEData, []byte("c")), rawOpt(optPEName, []byte("sip")))),
			problems: []Problem{{Action: SkipEntry, Reason: ReasonUnknownPE, Index: 0, Offset: 8}}},
		{name: "PE registry with another engine", dec: Decoder{PENames: []string{"foo"}}, data: rawV1(rawEntry(udp, FlagTemplate, 0, 0, rawOpt(optPEData, []byte("c")), rawOpt(optPEName, []byte("foo")))),
			kept: []uint16{0}},
		{name: "unknown protocol", data: rawV1(rawEntry(99, 0, 0, 1000), conn(1001)), kept: []uint16{1001},
			problems: []Problem{{Action: SkipEntry, Reason: ReasonProtocol, Index: 0, Offset: 8, Value: 99}}},
		{name: "protocol 0 conn", data: rawV1(rawEntry(0, 0, 0, 1000)),
			problems: []Problem{{Action: SkipEntry, Reason: ReasonProtocol, Index: 0, Offset: 8, Value: 0}}},
		{name: "fwmark template", data: rawV1(rawEntry(0, FlagTemplate, 1, 1000)), kept: []uint16{1000}},
		{name: "UDP state 1", data: rawV1(rawEntry(udp, 0, 1, 1000)),
			problems: []Problem{{Action: SkipEntry, Reason: ReasonState, Index: 0, Offset: 8, Value: 1}}},
		{name: "SCTP state 13", data: rawV1(rawEntry(132, 0, 13, 1000)), kept: []uint16{1000}},
		{name: "SCTP state 14", data: rawV1(rawEntry(132, 0, 14, 1000)),
			problems: []Problem{{Action: SkipEntry, Reason: ReasonState, Index: 0, Offset: 8, Value: 14}}},
		{name: "AH and ESP", data: rawV1(rawEntry(50, 0, 0, 1000), rawEntry(51, 0, 0, 1001), rawEntry(51, 0, 1, 1002)), kept: []uint16{1000, 1001},
			problems: []Problem{{Action: SkipEntry, Reason: ReasonState, Index: 2, Offset: 80, Value: 1}}},
		{name: "IPv6 entry", data: rawV1(conn(1000), v6), kept: []uint16{1000, 1001}},
		{name: "type 3 is IPv6", data: rawV1(with(append([]byte(nil), v6...), func(e []byte) { e[0] = 3 })), kept: []uint16{1001}},
		{name: "syncid filter 0 accepts all", dec: Decoder{SyncID: 0}, data: with(rawV1(conn(1000)), func(b []byte) { b[1] = 200 }), kept: []uint16{1000}},
		{name: "syncid above 255 matches nothing", dec: Decoder{SyncID: 256 + 1}, data: rawV1(conn(1000)),
			err: &Problem{Action: DropDatagram, Reason: ReasonSyncID, Index: -1, Value: 1}},
		{name: "v0 with SEQ", data: v0seq, kept: []uint16{1000}},
		{name: "v0 SEQ truncated", data: with(append([]byte(nil), v0seq[:51]...), func(b []byte) { b[3] = 51 }),
			problems: []Problem{{Action: DropRest, Reason: ReasonTruncated, Index: 0, Offset: 4, Value: 47}}},
		{name: "v0 bad state", data: with(append([]byte(nil), v0seq...), func(b []byte) { b[27] = 11 }),
			problems: []Problem{{Action: SkipEntry, Reason: ReasonState, Index: 0, Offset: 4, Value: 11}}},
		{name: "v1 header in 7 bytes is v0", data: []byte{0, 0, 0, 7, 0, 1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, problems, err := tt.dec.Decode(tt.data)
			var gotErr *Problem
			if err != nil && !errors.As(err, &gotErr) {
				t.Fatalf("error %v is not a *Problem", err)
			}
			if diff := cmp.Diff(tt.err, gotErr); diff != "" {
				t.Errorf("datagram error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.problems, problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			var kept []uint16
			for _, e := range got.Entries {
				kept = append(kept, e.CPort)
			}
			if diff := cmp.Diff(tt.kept, kept); diff != "" {
				t.Errorf("entries kept, by client port (-want +got):\n%s", diff)
			}
		})
	}
}

func with(b []byte, f func([]byte)) []byte { f(b); return b }

func TestDecodeFields(t *testing.T) {
	a := netip.MustParseAddr
	seqData := make([]byte, 24)
	for i := range seqData {
		seqData[i] = byte(i + 1)
	}
	v6 := make([]byte, 72)
	v6[0], v6[1] = typeInet6, tcp
	binary.BigEndian.PutUint16(v6[2:], 72)
	binary.BigEndian.PutUint32(v6[4:], 0x10083)
	binary.BigEndian.PutUint16(v6[8:], 4)
	binary.BigEndian.PutUint16(v6[10:], 40000)
	binary.BigEndian.PutUint16(v6[12:], 443)
	binary.BigEndian.PutUint16(v6[14:], 8443)
	binary.BigEndian.PutUint32(v6[16:], 7)
	binary.BigEndian.PutUint32(v6[20:], 120)
	copy(v6[24:], a("2001:db8::10").AsSlice())
	copy(v6[40:], a("2001:db8::100").AsSlice())
	copy(v6[56:], a("fd00::11").AsSlice())

	data := rawV1(
		rawEntry(tcp, FlagSeqMask|FlagHashed, 1, 1000, rawOpt(optSeqData, seqData)),
		rawEntry(udp, FlagTemplate, 1, 0, rawOpt(0x7f, []byte{1}), rawOpt(optPEData, []byte("id@host")), rawOpt(optPEName, []byte("sip"))),
		v6,
	)
	got, problems, err := Decode(data)
	if err != nil || problems != nil {
		t.Fatalf("Decode: %v %v", problems, err)
	}
	c, v, d := a("192.0.2.10"), a("192.0.2.100"), a("198.51.100.11")
	want := Message{Version: V1, SyncID: 1, Size: uint16(len(data)), Count: 3, Entries: []Entry{
		{Protocol: tcp, Flags: FlagSeqMask | FlagHashed, State: 1, CPort: 1000, VPort: 80, DPort: 8080, Timeout: 300, CAddr: c, VAddr: v, DAddr: d,
			Seq: &Seq{0x01020304, 0x05060708, 0x090a0b0c, 0x0d0e0f10, 0x11121314, 0x15161718}},
		{Protocol: udp, Flags: FlagTemplate, State: 1, VPort: 80, DPort: 8080, Timeout: 300, CAddr: c, VAddr: v, DAddr: d,
			PEData: []byte("id@host"), PEName: "sip"},
		{Protocol: tcp, Flags: 0x10083, State: 4, CPort: 40000, VPort: 443, DPort: 8443, FWMark: 7, Timeout: 120,
			CAddr: a("2001:db8::10"), VAddr: a("2001:db8::100"), DAddr: a("fd00::11")},
	}}
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("Decode (-want +got):\n%s", diff)
	}
	if !got.Entries[2].IsIPv6() || got.Entries[0].IsIPv6() || !got.Entries[1].IsTemplate() {
		t.Error("IsIPv6/IsTemplate disagree with the entries")
	}
	// PEData must not alias the datagram.
	clear(data)
	if string(got.Entries[1].PEData) != "id@host" {
		t.Errorf("PEData changed with the datagram: %q", got.Entries[1].PEData)
	}
}

func TestBackupFlags(t *testing.T) {
	tests := []struct {
		name    string
		version uint8
		wire    uint32
		want    uint32
	}{
		{"v1 DR template", V1, 0x1183, 0x11a3},
		{"v1 drops NFCT, HASHED, ONE_PACKET and unused bits", V1, 0x10000 | 0x2000 | 0x40 | 0x18 | 0x3, 0x23},
		{"v1 keeps SEQ, NO_CPORT", V1, 0x0e00, 0x0e20},
		{"v0 keeps unused bits but drops HASHED", V0, 0x2058, 0x2038},
		{"v0 only has 16 bits", V0, 0x10083, 0xa3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := BackupFlags(tt.version, tt.wire); got != tt.want {
				t.Errorf("BackupFlags(%d, %#x) = %#x, want %#x", tt.version, tt.wire, got, tt.want)
			}
		})
	}
	m := Message{Version: V1, Entries: []Entry{{Flags: 0x1183}, {Flags: 0x10000}}}
	m.ApplyBackupFlags()
	if diff := cmp.Diff([]uint32{0x11a3, 0x20}, []uint32{m.Entries[0].Flags, m.Entries[1].Flags}); diff != "" {
		t.Errorf("ApplyBackupFlags (-want +got):\n%s", diff)
	}
}

func TestUnmarshalBinaryErrors(t *testing.T) {
	var m Message
	err := m.UnmarshalBinary([]byte{1, 2})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short datagram: %v, want io.ErrUnexpectedEOF", err)
	}
	err = m.UnmarshalBinary(rawV1(conn(1000), rawEntry(99, 0, 0, 1001), conn(1002, []byte{0x45, 0})))
	var p *Problem
	if !errors.As(err, &p) || p.Reason != ReasonProtocol || p.Action != SkipEntry {
		t.Fatalf("UnmarshalBinary error = %v, want the skipped entry first", err)
	}
	for _, want := range []string{"entry 1 at offset 44: protocol not supported (99): entry skipped", "entry 2 at offset 80: option of length 0 0x45: rest of datagram dropped"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if len(m.Entries) != 1 || m.Entries[0].CPort != 1000 {
		t.Errorf("accepted entries = %+v, want the first only", m.Entries)
	}
}

func TestDecodeIntoReuses(t *testing.T) {
	m := Message{Entries: make([]Entry, 0, 4)}
	first := &m.Entries[:1][0]
	if _, err := (Decoder{}).DecodeInto(&m, rawV1(conn(1), conn(2))); err != nil {
		t.Fatal(err)
	}
	if &m.Entries[0] != first {
		t.Error("DecodeInto did not reuse the entries' storage")
	}
	if _, err := (Decoder{}).DecodeInto(&m, []byte{9}); err == nil || len(m.Entries) != 0 || m.Version != 0 {
		t.Errorf("after a dropped datagram: err %v, %d entries", err, len(m.Entries))
	}
}
