package persist

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/lbha/lbha/dest"
)

// fuzzAddr makes an address of the family fuzz data chooses.
func fuzzAddr(v6 bool, b []byte) netip.Addr {
	var a [16]byte
	copy(a[:], b)
	if v6 {
		return netip.AddrFrom16(a)
	}
	return netip.AddrFrom4([4]byte(a[:4]))
}

// FuzzApplySync feeds arbitrary sync entries, as a peer on the network can
// send them, and checks that the table stays consistent.
func FuzzApplySync(f *testing.F) {
	// DR template and connection from the dr-mode capture, a SIP template,
	// an IPv6 entry and a bad state.
	f.Add(uint8(6), false, []byte{192, 0, 2, 10}, uint16(0), []byte{192, 0, 2, 100}, uint16(80), []byte{198, 51, 100, 12}, uint16(80), uint32(0x1183), uint16(1), uint32(0), uint32(300), []byte(nil), uint8(3))
	f.Add(uint8(6), false, []byte{192, 0, 2, 10}, uint16(57780), []byte{192, 0, 2, 100}, uint16(80), []byte{198, 51, 100, 12}, uint16(80), uint32(0x83), uint16(1), uint32(0), uint32(900), []byte(nil), uint8(0))
	f.Add(uint8(17), false, []byte{0, 0, 0, 0}, uint16(0), []byte{192, 0, 2, 100}, uint16(5060), []byte{198, 51, 100, 12}, uint16(5060), uint32(0x1100), uint16(1), uint32(0), uint32(60), []byte("a84b4c76e66710@pc33.example.com"), uint8(1))
	f.Add(uint8(0), true, []byte{0x20, 0x01, 0x0d, 0xb8}, uint16(0), []byte{0, 0, 0, 7}, uint16(0), []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0xb}, uint16(0), uint32(0x1100), uint16(0), uint32(7), uint32(0), []byte(nil), uint8(2))
	f.Add(uint8(132), false, []byte{192, 0, 2, 10}, uint16(1), []byte{192, 0, 2, 100}, uint16(80), []byte{198, 51, 100, 12}, uint16(80), uint32(0xFFFFFFFF), uint16(14), uint32(0), uint32(0xFFFFFFFF), []byte{}, uint8(5))
	f.Fuzz(func(t *testing.T, proto uint8, v6 bool, c []byte, cport uint16, v []byte, vport uint16, d []byte, dport uint16,
		flags uint32, state uint16, fwmark uint32, timeout uint32, pe []byte, ops uint8) {
		tbl, clk := newTestTable(t, func(c *Config) { c.Shards = 2 })
		dst := dest.New(fuzzAddr(v6, d), dport, dest.Method(ops%4), 1)
		resolve := func(DestQuery) *dest.Dest { return dst }
		in := SyncEntry{
			Proto: proto, Client: netip.AddrPortFrom(fuzzAddr(v6, c), cport), Virtual: netip.AddrPortFrom(fuzzAddr(v6, v), vport),
			DestAddr: netip.AddrPortFrom(fuzzAddr(v6, d), dport), Flags: Flags(flags), State: State(state),
			Fwmark: fwmark, Timeout: timeout, PEData: pe,
		}
		var refs []Ref
		for i := range int(ops%4) + 1 {
			r := resolve
			if i%2 == 0 {
				r = nil
			}
			if ref, err := tbl.ApplySync(&in, r); err == nil && ref != 0 {
				refs = append(refs, ref)
				if _, ok := tbl.Get(ref); !ok {
					t.Fatal("applied entry not found")
				}
			}
			in.Flags ^= FlagInactive
			in.DestAddr = netip.AddrPortFrom(in.DestAddr.Addr(), in.DestAddr.Port()+uint16(i&1))
		}
		tbl.Rebind(resolve)
		checkInvariants(t, tbl, []*dest.Dest{dst})
		// A local connection may hit a synced template.
		svc := &Service{Port: vport, Fwmark: fwmark, Timeout: time.Minute, PE: len(pe) > 0, Netmask: netip.IPv4Unspecified()}
		if v6 {
			svc.Netmask, svc.PrefixLen = netip.Addr{}, 1
		}
		_, _ = tbl.Schedule(svc, &Packet{Proto: ProtoUDP, Src: in.Client, Dst: in.Virtual, PEData: pe}, resolveNil(dst))
		checkInvariants(t, tbl, []*dest.Dest{dst})
		for _, r := range refs {
			tbl.Remove(r)
		}
		tbl.Expire(clk.Advance(50 * 24 * time.Hour))
		tbl.Range(func(e Entry) bool { tbl.Drop(e.Ref); return true })
		tbl.Expire(clk.Advance(time.Hour))
		checkInvariants(t, tbl, []*dest.Dest{dst})
		if c, tm := tbl.Len(); c+tm != 0 {
			t.Fatalf("%d+%d entries left", c, tm)
		}
	})
}

