// Package userspace is lbha's dataplane for hosts without IPVS: a TCP and
// UDP proxy that listens on the VIPs the master holds and sends every new
// connection to a real server chosen exactly as the kernel would, through
// the shared persistence table (persist) and IPVS's schedulers
// (ipvs/sched). Active and inactive connection counts, weights, thresholds
// and persistence templates therefore behave as in IPVS, and the templates
// it creates are synced to the backups by syncd.
//
// The proxy implements ipvs.Programmer, so the same Reconciler drives it as
// drives the kernel, and ipvs.Observer for the CLI's views. It holds its
// services on every director (a backup needs them to bind synced entries to
// real servers) but listens only while active, that is while its director
// is master: SetActive(true) opens the listeners (with IP_FREEBIND, so the
// order against the VIP's assignment does not matter), SetActive(false)
// closes them at once and closes or drains the flows in progress.
//
// What a proxy cannot do: fwmark and port-zero services (they need packet
// marks or every port) and SCTP (no SCTP sockets in Go) are refused with an
// error; a client's TCP connection does not survive a failover (the new
// master has no socket for it), but its next connection lands on the same
// real server through the synced template.
package userspace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/dest"
	"github.com/lbha/lbha/ipvs"
	"github.com/lbha/lbha/ipvs/sched"
	"github.com/lbha/lbha/persist"
)

// ErrUnsupported reports a service the userspace dataplane cannot run.
var ErrUnsupported = errors.New("not supported by the userspace dataplane")

// Config configures a Proxy.
type Config struct {
	// Table holds connections and templates. Required; share it with
	// syncd so that templates reach the backups.
	Table *persist.Table
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// OnStandby says what happens to flows in progress when the proxy
	// stops being active: closed at once (default) or drained for up to
	// DrainTimeout (default 30 s).
	OnStandby    config.StandbyAction
	DrainTimeout time.Duration
	// DialTimeout bounds the connection to a real server (default 3 s).
	DialTimeout time.Duration
	// TouchEvery is how often the table entries of open TCP flows are
	// refreshed, since spliced traffic is not seen packet by packet
	// (default 30 s; entries live 15 minutes in ESTABLISHED).
	TouchEvery time.Duration
	// UDPTimeout closes a UDP flow idle that long (default: the table's
	// UDP timeout, 300 s).
	UDPTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.OnStandby == "" {
		c.OnStandby = config.StandbyClose
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 3 * time.Second
	}
	if c.TouchEvery <= 0 {
		c.TouchEvery = 30 * time.Second
	}
	if c.UDPTimeout <= 0 {
		c.UDPTimeout, _ = persist.DefaultTimeout(persist.ProtoUDP, persist.UDPNormal)
	}
	return c
}

// Proxy is the userspace dataplane.
type Proxy struct {
	cfg   Config
	log   *slog.Logger
	table *persist.Table

	// mu serialises the writers: Apply, SetActive, Close. Readers on the
	// packet path use the atomic index and never take it, and nothing
	// holding it calls into the table, whose shard locks Resolve runs
	// under.
	mu     sync.Mutex
	index  atomic.Pointer[map[ipvs.ServiceKey]*service]
	active bool
	closed bool
	// accepting mirrors active for the packet path.
	accepting atomic.Bool
	gen       uint64 // bumped on every activation change, cancels stale drains

	flowMu sync.Mutex
	flows  map[flow]struct{}

	wg   sync.WaitGroup // every goroutine the proxy started
	done chan struct{}
	// ctx ends when the proxy closes, for work that outlives one flow (FTP
	// data connections).
	ctx    context.Context
	cancel context.CancelFunc
}

// flow is a connection in progress: TCP or a UDP flow.
type flow interface {
	close()
	touch()
	service() *service
}

// New returns an inactive proxy with no services.
func New(cfg Config) (*Proxy, error) {
	if cfg.Table == nil {
		return nil, errors.New("userspace: Config.Table is required")
	}
	cfg = cfg.withDefaults()
	p := &Proxy{cfg: cfg, log: cfg.Logger, table: cfg.Table, flows: map[flow]struct{}{}, done: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	empty := map[ipvs.ServiceKey]*service{}
	p.index.Store(&empty)
	p.wg.Add(2)
	go p.toucher()
	go p.estimator()
	return p, nil
}

// Close stops listening, closes every flow and waits for the proxy's
// goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.active = false
	p.accepting.Store(false)
	p.gen++
	for _, s := range *p.index.Load() {
		s.stopListening()
	}
	close(p.done)
	p.cancel()
	p.mu.Unlock()
	p.closeFlows(nil)
	p.wg.Wait()
	return nil
}

