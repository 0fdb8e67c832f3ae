package cluster

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// failedTargetMemory is how long a director that failed to take over by
// transfer is passed over: about the time memberlist needs to declare a
// dead node dead in the fast profile.
const failedTargetMemory = 2 * time.Second

// Errors callers branch on.
var (
	// ErrNotLeader: the operation must run on the leader; the caller
	// forwards it (Status().Leader names it).
	ErrNotLeader = errors.New("cluster: not the leader")
	// ErrRefused: a failover target is not fit and force was not given.
	ErrRefused = errors.New("cluster: failover refused")
)

// Node is one running cluster member: raft voter, memberlist member, and
// the state machine that decides whether it is master.
//
// One goroutine owns the state. It re-reads leadership, lease and health
// every tick (a tenth of the lease) rather than counting events, so a lost
// notification can never leave a stale master.
type Node struct {
	cfg Config
	log *slog.Logger

	fsm       *configFSM
	raft      *raft.Raft
	transport *raft.NetworkTransport
	store     *raftboltdb.BoltStore
	ml        *memberlist.Memberlist
	meta      atomic.Pointer[nodeMeta]

	healthy      atomic.Bool
	warm         atomic.Bool
	transferring atomic.Bool // a hand-off started by stepOnce is in flight
	// caughtUpTerm is the raft term in which this node, as leader, has
	// applied every earlier entry (a barrier completed). Until then its
	// view of the operator's preferred master may be stale, so it must
	// not preempt.
	caughtUpTerm atomic.Uint64
	barrierBusy  atomic.Bool

	// leaseStart is the start (UnixNano, monotonic-derived) of the last
	// leadership check a quorum confirmed.
	leaseStart atomic.Int64
	epoch      time.Time // monotonic base for leaseStart

	mu          sync.Mutex
	state       State
	masterSince time.Time
	preemptFor  string
	preemptAt   time.Time
	// failedTarget remembers directors a hand-off to failed recently, so
	// the next attempt picks another one rather than waiting on a dead
	// node that gossip has not yet declared dead.
	failedTarget map[string]time.Time
	onState      func(old, new State)

	peersMu sync.Mutex
	peers   map[string]peerView // gossip view, by member name

	stateCh    chan State    // latest value, buffer 1
	gossipKick chan struct{} // buffer 1
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// nodeMeta is gossiped by memberlist (at most 512 bytes).
type nodeMeta struct {
	Role     Role   `json:"r"`
	Priority int    `json:"p"`
	State    State  `json:"s"`
	Healthy  bool   `json:"h"`
	Warm     bool   `json:"w"`
	API      string `json:"a,omitempty"`
	Resync   string `json:"y,omitempty"` // sync resync address while master
}

// Start opens the raft store in cfg.DataDir, joins the cluster and starts
// deciding. A node with no raft state bootstraps from cfg.Peers; a node
// that has state keeps its term, vote and configuration.
func Start(cfg Config) (*Node, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.Name), fsm: newConfigFSM(),
		epoch: time.Now(), stateCh: make(chan State, 1), gossipKick: make(chan struct{}, 1)}
	n.healthy.Store(true)
	n.warm.Store(true)
	n.state = StateBackup
	if cfg.Role == RoleWitness {
		n.state = StateWitness
	}
	if ok, warning := FaultTolerance(cfg.Peers); !ok {
		n.log.Warn(warning)
	}
	if err := n.startRaft(); err != nil {
		n.Close()
		return nil, err
	}
	if err := n.startMemberlist(); err != nil {
		n.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.wg.Add(3)
	go n.gossipLoop(ctx)
	go n.leaseLoop(ctx)
	go n.stateLoop(ctx)
	return n, nil
}

