//go:build linux

package kernel

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	mobyipvs "github.com/moby/ipvs"

	"github.com/lbha/lbha/dest"
	"github.com/lbha/lbha/ipvs"
)

var (
	vip4 = netip.MustParseAddr("192.0.2.100")
	vip6 = netip.MustParseAddr("2001:db8::100")
)

// kernelMask says what the kernel makes of moby's netmask attribute: it
// copies the four bytes moby writes in native order into svc->netmask, a
// __be32 for IPv4 (shown as a dotted mask) and a plain number for IPv6.
func kernelMask(m *mobyipvs.Service) string {
	b := binary.NativeEndian.AppendUint32(nil, m.Netmask)
	if m.AddressFamily == syscall.AF_INET6 {
		return fmt.Sprintf("/%d", binary.NativeEndian.Uint32(b))
	}
	return netip.AddrFrom4([4]byte(b)).String()
}

// readBack is what State sees of a service the kernel accepted: the same
// fields with HASHED set (the PE name comes from the PEReader).
func readBack(m *mobyipvs.Service) *mobyipvs.Service {
	r := *m
	r.Flags |= svcHashed
	return &r
}

func TestServiceConversion(t *testing.T) {
	tests := []struct {
		name string
		svc  ipvs.Service
		want mobyipvs.Service // on the wire, Netmask aside
		mask string           // the netmask as the kernel reads it
		// back is what State reports, when it differs from svc.
		back *ipvs.Service
	}{
		{
			name: "TCP, not persistent",
			svc:  ipvs.Service{Key: ipvs.ServiceKey{Protocol: 6, Addr: vip4, Port: 80}, Scheduler: "wlc", Netmask: 0xffffffff},
			want: mobyipvs.Service{AddressFamily: syscall.AF_INET, Protocol: 6, Address: net.IP{192, 0, 2, 100}, Port: 80, SchedName: "wlc"},
			mask: "255.255.255.255",
		},
		{
			name: "persistent, mask 255.255.255.0",
			svc:  ipvs.Service{Key: ipvs.ServiceKey{Protocol: 6, Addr: vip4, Port: 80}, Scheduler: "wlc", Timeout: 360, Netmask: 0xffffff00},
			want: mobyipvs.Service{AddressFamily: syscall.AF_INET, Protocol: 6, Address: net.IP{192, 0, 2, 100}, Port: 80, SchedName: "wlc",
				Timeout: 360, Flags: svcPersistent},
			mask: "255.255.255.0",
		},
		{
			name: "persistent, mask 255.255.0.0",
			svc:  ipvs.Service{Key: ipvs.ServiceKey{Protocol: 6, Addr: vip4, Port: 443}, Scheduler: "rr", Timeout: 60, Netmask: 0xffff0000},
			want: mobyipvs.Service{AddressFamily: syscall.AF_INET, Protocol: 6, Address: net.IP{192, 0, 2, 100}, Port: 443, SchedName: "rr",
				Timeout: 60, Flags: svcPersistent},
			mask: "255.255.0.0",
		},
		{
			name: "UDP, mask 0.0.0.0, sip, one-packet",
			svc: ipvs.Service{Key: ipvs.ServiceKey{Protocol: 17, Addr: vip4, Port: 5060}, Scheduler: "rr", Timeout: 60, Netmask: 0,
				PE: "sip", OnePacket: true},
			want: mobyipvs.Service{AddressFamily: syscall.AF_INET, Protocol: 17, Address: net.IP{192, 0, 2, 100}, Port: 5060, SchedName: "rr",
				Timeout: 60, Flags: svcPersistent | svcOnePacket, PEName: "sip"},
			mask: "0.0.0.0",
		},
		{
			name: "SCTP, sched flags 1..3",
			svc: ipvs.Service{Key: ipvs.ServiceKey{Protocol: 132, Addr: vip4, Port: 3868}, Scheduler: "sh",
				Flags: svcSched1 | svcSched2 | svcSched3, Netmask: 0xffffffff},
			want: mobyipvs.Service{AddressFamily: syscall.AF_INET, Protocol: 132, Address: net.IP{192, 0, 2, 100}, Port: 3868, SchedName: "sh",
				Flags: 0x8 | 0x10 | 0x20},
			mask: "255.255.255.255",
		},
		{
			name: "IPv6 /64",
			svc:  ipvs.Service{Key: ipvs.ServiceKey{Protocol: 6, Addr: vip6, Port: 443}, Scheduler: "wlc", Timeout: 300, Netmask: 64},
			want: mobyipvs.Service{AddressFamily: syscall.AF_INET6, Protocol: 6, Address: net.IP(vip6.AsSlice()), Port: 443,
				SchedName: "wlc", Timeout: 300, Flags: svcPersistent},
			mask: "/64",
		},
		{
			name: "IPv6 /128",
			svc:  ipvs.Service{Key: ipvs.ServiceKey{Protocol: 6, Addr: vip6, Port: 443}, Scheduler: "wlc", Timeout: 300, Netmask: 128},
			want: mobyipvs.Service{AddressFamily: syscall.AF_INET6, Protocol: 6, Address: net.IP(vip6.AsSlice()), Port: 443,
				SchedName: "wlc", Timeout: 300, Flags: svcPersistent},
			mask: "/128",
		},
		{
			name: "IPv6 default prefix, not persistent",
			svc:  ipvs.Service{Key: ipvs.ServiceKey{Protocol: 17, Addr: vip6, Port: 53}, Scheduler: "rr"},
			want: mobyipvs.Service{AddressFamily: syscall.AF_INET6, Protocol: 17, Address: net.IP(vip6.AsSlice()), Port: 53, SchedName: "rr"},
			mask: "/128",
			back: &ipvs.Service{Key: ipvs.ServiceKey{Protocol: 17, Addr: vip6, Port: 53}, Scheduler: "rr", Netmask: 128},
		},
		{
			name: "fwmark",
			svc:  ipvs.Service{Key: ipvs.ServiceKey{Fwmark: 1}, Scheduler: "sh", Flags: svcSched1 | svcSched2, Netmask: 0xffffffff},
			want: mobyipvs.Service{AddressFamily: syscall.AF_INET, FWMark: 1, SchedName: "sh", Flags: 0x18},
			mask: "255.255.255.255",
		},
		{
			name: "fwmark IPv6, persistent /48",
			svc:  ipvs.Service{Key: ipvs.ServiceKey{Fwmark: 7, IPv6: true}, Scheduler: "wrr", Timeout: 120, Netmask: 48, OnePacket: true},
			want: mobyipvs.Service{AddressFamily: syscall.AF_INET6, FWMark: 7, SchedName: "wrr", Timeout: 120, Flags: svcPersistent | svcOnePacket},
			mask: "/48",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := toService(tt.svc)
			if err != nil {
				t.Fatal(err)
			}
			if got := kernelMask(m); got != tt.mask {
				t.Errorf("netmask as the kernel reads it: %s, want %s", got, tt.mask)
			}
			want := tt.want
			want.Netmask = m.Netmask
			if diff := cmp.Diff(&want, m); diff != "" {
				t.Errorf("on the wire (-want +got):\n%s", diff)
			}
			back, err := fromService(readBack(m))
			if err != nil {
				t.Fatal(err)
			}
			wantBack := tt.svc
			if tt.back != nil {
				wantBack = *tt.back
			}
			if diff := cmp.Diff(wantBack, back, addrOpts); diff != "" {
				t.Errorf("read back (-want +got):\n%s", diff)
			}
			if c := Canonical([]ipvs.ServiceState{{Service: tt.svc}}); c[0].Service != wantBack {
				t.Errorf("Canonical gives %+v, State reads %+v", c[0].Service, wantBack)
			}
		})
	}
}

