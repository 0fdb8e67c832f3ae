package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	cAddr = netip.MustParseAddr("192.0.2.10")
	vAddr = netip.MustParseAddr("192.0.2.100")
	dAddr = netip.MustParseAddr("198.51.100.11")
)

// tcpConn is a 36-byte IPv4 entry.
func tcpConn(port uint16) Entry {
	return Entry{Protocol: tcp, State: 1, CPort: port, VPort: 80, DPort: 80, Timeout: 900, CAddr: cAddr, VAddr: vAddr, DAddr: dAddr}
}

// sipTemplate is a v1 entry of 36 + 2+len(callID) + 5 bytes.
func sipTemplate(callID string) Entry {
	return Entry{Protocol: udp, Flags: FlagTemplate | FlagInactive, VPort: 5060, DPort: 5060, Timeout: 60,
		CAddr: netip.IPv4Unspecified(), VAddr: vAddr, DAddr: dAddr, PEData: []byte(callID), PEName: "sip"}
}

func TestMaxLen(t *testing.T) {
	tests := []struct {
		name       string
		configured int
		mtu        int
		v6         bool
		master     int
		backup     int
	}{
		{name: "defaults IPv4", mtu: 1500, master: 1472, backup: 1472},
		{name: "defaults IPv6", mtu: 1500, v6: true, master: 1452, backup: 1452},
		{name: "jumbo MTU: master ignores it", mtu: 9000, master: 1472, backup: 8972},
		{name: "small MTU raised to 1500", mtu: 1280, master: 1472, backup: 1472},
		{name: "huge MTU", mtu: 70000, master: 1472, backup: 65507},
		{name: "configured 200", configured: 200, mtu: 1500, master: 200, backup: 1024},
		{name: "configured 1", configured: 1, mtu: 1500, master: 1, backup: 1024},
		{name: "configured negative", configured: -5, mtu: 1500, master: 1, backup: 1024},
		{name: "configured 4000", configured: 4000, mtu: 1500, master: 4000, backup: 4000},
		{name: "configured past 65535-28", configured: 65535, mtu: 1500, master: 65507, backup: 65507},
		{name: "configured past 65535-48", configured: 65535, mtu: 1500, v6: true, master: 65487, backup: 65487},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MasterMaxLen(tt.configured, tt.v6); got != tt.master {
				t.Errorf("MasterMaxLen(%d, %v) = %d, want %d", tt.configured, tt.v6, got, tt.master)
			}
			if got := BackupMaxLen(tt.configured, tt.mtu, tt.v6); got != tt.backup {
				t.Errorf("BackupMaxLen(%d, %d, %v) = %d, want %d", tt.configured, tt.mtu, tt.v6, got, tt.backup)
			}
		})
	}
}