func (n *Node) startRaft() error {
	if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("cluster: data directory: %w", err)
	}
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: slogWriter(n.log, "raft")})
	store, err := raftboltdb.NewBoltStore(filepath.Join(n.cfg.DataDir, "raft.db"))
	if err != nil {
		return fmt.Errorf("cluster: open raft store: %w", err)
	}
	n.store = store
	snaps, err := raft.NewFileSnapshotStoreWithLogger(n.cfg.DataDir, 3, hlog)
	if err != nil {
		return fmt.Errorf("cluster: open snapshot store: %w", err)
	}
	bind := netip.AddrPortFrom(n.cfg.Bind, uint16(n.cfg.RaftPort))
	adv, _ := net.ResolveTCPAddr("tcp", bind.String())
	// The I/O timeout bounds an RPC to a dead or frozen peer, such as the
	// TimeoutNow of a leadership transfer to a director that gossip still
	// shows alive: a few heartbeats, not raft's customary 10 s.
	ioTimeout := min(max(4*n.cfg.Timing.Heartbeat, 200*time.Millisecond), 10*time.Second)
	var trans *raft.NetworkTransport
	if n.cfg.TLS != nil {
		stream, err := newTLSStream(bind.String(), adv, n.cfg.TLS)
		if err != nil {
			return fmt.Errorf("cluster: raft TLS transport on %s: %w", bind, err)
		}
		trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: stream, MaxPool: 3, Timeout: ioTimeout, Logger: hlog,
		})
	} else {
		trans, err = raft.NewTCPTransportWithLogger(bind.String(), adv, 3, ioTimeout, hlog)
		if err != nil {
			return fmt.Errorf("cluster: raft transport on %s: %w", bind, err)
		}
	}
	n.transport = trans

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.Name)
	rc.HeartbeatTimeout = n.cfg.Timing.Heartbeat
	rc.ElectionTimeout = n.cfg.Timing.Election

	rc.LeaderLeaseTimeout = n.cfg.Timing.Lease
	rc.CommitTimeout = 5 * time.Millisecond
	rc.SnapshotThreshold = 256
	rc.Logger = hlog

	existing, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		return fmt.Errorf("cluster: read raft state: %w", err)
	}
	r, err := raft.NewRaft(rc, n.fsm, store, store, snaps, trans)
	if err != nil {
		return fmt.Errorf("cluster: start raft: %w", err)
	}
	n.raft = r
	if !existing && len(n.cfg.Peers) > 0 && !n.cfg.Join {
		var servers []raft.Server
		for _, p := range n.cfg.Peers {
			servers = append(servers, raft.Server{
				ID:      raft.ServerID(p.Name),
				Address: raft.ServerAddress(netip.AddrPortFrom(p.Addr, uint16(n.cfg.RaftPort)).String()),
			})
		}
		// Every node bootstraps the same configuration; raft accepts
		// identical bootstraps, and a node that finds state skips this.
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("cluster: bootstrap: %w", err)
		}
	}
	return nil
}

func (n *Node) startMemberlist() error {
	mc := memberlist.DefaultLANConfig()
	mc.Name = n.cfg.Name
	mc.BindAddr = n.cfg.Bind.String()
	mc.BindPort = n.cfg.GossipPort
	mc.AdvertisePort = n.cfg.GossipPort
	// Fast profile: raft detects a dead master; memberlist carries health
	// and priority, and these values keep its view within half a second.
	mc.ProbeInterval = 100 * time.Millisecond
	mc.ProbeTimeout = 50 * time.Millisecond
	mc.SuspicionMult = 2
	mc.GossipInterval = 50 * time.Millisecond
	mc.PushPullInterval = 5 * time.Second
	mc.LogOutput = slogWriter(n.log, "memberlist")
	mc.Delegate = (*metaDelegate)(n)
	mc.Events = (*eventDelegate)(n)
	if len(n.cfg.GossipKey) > 0 {
		mc.SecretKey = n.cfg.GossipKey
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	n.publishMeta()
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("cluster: memberlist on %s:%d: %w", mc.BindAddr, mc.BindPort, err)
	}
	n.ml = ml
	var seeds []string
	for _, p := range n.cfg.Peers {
		if p.Name != n.cfg.Name {
			seeds = append(seeds, netip.AddrPortFrom(p.Addr, uint16(n.cfg.GossipPort)).String())
		}
	}
	if len(seeds) > 0 {
		// Peers that are down now join later by themselves; not an error.
		if _, err := ml.Join(seeds); err != nil {
			n.log.Info("gossip: no peer reachable yet", "err", err)
		}
	}
	return nil
}