// The pitfall of qemu-ipvs.md, pinned on this machine's byte order: moby
// must be given the native-endian reading of the mask's bytes.
func TestNetmaskByteOrder(t *testing.T) {
	little := binary.NativeEndian.Uint16([]byte{1, 0}) == 1
	for _, tt := range []struct {
		mask uint32 // ipvs.Service.Netmask
		le   uint32 // moby's value on a little-endian machine
	}{
		{0xffffff00, 0x00ffffff},
		{0xffff0000, 0x0000ffff},
		{0xffffffff, 0xffffffff},
		{0, 0},
		{0xfffffff0, 0xf0ffffff},
	} {
		m := netmaskToMoby(false, tt.mask)
		if little && m != tt.le {
			t.Errorf("%#08x goes to moby as %#08x, want %#08x", tt.mask, m, tt.le)
		}
		if !little && m != tt.mask {
			t.Errorf("%#08x goes to moby as %#08x on a big-endian machine", tt.mask, m)
		}
		if back := netmaskFromMoby(false, m); back != tt.mask {
			t.Errorf("%#08x reads back as %#08x", tt.mask, back)
		}
	}
	if little && netmaskToMoby(false, 0xffffff00) == 0xffffff00 {
		t.Error("255.255.255.0 sent as 0xffffff00 would reach the kernel as 0.255.255.255")
	}
	for _, plen := range []uint32{1, 64, 127, 128} {
		if m := netmaskToMoby(true, plen); m != plen || netmaskFromMoby(true, m) != plen {
			t.Errorf("IPv6 /%d goes to moby as %d", plen, m)
		}
	}
	if m := netmaskToMoby(true, 0); m != 128 {
		t.Errorf("IPv6 default prefix goes to moby as %d, want 128", m)
	}
}

