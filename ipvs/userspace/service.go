package userspace

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/dest"
	"github.com/lbha/lbha/ipvs"
	"github.com/lbha/lbha/ipvs/sched"
	"github.com/lbha/lbha/persist"
)

// service is one virtual service. Its settings and real-server list are
// replaced, never modified, so the packet path reads them without locks.
type service struct {
	p        *Proxy
	key      ipvs.ServiceKey
	settings atomic.Pointer[settings]
	dests    atomic.Pointer[[]*rdest]
	stats    counters

	// Listening sockets, changed under p.mu only.
	tcp *net.TCPListener
	udp *udpService
}

// settings are a service's scheduling parameters.
type settings struct {
	cfg   ipvs.Service
	psvc  persist.Service
	sched sched.Scheduler
}

// rdest is a real server: the table's destination plus its configuration
// and traffic counters.
type rdest struct {
	d     *dest.Dest
	cfg   atomic.Pointer[ipvs.Dest]
	stats counters
}

func (r *rdest) config() ipvs.Dest { return *r.cfg.Load() }

func supported(k ipvs.ServiceKey) error {
	switch {
	case k.Fwmark != 0:
		return fmt.Errorf("fwmark services are %w (use the kernel dataplane)", ErrUnsupported)
	case k.Protocol == persist.ProtoSCTP:
		return fmt.Errorf("SCTP is %w", ErrUnsupported)
	case k.Protocol != persist.ProtoTCP && k.Protocol != persist.ProtoUDP:
		return fmt.Errorf("protocol %d is %w", k.Protocol, ErrUnsupported)
	case k.Port == 0:
		return fmt.Errorf("port-zero services are %w", ErrUnsupported)
	case !k.Addr.IsValid():
		return fmt.Errorf("service without an address")
	}
	return nil
}

func newService(p *Proxy, cfg ipvs.Service) (*service, error) {
	if err := supported(cfg.Key); err != nil {
		return nil, err
	}
	s := &service{p: p, key: cfg.Key}
	st, err := newSettings(cfg, nil)
	if err != nil {
		return nil, err
	}
	s.settings.Store(st)
	s.dests.Store(&[]*rdest{})
	return s, nil
}

// newSettings builds the scheduler and persistence parameters of cfg,
// reusing prev's scheduler when the scheduler did not change (its state,
// such as rr's position, carries on).
func newSettings(cfg ipvs.Service, prev *settings) (*settings, error) {
	st := &settings{cfg: cfg}
	if prev != nil && prev.cfg.Scheduler == cfg.Scheduler && prev.cfg.Flags == cfg.Flags {
		st.sched = prev.sched
	} else {
		sc, err := sched.New(cfg.Scheduler, sched.FlagsFromKernel(cfg.Flags), sched.Options{})
		if err != nil {
			return nil, err
		}
		st.sched = sc
	}
	st.psvc = persist.Service{
		Addr:      cfg.Key.Addr,
		Port:      cfg.Key.Port,
		Timeout:   time.Duration(cfg.Timeout) * time.Second,
		OnePacket: cfg.OnePacket,
		PE:        cfg.PE != "",
	}
	switch cfg.PE {
	case "", "sip":
	default:
		return nil, fmt.Errorf("persistence engine %q is %w", cfg.PE, ErrUnsupported)
	}
	if cfg.PE != "" && cfg.Key.Protocol != persist.ProtoUDP {
		return nil, fmt.Errorf("the sip engine needs a UDP service in the userspace dataplane")
	}
	if cfg.Timeout > 0 {
		if cfg.Key.Addr.Is4() {
			m := cfg.Netmask
			st.psvc.Netmask = netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)})
		} else {
			if cfg.Netmask < 1 || cfg.Netmask > 128 {
				return nil, fmt.Errorf("IPv6 prefix length %d out of 1..128", cfg.Netmask)
			}
			st.psvc.PrefixLen = int(cfg.Netmask)
		}
	}
	return st, nil
}

func (s *service) update(cfg ipvs.Service) error {
	prev := s.settings.Load()
	st, err := newSettings(cfg, prev)
	if err != nil {
		return err
	}
	if st.sched != prev.sched {
		if err := st.sched.Update(destList(*s.dests.Load())); err != nil {
			return err
		}
	}
	s.settings.Store(st)
	return nil
}

func destList(ds []*rdest) []*dest.Dest {
	out := make([]*dest.Dest, len(ds))
	for i, d := range ds {
		out[i] = d.d
	}
	return out
}

