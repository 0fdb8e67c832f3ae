//go:build linux

package kernel

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	mobyipvs "github.com/moby/ipvs"
)

// Fake is a Handle (and PEReader) that keeps services in memory with the
// kernel's semantics, as seen through moby/ipvs v1.1.0, for tests of code
// above the kernel. It keeps the raw structs it receives, so tests can
// check what would go on the wire (Raw), and it answers as moby would:
//
//   - errors are syscall.Errno values as the kernel returns them
//     (ip_vs_genl_set_cmd and friends): adding a service or real server
//     that exists gives EEXIST; a command on a missing service gives ESRCH
//     (not ENOENT: the kernel checks the service first); updating or
//     deleting a missing real server gives ENOENT; an unknown scheduler or
//     persistence engine gives ENOENT; an IPv6 service whose netmask is
//     outside 1..128 gives EINVAL; a family other than AF_INET/AF_INET6
//     gives EAFNOSUPPORT; a negative weight or a lower threshold above the
//     upper gives ERANGE; any call after Close gives EBADF;
//   - addresses are read as the kernel reads moby's attributes: the bytes
//     moby sends (4 for an IPv4 address, 16 otherwise) in the family of
//     the service, for real servers too since moby sends no real server
//     family;
//   - services read back with HASHED added to their flags, without their
//     persistence engine (moby does not parse it; ServicePEs has it), and
//     with real server weights cut to 16 bits (moby reads them so).
//
// Schedulers known to the Fake are the kernel's: rr wrr lc wlc lblc lblcr
// dh sh sed nq fo ovf mh twos; the only persistence engine is sip.
//
// Fake is safe for concurrent use. The zero value is an empty Fake.
type Fake struct {
	mu     sync.Mutex
	svcs   map[mobyKey]*fakeService
	writes int
	closed bool
}

type fakeService struct {
	raw   mobyipvs.Service // as last received
	key   mobyKey
	stats mobyipvs.SvcStats
	dests []*fakeDest
}

type fakeDest struct {
	raw           mobyipvs.Destination // as last received
	addr          netip.AddrPort       // as the kernel read it
	active, inact int
	stats         mobyipvs.DstStats
}

// FakeService is a service as the Fake last received it, with its real
// servers as received, in the order they were added.
type FakeService struct {
	Service mobyipvs.Service
	Dests   []mobyipvs.Destination
}

var (
	_ Handle   = (*Fake)(nil)
	_ PEReader = (*Fake)(nil)
)

var (
	fakeSchedulers = map[string]bool{"rr": true, "wrr": true, "lc": true, "wlc": true, "lblc": true, "lblcr": true,
		"dh": true, "sh": true, "sed": true, "nq": true, "fo": true, "ovf": true, "mh": true, "twos": true}
	fakePEs = map[string]bool{"sip": true}
)

// wireAddr returns the address the kernel reads from the address moby
// sends: net.IP.To4's 4 bytes when there are any, else the slice as is,
// copied into a zeroed 16-byte union read in family af.
func wireAddr(ip net.IP, af uint16) (netip.Addr, error) {
	raw := []byte(ip)
	if v4 := ip.To4(); v4 != nil {
		raw = v4
	}
	var u [16]byte
	copy(u[:], raw)
	switch af {
	case syscall.AF_INET:
		return netip.AddrFrom4([4]byte(u[:4])), nil
	case syscall.AF_INET6:
		return netip.AddrFrom16(u), nil
	}
	return netip.Addr{}, syscall.EAFNOSUPPORT
}

// lookupKey returns the key the kernel looks a service up by: the fwmark
// if one is sent, else protocol, address and port.
func lookupKey(s *mobyipvs.Service) (mobyKey, error) {
	if s == nil {
		return mobyKey{}, syscall.EINVAL
	}
	if s.AddressFamily != syscall.AF_INET && s.AddressFamily != syscall.AF_INET6 {
		return mobyKey{}, syscall.EAFNOSUPPORT
	}
	if s.FWMark != 0 {
		return mobyKey{af: s.AddressFamily, fwmark: s.FWMark}, nil
	}
	a, err := wireAddr(s.Address, s.AddressFamily)
	if err != nil {
		return mobyKey{}, err
	}
	return mobyKey{af: s.AddressFamily, proto: s.Protocol, addr: a, port: s.Port}, nil
}

// checkSettings refuses what ip_vs_add_service and ip_vs_edit_service
// refuse.
func checkSettings(s *mobyipvs.Service) error {
	if !fakeSchedulers[s.SchedName] {
		return syscall.ENOENT
	}
	if s.PEName != "" && !fakePEs[s.PEName] {
		return syscall.ENOENT
	}
	if s.AddressFamily == syscall.AF_INET6 && (s.Netmask < 1 || s.Netmask > 128) {
		return syscall.EINVAL
	}
	return nil
}

