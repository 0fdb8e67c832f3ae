// Package agent runs an lbha node: it turns the configuration file into a
// cluster member, serves the operator API (Unix socket for the CLI, TCP
// peer API for forwarding to the leader), runs the notify hook on every
// state change, and seeds the replicated configuration from the local file
// when the cluster has none.
//
// The replicated document is a whole lbha configuration file; every node
// adopts its cluster-wide parts (VIPs and services) and keeps its own
// node-local parts (identity, addresses, sync interface) from its local
// file, so a node restarted with an old local file follows the cluster.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lbha/lbha/cluster"
	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/internal/api"
	"github.com/lbha/lbha/persist"
	"github.com/lbha/lbha/vip"
)

// notifyTimeout bounds a notify command, like keepalived's script timeout.
const notifyTimeout = 10 * time.Second

// Agent is one running node.
type Agent struct {
	cfg  *config.Config
	doc  []byte // the local configuration file, proposed when the cluster has none
	log  *slog.Logger
	node *cluster.Node
	met  *metrics
	stop context.CancelFunc

	// vips holds the master's VIPs (directors only). vipMu serialises every
	// Set, and each Set re-reads the node's state under it, so a periodic
	// re-assertion can never re-add VIPs after a step-down withdrew them.
	vips  *vip.Manager
	vipMu sync.Mutex

	sync  *syncer        // nil without sync configured
	table *persist.Table // connections and templates (directors)
	dp    *dataplane     // directors only

	notifyMu sync.Mutex // runs notify commands one at a time, in order

	// merged caches currentConfig's result for mergedVersion; callers
	// must not modify it.
	mergedMu      sync.Mutex
	merged        *config.Config
	mergedVersion uint64
}

// Options are the agent's run-time settings.
type Options struct {
	Config *config.Config
	Doc    []byte // the bytes Config was parsed from
	Logger *slog.Logger
	// Join starts without bootstrapping raft, to be added by lbha join.
	Join bool
}

