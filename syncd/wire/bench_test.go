package wire

import (
	"fmt"
	"net/netip"
	"testing"
)

// benchEntries returns the entries of one full default-size (1472-byte)
// datagram: 40 IPv4 TCP connections, or SIP templates (31-byte Call-IDs)
// each followed by its UDP connection, as the sip-pe capture shows.
func benchEntries(b *testing.B, kind string) []Entry {
	var next func(i int) Entry
	switch kind {
	case "ipv4":
		next = func(i int) Entry { return tcpConn(uint16(i)) }
	case "sip":
		next = func(i int) Entry {
			if i%2 == 0 {
				return sipTemplate(fmt.Sprintf("a84b4c76e667%02d@pc33.example.com", i))
			}
			e := tcpConn(uint16(40000 + i))
			e.Protocol, e.Flags, e.State, e.Timeout = udp, FlagInactive, 0, 300
			e.CAddr = netip.MustParseAddr("192.0.2.10")
			return e
		}
	}
	bl, _ := NewBuilder(V1, 1, MasterMaxLen(0, false))
	var entries []Entry
	for i := 0; ; i++ {
		e := next(i)
		if ok, err := bl.Add(&e); err != nil {
			b.Fatal(err)
		} else if !ok {
			return entries
		}
		entries = append(entries, e)
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, kind := range []string{"ipv4", "sip"} {
		entries := benchEntries(b, kind)
		data, err := (&Message{Version: V1, SyncID: 1, Entries: entries}).MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%s-%d", kind, len(entries)), func(b *testing.B) {
			var m Message
			d := Decoder{SyncID: 1}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.DecodeInto(&m, data); err != nil || len(m.Entries) != len(entries) {
					b.Fatalf("%d entries, %v", len(m.Entries), err)
				}
			}
			b.ReportMetric(float64(len(entries))*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, kind := range []string{"ipv4", "sip"} {
		entries := benchEntries(b, kind)
		b.Run(fmt.Sprintf("builder/%s-%d", kind, len(entries)), func(b *testing.B) {
			bl, _ := NewBuilder(V1, 1, MasterMaxLen(0, false))
			b.ReportAllocs()
			for b.Loop() {
				bl.Reset()
				for i := range entries {
					if ok, err := bl.Add(&entries[i]); !ok || err != nil {
						b.Fatal(ok, err)
					}
				}
				b.SetBytes(int64(len(bl.Bytes())))
			}
			b.ReportMetric(float64(len(entries))*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
		b.Run(fmt.Sprintf("append/%s-%d", kind, len(entries)), func(b *testing.B) {
			m := Message{Version: V1, SyncID: 1, Entries: entries}
			buf := make([]byte, 0, 1500)
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = m.AppendBinary(buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf)))
			b.ReportMetric(float64(len(entries))*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