// Active reports whether the proxy listens.
func (p *Proxy) Active() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.active
}

// SetActive starts or stops listening on every service's address. It is
// idempotent and retries listeners that failed before, so calling it
// periodically with the node's role heals a VIP that appeared late. It
// returns the listeners that could not be opened.
func (p *Proxy) SetActive(active bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("userspace: proxy closed")
	}
	was := p.active
	p.active = active
	p.accepting.Store(active)
	if was != active {
		p.gen++
	}
	var errs []error
	for _, s := range *p.index.Load() {
		if active {
			if err := s.listen(); err != nil {
				errs = append(errs, err)
			}
		} else if was {
			s.stopListening()
		}
	}
	if was && !active {
		p.standby()
	}
	if was != active {
		p.log.Info("userspace dataplane", "active", active, "services", len(*p.index.Load()))
	}
	return errors.Join(errs...)
}

// standby closes or drains the flows in progress; p.mu is held.
func (p *Proxy) standby() {
	if p.cfg.OnStandby != config.StandbyDrain {
		go p.closeFlows(nil)
		return
	}
	gen := p.gen
	p.log.Info("draining flows", "timeout", p.cfg.DrainTimeout, "flows", p.flowCount())
	time.AfterFunc(p.cfg.DrainTimeout, func() {
		p.mu.Lock()
		stale := p.gen != gen
		p.mu.Unlock()
		if !stale {
			p.closeFlows(nil)
		}
	})
}

func (p *Proxy) flowCount() int {
	p.flowMu.Lock()
	defer p.flowMu.Unlock()
	return len(p.flows)
}

// closeFlows closes the flows of svc, or all flows when svc is nil.
func (p *Proxy) closeFlows(svc *service) {
	p.flowMu.Lock()
	var fs []flow
	for f := range p.flows {
		if svc == nil || f.service() == svc {
			fs = append(fs, f)
		}
	}
	p.flowMu.Unlock()
	for _, f := range fs {
		f.close()
	}
}

func (p *Proxy) addFlow(f flow) {
	p.flowMu.Lock()
	p.flows[f] = struct{}{}
	p.flowMu.Unlock()
}

func (p *Proxy) removeFlow(f flow) {
	p.flowMu.Lock()
	delete(p.flows, f)
	p.flowMu.Unlock()
}

// toucher refreshes the table entries of open flows, which splice hides
// from the proxy packet by packet.
func (p *Proxy) toucher() {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.TouchEvery)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		p.flowMu.Lock()
		fs := make([]flow, 0, len(p.flows))
		for f := range p.flows {
			fs = append(fs, f)
		}
		p.flowMu.Unlock()
		for _, f := range fs {
			f.touch()
		}
	}
}

// State returns the services and real servers the proxy holds.
func (p *Proxy) State() ([]ipvs.ServiceState, error) {
	idx := *p.index.Load()
	out := make([]ipvs.ServiceState, 0, len(idx))
	for _, s := range idx {
		st := ipvs.ServiceState{Service: s.settings.Load().cfg}
		for _, d := range *s.dests.Load() {
			st.Dests = append(st.Dests, d.config())
		}
		out = append(out, st)
	}
	return out, nil
}

// Apply performs one operation, with the kernel's semantics: adding what
// exists or changing what does not is an error; removing a real server
// keeps its connections (and invalidates its templates).
func (p *Proxy) Apply(op ipvs.Op) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("userspace: proxy closed")
	}
	old := *p.index.Load()
	k := op.Service.Key
	s := old[k]
	switch op.Kind {
	case ipvs.AddService:
		if s != nil {
			return fmt.Errorf("userspace: %s: service exists", op)
		}
		ns, err := newService(p, op.Service)
		if err != nil {
			return fmt.Errorf("userspace: %s: %w", op, err)
		}
		p.publish(old, k, ns)
		if p.active {
			if err := ns.listen(); err != nil {
				return fmt.Errorf("userspace: %s: %w", op, err)
			}
		}
		return nil
	case ipvs.UpdateService, ipvs.DelService, ipvs.AddDest, ipvs.UpdateDest, ipvs.DelDest:
		if s == nil {
			return fmt.Errorf("userspace: %s: no such service", op)
		}
	default:
		return fmt.Errorf("userspace: unknown operation %d", op.Kind)
	}
	var err error
	switch op.Kind {
	case ipvs.UpdateService:
		err = s.update(op.Service)
	case ipvs.DelService:
		s.stopListening()
		for _, d := range *s.dests.Load() {
			d.d.SetAvailable(false)
		}
		p.publish(old, k, nil)
	case ipvs.AddDest:
		err = s.addDest(op.Dest)
	case ipvs.UpdateDest:
		err = s.updateDest(op.Dest)
	case ipvs.DelDest:
		err = s.delDest(op.Dest.Addr)
	}
	if err != nil {
		return fmt.Errorf("userspace: %s: %w", op, err)
	}
	return nil
}