func cloneService(s *mobyipvs.Service) mobyipvs.Service {
	c := *s
	c.Address = slices.Clone(s.Address)
	return c
}

func cloneDest(d *mobyipvs.Destination) mobyipvs.Destination {
	c := *d
	c.Address = slices.Clone(d.Address)
	return c
}

// service finds the service a command names; the caller holds f.mu.
func (f *Fake) service(s *mobyipvs.Service) (*fakeService, mobyKey, error) {
	if f.closed {
		return nil, mobyKey{}, syscall.EBADF
	}
	k, err := lookupKey(s)
	if err != nil {
		return nil, k, err
	}
	return f.svcs[k], k, nil
}

// existing finds a service a command needs, ESRCH when there is none (the
// kernel's answer for a missing service).
func (f *Fake) existing(s *mobyipvs.Service) (*fakeService, error) {
	fs, _, err := f.service(s)
	if err == nil && fs == nil {
		err = syscall.ESRCH
	}
	return fs, err
}

// existingDest finds a real server a command needs, ENOENT when there is
// none.
func (fs *fakeService) existingDest(d *mobyipvs.Destination) (int, error) {
	i, _, err := fs.dest(d)
	if err == nil && i < 0 {
		err = syscall.ENOENT
	}
	return i, err
}

// NewService adds a service.
func (f *Fake) NewService(s *mobyipvs.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, k, err := f.service(s)
	switch {
	case err != nil:
		return err
	case fs != nil:
		return syscall.EEXIST
	}
	if err := checkSettings(s); err != nil {
		return err
	}
	if f.svcs == nil {
		f.svcs = map[mobyKey]*fakeService{}
	}
	f.svcs[k] = &fakeService{raw: cloneService(s), key: k}
	f.writes++
	return nil
}

// UpdateService changes a service's settings.
func (f *Fake) UpdateService(s *mobyipvs.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, err := f.existing(s)
	if err != nil {
		return err
	}
	if err := checkSettings(s); err != nil {
		return err
	}
	fs.raw = cloneService(s)
	f.writes++
	return nil
}

// DelService deletes a service and its real servers.
func (f *Fake) DelService(s *mobyipvs.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, k, err := f.service(s)
	switch {
	case err != nil:
		return err
	case fs == nil:
		return syscall.ESRCH
	}
	delete(f.svcs, k)
	f.writes++
	return nil
}

// GetServices returns the services as moby would parse them.
func (f *Fake) GetServices() ([]*mobyipvs.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, syscall.EBADF
	}
	out := make([]*mobyipvs.Service, 0, len(f.svcs))
	for _, fs := range f.sorted() {
		out = append(out, fs.read())
	}
	return out, nil
}

// read returns the service as moby parses the kernel's reply.
func (fs *fakeService) read() *mobyipvs.Service {
	s := &mobyipvs.Service{
		AddressFamily: fs.key.af,
		FWMark:        fs.key.fwmark,
		SchedName:     fs.raw.SchedName,
		Flags:         fs.raw.Flags | svcHashed,
		Timeout:       fs.raw.Timeout,
		Netmask:       fs.raw.Netmask,
		Stats:         fs.stats,
	}
	if fs.key.fwmark == 0 {
		s.Protocol = fs.key.proto
		s.Address = net.IP(fs.key.addr.AsSlice())
		s.Port = fs.key.port
	}
	return s
}

// sorted returns the services in a stable order (the kernel dumps them in
// hash order, which callers must not rely on either).
func (f *Fake) sorted() []*fakeService {
	out := make([]*fakeService, 0, len(f.svcs))
	for _, fs := range f.svcs {
		out = append(out, fs)
	}
	slices.SortFunc(out, func(a, b *fakeService) int {
		return cmp.Or(cmp.Compare(a.key.fwmark, b.key.fwmark), cmp.Compare(a.key.af, b.key.af),
			cmp.Compare(a.key.proto, b.key.proto), a.key.addr.Compare(b.key.addr), cmp.Compare(a.key.port, b.key.port))
	})
	return out
}

// ServicePEs returns the services that have a persistence engine.
func (f *Fake) ServicePEs() ([]*mobyipvs.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, syscall.EBADF
	}
	var out []*mobyipvs.Service
	for _, fs := range f.sorted() {
		if fs.raw.PEName != "" {
			s := fs.read()
			s.PEName = fs.raw.PEName
			out = append(out, s)
		}
	}
	return out, nil
}