func TestPadding(t *testing.T) {
	sizes := func(b []byte) (entryOffsets []int, verSizes []int) {
		off := HeaderLenV1
		for i := 0; i < int(b[4]); i++ {
			entryOffsets = append(entryOffsets, off)
			s := int(binary.BigEndian.Uint16(b[off+2:]))
			verSizes = append(verSizes, s)
			off += (s + 3) &^ 3
		}
		return
	}
	tests := []struct {
		name    string
		entries []Entry
		size    int
		offsets []int
		vers    []int
	}{
		{name: "fixed parts need no padding", entries: []Entry{tcpConn(1), tcpConn(2)}, size: 80, offsets: []int{8, 44}, vers: []int{36, 36}},
		{name: "SEQ entry then another: 2 bytes", entries: []Entry{withSeq(tcpConn(1)), tcpConn(2)}, size: 8 + 62 + 2 + 36, offsets: []int{8, 72}, vers: []int{62, 36}},
		{name: "last entry not padded", entries: []Entry{tcpConn(1), withSeq(tcpConn(2))}, size: 8 + 36 + 62, offsets: []int{8, 44}, vers: []int{36, 62}},
		{name: "SIP 74 bytes: 2 pad", entries: []Entry{sipTemplate(strings.Repeat("a", 31)), tcpConn(2)}, size: 8 + 74 + 2 + 36, offsets: []int{8, 84}, vers: []int{74, 36}},
		{name: "SIP 91 bytes: 1 pad", entries: []Entry{sipTemplate(strings.Repeat("a", 48)), tcpConn(2)}, size: 8 + 91 + 1 + 36, offsets: []int{8, 100}, vers: []int{91, 36}},
		{name: "SIP 73 bytes: 3 pad", entries: []Entry{sipTemplate(strings.Repeat("a", 30)), tcpConn(2)}, size: 8 + 73 + 3 + 36, offsets: []int{8, 84}, vers: []int{73, 36}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Message{Version: V1, SyncID: 3, Entries: tt.entries}
			b, err := m.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != tt.size || int(binary.BigEndian.Uint16(b[2:])) != tt.size {
				t.Errorf("length %d, header size %d, want %d", len(b), binary.BigEndian.Uint16(b[2:]), tt.size)
			}
			offs, vers := sizes(b)
			if diff := cmp.Diff(tt.offsets, offs); diff != "" {
				t.Errorf("entry offsets (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.vers, vers); diff != "" {
				t.Errorf("ver_size (-want +got):\n%s", diff)
			}
			// Padding bytes are zero.
			for i := 1; i < len(offs); i++ {
				for _, c := range b[offs[i-1]+vers[i-1] : offs[i]] {
					if c != 0 {
						t.Errorf("padding before entry %d is %x", i, b[offs[i-1]+vers[i-1]:offs[i]])
					}
				}
			}
			// The Builder lays out the same bytes.
			bl, _ := NewBuilder(V1, 3, 1472)
			for i := range tt.entries {
				if ok, err := bl.Add(&tt.entries[i]); !ok || err != nil {
					t.Fatalf("Add(%d) = %v, %v", i, ok, err)
				}
			}
			if diff := cmp.Diff(b, bl.Bytes()); diff != "" {
				t.Errorf("Builder bytes differ from MarshalBinary (-want +got):\n%s", diff)
			}
		})
	}
}

func withSeq(e Entry) Entry {
	e.Flags |= FlagInSeq
	e.Seq = &Seq{1, 2, 3, 4, 5, 6}
	return e
}