// OnStateChange registers fn, called synchronously by the state goroutine
// on every transition, before the node does anything else: a master that
// loses its lease calls it (to withdraw VIPs) before handing anything on.
// fn must not block for long and must not call back into the Node's state
// methods.
func (n *Node) OnStateChange(fn func(old, new State)) {
	n.mu.Lock()
	n.onState = fn
	n.mu.Unlock()
}

// States returns a channel carrying the latest state after each change.
// Intermediate states may be coalesced: read State for the current one.
func (n *Node) States() <-chan State { return n.stateCh }

// State returns the current state.
func (n *Node) State() State {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}

// SetHealthy reports local health (tracked interfaces, checks). An
// unhealthy director becomes FAULT and gives up mastership.
func (n *Node) SetHealthy(ok bool) {
	if n.healthy.Swap(ok) != ok {
		n.publishMeta()
	}
}

// SetWarm reports whether this node's sync state is complete; preemption
// and planned failover only target warm directors.
func (n *Node) SetWarm(ok bool) {
	if n.warm.Swap(ok) != ok {
		n.publishMeta()
	}
}

// SetAPIAddress publishes the node's operator API address to the others
// (used to forward requests to the leader).
func (n *Node) SetAPIAddress(addr string) {
	m := *n.meta.Load()
	m.API = addr
	n.meta.Store(&m)
	n.updateGossip()
}

func (n *Node) leaseValid(now time.Time) (bool, time.Duration) {
	start := n.leaseStart.Load()
	if start == 0 {
		return false, 0
	}
	left := n.cfg.Timing.Lease - now.Sub(n.epoch.Add(time.Duration(start)))
	return left > 0, max(left, 0)
}

// leaseLoop renews the lease while this node leads: a quorum confirming
// leadership at time t means no follower heard of anyone else after t, and
// none will start an election before t + Heartbeat; the lease (< Heartbeat)
// counted from t is therefore safe.
//
// Checks are started every Lease/5 without waiting for the previous one, so
// the lease stays continuous as long as a round trip to a quorum is shorter
// than four fifths of the lease; a slow check never delays the next.
func (n *Node) leaseLoop(ctx context.Context) {
	defer n.wg.Done()
	tick := time.NewTicker(max(n.cfg.Timing.Lease/5, time.Millisecond))
	defer tick.Stop()
	inflight := make(chan struct{}, 8) // bounds concurrent checks
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if n.raft.State() != raft.Leader {
			n.leaseStart.Store(0)
			continue
		}
		select {
		case inflight <- struct{}{}:
		default:
			continue // a quorum is slow or gone; the lease runs out on its own
		}
		start := time.Since(n.epoch)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inflight }()
			if n.raft.VerifyLeader().Error() != nil {
				return
			}
			for {
				old := n.leaseStart.Load()
				if int64(start) <= old || n.leaseStart.CompareAndSwap(old, int64(max(start, 1))) {
					return
				}
			}
		}()
	}
}

func (n *Node) stateLoop(ctx context.Context) {
	defer n.wg.Done()
	tick := time.NewTicker(max(n.cfg.Timing.Lease/10, time.Millisecond))
	defer tick.Stop()
	for {
		n.stepOnce(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-n.raft.LeaderCh():
		}
	}
}

