package syncd

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbha/lbha/persist"
	"github.com/lbha/lbha/syncd/wire"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestToWire(t *testing.T) {
	tests := []struct {
		name    string
		in      persist.Entry
		timeout uint32
		want    wire.Entry
		wantOK  bool
	}{
		{
			name: "DR template",
			in: persist.Entry{Proto: 6, Client: ap("192.0.2.10:0"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.12:80"),
				Flags: 0x1183, State: persist.TemplateAssured, Fwmark: 7},
			timeout: 360,
			want: wire.Entry{Protocol: 6, Flags: 0x1183, State: 1, CPort: 0, VPort: 80, DPort: 80, FWMark: 7, Timeout: 360,
				CAddr: netip.MustParseAddr("192.0.2.10"), VAddr: netip.MustParseAddr("192.0.2.100"), DAddr: netip.MustParseAddr("198.51.100.12")},
			wantOK: true,
		},
		{
			name: "HASHED and the sequence flags are never sent",
			in: persist.Entry{Proto: 6, Client: ap("192.0.2.10:1234"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.12:80"),
				Flags: 0x0683 | persist.FlagHashed, State: persist.TCPEstablished},
			timeout: 900,
			want: wire.Entry{Protocol: 6, Flags: 0x0083, State: 1, CPort: 1234, VPort: 80, DPort: 80, Timeout: 900,
				CAddr: netip.MustParseAddr("192.0.2.10"), VAddr: netip.MustParseAddr("192.0.2.100"), DAddr: netip.MustParseAddr("198.51.100.12")},
			wantOK: true,
		},
		{
			name: "SIP template carries the engine's name",
			in: persist.Entry{Proto: 17, Client: ap("192.0.2.10:0"), Virtual: ap("192.0.2.100:5060"), DestAddr: ap("198.51.100.12:5060"),
				Flags: 0x1100, PEData: []byte("call-1@host")},
			timeout: 60,
			want: wire.Entry{Protocol: 17, Flags: 0x1100, VPort: 5060, DPort: 5060, Timeout: 60,
				CAddr: netip.MustParseAddr("192.0.2.10"), VAddr: netip.MustParseAddr("192.0.2.100"), DAddr: netip.MustParseAddr("198.51.100.12"),
				PEData: []byte("call-1@host"), PEName: "sip"},
			wantOK: true,
		},
		{
			name: "IPv6 connection",
			in: persist.Entry{Proto: 132, Client: ap("[2001:db8::1]:9"), Virtual: ap("[2001:db8::100]:80"), DestAddr: ap("[2001:db8:1::11]:80"),
				State: persist.SCTPEstablished},
			timeout: 900,
			want: wire.Entry{Protocol: 132, State: 8, CPort: 9, VPort: 80, DPort: 80, Timeout: 900,
				CAddr: netip.MustParseAddr("2001:db8::1"), VAddr: netip.MustParseAddr("2001:db8::100"), DAddr: netip.MustParseAddr("2001:db8:1::11")},
			wantOK: true,
		},
		{
			name: "IPv4-mapped addresses are IPv4",
			in: persist.Entry{Proto: 6, Client: ap("[::ffff:192.0.2.10]:0"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.12:80"),
				Flags: 0x1000},
			timeout: 1,
			want: wire.Entry{Protocol: 6, Flags: 0x1000, VPort: 80, DPort: 80, Timeout: 1,
				CAddr: netip.MustParseAddr("192.0.2.10"), VAddr: netip.MustParseAddr("192.0.2.100"), DAddr: netip.MustParseAddr("198.51.100.12")},
			wantOK: true,
		},
		{
			name: "a destination of the other family cannot be sent",
			in: persist.Entry{Proto: 6, Client: ap("192.0.2.10:0"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("[2001:db8:1::11]:80"),
				Flags: 0x1000},
			timeout: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got wire.Entry
			ok := toWire(&got, &tc.in, tc.timeout)
			if ok != tc.wantOK {
				t.Fatalf("toWire ok = %v, want %v", ok, tc.wantOK)
			}
			if !ok {
				return
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("toWire (-want +got):\n%s", diff)
			}
			// What a backup makes of it: the flags a kernel backup keeps.
			var back persist.SyncEntry
			fromWire(&back, &got, wire.V1)
			want := persist.SyncEntry{Proto: tc.in.Proto, Client: unmapAP(tc.in.Client), Virtual: unmapAP(tc.in.Virtual), DestAddr: unmapAP(tc.in.DestAddr),
				Flags: persist.Flags(wire.BackupFlags(wire.V1, got.Flags)), State: tc.in.State, Fwmark: tc.in.Fwmark, Timeout: tc.timeout,
				PEData: tc.in.PEData}
			if diff := cmp.Diff(want, back, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("fromWire (-want +got):\n%s", diff)
			}
		})
	}
}

func unmapAP(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }

func TestFromWireV0(t *testing.T) {
	w := wire.Entry{Protocol: 6, Flags: 0x1183 | wire.FlagHashed, State: 1, VPort: 80, DPort: 80,
		CAddr: netip.MustParseAddr("192.0.2.10"), VAddr: netip.MustParseAddr("192.0.2.100"), DAddr: netip.MustParseAddr("198.51.100.12")}
	var got persist.SyncEntry
	fromWire(&got, &w, wire.V0)
	want := persist.SyncEntry{Proto: 6, Client: ap("192.0.2.10:0"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.12:80"),
		Flags: 0x11A3, State: 1}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("fromWire v0 (-want +got):\n%s", diff)
	}
}

func TestSeconds(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want uint32
	}{
		{0, 0}, {-time.Second, 0}, {time.Nanosecond, 1}, {time.Second, 1}, {time.Second + 1, 2},
		{360 * time.Second, 360}, {1 << 62, 1<<32 - 1},
	} {
		if got := seconds(tc.in); got != tc.want {
			t.Errorf("seconds(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestConvertible(t *testing.T) {
	invalid := persist.Entry{Flags: persist.FlagTemplate, Virtual: ap("192.0.2.100:65535"), DestAddr: ap("198.51.100.12:65535")}
	if convertible(&invalid) {
		t.Error("an invalidated template is sent")
	}
	conn := persist.Entry{Virtual: ap("192.0.2.100:65535"), DestAddr: ap("198.51.100.12:65535")}
	if !convertible(&conn) {
		t.Error("a connection to port 65535 is not sent")
	}
}

// TestEstimateLen checks that the queue's size estimate never
// underestimates what the builder writes, so "full" is never late.
func TestEstimateLen(t *testing.T) {
	for _, e := range []persist.Entry{
		{Client: ap("192.0.2.10:0"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.12:80")},
		{Client: ap("[2001:db8::1]:0"), Virtual: ap("[2001:db8::100]:80"), DestAddr: ap("[2001:db8::12]:80")},
		{Client: ap("192.0.2.10:0"), Virtual: ap("192.0.2.100:80"), DestAddr: ap("198.51.100.12:80"), Flags: persist.FlagTemplate, PEData: []byte("abc")},
	} {
		for _, v0 := range []bool{false, true} {
			version := wire.V1
			if v0 {
				version = wire.V0
			}
			b, err := wire.NewBuilder(version, 0, 65535)
			if err != nil {
				t.Fatal(err)
			}
			var w wire.Entry
			toWire(&w, &e, 1)
			before := b.Size()
			for range 2 {
				if ok, err := b.Add(&w); !ok || err != nil {
					if v0 && e.Client.Addr().Is6() {
						break
					}
					t.Fatalf("Add: %v %v", ok, err)
				}
			}
			if v0 && e.Client.Addr().Is6() {
				continue
			}
			// The second entry includes the padding before it.
			if got, per := b.Size()-before, estimateLen(&e, v0); got > 2*per {
				t.Errorf("%v (v0 %v): two entries take %d bytes, estimate %d each", e.Client, v0, got, per)
			}
		}
	}
}