// Run starts the node and blocks until ctx ends, then leaves cleanly.
func Run(ctx context.Context, o Options) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	a := &Agent{cfg: o.Config, doc: o.Doc, log: o.Logger, stop: stop}
	if a.log == nil {
		a.log = slog.Default()
	}
	cc, err := clusterConfig(o.Config, a.log)
	if err != nil {
		return err
	}
	cc.Join = o.Join
	if o.Config.Node.Role == config.RoleDirector {
		vc := vip.DefaultConfig()
		// A one-second lifetime bounds how long the kernel of a crashed or
		// frozen master keeps answering for a VIP after the new master has
		// announced it (the clients are already redirected by then).
		vc.Lifetime, vc.RenewEvery = time.Second, 500*time.Millisecond
		vc.Logger = a.log.With("component", "vip")
		m, err := vip.New(vc)
		if err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		a.vips = m
		defer func() {
			if err := m.Close(); err != nil {
				a.log.Warn("removing VIPs", "err", err)
			}
		}()
	}
	if o.Config.Node.Role == config.RoleDirector {
		// The table and the dataplane exist before the node can become
		// master, so that the first state change finds them.
		tc := persist.DefaultConfig()
		tc.ExpireQuiescentTemplate = o.Config.DataplaneOptions.ExpireQuiescentTemplate
		table, err := persist.New(tc)
		if err != nil {
			return fmt.Errorf("agent: connection table: %w", err)
		}
		a.table = table
		go func() { _ = table.Run(ctx) }()
		dp, err := a.newDataplane(table)
		if err != nil {
			return err
		}
		a.dp = dp
	}
	node, err := cluster.Start(cc)
	if err != nil {
		if a.dp != nil {
			_ = a.dp.close()
		}
		return fmt.Errorf("agent: %w", err)
	}
	a.node = node
	defer func() {
		if err := node.Close(); err != nil {
			a.log.Warn("leaving the cluster", "err", err)
		}
	}()
	a.met = newMetrics(a)
	node.OnStateChange(a.stateChanged)
	if st := node.State(); st == cluster.StateMaster {
		// Became master before the callback was registered.
		a.stateChanged(cluster.StateBackup, st)
	}
	if addr := o.Config.API.MetricsAddress; addr != "" {
		go func() {
			if err := a.met.serve(ctx, addr); err != nil {
				a.log.Error("metrics endpoint", "address", addr, "err", err)
			}
		}()
	}

	// Operator API on the Unix socket; the peer API on TCP.
	sock := o.Config.API.Socket
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		return fmt.Errorf("agent: socket directory: %w", err)
	}
	_ = os.Remove(sock) // a stale socket from a crashed agent
	ul, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("agent: API socket %s: %w", sock, err)
	}
	defer os.Remove(sock)
	_ = os.Chmod(sock, 0o660)
	peerAddr := netip.AddrPortFrom(o.Config.Node.BindAddress, uint16(o.Config.Cluster.APIPort)).String()
	tl, err := net.Listen("tcp", peerAddr)
	if err != nil {
		ul.Close()
		return fmt.Errorf("agent: peer API on %s: %w", peerAddr, err)
	}
	if cc.TLS != nil {
		tl = tls.NewListener(tl, cc.TLS) // peers must present a certificate of the cluster's CA
	}
	node.SetAPIAddress(peerAddr)
	h := api.NewHandler(a, a.log, cc.TLS)
	errc := make(chan error, 3)
	go func() { errc <- api.Serve(ctx, ul, h) }()
	go func() { errc <- api.Serve(ctx, tl, h) }()
	if addr := o.Config.API.TCPAddress; addr != "" {
		ol, err := a.operatorListener(addr, cc.TLS)
		if err != nil {
			return err
		}
		go func() { errc <- api.Serve(ctx, ol.l, api.RequireToken(h, ol.token)) }()
	}
	a.log.Info("agent started", "node", o.Config.Node.Name, "role", o.Config.Node.Role,
		"socket", sock, "peer_api", peerAddr)

	go a.seedConfig(ctx)
	if a.dp != nil {
		dpDone := make(chan struct{})
		go func() { defer close(dpDone); a.dp.run(ctx) }()
		defer func() { <-dpDone }()
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-node.ConfigChanges():
					a.dp.trigger()
				}
			}
		}()
	}
	if o.Config.Node.Role == config.RoleDirector {
		go a.runHealth(ctx)
		go a.assertVIPs(ctx)
		var s *syncer
		if a.dp.ksync == nil { // the kernel dataplane syncs with the kernel's own daemon
			if s, err = a.newSyncer(); err != nil {
				return err
			}
		}
		if s != nil {
			a.sync = s
			node.SetWarm(false) // until a full resync completes
			syncDone := make(chan struct{})
			go func() { defer close(syncDone); s.run(ctx) }()
			defer func() { <-syncDone }()
		}
	}

	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("agent: API: %w", err)
		}
	}
	return nil
}

func clusterConfig(c *config.Config, log *slog.Logger) (cluster.Config, error) {
	cc := cluster.Config{
		Name:         c.Node.Name,
		Role:         cluster.Role(c.Node.Role),
		Priority:     c.Node.Priority,
		DataDir:      c.Node.DataDir,
		Bind:         c.Node.BindAddress,
		RaftPort:     c.Cluster.RaftPort,
		GossipPort:   c.Cluster.GossipPort,
		Preempt:      c.Cluster.Preempt,
		PreemptDelay: c.Cluster.PreemptDelay,
		Timing: cluster.Timing{
			Heartbeat: c.Cluster.Timing.Heartbeat,
			Election:  c.Cluster.Timing.Election,
			Lease:     c.Cluster.Timing.Lease,
		},
		Logger: log,
	}
	if cc.Role == cluster.RoleWitness {
		cc.Priority = 1 // a witness never competes; the field must be in range
	}
	for _, p := range c.Cluster.Peers {
		cc.Peers = append(cc.Peers, cluster.Peer{Name: p.Name, Addr: p.Address, Role: cluster.Role(p.Role)})
	}
	if t := c.Cluster.TLS; t != nil {
		tc, err := loadTLS(t.CertFile, t.KeyFile, t.CAFile)
		if err != nil {
			return cc, fmt.Errorf("agent: cluster.tls: %w", err)
		}
		cc.TLS = tc
	}
	if f := c.Cluster.GossipKeyFile; f != "" {
		key, err := readKey(f)
		if err != nil {
			return cc, fmt.Errorf("agent: cluster.gossip_key_file: %w", err)
		}
		cc.GossipKey = key
	}
	return cc, cc.Validate()
}