// dest finds a real server of fs; the caller holds f.mu.
func (fs *fakeService) dest(d *mobyipvs.Destination) (int, netip.AddrPort, error) {
	if d == nil {
		return -1, netip.AddrPort{}, syscall.EINVAL
	}
	a, err := wireAddr(d.Address, fs.key.af)
	if err != nil {
		return -1, netip.AddrPort{}, err
	}
	ap := netip.AddrPortFrom(a, d.Port)
	return slices.IndexFunc(fs.dests, func(x *fakeDest) bool { return x.addr == ap }), ap, nil
}

// checkDest refuses what ip_vs_add_dest and ip_vs_edit_dest refuse.
func checkDest(d *mobyipvs.Destination) error {
	if int32(uint32(d.Weight)) < 0 || d.LowerThreshold > d.UpperThreshold {
		return syscall.ERANGE
	}
	return nil
}

// NewDestination adds a real server to a service.
func (f *Fake) NewDestination(s *mobyipvs.Service, d *mobyipvs.Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, err := f.existing(s)
	if err != nil {
		return err
	}
	i, ap, err := fs.dest(d)
	switch {
	case err != nil:
		return err
	case i >= 0:
		return syscall.EEXIST
	}
	if err := checkDest(d); err != nil {
		return err
	}
	fs.dests = append(fs.dests, &fakeDest{raw: cloneDest(d), addr: ap})
	f.writes++
	return nil
}

// UpdateDestination changes a real server's settings.
func (f *Fake) UpdateDestination(s *mobyipvs.Service, d *mobyipvs.Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, err := f.existing(s)
	if err != nil {
		return err
	}
	i, err := fs.existingDest(d)
	if err != nil {
		return err
	}
	if err := checkDest(d); err != nil {
		return err
	}
	fs.dests[i].raw = cloneDest(d)
	f.writes++
	return nil
}

// DelDestination removes a real server.
func (f *Fake) DelDestination(s *mobyipvs.Service, d *mobyipvs.Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, err := f.existing(s)
	if err != nil {
		return err
	}
	i, err := fs.existingDest(d)
	if err != nil {
		return err
	}
	fs.dests = slices.Delete(fs.dests, i, i+1)
	f.writes++
	return nil
}

// GetDestinations returns a service's real servers as moby would parse
// them.
func (f *Fake) GetDestinations(s *mobyipvs.Service) ([]*mobyipvs.Destination, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, _, err := f.service(s)
	switch {
	case err != nil:
		return nil, err
	case fs == nil:
		return nil, syscall.ESRCH
	}
	out := make([]*mobyipvs.Destination, len(fs.dests))
	for i, d := range fs.dests {
		out[i] = &mobyipvs.Destination{
			Address:             net.IP(d.addr.Addr().AsSlice()),
			Port:                d.addr.Port(),
			Weight:              int(uint16(d.raw.Weight)),
			ConnectionFlags:     d.raw.ConnectionFlags & mobyipvs.ConnFwdMask,
			AddressFamily:       fs.key.af,
			UpperThreshold:      d.raw.UpperThreshold,
			LowerThreshold:      d.raw.LowerThreshold,
			ActiveConnections:   d.active,
			InactiveConnections: d.inact,
			Stats:               d.stats,
		}
	}
	return out, nil
}

// Close makes every later call fail with EBADF.
func (f *Fake) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
}

// Raw returns every service and real server as last received, services in
// a stable order.
func (f *Fake) Raw() []FakeService {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []FakeService
	for _, fs := range f.sorted() {
		r := FakeService{Service: cloneService(&fs.raw)}
		for _, d := range fs.dests {
			r.Dests = append(r.Dests, cloneDest(&d.raw))
		}
		out = append(out, r)
	}
	return out
}

// Writes returns how many changes the Fake has accepted.
func (f *Fake) Writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}

// SetServiceStats sets the counters GetServices reports for a service.
func (f *Fake) SetServiceStats(s *mobyipvs.Service, st mobyipvs.SvcStats) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, err := f.existing(s)
	if err != nil {
		return err
	}
	fs.stats = st
	return nil
}

// SetDestStats sets the connection counts and counters GetDestinations
// reports for a real server.
func (f *Fake) SetDestStats(s *mobyipvs.Service, d *mobyipvs.Destination, active, inact int, st mobyipvs.DstStats) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, err := f.existing(s)
	if err != nil {
		return err
	}
	i, _, err := fs.dest(d)
	switch {
	case err != nil:
		return err
	case i < 0:
		return fmt.Errorf("fake: no real server %v:%d: %w", d.Address, d.Port, syscall.ENOENT)
	}
	fs.dests[i].active, fs.dests[i].inact, fs.dests[i].stats = active, inact, st
	return nil
}