// A service read back with flags and fields this package does not manage.
func TestServiceReadBack(t *testing.T) {
	m := &mobyipvs.Service{AddressFamily: syscall.AF_INET, Protocol: 6, Address: net.IP{192, 0, 2, 1}, Port: 80, SchedName: "wlc",
		Flags: svcHashed | 0x40, Timeout: 300, Netmask: 0xffffffff}
	s, err := fromService(m)
	if err != nil {
		t.Fatal(err)
	}
	// Not persistent: the timeout the kernel keeps does not make it so.
	want := ipvs.Service{Key: ipvs.ServiceKey{Protocol: 6, Addr: netip.MustParseAddr("192.0.2.1"), Port: 80}, Scheduler: "wlc", Netmask: 0xffffffff}
	if diff := cmp.Diff(want, s, addrOpts); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	for _, bad := range []*mobyipvs.Service{
		{AddressFamily: 0, FWMark: 1},
		{AddressFamily: syscall.AF_INET, Protocol: 6, Address: net.IP{1, 2, 3}},
		{AddressFamily: syscall.AF_INET, Protocol: 6, Address: net.IP(vip6.AsSlice())},
		{AddressFamily: syscall.AF_INET6, Protocol: 6, Address: net.IP{1, 2, 3, 4}},
		{AddressFamily: syscall.AF_INET, Protocol: 256, Address: net.IP{1, 2, 3, 4}},
	} {
		if s, err := fromService(bad); err == nil {
			t.Errorf("%+v read as %+v", bad, s)
		}
	}
}

func TestServiceConversionErrors(t *testing.T) {
	key := ipvs.ServiceKey{Protocol: 6, Addr: vip4, Port: 80}
	for _, tt := range []struct {
		name string
		svc  ipvs.Service
		want string
	}{
		{"no scheduler", ipvs.Service{Key: key}, "no scheduler"},
		{"persistent bit in Flags", ipvs.Service{Key: key, Scheduler: "rr", Flags: svcPersistent}, "flags 0x1"},
		{"hashed bit in Flags", ipvs.Service{Key: key, Scheduler: "rr", Flags: svcHashed | svcSched1}, "flags 0xa"},
		{"timeout over 31 days", ipvs.Service{Key: key, Scheduler: "rr", Timeout: maxTimeout + 1}, "over 31 days"},
		{"IPv6 prefix 129", ipvs.Service{Key: ipvs.ServiceKey{Protocol: 6, Addr: vip6, Port: 80}, Scheduler: "rr", Netmask: 129}, "129"},
		{"no address", ipvs.Service{Key: ipvs.ServiceKey{Protocol: 6, Port: 80}, Scheduler: "rr"}, "no address"},
		{"no protocol", ipvs.Service{Key: ipvs.ServiceKey{Addr: vip4, Port: 80}, Scheduler: "rr"}, "no protocol"},
		{"mapped address", ipvs.Service{Key: ipvs.ServiceKey{Protocol: 6, Addr: netip.AddrFrom16(vip4.As16()), Port: 80}, Scheduler: "rr"}, "IPv4-mapped"},
		{"zone", ipvs.Service{Key: ipvs.ServiceKey{Protocol: 6, Addr: netip.MustParseAddr("fe80::1%eth0"), Port: 80}, Scheduler: "rr"}, "zone"},
		{"IPv6 flag on an address service", ipvs.Service{Key: ipvs.ServiceKey{Protocol: 6, Addr: vip6, Port: 80, IPv6: true}, Scheduler: "rr"}, "fwmark services only"},
		{"fwmark with address", ipvs.Service{Key: ipvs.ServiceKey{Fwmark: 1, Addr: vip4}, Scheduler: "rr"}, "fwmark service"},
		{"fwmark with protocol", ipvs.Service{Key: ipvs.ServiceKey{Fwmark: 1, Protocol: 6}, Scheduler: "rr"}, "fwmark service"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if m, err := toService(tt.svc); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %+v, %v; want an error containing %q", m, err, tt.want)
			}
		})
	}
}