func TestBuilderMaxLen(t *testing.T) {
	add := func(t *testing.T, b *Builder, e Entry) bool {
		t.Helper()
		ok, err := b.Add(&e)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	t.Run("default IPv4 master holds 40 IPv4 conns", func(t *testing.T) {
		b, _ := NewBuilder(V1, 1, MasterMaxLen(0, false))
		for i := range 40 {
			if !add(t, b, tcpConn(uint16(i))) {
				t.Fatalf("entry %d refused at %d bytes", i, b.Size())
			}
		}
		if add(t, b, tcpConn(40)) {
			t.Fatal("41st entry accepted")
		}
		if b.Len() != 40 || b.Size() != 8+40*36 || len(b.Bytes()) != 1448 {
			t.Errorf("Len %d, Size %d", b.Len(), b.Size())
		}
	})
	t.Run("default IPv6 group holds fewer IPv6 conns", func(t *testing.T) {
		b, _ := NewBuilder(V1, 1, MasterMaxLen(0, true))
		n := 0
		e := tcpConn(1)
		e.CAddr, e.VAddr, e.DAddr = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::3")
		for add(t, b, e) {
			n++
		}
		if want := (1452 - 8) / 72; n != want {
			t.Errorf("%d IPv6 entries, want %d", n, want)
		}
	})
	t.Run("padding counts against maxlen", func(t *testing.T) {
		// 8 + 62 = 70; the next 36-byte entry needs 2 bytes of padding: 108.
		b, _ := NewBuilder(V1, 1, 107)
		add(t, b, withSeq(tcpConn(1)))
		if add(t, b, tcpConn(2)) {
			t.Error("entry accepted although its padding passes maxlen")
		}
		b, _ = NewBuilder(V1, 1, 108)
		add(t, b, withSeq(tcpConn(1)))
		if !add(t, b, tcpConn(2)) {
			t.Error("entry refused although it fits exactly")
		}
	})
	t.Run("first entry always fits", func(t *testing.T) {
		b, _ := NewBuilder(V1, 1, 1)
		if !add(t, b, sipTemplate("x")) {
			t.Fatal("first entry refused")
		}
		if add(t, b, tcpConn(2)) {
			t.Fatal("second entry accepted with maxlen 1")
		}
		b.Reset()
		if !add(t, b, tcpConn(2)) || b.Len() != 1 || b.Size() != 44 {
			t.Fatalf("after Reset: Len %d Size %d", b.Len(), b.Size())
		}
	})
	t.Run("a large first entry raises the capacity", func(t *testing.T) {
		// The kernel's buffer is max(maxlen, header+first): a small entry
		// still fits behind a first entry larger than maxlen.
		b, _ := NewBuilder(V1, 1, 40)
		add(t, b, sipTemplate(strings.Repeat("x", 200)))
		if add(t, b, tcpConn(2)) {
			t.Error("second entry accepted past the first entry's end")
		}
	})
	t.Run("v0 maxlen", func(t *testing.T) {
		b, _ := NewBuilder(V0, 1, 4+3*24)
		for i := range 3 {
			if !add(t, b, tcpConn(uint16(i))) {
				t.Fatalf("v0 entry %d refused", i)
			}
		}
		if add(t, b, tcpConn(3)) {
			t.Error("v0 entry accepted past maxlen")
		}
	})
}

func TestBuilderCap255(t *testing.T) {
	for _, v := range []uint8{V0, V1} {
		b, _ := NewBuilder(v, 1, 65507)
		n := 0
		for {
			e := tcpConn(uint16(n))
			ok, err := b.Add(&e)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			n++
		}
		if n != MaxEntries {
			t.Errorf("v%d: %d entries, want %d", v, n, MaxEntries)
		}
		m, probs, err := Decode(b.Bytes())
		if err != nil || probs != nil || len(m.Entries) != MaxEntries {
			t.Errorf("v%d: decoding the full message: %d entries, %v, %v", v, len(m.Entries), probs, err)
		}
	}
	m := Message{Version: V1, Entries: make([]Entry, 256)}
	for i := range m.Entries {
		m.Entries[i] = tcpConn(uint16(i))
	}
	if _, err := m.MarshalBinary(); err == nil {
		t.Error("MarshalBinary of 256 entries succeeded")
	}
}

func TestBuilderSkips(t *testing.T) {
	v6 := tcpConn(1)
	v6.CAddr, v6.VAddr, v6.DAddr = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::3")
	ops := tcpConn(2)
	ops.Protocol, ops.Flags = udp, FlagOnePacket
	tests := []struct {
		name    string
		version uint8
		e       Entry
	}{
		{"v0 IPv6", V0, v6},
		{"v0 one-packet", V0, ops},
		{"v1 one-packet", V1, ops},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := NewBuilder(tt.version, 1, 1472)
			ok, err := b.Add(&tt.e)
			if ok || !errors.Is(err, ErrSkipped) {
				t.Errorf("Add = %v, %v; want false, ErrSkipped", ok, err)
			}
			if b.Len() != 0 || b.Size() != len(b.Bytes()) || (tt.version == V1 && b.Size() != 8) {
				t.Errorf("skipped entry changed the message: Len %d, Size %d", b.Len(), b.Size())
			}
		})
	}
	// IPv6 is fine in v1.
	b, _ := NewBuilder(V1, 1, 1472)
	if ok, err := b.Add(&v6); !ok || err != nil {
		t.Errorf("v1 IPv6: %v, %v", ok, err)
	}
}