// publish installs a copy of the index with k set to s (deleted if nil).
func (p *Proxy) publish(old map[ipvs.ServiceKey]*service, k ipvs.ServiceKey, s *service) {
	idx := make(map[ipvs.ServiceKey]*service, len(old)+1)
	for kk, v := range old {
		idx[kk] = v
	}
	if s == nil {
		delete(idx, k)
	} else {
		idx[k] = s
	}
	p.index.Store(&idx)
}

// Resolve finds the destination of an entry received by syncd, as the
// kernel's ip_vs_find_dest does for the services this proxy runs. It takes
// no lock (it runs under a table shard lock).
func (p *Proxy) Resolve(q persist.DestQuery) *dest.Dest {
	idx := *p.index.Load()
	s := idx[ipvs.ServiceKey{Protocol: q.Proto, Addr: q.Virtual.Addr(), Port: q.Virtual.Port()}]
	if s == nil && q.Proto == persist.ProtoTCP && q.Virtual.Port() == 20 {
		// FTP data through a port-21 service.
		s = idx[ipvs.ServiceKey{Protocol: q.Proto, Addr: q.Virtual.Addr(), Port: 21}]
	}
	if s == nil {
		return nil
	}
	for _, d := range *s.dests.Load() {
		if d.d.Addr == q.DestAddr.Addr() && (d.d.Port == q.DestAddr.Port() || q.DestAddr.Port() == 0) {
			return d.d
		}
	}
	return nil
}

// Status returns the services with live counters.
func (p *Proxy) Status() ([]ipvs.ServiceStatus, error) {
	idx := *p.index.Load()
	out := make([]ipvs.ServiceStatus, 0, len(idx))
	for _, s := range idx {
		st := ipvs.ServiceStatus{Service: s.settings.Load().cfg, Stats: s.stats.snapshot(), Rates: s.stats.rates()}
		for _, d := range *s.dests.Load() {
			st.Dests = append(st.Dests, ipvs.DestStatus{
				Dest:         d.config(),
				ActiveConns:  d.d.ActiveConns(),
				InactConns:   d.d.InactConns(),
				PersistConns: d.d.PersistConns(),
				Stats:        d.stats.snapshot(),
				Rates:        d.stats.rates(),
			})
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ipvs.ServiceStatus) int { return ipvs.CompareKeys(a.Key, b.Key) })
	return out, nil
}

// Conns lists the table's connections and templates.
func (p *Proxy) Conns() ([]ipvs.Conn, error) {
	var out []ipvs.Conn
	p.table.Range(func(e persist.Entry) bool {
		out = append(out, ConnOf(&e))
		return true
	})
	return out, nil
}

// ConnOf returns the ipvsadm view of a table entry.
func ConnOf(e *persist.Entry) ipvs.Conn {
	c := ipvs.Conn{
		Proto:    protoName(e.Proto),
		Client:   e.Client,
		Virtual:  e.Virtual,
		Dest:     e.DestAddr,
		State:    e.StateName(),
		Expires:  e.Expires,
		Template: e.Template(),
	}
	if len(e.PEData) > 0 {
		c.PEName, c.PEData = "sip", string(e.PEData)
	}
	return c
}

func protoName(p uint8) string {
	switch p {
	case persist.ProtoTCP:
		return "TCP"
	case persist.ProtoUDP:
		return "UDP"
	case persist.ProtoSCTP:
		return "SCTP"
	case 0:
		return "IP"
	}
	return fmt.Sprintf("IP_%d", p)
}

// schedPacket is what the scheduler sees of a new connection.
func schedPacket(proto uint8, src, dst netip.AddrPort) sched.Packet {
	return sched.Packet{Proto: proto, Src: src.Addr(), SrcPort: src.Port(), Dst: dst.Addr()}
}