func TestDestConversion(t *testing.T) {
	svc4 := ipvs.ServiceKey{Protocol: 6, Addr: vip4, Port: 80}
	svc6 := ipvs.ServiceKey{Protocol: 6, Addr: vip6, Port: 80}
	fwm6 := ipvs.ServiceKey{Fwmark: 3, IPv6: true}
	tests := []struct {
		name string
		svc  ipvs.ServiceKey
		d    ipvs.Dest
		want mobyipvs.Destination
	}{
		{"masq", svc4, ipvs.Dest{Addr: ap("10.0.0.11:8080"), Method: dest.Masq, Weight: 1},
			mobyipvs.Destination{Address: net.IP{10, 0, 0, 11}, Port: 8080, Weight: 1, ConnectionFlags: 0, AddressFamily: syscall.AF_INET}},
		{"local", svc4, ipvs.Dest{Addr: ap("10.0.0.11:80"), Method: dest.Local, Weight: 2},
			mobyipvs.Destination{Address: net.IP{10, 0, 0, 11}, Port: 80, Weight: 2, ConnectionFlags: 1, AddressFamily: syscall.AF_INET}},
		{"tunnel (IPIP)", svc4, ipvs.Dest{Addr: ap("10.0.0.11:80"), Method: dest.Tunnel, Weight: 3},
			mobyipvs.Destination{Address: net.IP{10, 0, 0, 11}, Port: 80, Weight: 3, ConnectionFlags: 2, AddressFamily: syscall.AF_INET}},
		{"route, weight 0, thresholds", svc4, ipvs.Dest{Addr: ap("10.0.0.11:80"), Method: dest.Route, Weight: 0, UThreshold: 100, LThreshold: 50},
			mobyipvs.Destination{Address: net.IP{10, 0, 0, 11}, Port: 80, Weight: 0, ConnectionFlags: 3, AddressFamily: syscall.AF_INET,
				UpperThreshold: 100, LowerThreshold: 50}},
		{"max weight", svc4, ipvs.Dest{Addr: ap("10.0.0.11:80"), Method: dest.Route, Weight: 65535},
			mobyipvs.Destination{Address: net.IP{10, 0, 0, 11}, Port: 80, Weight: 65535, ConnectionFlags: 3, AddressFamily: syscall.AF_INET}},
		{"IPv6", svc6, ipvs.Dest{Addr: ap("[fd00::11]:80"), Method: dest.Route, Weight: 1},
			mobyipvs.Destination{Address: net.IP(netip.MustParseAddr("fd00::11").AsSlice()), Port: 80, Weight: 1, ConnectionFlags: 3,
				AddressFamily: syscall.AF_INET6}},
		{"IPv6 fwmark, port 0", fwm6, ipvs.Dest{Addr: ap("[fd00::11]:0"), Method: dest.Masq, Weight: 1},
			mobyipvs.Destination{Address: net.IP(netip.MustParseAddr("fd00::11").AsSlice()), Port: 0, Weight: 1, ConnectionFlags: 0,
				AddressFamily: syscall.AF_INET6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := toDest(tt.svc, tt.d)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&tt.want, m); diff != "" {
				t.Fatalf("on the wire (-want +got):\n%s", diff)
			}
			back, err := fromDest(m)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.d, back, addrOpts); diff != "" {
				t.Fatalf("read back (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDestConversionErrors(t *testing.T) {
	svc4 := ipvs.ServiceKey{Protocol: 6, Addr: vip4, Port: 80}
	fwm4 := ipvs.ServiceKey{Fwmark: 1}
	for _, tt := range []struct {
		name string
		svc  ipvs.ServiceKey
		d    ipvs.Dest
		want string
	}{
		{"GUE tunnel", svc4, ipvs.Dest{Addr: ap("10.0.0.1:80"), Method: dest.Tunnel, TunnelType: 1, TunnelPort: 6080}, "tunnel type 1 port 6080"},
		{"GRE tunnel", svc4, ipvs.Dest{Addr: ap("10.0.0.1:80"), Method: dest.Tunnel, TunnelType: 2}, "tunnel type 2"},
		{"tunnel port alone", svc4, ipvs.Dest{Addr: ap("10.0.0.1:80"), Method: dest.Tunnel, TunnelPort: 1}, "port 1"},
		{"bypass", svc4, ipvs.Dest{Addr: ap("10.0.0.1:80"), Method: dest.Bypass}, "Bypass cannot be configured"},
		{"weight 65536", svc4, ipvs.Dest{Addr: ap("10.0.0.1:80"), Weight: 65536}, "weight 65536"},
		{"negative weight", svc4, ipvs.Dest{Addr: ap("10.0.0.1:80"), Weight: -1}, "weight -1"},
		{"IPv6 real server of an IPv4 service", svc4, ipvs.Dest{Addr: ap("[fd00::1]:80")}, "not in the family"},
		{"IPv6 real server of an IPv4 fwmark service", fwm4, ipvs.Dest{Addr: ap("[fd00::1]:80")}, "not in the family"},
		{"mapped", svc4, ipvs.Dest{Addr: ap("[::ffff:10.0.0.1]:80")}, "IPv4-mapped"},
		{"no address", svc4, ipvs.Dest{}, "no address"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if m, err := toDest(tt.svc, tt.d); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %+v, %v; want an error containing %q", m, err, tt.want)
			}
		})
	}
}