func TestEncodeErrors(t *testing.T) {
	mixed := tcpConn(1)
	mixed.DAddr = netip.MustParseAddr("2001:db8::1")
	zero := tcpConn(1)
	zero.VAddr = netip.Addr{}
	longData := sipTemplate(strings.Repeat("x", 256))
	longName := sipTemplate("x")
	longName.PEName = strings.Repeat("n", 17)
	seqNoFlag := tcpConn(1)
	seqNoFlag.Seq = &Seq{}
	flagNoSeq := tcpConn(1)
	flagNoSeq.Flags = FlagOutSeq
	tests := []struct {
		name    string
		version uint8
		e       Entry
		want    string
	}{
		{"mixed families", V1, mixed, "not all IPv4 or all IPv6"},
		{"missing address", V1, zero, "not all IPv4 or all IPv6"},
		{"PE data of 256 bytes", V1, longData, "PE data of 256 bytes"},
		{"PE name of 17 bytes", V1, longName, "PE name of 17 bytes"},
		{"v0 SEQ without flag", V0, seqNoFlag, "sequence data must be present"},
		{"v0 flag without SEQ", V0, flagNoSeq, "sequence data must be present"},
		{"unknown version", 2, tcpConn(1), "unknown version 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Message{Version: tt.version, Entries: []Entry{tcpConn(0), tt.e}}
			b, err := m.AppendBinary([]byte("keep"))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "wire: encode") {
				t.Errorf("AppendBinary error = %v, want %q", err, tt.want)
			}
			if string(b) != "keep" {
				t.Errorf("AppendBinary left %q after failing", b)
			}
			if tt.version > V1 {
				if _, err := NewBuilder(tt.version, 0, 100); err == nil {
					t.Error("NewBuilder accepted version 2")
				}
				return
			}
			bl, _ := NewBuilder(tt.version, 0, 1472)
			if ok, err := bl.Add(&tt.e); ok || err == nil || errors.Is(err, ErrSkipped) {
				t.Errorf("Add = %v, %v; want a non-skip error", ok, err)
			}
		})
	}
	big := Message{Version: V1, Entries: make([]Entry, MaxEntries)}
	for i := range big.Entries {
		big.Entries[i] = sipTemplate(strings.Repeat("x", 255))
	}
	if _, err := big.MarshalBinary(); err == nil || !strings.Contains(err.Error(), "65535") {
		t.Errorf("MarshalBinary of about %d bytes: %v", MaxEntries*300, err)
	}
}

func TestEncodeV0(t *testing.T) {
	e := withSeq(tcpConn(1000))
	e.Flags = FlagInSeq | FlagNFCT | FlagHashed // NFCT does not fit in 16 bits
	e.Timeout, e.FWMark, e.PEData, e.PEName = 900, 7, []byte("dropped"), "sip"
	m := Message{Version: V0, SyncID: 5, Entries: []Entry{e, tcpConn(1001)}}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{2, 5, 0, 4 + 48 + 24,
		0, tcp, 0x03, 0xe8, 0, 80, 0, 80, 192, 0, 2, 10, 192, 0, 2, 100, 198, 51, 100, 11, 0x04, 0x40, 0, 1,
		1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, // little-endian SEQ
		0, tcp, 0x03, 0xe9, 0, 80, 0, 80, 192, 0, 2, 10, 192, 0, 2, 100, 198, 51, 100, 11, 0, 0, 0, 1,
	}
	if diff := cmp.Diff(want, b); diff != "" {
		t.Errorf("v0 bytes (-want +got):\n%s", diff)
	}
	got, probs, err := Decode(b)
	if err != nil || probs != nil {
		t.Fatal(probs, err)
	}
	e.Flags &= 0xFFFF
	e.Timeout, e.FWMark, e.PEData, e.PEName = 0, 0, nil, ""
	// v0 has no timeout: compare with the v0 view of the entries.
	w1 := tcpConn(1001)
	w1.Timeout = 0
	if diff := cmp.Diff([]Entry{e, w1}, got.Entries, cmpOpts...); diff != "" {
		t.Errorf("v0 round trip (-want +got):\n%s", diff)
	}
	// v0 carries no IPv6.
	v6 := Message{Version: V0, Entries: []Entry{{CAddr: netip.IPv6Loopback(), VAddr: netip.IPv6Loopback(), DAddr: netip.IPv6Loopback()}}}
	if _, err := v6.MarshalBinary(); !errors.Is(err, ErrSkipped) {
		t.Errorf("v0 IPv6: %v", err)
	}
}

