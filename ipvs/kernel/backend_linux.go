//go:build linux

package kernel

import (
	"cmp"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"

	mobyipvs "github.com/moby/ipvs"

	"github.com/lbha/lbha/ipvs"
)

// Backend is the kernel's IPVS as an ipvs.Programmer and ipvs.Observer.
// It is safe for concurrent use: calls to the kernel are serialised,
// because moby/ipvs shares one netlink socket per handle and a reply read
// by the wrong caller is dropped, leaving the other waiting for it.
type Backend struct {
	mu       sync.Mutex // guards h
	h        Handle
	connFile string
}

var (
	_ ipvs.Programmer = (*Backend)(nil)
	_ ipvs.Observer   = (*Backend)(nil)
)

// Open returns a backend on the kernel of the current network namespace.
// It fails with an error wrapping ErrNoIPVS when the kernel has no IPVS:
// moby's ipvs.New succeeds there and every later call fails obscurely, so
// the generic netlink family is looked up first. Looking it up first also
// matters afterwards: moby resolves the family once per process, and if
// that happened while ip_vs was not loaded, no later handle would work.
//
// Every change needs CAP_NET_ADMIN; reading state does not.
func Open() (*Backend, error) {
	c, f, err := dialIPVS()
	if err != nil {
		return nil, fmt.Errorf("kernel: open: %w", err)
	}
	h, err := mobyipvs.New("")
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("kernel: open moby/ipvs handle: %w", err)
	}
	return NewBackend(&netlinkHandle{Handle: h, c: c, family: f}, ProcConnFile), nil
}

// NewBackend returns a backend on h, reading connections from connFile (a
// file in the format of /proc/net/ip_vs_conn). If h is also a PEReader,
// State and Status report persistence engines; otherwise they report none.
func NewBackend(h Handle, connFile string) *Backend {
	return &Backend{h: h, connFile: connFile}
}

// Close releases the handle.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.h.Close()
	return nil
}

// State returns the services and real servers the kernel holds, sorted as
// ipvsadm lists them.
func (b *Backend) State() ([]ipvs.ServiceState, error) {
	st, err := b.Status()
	if err != nil {
		return nil, err
	}
	out := make([]ipvs.ServiceState, len(st))
	for i, s := range st {
		out[i] = ipvs.ServiceState{Service: s.Service, Dests: make([]ipvs.Dest, len(s.Dests))}
		for j, d := range s.Dests {
			out[i].Dests[j] = d.Dest
		}
	}
	return out, nil
}

// Status returns every service with its real servers and the kernel's
// counters. PersistConns stays 0: moby/ipvs v1.1.0 does not read
// IPVS_DEST_ATTR_PERSIST_CONNS. Health fields are left for the caller.
func (b *Backend) Status() ([]ipvs.ServiceStatus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	svcs, err := b.services()
	if err != nil {
		return nil, err
	}
	out := make([]ipvs.ServiceStatus, 0, len(svcs))
	for _, m := range svcs {
		s, err := fromService(m)
		if err != nil {
			return nil, fmt.Errorf("kernel: read service %+v: %w", keyOf(m), err)
		}
		ds, err := b.h.GetDestinations(m)
		if err != nil {
			return nil, fmt.Errorf("kernel: list real servers of %s: %w", s.Key, err)
		}
		ss := ipvs.ServiceStatus{Service: s, Dests: make([]ipvs.DestStatus, 0, len(ds))}
		ss.Stats, ss.Rates = stats(m.Stats)
		for _, md := range ds {
			d, err := fromDest(md)
			if err != nil {
				return nil, fmt.Errorf("kernel: read real server of %s: %w", s.Key, err)
			}
			dst := ipvs.DestStatus{Dest: d, ActiveConns: md.ActiveConnections, InactConns: md.InactiveConnections}
			dst.Stats, dst.Rates = stats(mobyipvs.SvcStats(md.Stats))
			ss.Dests = append(ss.Dests, dst)
		}
		slices.SortFunc(ss.Dests, func(x, y ipvs.DestStatus) int { return x.Addr.Compare(y.Addr) })
		out = append(out, ss)
	}
	slices.SortFunc(out, func(x, y ipvs.ServiceStatus) int { return compareKeys(x.Key, y.Key) })
	return out, nil
}