// stepOnce observes, decides and acts.
func (n *Node) stepOnce(now time.Time) {
	leader := n.raft.State() == raft.Leader
	valid, _ := n.leaseValid(now)
	in := stepInput{
		self:       n.selfCandidate(),
		leader:     leader,
		leaseValid: leader && valid,
		preempt:    n.cfg.Preempt,
		preferred:  n.fsm.Preferred(),
		others:     n.otherCandidates(),
	}
	out := step(in)
	if out.preempting && !n.caughtUp() {
		out.transferTo, out.preempting = "", false
	}

	n.mu.Lock()
	old := n.state
	n.state = out.state
	fn := n.onState
	if out.state == StateMaster && old != StateMaster {
		n.masterSince = now
	}
	transfer := out.transferTo
	if out.preempting {
		if n.preemptFor != transfer {
			n.preemptFor, n.preemptAt = transfer, now
		}
		if now.Sub(n.preemptAt) < n.cfg.PreemptDelay {
			transfer = ""
		}
	} else {
		n.preemptFor = ""
	}
	n.mu.Unlock()

	if old != out.state {
		if fn != nil {
			fn(old, out.state)
		}
		n.log.Info("state change", "from", old, "to", out.state, "term", n.raft.Stats()["term"])
		select {
		case <-n.stateCh:
		default:
		}
		n.stateCh <- out.state
		n.publishMeta()
	}
	if transfer != "" && n.transferring.CompareAndSwap(false, true) {
		// In the background: a transfer waits for the target, and this
		// goroutine must keep checking the lease meanwhile.
		n.log.Info("handing over leadership", "to", transfer, "state", out.state, "preempt", out.preempting)
		go func() {
			defer n.transferring.Store(false)
			var err error
			if out.state == StateWitness {
				// A witness leads only after an election, typically
				// because the master died, and gossip may still show the
				// dead director alive. Raft's own choice (the follower
				// furthest along the log) is a live one: the dead node
				// never acknowledged this term. Priorities are restored
				// by preemption afterwards.
				err = n.raft.LeadershipTransfer().Error()
			} else {
				err = n.transferTo(transfer)
			}
			if err != nil && !errors.Is(err, raft.ErrLeadershipTransferInProgress) {
				n.log.Warn("leadership transfer failed", "to", transfer, "err", err)
				n.mu.Lock()
				if n.failedTarget == nil {
					n.failedTarget = map[string]time.Time{}
				}
				n.failedTarget[transfer] = time.Now()
				n.mu.Unlock()
			}
		}()
	}
}

// caughtUp reports whether this leader has applied the whole log of earlier
// terms; if not, it starts a barrier (once at a time) and reports false.
func (n *Node) caughtUp() bool {
	term := n.currentTerm()
	if n.caughtUpTerm.Load() == term {
		return true
	}
	if n.barrierBusy.CompareAndSwap(false, true) {
		go func() {
			defer n.barrierBusy.Store(false)
			if n.raft.Barrier(2*time.Second).Error() == nil {
				n.caughtUpTerm.Store(term)
			}
		}()
	}
	return false
}

func (n *Node) currentTerm() uint64 {
	t, _ := strconv.ParseUint(n.raft.Stats()["term"], 10, 64)
	return t
}

func (n *Node) transferTo(name string) error {
	addr, ok := n.raftAddress(name)
	if !ok {
		return fmt.Errorf("cluster: %s is not a raft voter", name)
	}
	return n.raft.LeadershipTransferToServer(raft.ServerID(name), addr).Error()
}

func (n *Node) raftAddress(name string) (raft.ServerAddress, bool) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return "", false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == name {
			return s.Address, true
		}
	}
	return "", false
}

func (n *Node) selfCandidate() candidate {
	return candidate{Name: n.cfg.Name, Role: n.cfg.Role, Priority: n.cfg.Priority,
		Alive: true, Healthy: n.healthy.Load(), Warm: n.warm.Load()}
}

