//go:build linux

package kernel

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	mobyipvs "github.com/moby/ipvs"
)

func TestFakeErrors(t *testing.T) {
	f := &Fake{}
	svc := &mobyipvs.Service{AddressFamily: syscall.AF_INET, Protocol: 6, Address: net.IP{192, 0, 2, 1}, Port: 80, SchedName: "rr"}
	missing := &mobyipvs.Service{AddressFamily: syscall.AF_INET, Protocol: 6, Address: net.IP{192, 0, 2, 1}, Port: 81, SchedName: "rr"}
	v6 := func(mask uint32) *mobyipvs.Service {
		return &mobyipvs.Service{AddressFamily: syscall.AF_INET6, FWMark: 1, SchedName: "rr", Netmask: mask}
	}
	rs := &mobyipvs.Destination{Address: net.IP{10, 0, 0, 1}, Port: 80, Weight: 1}
	other := &mobyipvs.Destination{Address: net.IP{10, 0, 0, 2}, Port: 80, Weight: 1}
	steps := []struct {
		name string
		do   func() error
		want error
	}{
		{"add", func() error { return f.NewService(svc) }, nil},
		{"add again", func() error { return f.NewService(svc) }, syscall.EEXIST},
		{"update missing", func() error { return f.UpdateService(missing) }, syscall.ESRCH},
		{"delete missing", func() error { return f.DelService(missing) }, syscall.ESRCH},
		{"unknown scheduler", func() error {
			return f.NewService(&mobyipvs.Service{AddressFamily: syscall.AF_INET, FWMark: 9, SchedName: "xx"})
		}, syscall.ENOENT},
		{"unknown engine", func() error {
			return f.NewService(&mobyipvs.Service{AddressFamily: syscall.AF_INET, FWMark: 9, SchedName: "rr", PEName: "xx"})
		}, syscall.ENOENT},
		{"no family", func() error { return f.NewService(&mobyipvs.Service{FWMark: 9, SchedName: "rr"}) }, syscall.EAFNOSUPPORT},
		{"IPv6 netmask 0", func() error { return f.NewService(v6(0)) }, syscall.EINVAL},
		{"IPv6 netmask 129", func() error { return f.NewService(v6(129)) }, syscall.EINVAL},
		// /64 sent as a big-endian number, the mistake of applying the
		// IPv4 byte swap to a prefix length.
		{"IPv6 netmask byte-swapped", func() error { return f.NewService(v6(64 << 24)) }, syscall.EINVAL},
		{"IPv6 /64", func() error { return f.NewService(v6(64)) }, nil},
		{"IPv6 update to 0", func() error { return f.UpdateService(v6(0)) }, syscall.EINVAL},
		{"real server", func() error { return f.NewDestination(svc, rs) }, nil},
		{"real server again", func() error { return f.NewDestination(svc, rs) }, syscall.EEXIST},
		{"real server of a missing service", func() error { return f.NewDestination(missing, rs) }, syscall.ESRCH},
		{"list real servers of a missing service", func() error { _, err := f.GetDestinations(missing); return err }, syscall.ESRCH},
		{"update missing real server", func() error { return f.UpdateDestination(svc, other) }, syscall.ENOENT},
		{"delete missing real server", func() error { return f.DelDestination(svc, other) }, syscall.ENOENT},
		{"negative weight", func() error {
			return f.NewDestination(svc, &mobyipvs.Destination{Address: net.IP{10, 0, 0, 3}, Weight: -1})
		}, syscall.ERANGE},
		{"lower threshold above upper", func() error {
			return f.UpdateDestination(svc, &mobyipvs.Destination{Address: rs.Address, Port: 80, UpperThreshold: 1, LowerThreshold: 2})
		}, syscall.ERANGE},
		{"delete real server", func() error { return f.DelDestination(svc, rs) }, nil},
		{"delete", func() error { return f.DelService(svc) }, nil},
		{"close", func() error { f.Close(); return nil }, nil},
		{"after close", func() error { _, err := f.GetServices(); return err }, syscall.EBADF},
	}
	for _, s := range steps {
		if err := s.do(); !errors.Is(err, s.want) || (s.want == nil && err != nil) {
			t.Errorf("%s: %v, want %v", s.name, err, s.want)
		}
	}
}

// The Fake reads what moby sends as the kernel does, so the pitfalls the
// backend avoids are visible in it.
func TestFakeReadsAsTheKernel(t *testing.T) {
	f := &Fake{}
	svc := &mobyipvs.Service{AddressFamily: syscall.AF_INET, Protocol: 17, Address: net.IP{192, 0, 2, 1}, Port: 5060, SchedName: "rr",
		Flags: svcPersistent, Timeout: 60, Netmask: 0x00ffffff, PEName: "sip"}
	must(t, f.NewService(svc))
	svc.SchedName = "changed" // the Fake keeps a copy, not the caller's struct
	// No real server family on the wire: an IPv6 address given to an IPv4
	// service is read as the IPv4 address of its first four bytes.
	must(t, f.NewDestination(svc, &mobyipvs.Destination{Address: net.ParseIP("fd00::11"), Port: 5060, Weight: 70000}))

	got, err := f.GetServices()
	if err != nil {
		t.Fatal(err)
	}
	want := []*mobyipvs.Service{{AddressFamily: syscall.AF_INET, Protocol: 17, Address: net.IP{192, 0, 2, 1}, Port: 5060, SchedName: "rr",
		Flags: svcPersistent | svcHashed, Timeout: 60, Netmask: 0x00ffffff}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("services as moby reads them (-want +got):\n%s", diff)
	}
	pes, err := f.ServicePEs()
	if err != nil || len(pes) != 1 || pes[0].PEName != "sip" || pes[0].Port != 5060 {
		t.Errorf("ServicePEs: %+v, %v", pes, err)
	}
	ds, err := f.GetDestinations(svc)
	if err != nil {
		t.Fatal(err)
	}
	wantDests := []*mobyipvs.Destination{{Address: net.IP{0xfd, 0, 0, 0}, Port: 5060, Weight: 70000 - 65536, AddressFamily: syscall.AF_INET}}
	if diff := cmp.Diff(wantDests, ds); diff != "" {
		t.Errorf("real servers as moby reads them (-want +got):\n%s", diff)
	}
	raw := f.Raw()
	if len(raw) != 1 || raw[0].Service.PEName != "sip" || raw[0].Service.SchedName != "rr" || raw[0].Service.Flags != svcPersistent || len(raw[0].Dests) != 1 ||
		!raw[0].Dests[0].Address.Equal(net.ParseIP("fd00::11")) || raw[0].Dests[0].Weight != 70000 {
		t.Errorf("raw %+v", raw)
	}
	if f.Writes() != 2 {
		t.Errorf("%d writes", f.Writes())
	}
}