type operatorListener struct {
	l     net.Listener
	token string
}

// operatorListener opens the TCP operator API: TLS with the node's
// certificate (operators authenticate with the token, not a certificate).
func (a *Agent) operatorListener(addr string, clusterTLS *tls.Config) (*operatorListener, error) {
	token, err := os.ReadFile(a.cfg.API.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("agent: api.token_file: %w", err)
	}
	tok := strings.TrimSpace(string(token))
	if len(tok) < 16 {
		return nil, fmt.Errorf("agent: api.token_file %s: token shorter than 16 characters", a.cfg.API.TokenFile)
	}
	if clusterTLS == nil {
		return nil, errors.New("agent: api.tcp_address needs cluster.tls")
	}
	tc := &tls.Config{Certificates: clusterTLS.Certificates, MinVersion: tls.VersionTLS13}
	l, err := tls.Listen("tcp", addr, tc)
	if err != nil {
		return nil, fmt.Errorf("agent: operator API on %s: %w", addr, err)
	}
	a.log.Info("operator API on TCP", "address", addr)
	return &operatorListener{l: l, token: tok}, nil
}

// loadTLS builds the mutual-TLS configuration of raft and the peer API: this
// node's certificate, and the CA that every peer's certificate (with the
// peer's IP address as a SAN) must chain to, both ways.
func loadTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// readKey reads a secret key file: base64 or hex text (one line), or the raw
// bytes.
func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	text := strings.TrimSpace(string(b))
	if k, err := base64.StdEncoding.DecodeString(text); err == nil && len(k) > 0 {
		return k, nil
	}
	if k, err := hex.DecodeString(text); err == nil && len(k) > 0 {
		return k, nil
	}
	return b, nil
}

