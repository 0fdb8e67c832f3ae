package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"sync"
	"time"

	"github.com/lbha/lbha/cluster"
	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/dest"
	"github.com/lbha/lbha/internal/api"
	"github.com/lbha/lbha/ipvs"
	rshealth "github.com/lbha/lbha/ipvs/health"
	"github.com/lbha/lbha/ipvs/userspace"
	"github.com/lbha/lbha/persist"
)

// reconcileEvery bounds how long a hand-made change of the dataplane (an
// ipvsadm run by hand) or a failed operation lasts before it is repaired.
const reconcileEvery = 2 * time.Second

var errNoDataplane = errors.New("this node runs no dataplane (a witness)")

// dataplane keeps the node's forwarding engine at the configuration's
// desired state, on every director whatever its role: a backup holds the
// services too, so synced connections bind to real servers and a take-over
// only has to start forwarding.
type dataplane struct {
	a     *Agent
	log   *slog.Logger
	name  string // "kernel" or "userspace"
	prog  ipvs.Programmer
	obs   ipvs.Observer
	rec   *ipvs.Reconciler
	proxy *userspace.Proxy                   // userspace only
	close func() error                       // releases the engine
	kick  chan struct{}                      // asks for a reconcile now
	res   func(persist.DestQuery) *dest.Dest // syncd's resolver
	ksync *kernelSync                        // kernel dataplane with sync configured

	mu      sync.Mutex
	checks  map[checkKey]*realCheck
	lastErr string
}

type checkKey struct {
	svc ipvs.ServiceKey
	rs  netip.AddrPort
}

// realCheck is the health checker of one real server of one service.
type realCheck struct {
	hc      config.HealthCheck
	checker *rshealth.Checker
	cancel  context.CancelFunc
}

// newDataplane opens the engine the configuration selects: kernel IPVS, the
// userspace proxy, or (auto) the kernel when it has IPVS.
func (a *Agent) newDataplane(table *persist.Table) (*dataplane, error) {
	dp := &dataplane{a: a, log: a.log.With("component", "dataplane"), kick: make(chan struct{}, 1), checks: map[checkKey]*realCheck{}}
	want := a.cfg.Dataplane
	if want == config.DataplaneKernel || want == config.DataplaneAuto {
		k, err := openKernel(a.log)
		switch {
		case err == nil:
			dp.name, dp.prog, dp.obs, dp.close, dp.res = "kernel", k.prog, k.obs, k.close, nil
			if a.cfg.Sync.Interface != "" {
				if a.cfg.Sync.AuthKeyFile != "" {
					_ = k.close()
					return nil, errors.New("agent: sync.auth_key_file needs the userspace dataplane: the kernel's sync daemon sends plain datagrams")
				}
				dp.ksync = newKernelSync(a)
				close := dp.close
				dp.close = func() error { return errors.Join(dp.ksync.close(), close()) }
			}
		case want == config.DataplaneKernel:
			return nil, fmt.Errorf("agent: dataplane kernel: %w", err)
		default:
			dp.log.Info("kernel IPVS unavailable; using the userspace dataplane", "reason", err)
		}
	}
	if dp.prog == nil {
		o := a.cfg.DataplaneOptions
		p, err := userspace.New(userspace.Config{Table: table, Logger: dp.log, OnStandby: o.OnStandby, DrainTimeout: o.DrainTimeout})
		if err != nil {
			return nil, fmt.Errorf("agent: userspace dataplane: %w", err)
		}
		dp.name, dp.prog, dp.obs, dp.proxy, dp.close, dp.res = "userspace", p, p, p, p.Close, p.Resolve
	}
	dp.rec = ipvs.NewReconciler(dp.prog)
	dp.log.Info("dataplane selected", "dataplane", dp.name, "configured", want)
	return dp, nil
}

// resolve finds the local real server of a synced entry (userspace; the
// kernel's own sync daemon binds kernel entries).
func (dp *dataplane) resolve(q persist.DestQuery) *dest.Dest {
	if dp == nil || dp.res == nil {
		return nil
	}
	return dp.res(q)
}

// trigger asks for a reconcile without waiting for the next period.
func (dp *dataplane) trigger() {
	select {
	case dp.kick <- struct{}{}:
	default:
	}
}

// run reconciles until ctx ends.
func (dp *dataplane) run(ctx context.Context) {
	if dp.ksync != nil {
		done := make(chan struct{})
		go func() { defer close(done); dp.ksync.run(ctx) }()
		defer func() { <-done }()
	}
	t := time.NewTicker(reconcileEvery)
	defer t.Stop()
	for {
		dp.reconcile(ctx)
		select {
		case <-ctx.Done():
			dp.stopChecks()
			if err := dp.close(); err != nil {
				dp.log.Warn("closing the dataplane", "err", err)
			}
			return
		case <-t.C:
		case <-dp.kick:
		}
	}
}

// reconcile brings the health checkers and the engine to the current
// configuration, and the userspace proxy's listening to the node's role.
func (dp *dataplane) reconcile(ctx context.Context) {
	cfg := dp.a.currentConfig()
	dp.syncChecks(ctx, cfg.Services)
	desired := ipvs.Desired(cfg.Services, dp.healthy)
	res, err := dp.rec.Reconcile(desired)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	dp.mu.Lock()
	changedErr := msg != dp.lastErr
	dp.lastErr = msg
	dp.mu.Unlock()
	switch {
	case err != nil && changedErr:
		dp.log.Error("dataplane reconcile", "err", err)
	case err == nil && changedErr:
		dp.log.Info("dataplane reconciled after errors")
	}
	if len(res.Applied) > 0 {
		dp.log.Info("dataplane changed", "operations", len(res.Applied), "drift_repaired", res.Drift)
		if dp.a.table != nil && dp.res != nil {
			dp.a.table.Rebind(dp.res)
		}
	}
	dp.follow(dp.a.node.State())
}