// services lists the kernel's services with their persistence engines
// filled in from the PEReader, if any.
func (b *Backend) services() ([]*mobyipvs.Service, error) {
	svcs, err := b.h.GetServices()
	if err != nil {
		return nil, fmt.Errorf("kernel: list services: %w", err)
	}
	r, ok := b.h.(PEReader)
	if !ok {
		return svcs, nil
	}
	pes, err := r.ServicePEs()
	if err != nil {
		return nil, fmt.Errorf("kernel: list persistence engines: %w", err)
	}
	if len(pes) == 0 {
		return svcs, nil
	}
	byKey := make(map[mobyKey]string, len(pes))
	for _, s := range pes {
		byKey[keyOf(s)] = s.PEName
	}
	for _, s := range svcs {
		s.PEName = byKey[keyOf(s)]
	}
	return svcs, nil
}

// mobyKey identifies a moby service as the kernel does.
type mobyKey struct {
	af     uint16
	fwmark uint32
	proto  uint16
	addr   netip.Addr
	port   uint16
}

func keyOf(s *mobyipvs.Service) mobyKey {
	if s.FWMark != 0 {
		return mobyKey{af: s.AddressFamily, fwmark: s.FWMark}
	}
	a, _ := netip.AddrFromSlice(s.Address)
	return mobyKey{af: s.AddressFamily, proto: s.Protocol, addr: a.Unmap(), port: s.Port}
}

// Apply performs one operation. Deletions and real server commands send
// only what identifies the service, as the kernel reads no more.
func (b *Backend) Apply(op ipvs.Op) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := op.Service.Key
	switch op.Kind {
	case ipvs.AddService, ipvs.UpdateService:
		m, err := toService(op.Service)
		if err == nil {
			if op.Kind == ipvs.AddService {
				err = b.h.NewService(m)
			} else {
				err = b.h.UpdateService(m)
			}
		}
		if err != nil {
			return fmt.Errorf("kernel: %s service %s: %w", verb(op.Kind), k, err)
		}
	case ipvs.DelService:
		m, err := serviceKey(k)
		if err == nil {
			err = b.h.DelService(m)
		}
		if err != nil {
			return fmt.Errorf("kernel: delete service %s: %w", k, err)
		}
	case ipvs.AddDest, ipvs.UpdateDest, ipvs.DelDest:
		if err := b.applyDest(op); err != nil {
			return fmt.Errorf("kernel: %s real server %s of %s: %w", verb(op.Kind), op.Dest.Addr, k, err)
		}
	default:
		return fmt.Errorf("kernel: unknown operation %d on %s", op.Kind, k)
	}
	return nil
}

func verb(k ipvs.OpKind) string {
	switch k {
	case ipvs.AddService, ipvs.AddDest:
		return "add"
	case ipvs.UpdateService, ipvs.UpdateDest:
		return "update"
	}
	return "delete"
}

func (b *Backend) applyDest(op ipvs.Op) error {
	s, err := serviceKey(op.Service.Key)
	if err != nil {
		return err
	}
	if op.Kind == ipvs.DelDest {
		d, err := destKey(op.Service.Key, op.Dest.Addr)
		if err != nil {
			return err
		}
		return b.h.DelDestination(s, d)
	}
	d, err := toDest(op.Service.Key, op.Dest)
	if err != nil {
		return err
	}
	if op.Kind == ipvs.AddDest {
		return b.h.NewDestination(s, d)
	}
	return b.h.UpdateDestination(s, d)
}

// Conns returns the connections and templates of the backend's connection
// file.
func (b *Backend) Conns() ([]ipvs.Conn, error) {
	f, err := os.Open(b.connFile)
	if err != nil {
		return nil, fmt.Errorf("kernel: connections: %w", err)
	}
	defer f.Close()
	return ParseConns(f)
}

// compareKeys orders services as ipvsadm lists them (and as ipvs.Plan
// does): fwmark, family, protocol, address, port.
func compareKeys(a, b ipvs.ServiceKey) int {
	bit := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	return cmp.Or(cmp.Compare(a.Fwmark, b.Fwmark), cmp.Compare(bit(a.IPv6), bit(b.IPv6)),
		cmp.Compare(a.Protocol, b.Protocol), a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
}