// setDests installs a new list in the scheduler, then publishes it.
func (s *service) setDests(ds []*rdest) error {
	if err := s.settings.Load().sched.Update(destList(ds)); err != nil {
		return err
	}
	s.dests.Store(&ds)
	return nil
}

func newDest(cfg ipvs.Dest) *rdest {
	d := dest.New(cfg.Addr.Addr(), cfg.Addr.Port(), cfg.Method, cfg.Weight)
	d.SetThresholds(cfg.UThreshold, cfg.LThreshold)
	r := &rdest{d: d}
	r.cfg.Store(&cfg)
	return r
}

func (s *service) findDest(a netip.AddrPort) int {
	return slices.IndexFunc(*s.dests.Load(), func(d *rdest) bool { return d.config().Addr == a })
}

func (s *service) addDest(cfg ipvs.Dest) error {
	if s.findDest(cfg.Addr) >= 0 {
		return fmt.Errorf("real server exists")
	}
	if cfg.Addr.Addr().Is4() != s.key.Addr.Is4() {
		return fmt.Errorf("real server %s is not in the service's address family", cfg.Addr)
	}
	return s.setDests(append(slices.Clone(*s.dests.Load()), newDest(cfg)))
}

func (s *service) updateDest(cfg ipvs.Dest) error {
	i := s.findDest(cfg.Addr)
	if i < 0 {
		return fmt.Errorf("no such real server")
	}
	ds := slices.Clone(*s.dests.Load())
	old := ds[i]
	if old.config().Method != cfg.Method {
		// The method is part of a destination's identity in the table
		// (connection flags): a new destination replaces the old one,
		// whose connections carry on.
		old.d.SetAvailable(false)
		ds[i] = newDest(cfg)
		return s.setDests(ds)
	}
	old.d.SetWeight(cfg.Weight)
	old.d.SetThresholds(cfg.UThreshold, cfg.LThreshold)
	old.cfg.Store(&cfg)
	return s.setDests(ds) // schedulers recompute from the new weight
}

func (s *service) delDest(a netip.AddrPort) error {
	i := s.findDest(a)
	if i < 0 {
		return fmt.Errorf("no such real server")
	}
	ds := slices.Clone(*s.dests.Load())
	ds[i].d.SetAvailable(false)
	return s.setDests(slices.Delete(ds, i, i+1))
}

// rdestOf finds the rdest of a destination the table returned.
func (s *service) rdestOf(d *dest.Dest) *rdest {
	for _, r := range *s.dests.Load() {
		if r.d == d {
			return r
		}
	}
	return nil
}

// listen opens the service's socket if it is not open; p.mu is held.
func (s *service) listen() error {
	addr := netip.AddrPortFrom(s.key.Addr, s.key.Port)
	switch s.key.Protocol {
	case persist.ProtoTCP:
		if s.tcp != nil {
			return nil
		}
		ln, err := listenTCP(addr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", s.key, err)
		}
		s.tcp = ln
		s.p.wg.Add(1)
		go s.acceptLoop(ln)
	case persist.ProtoUDP:
		if s.udp != nil {
			if !s.udp.draining.Load() {
				return nil
			}
			s.udp.stop() // a draining socket from the last mastership
			s.udp = nil
		}
		c, err := listenUDP(addr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", s.key, err)
		}
		s.udp = newUDPService(s, c)
	}
	return nil
}

// stopListening closes the listening socket; p.mu is held. A UDP socket
// also carries its flows' replies, so in drain mode it stays open (refusing
// new flows) until the drain ends.
func (s *service) stopListening() {
	if s.tcp != nil {
		s.tcp.Close()
		s.tcp = nil
	}
	if s.udp != nil {
		if s.p.cfg.OnStandby == config.StandbyDrain && !s.p.closed {
			s.udp.draining.Store(true)
			u := s.udp
			time.AfterFunc(s.p.cfg.DrainTimeout, func() {
				s.p.mu.Lock()
				defer s.p.mu.Unlock()
				if s.udp == u {
					s.udp = nil
				}
				u.stop()
			})
			return
		}
		s.udp.stop()
		s.udp = nil
	}
}

// counters are traffic totals with a rate estimator.
type counters struct {
	conns, inPkts, outPkts, inBytes, outBytes atomic.Uint64
	est                                       estimator
}

func (c *counters) snapshot() ipvs.Stats {
	return ipvs.Stats{Conns: c.conns.Load(), InPkts: c.inPkts.Load(), OutPkts: c.outPkts.Load(),
		InBytes: c.inBytes.Load(), OutBytes: c.outBytes.Load()}
}