// seedConfig proposes the local file as version 1 when this node leads a
// cluster that has no configuration yet.
func (a *Agent) seedConfig(ctx context.Context) {
	if a.cfg.Node.Role != config.RoleDirector || len(a.doc) == 0 {
		return
	}
	for ctx.Err() == nil {
		if _, ok := a.node.Config(0); ok {
			return
		}
		if a.node.State() == cluster.StateMaster {
			v, seeded, err := a.node.SeedConfig(a.doc, a.cfg.Node.Name+" (initial)")
			if err == nil {
				if seeded {
					a.log.Info("seeded the cluster configuration from the local file", "version", v)
				}
				return
			}
			if !errors.Is(err, cluster.ErrNotLeader) {
				a.log.Warn("seeding the cluster configuration", "err", err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stateChanged runs on the cluster's state goroutine: VIPs first (withdrawn
// before anything else on leaving MASTER, added and announced on entering
// it), then the notify hook, which runs in the background so that a slow
// script never delays fencing.
func (a *Agent) stateChanged(old, new cluster.State) {
	a.syncVIPs(context.Background())
	a.dp.follow(new)
	a.log.Info("node state", "from", old, "to", new)
	a.met.observe(new)
	if cmd := a.cfg.Cluster.NotifyCommand; cmd != "" {
		vips := a.vipList()
		go a.notify(cmd, new, vips)
	}
}

// syncVIPs makes the VIPs held match the node's current state.
func (a *Agent) syncVIPs(ctx context.Context) {
	if a.vips == nil {
		return
	}
	a.vipMu.Lock()
	defer a.vipMu.Unlock()
	var desired []vip.VIP
	if a.node.State() == cluster.StateMaster {
		for _, v := range a.currentConfig().VIPs {
			desired = append(desired, vip.VIP{Prefix: v.Address, Interface: v.Interface})
		}
	}
	if _, err := a.vips.Set(ctx, desired); err != nil {
		a.log.Error("VIPs", "want", len(desired), "err", err)
	}
}

// assertVIPs re-applies the VIPs periodically: it re-adds a VIP the
// kernel dropped (a renewal that came too late) and follows configuration
// changes. It costs nothing when nothing changed.
func (a *Agent) assertVIPs(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			a.syncVIPs(ctx)
		}
	}
}

// vips returns the configured VIPs, for the notify hook.
func (a *Agent) vipList() []string {
	var out []string
	for _, v := range a.currentConfig().VIPs {
		out = append(out, v.Address.String())
	}
	return out
}

// notify runs the notify command with the new state and the VIPs as
// arguments, with a timeout, and logs its output.
func (a *Agent) notify(command string, st cluster.State, vips []string) {
	a.notifyMu.Lock()
	defer a.notifyMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
	defer cancel()
	args := append([]string{"-c", command + ` "$@"`, "lbha-notify", st.String()}, vips...)
	cmd := shell(ctx, args[1], args[2:]...)
	cmd.Env = append(os.Environ(), "LBHA_STATE="+st.String(), "LBHA_NODE="+a.cfg.Node.Name)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	attrs := []any{"command", command, "state", st, "took", time.Since(start).Round(time.Millisecond), "output", string(out)}
	switch {
	case ctx.Err() != nil:
		a.log.Warn("notify command timed out", append(attrs, "timeout", notifyTimeout)...)
	case err != nil:
		a.log.Warn("notify command failed", append(attrs, "err", err)...)
	default:
		a.log.Info("notify command ran", attrs...)
	}
}

// currentConfig returns the cluster's configuration merged into the local
// file: VIPs and services from the cluster, everything else local.
func (a *Agent) currentConfig() *config.Config {
	rev, ok := a.node.Config(0)
	if !ok {
		return a.cfg
	}
	// Parsed once per version: the VIP assertion (every 250 ms), the
	// dataplane reconcile and every view ask for it.
	a.mergedMu.Lock()
	defer a.mergedMu.Unlock()
	if a.merged != nil && a.mergedVersion == rev.Version {
		return a.merged
	}
	a.merged, a.mergedVersion = a.cfg, rev.Version
	cc, err := config.Parse("cluster-v"+strconv.FormatUint(rev.Version, 10), rev.Doc)
	if err != nil {
		a.log.Error("replicated configuration does not parse; keeping the local one", "version", rev.Version, "err", err)
		return a.merged
	}
	merged := *a.cfg
	merged.VIPs, merged.Services = cc.VIPs, cc.Services
	a.merged = &merged
	return a.merged
}

// The api.Backend implementation.

func (a *Agent) Status() api.Status {
	st := api.Status{Status: a.node.Status()}
	if a.dp != nil {
		st.Dataplane = a.dp.name
	}
	st.VIPs = []string{}
	if a.vips != nil {
		for _, v := range a.vips.Held() {
			st.VIPs = append(st.VIPs, v.Prefix.String())
		}
	}
	return st
}

func (a *Agent) Members() []cluster.Member { return a.node.Members() }

func (a *Agent) SyncStatus() any { return a.sync.status() }

func (a *Agent) Failover(to string, force bool) (string, error) { return a.node.Failover(to, force) }

func (a *Agent) ApplyConfig(doc []byte, source string) (uint64, error) {
	if _, err := config.Parse("submitted", doc); err != nil {
		return 0, fmt.Errorf("%w: %v", api.ErrInvalid, err)
	}
	return a.node.ApplyConfig(doc, source)
}

func (a *Agent) Config(v uint64) (cluster.Revision, bool) { return a.node.Config(v) }

func (a *Agent) ConfigHistory() []cluster.Revision { return a.node.ConfigHistory() }

func (a *Agent) LeaderAPI() string { return a.node.LeaderAPI() }

func (a *Agent) Join(name string, addr netip.Addr) error { return a.node.AddVoter(name, addr) }

func (a *Agent) Leave(name string) error { return a.node.RemoveServer(name) }

func (a *Agent) Self() (string, netip.Addr, int) {
	return a.cfg.Node.Name, a.cfg.Node.BindAddress, a.cfg.Cluster.APIPort
}

func (a *Agent) Stop() {
	a.log.Info("left the cluster; stopping")
	a.stop()
}