func (n *Node) otherCandidates() []candidate {
	if n.ml == nil {
		return nil
	}
	n.mu.Lock()
	failed := maps.Clone(n.failedTarget)
	n.mu.Unlock()
	var out []candidate
	for name, p := range n.gossipView() {
		if name == n.cfg.Name || !p.known {
			continue
		}
		alive := p.alive
		if t, ok := failed[name]; ok && time.Since(t) < failedTargetMemory {
			alive = false
		}
		out = append(out, candidate{Name: name, Role: p.meta.Role, Priority: p.meta.Priority,
			Alive: alive, Healthy: p.meta.Healthy, Warm: p.meta.Warm})
	}
	slices.SortFunc(out, func(a, b candidate) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// peerView is this node's copy of what gossip says about one member.
// memberlist's own *Node values change under its lock, so they are copied
// in the event callbacks (which run under that lock) and never read later.
type peerView struct {
	meta  nodeMeta
	known bool // meta decoded
	alive bool
}

// gossipView returns a snapshot of the members' gossip state.
func (n *Node) gossipView() map[string]peerView {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	return maps.Clone(n.peers)
}

// eventDelegate keeps Node.peers in step with memberlist.
type eventDelegate Node

func (d *eventDelegate) record(m *memberlist.Node, alive bool) {
	var p peerView
	p.known = json.Unmarshal(m.Meta, &p.meta) == nil
	p.alive = alive
	n := (*Node)(d)
	n.peersMu.Lock()
	if n.peers == nil {
		n.peers = map[string]peerView{}
	}
	n.peers[m.Name] = p
	n.peersMu.Unlock()
}

func (d *eventDelegate) NotifyJoin(m *memberlist.Node)   { d.record(m, true) }
func (d *eventDelegate) NotifyLeave(m *memberlist.Node)  { d.record(m, false) }
func (d *eventDelegate) NotifyUpdate(m *memberlist.Node) { d.record(m, true) }

func (n *Node) publishMeta() {
	m := nodeMeta{Role: n.cfg.Role, Priority: n.cfg.Priority, Healthy: n.healthy.Load(), Warm: n.warm.Load()}
	if old := n.meta.Load(); old != nil {
		m.API, m.Resync = old.API, old.Resync
	}
	n.mu.Lock()
	m.State = n.state
	n.mu.Unlock()
	n.meta.Store(&m)
	n.updateGossip()
}

// updateGossip asks the gossip goroutine to publish the current metadata.
// Updates go through one goroutine so that memberlist never sees an older
// snapshot with a newer incarnation number.
func (n *Node) updateGossip() {
	select {
	case n.gossipKick <- struct{}{}:
	default:
	}
}

func (n *Node) gossipLoop(ctx context.Context) {
	defer n.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.gossipKick:
			if err := n.ml.UpdateNode(time.Second); err != nil {
				n.log.Debug("gossip: metadata update not yet acknowledged", "err", err)
			}
		}
	}
}

// metaDelegate serves this node's metadata to memberlist.
type metaDelegate Node

func (d *metaDelegate) NodeMeta(limit int) []byte {
	b, _ := json.Marshal((*Node)(d).meta.Load())
	if len(b) > limit {
		return nil
	}
	return b
}
func (d *metaDelegate) NotifyMsg([]byte)                           {}
func (d *metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *metaDelegate) LocalState(join bool) []byte                { return nil }
func (d *metaDelegate) MergeRemoteState(buf []byte, join bool)     {}

// Close leaves gossip, stops raft and closes the stores. The state goes to
// BACKUP (or stays WITNESS) through the callback first, so VIPs are
// withdrawn before the process lets go of anything else.
func (n *Node) Close() error {
	if n.cancel != nil {
		n.cancel()
		n.wg.Wait()
	}
	n.mu.Lock()
	old, fn := n.state, n.onState
	if n.state == StateMaster {
		n.state = StateBackup
	}
	n.mu.Unlock()
	if old == StateMaster && fn != nil {
		fn(old, StateBackup)
	}
	var errs []error
	if n.ml != nil {
		_ = n.ml.Leave(200 * time.Millisecond)
		errs = append(errs, n.ml.Shutdown())
	}
	if n.raft != nil {
		errs = append(errs, n.raft.Shutdown().Error())
	}
	if n.transport != nil {
		errs = append(errs, n.transport.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}

// Status is a node's view of itself and the cluster.
type Status struct {
	Name      string        `json:"name"`
	Role      Role          `json:"role"`
	State     State         `json:"state"`
	Term      uint64        `json:"term"`
	Leader    string        `json:"leader"`
	LeaseLeft time.Duration `json:"lease_left_ns"`
	// LastContact is how long ago a follower last heard the leader.
	LastContact   time.Duration `json:"last_contact_ns"`
	ConfigVersion uint64        `json:"config_version"`
	Tolerant      bool          `json:"survives_one_failure"`
	Warning       string        `json:"warning,omitempty"`
}

// Status returns the node's current status.
func (n *Node) Status() Status {
	_, leader := n.raft.LeaderWithID()
	st := Status{Name: n.cfg.Name, Role: n.cfg.Role, State: n.State(), Leader: string(leader)}
	st.Term, _ = strconv.ParseUint(n.raft.Stats()["term"], 10, 64)
	if st.State == StateMaster {
		_, st.LeaseLeft = n.leaseValid(time.Now())
	}
	if lc := n.raft.LastContact(); !lc.IsZero() {
		st.LastContact = time.Since(lc)
	}
	if r, ok := n.fsm.Current(); ok {
		st.ConfigVersion = r.Version
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		var voters []Peer
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				voters = append(voters, Peer{Name: string(s.ID)})
			}
		}
		st.Tolerant, st.Warning = FaultTolerance(voters)
	}
	return st
}