func resolveNil(d *dest.Dest) func() *dest.Dest { return func() *dest.Dest { return d } }

// FuzzSchedule feeds arbitrary services and packets.
func FuzzSchedule(f *testing.F) {
	f.Add([]byte{6, 0, 80, 0, 0, 1, 44, 255, 255, 255, 0, 0, 0, 192, 0, 2, 10, 200, 0, 192, 0, 2, 100, 0, 80, 1})
	f.Add([]byte{17, 1, 0, 0, 0, 0, 60, 0, 0, 0, 0, 64, 3, 32, 1, 13, 184, 0, 1, 0, 53, 5, 5, 5, 5, 0, 53, 0, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		get := func(n int) []byte {
			if len(b) < n {
				b = append(b, make([]byte, n-len(b))...)
			}
			out := b[:n]
			b = b[n:]
			return out
		}
		hdr := get(13)
		v6 := hdr[1]&1 != 0
		svc := &Service{
			Port:      binary.BigEndian.Uint16(hdr[2:4]),
			Fwmark:    uint32(hdr[4]),
			Timeout:   time.Duration(binary.BigEndian.Uint16(hdr[5:7])) * time.Second,
			Netmask:   netip.AddrFrom4([4]byte(hdr[7:11])),
			PrefixLen: int(hdr[11]),
			OnePacket: hdr[12]&1 != 0,
			PE:        hdr[12]&2 != 0,
		}
		alen := 4
		if v6 {
			alen = 16
		}
		src := netip.AddrPortFrom(fuzzAddr(v6, get(alen)), binary.BigEndian.Uint16(get(2)))
		dst := netip.AddrPortFrom(fuzzAddr(v6, get(alen)), binary.BigEndian.Uint16(get(2)))
		st := get(1)[0]
		pkt := &Packet{Proto: hdr[0], Src: src, Dst: dst, State: State(st), PEData: b, Fwmark: svc.Fwmark}
		tbl, clk := newTestTable(t, nil)
		d := dest.New(netip.MustParseAddr("198.51.100.1"), 80, dest.Method(st%4), int(st%2))
		for range 3 {
			s, err := tbl.Schedule(svc, pkt, resolveNil(d))
			if err == nil && s.Conn != 0 {
				_ = tbl.SetState(s.Conn, State(st/2))
				_, _ = tbl.Touch(s.Conn, st&1 == 0)
			}
			pkt.Src = netip.AddrPortFrom(pkt.Src.Addr(), pkt.Src.Port()+1)
			checkInvariants(t, tbl, []*dest.Dest{d})
		}
		tbl.Expire(clk.Advance(24 * time.Hour))
		tbl.Expire(clk.Advance(24 * time.Hour))
		if c, tm := tbl.Len(); c+tm != 0 {
			t.Fatalf("%d+%d entries left a day later", c, tm)
		}
		checkInvariants(t, tbl, []*dest.Dest{d})
	})
}