// follow adapts the dataplane to the node's state: the userspace proxy
// listens on the master only; with the kernel dataplane, traffic reaches
// IPVS only where the VIPs are, and the kernel's sync daemon runs in the
// role's mode.
func (dp *dataplane) follow(st cluster.State) {
	if dp == nil {
		return
	}
	if dp.ksync != nil {
		dp.ksync.follow(st)
	}
	if dp.proxy == nil {
		return
	}
	if err := dp.proxy.SetActive(st == cluster.StateMaster); err != nil {
		dp.log.Warn("userspace listeners", "err", err)
	}
}

// healthy is ipvs.Healthy over the running checkers.
func (dp *dataplane) healthy(svc ipvs.ServiceKey, rs netip.AddrPort) bool {
	dp.mu.Lock()
	c := dp.checks[checkKey{svc, rs}]
	dp.mu.Unlock()
	return c == nil || c.checker.Status().Healthy
}

// syncChecks runs one checker per checked real server of svcs, restarting
// those whose check changed and stopping those no longer configured.
func (dp *dataplane) syncChecks(ctx context.Context, svcs []config.Service) {
	want := map[checkKey]config.HealthCheck{}
	for i := range svcs {
		s := &svcs[i]
		if s.HealthCheck == nil {
			continue
		}
		for _, rs := range s.RealServers {
			want[checkKey{ipvs.KeyOf(s), rs.Address}] = *s.HealthCheck
		}
	}
	dp.mu.Lock()
	defer dp.mu.Unlock()
	for k, c := range dp.checks {
		if hc, ok := want[k]; !ok || !reflect.DeepEqual(hc, c.hc) {
			c.cancel()
			delete(dp.checks, k)
		}
	}
	for k, hc := range want {
		if _, ok := dp.checks[k]; ok {
			continue
		}
		chk, err := rshealth.NewChecker(hc, k.rs)
		if err != nil {
			dp.log.Error("health check", "service", k.svc, "server", k.rs, "err", err)
			continue
		}
		cctx, cancel := context.WithCancel(ctx)
		dp.checks[k] = &realCheck{hc: hc, checker: chk, cancel: cancel}
		go chk.Run(cctx, func(healthy bool, err error) {
			if healthy {
				dp.log.Info("real server up", "service", k.svc, "server", k.rs, "check", hc.Type)
			} else {
				dp.log.Warn("real server down", "service", k.svc, "server", k.rs, "check", hc.Type,
					"err", err, "action", hc.OnFailure)
			}
			dp.a.met.realServerTransition(healthy)
			dp.trigger()
		})
	}
}

func (dp *dataplane) stopChecks() {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	for k, c := range dp.checks {
		c.cancel()
		delete(dp.checks, k)
	}
}

// services is the dataplane's view with health: a real server taken out by
// on_failure: remove is still listed (Removed), the sorry server is marked.
func (dp *dataplane) services() (api.Services, error) {
	return dp.servicesOf(dp.a.currentConfig())
}

func (dp *dataplane) servicesOf(cfg *config.Config) (api.Services, error) {
	st, err := dp.obs.Status()
	if err != nil {
		return api.Services{}, err
	}
	byKey := map[ipvs.ServiceKey]*config.Service{}
	for i := range cfg.Services {
		byKey[ipvs.KeyOf(&cfg.Services[i])] = &cfg.Services[i]
	}
	for i := range st {
		s := &st[i]
		cs := byKey[s.Key]
		if cs == nil {
			continue
		}
		configured := map[netip.AddrPort]bool{}
		for _, rs := range cs.RealServers {
			configured[rs.Address] = true
		}
		present := map[netip.AddrPort]bool{}
		for j := range s.Dests {
			d := &s.Dests[j]
			present[d.Addr] = true
			if !configured[d.Addr] && d.Addr == cs.SorryServer {
				d.Sorry = true
				continue
			}
			dp.annotate(s.Key, d, cs.HealthCheck != nil)
		}
		if cs.HealthCheck == nil {
			continue
		}
		for _, rs := range cs.RealServers {
			if present[rs.Address] {
				continue
			}
			d := ipvs.DestStatus{Dest: ipvs.DestOf(&rs), Removed: true}
			dp.annotate(s.Key, &d, true)
			s.Dests = append(s.Dests, d)
		}
	}
	return api.Services{Dataplane: dp.name, Version: "1.2.1", TableSize: 4096, Services: st}, nil
}

func (dp *dataplane) annotate(svc ipvs.ServiceKey, d *ipvs.DestStatus, checked bool) {
	if !checked {
		return
	}
	dp.mu.Lock()
	c := dp.checks[checkKey{svc, d.Addr}]
	dp.mu.Unlock()
	if c == nil {
		return
	}
	hs := c.checker.Status()
	d.Health = ipvs.HealthDown
	if hs.Healthy {
		d.Health = ipvs.HealthUp
	} else {
		d.HealthError = hs.LastErr
	}
}

func (a *Agent) Services() (api.Services, error) {
	if a.dp == nil {
		return api.Services{}, errNoDataplane
	}
	return a.dp.services()
}

func (a *Agent) Conns() (api.Conns, error) {
	if a.dp == nil {
		return api.Conns{}, errNoDataplane
	}
	cs, err := a.dp.obs.Conns()
	if err != nil {
		return api.Conns{}, err
	}
	if cs == nil {
		cs = []ipvs.Conn{}
	}
	return api.Conns{Dataplane: a.dp.name, Conns: cs}, nil
}