// Member is one node as this node sees it.
type Member struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Role     Role   `json:"role"`
	State    State  `json:"state"`
	Priority int    `json:"priority"`
	Suffrage string `json:"suffrage"` // voter, nonvoter, or none
	Alive    bool   `json:"alive"`
	Healthy  bool   `json:"healthy"`
	Warm     bool   `json:"warm"`
	Leader   bool   `json:"leader"`
}

// LeaderAPI returns the API address the current leader published, "" if
// unknown.
func (n *Node) LeaderAPI() string { return n.leaderMeta().API }

// SetResyncAddress publishes the address where this node, as master, serves
// full sync resyncs ("" when it serves none).
func (n *Node) SetResyncAddress(addr string) {
	m := *n.meta.Load()
	m.Resync = addr
	n.meta.Store(&m)
	n.updateGossip()
}

// LeaderResyncAddress returns the resync address the current leader
// published, "" if unknown.
func (n *Node) LeaderResyncAddress() string { return n.leaderMeta().Resync }

func (n *Node) leaderMeta() nodeMeta {
	_, leader := n.raft.LeaderWithID()
	if leader == "" || n.ml == nil {
		return nodeMeta{}
	}
	if string(leader) == n.cfg.Name {
		return *n.meta.Load()
	}
	if p, ok := n.gossipView()[string(leader)]; ok && p.known {
		return p.meta
	}
	return nodeMeta{}
}

// Members lists the raft configuration joined with the gossip view.
func (n *Node) Members() []Member {
	byName := map[string]*Member{}
	var order []string
	get := func(name string) *Member {
		if m, ok := byName[name]; ok {
			return m
		}
		m := &Member{Name: name, Suffrage: "none"}
		byName[name] = m
		order = append(order, name)
		return m
	}
	_, leader := n.raft.LeaderWithID()
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			m := get(string(s.ID))
			m.Address = string(s.Address)
			m.Suffrage = map[raft.ServerSuffrage]string{raft.Voter: "voter", raft.Nonvoter: "nonvoter", raft.Staging: "staging"}[s.Suffrage]
			m.Leader = s.ID == leader
		}
	}
	view := n.gossipView()
	names := slices.Sorted(maps.Keys(view))
	for _, name := range names {
		p := view[name]
		m := get(name)
		if p.known {
			m.Role, m.State, m.Priority, m.Healthy, m.Warm = p.meta.Role, p.meta.State, p.meta.Priority, p.meta.Healthy, p.meta.Warm
		}
		m.Alive = p.alive
	}
	out := make([]Member, 0, len(order))
	for _, name := range order {
		out = append(out, *byName[name])
	}
	return out
}

// ApplyConfig replicates a configuration document and returns its version.
// It must run on the leader (ErrNotLeader otherwise); the caller validates
// the document first.
func (n *Node) ApplyConfig(doc []byte, source string) (uint64, error) {
	v, _, err := n.applyConfig(opSetConfig, doc, source)
	return v, err
}

// SeedConfig replicates doc only if the cluster has no configuration yet,
// atomically; seeded reports whether it did.
func (n *Node) SeedConfig(doc []byte, source string) (version uint64, seeded bool, err error) {
	return n.applyConfig(opSeedConfig, doc, source)
}

func (n *Node) applyConfig(op string, doc []byte, source string) (uint64, bool, error) {
	if n.raft.State() != raft.Leader {
		return 0, false, ErrNotLeader
	}
	b, err := json.Marshal(command{Op: op, Doc: doc, Source: source, Time: time.Now().UTC()})
	if err != nil {
		return 0, false, fmt.Errorf("cluster: encode config: %w", err)
	}
	f := n.raft.Apply(b, 5*time.Second)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return 0, false, ErrNotLeader
		}
		return 0, false, fmt.Errorf("cluster: replicate config: %w", err)
	}
	res, _ := f.Response().(applyResult)
	return res.Version, !res.Skipped, res.Err
}