func TestEncodeIPv6AndSeq(t *testing.T) {
	e := withSeq(tcpConn(40000))
	e.CAddr, e.VAddr, e.DAddr = netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("::ffff:192.0.2.1"), netip.MustParseAddr("fd00::11")
	e.FWMark = 0xdeadbeef
	m := Message{Version: V1, Entries: []Entry{e}}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 8+72+26 || b[8] != typeInet6 || binary.BigEndian.Uint16(b[10:]) != 72+26 {
		t.Fatalf("IPv6 entry layout: % x", b[:12])
	}
	if !bytes.Equal(b[8+72:8+72+4], []byte{optSeqData, 24, 0, 0}) || binary.BigEndian.Uint32(b[8+72+2:]) != 1 {
		t.Errorf("SEQ option: % x", b[8+72:])
	}
	got, probs, err := Decode(b)
	if err != nil || probs != nil {
		t.Fatal(probs, err)
	}
	if diff := cmp.Diff(e, got.Entries[0], cmpOpts...); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestBuilderNoAllocs(t *testing.T) {
	entries := []Entry{tcpConn(1), withSeq(tcpConn(2)), sipTemplate("a84b4c76e66710@pc33.example.com")}
	b, _ := NewBuilder(V1, 1, 1472)
	allocs := testing.AllocsPerRun(100, func() {
		b.Reset()
		for i := 0; ; i++ {
			if ok, _ := b.Add(&entries[i%len(entries)]); !ok {
				break
			}
		}
		_ = b.Bytes()
	})
	if allocs != 0 {
		t.Errorf("Builder: %v allocations per message, want 0", allocs)
	}
	m := Message{Version: V1, Entries: entries}
	buf := make([]byte, 0, 1500)
	allocs = testing.AllocsPerRun(100, func() {
		buf, _ = m.AppendBinary(buf[:0])
	})
	if allocs != 0 {
		t.Errorf("AppendBinary into a reused buffer: %v allocations, want 0", allocs)
	}
}

// The lbha remaining-lifetime option: it round-trips, it is counted in the
// entry size and followed by padding like any option, and it carries the
// optional bit, so that a receiver not knowing it (a kernel) keeps the entry.
func TestExpiresOption(t *testing.T) {
	a := sipTemplate("call-1")
	a.Expires = 42
	b := Entry{Protocol: tcp, Flags: FlagTemplate | FlagInactive, VPort: 80, DPort: 80, Timeout: 300, Expires: 7,
		CAddr: netip.MustParseAddr("192.0.2.0"), VAddr: vAddr, DAddr: dAddr}
	m := Message{Version: V1, SyncID: 1, Entries: []Entry{a, b}}
	raw, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// sip template: 36 + 2+6 PE data + 2+3 PE name + 2+4 expires = 55
	// bytes, padded to 56; the TCP template 36 + 6 = 42.
	if got := len(raw); got != 8+56+42 {
		t.Fatalf("message of %d bytes, want %d", got, 8+56+42)
	}
	if raw[8+36+2+6+2+3] != 0x50 {
		t.Fatalf("option type 0x%02x, want 0x50 (optional bit set)", raw[8+36+2+6+2+3])
	}
	got, problems, err := Decode(raw)
	if err != nil || len(problems) != 0 {
		t.Fatalf("decode: %v %v", err, problems)
	}
	if got.Entries[0].Expires != 42 || got.Entries[1].Expires != 7 || got.Entries[1].Timeout != 300 {
		t.Fatalf("decoded %+v", got.Entries)
	}
	// Same bytes with the optional bit cleared: a mandatory unknown option,
	// which refuses the entry (kernel rule); so the bit is what keeps
	// kernels compatible.
	raw[8+36+2+6+2+3] = 0x10
	_, problems, err = Decode(raw)
	if err != nil || len(problems) != 1 || problems[0].Action != SkipEntry {
		t.Fatalf("with the mandatory variant: %v %v", err, problems)
	}
}