// AddVoter adds a node to the raft configuration as a voter (lbha join).
// It runs on the leader.
func (n *Node) AddVoter(name string, addr netip.Addr) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	raftAddr := raft.ServerAddress(netip.AddrPortFrom(addr, uint16(n.cfg.RaftPort)).String())
	if err := n.raft.AddVoter(raft.ServerID(name), raftAddr, 0, 5*time.Second).Error(); err != nil {
		return fmt.Errorf("cluster: add %s at %s: %w", name, raftAddr, err)
	}
	n.log.Info("node joined", "name", name, "address", raftAddr)
	return nil
}

// RemoveServer removes a node from the raft configuration (lbha leave).
// It runs on the leader; removing the leader itself hands leadership on.
func (n *Node) RemoveServer(name string) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if _, ok := n.raftAddress(name); !ok {
		return fmt.Errorf("cluster: %s is not a member", name)
	}
	if err := n.raft.RemoveServer(raft.ServerID(name), 0, 5*time.Second).Error(); err != nil {
		return fmt.Errorf("cluster: remove %s: %w", name, err)
	}
	n.log.Info("node left", "name", name)
	return nil
}

// Config returns a configuration version (0 = the current one).
func (n *Node) Config(version uint64) (Revision, bool) {
	if version == 0 {
		return n.fsm.Current()
	}
	return n.fsm.Get(version)
}

// ConfigHistory lists every version's metadata, oldest first.
func (n *Node) ConfigHistory() []Revision { return n.fsm.History() }

// ConfigChanges signals (coalesced) each time a new version is applied.
func (n *Node) ConfigChanges() <-chan struct{} { return n.fsm.notify }

// Failover moves mastership by leadership transfer: to the named director,
// or to the best other director when to is empty. Without force it refuses
// a target that is not alive, healthy and warm. It runs on the leader.
func (n *Node) Failover(to string, force bool) (string, error) {
	if n.raft.State() != raft.Leader {
		return "", ErrNotLeader
	}
	others := n.otherCandidates()
	if to == "" {
		to = bestDirector(others, func(c candidate) bool { return force || c.Warm })
		if to == "" {
			return "", fmt.Errorf("%w: no other healthy, warm director", ErrRefused)
		}
	} else if !force {
		var found *candidate
		for i := range others {
			if others[i].Name == to {
				found = &others[i]
			}
		}
		switch {
		case found == nil:
			return "", fmt.Errorf("%w: %s is not a known member", ErrRefused, to)
		case found.Role != RoleDirector:
			return "", fmt.Errorf("%w: %s is a %s, not a director", ErrRefused, to, found.Role)
		case !found.Alive:
			return "", fmt.Errorf("%w: %s is not alive", ErrRefused, to)
		case !found.Healthy:
			return "", fmt.Errorf("%w: %s is not healthy", ErrRefused, to)
		case !found.Warm:
			return "", fmt.Errorf("%w: %s has not finished its sync (not warm); use --force to override", ErrRefused, to)
		}
	}
	// Record the choice first, so that preemption does not hand mastership
	// straight back to a director of higher priority.
	b, err := json.Marshal(command{Op: opPrefer, Node: to, Time: time.Now().UTC()})
	if err != nil {
		return "", err
	}
	if err := n.raft.Apply(b, 2*time.Second).Error(); err != nil {
		return "", fmt.Errorf("cluster: record %s as preferred master: %w", to, err)
	}
	if err := n.transferTo(to); err != nil {
		return "", fmt.Errorf("cluster: transfer to %s: %w", to, err)
	}
	return to, nil
}

// slogWriter adapts a library's line-oriented log output to slog.
func slogWriter(l *slog.Logger, component string) io.Writer {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			level := slog.LevelDebug
			switch {
			case strings.Contains(line, "[ERR"):
				level = slog.LevelError
			case strings.Contains(line, "[WARN"):
				level = slog.LevelWarn
			}
			l.Log(context.Background(), level, line, "component", component)
		}
	}()
	return pw
}
