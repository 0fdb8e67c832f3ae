package cluster

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"
)

// testCluster runs real raft and memberlist over loopback, one address per
// node (127.0.0.x) so every node uses the same ports, as in production.
type testCluster struct {
	t     *testing.T
	cfgs  []Config
	nodes []*Node
	mu    sync.Mutex
	// masters records every transition into and out of MASTER, to check
	// that two nodes never hold mastership at once.
	holders map[string]bool
	overlap bool
}

var portBase = 17000

func newTestCluster(t *testing.T, roles ...Role) *testCluster {
	t.Helper()
	return newTestClusterWith(t, nil, roles...)
}

// newTestClusterWith lets mut adjust each node's configuration.
func newTestClusterWith(t *testing.T, mut func(i int, c *Config), roles ...Role) *testCluster {
	t.Helper()
	portBase += 10
	tc := &testCluster{t: t, holders: map[string]bool{}}
	var peers []Peer
	for i, r := range roles {
		peers = append(peers, Peer{Name: fmt.Sprintf("n%d", i+1), Addr: netip.AddrFrom4([4]byte{127, 0, 0, byte(i + 1)}), Role: r})
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	for i, p := range peers {
		tc.cfgs = append(tc.cfgs, Config{
			Name: p.Name, Role: p.Role, Priority: 100 + i, DataDir: t.TempDir(), Bind: p.Addr,
			RaftPort: portBase, GossipPort: portBase + 1, Peers: peers, Logger: log,
		})
		if mut != nil {
			mut(i, &tc.cfgs[i])
		}
	}
	tc.nodes = make([]*Node, len(peers))
	for i := range peers {
		tc.start(i)
	}
	t.Cleanup(func() {
		for _, n := range tc.nodes {
			if n != nil {
				n.Close()
			}
		}
	})
	return tc
}

func (tc *testCluster) start(i int) {
	tc.t.Helper()
	n, err := Start(tc.cfgs[i])
	if err != nil {
		tc.t.Fatal(err)
	}
	name := tc.cfgs[i].Name
	n.OnStateChange(func(old, new State) {
		tc.mu.Lock()
		defer tc.mu.Unlock()
		if new == StateMaster {
			for other, held := range tc.holders {
				if held && other != name {
					tc.overlap = true
				}
			}
		}
		tc.holders[name] = new == StateMaster
		tc.t.Logf("%s %s: %v -> %v", time.Now().Format("15:04:05.000"), name, old, new)
	})
	tc.nodes[i] = n
}

func (tc *testCluster) stop(i int) {
	tc.nodes[i].Close()
	tc.nodes[i] = nil
}

// masters returns the indexes of nodes in MASTER state.
func (tc *testCluster) masters() []int {
	var out []int
	for i, n := range tc.nodes {
		if n != nil && n.State() == StateMaster {
			out = append(out, i)
		}
	}
	return out
}

func (tc *testCluster) waitMaster(d time.Duration, not int) int {
	tc.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if m := tc.masters(); len(m) == 1 && m[0] != not {
			return m[0]
		}
		time.Sleep(5 * time.Millisecond)
	}
	tc.t.Fatalf("no single master within %v (masters %v)", d, tc.masters())
	return -1
}

// waitWarm waits until node i's gossip view shows name's warm flag.
func (tc *testCluster) waitWarm(i int, name string, warm bool) {
	tc.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, c := range tc.nodes[i].otherCandidates() {
			if c.Name == name && c.Warm == warm {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	tc.t.Fatalf("%s never saw %s warm=%v", tc.cfgs[i].Name, name, warm)
}

func (tc *testCluster) checkNoOverlap() {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.overlap {
		tc.t.Fatal("two nodes were MASTER at the same time")
	}
}

func TestClusterElectsOneDirectorMaster(t *testing.T) {
	tc := newTestCluster(t, RoleDirector, RoleDirector, RoleWitness)
	m := tc.waitMaster(10*time.Second, -1)
	if tc.cfgs[m].Role != RoleDirector {
		t.Fatalf("master is a %s", tc.cfgs[m].Role)
	}
	// Stable for a while: still exactly one master.
	time.Sleep(500 * time.Millisecond)
	if got := tc.masters(); len(got) != 1 {
		t.Fatalf("masters = %v after settling", got)
	}
	if st := tc.nodes[2].State(); st != StateWitness {
		t.Fatalf("witness state = %v", st)
	}
	st := tc.nodes[m].Status()
	if !st.Tolerant || st.Leader != tc.cfgs[m].Name || st.LeaseLeft <= 0 {
		t.Fatalf("master status %+v", st)
	}
	tc.checkNoOverlap()
}

func TestClusterWitnessHandsOverLeadership(t *testing.T) {
	tc := newTestCluster(t, RoleDirector, RoleDirector, RoleWitness)
	m := tc.waitMaster(10*time.Second, -1)
	// Make the witness leader by transfer; it must hand back to a director.
	if err := tc.nodes[m].transferTo("n3"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if l := tc.nodes[0].Status().Leader; l == "n1" || l == "n2" {
			if len(tc.masters()) == 1 {
				tc.checkNoOverlap()
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("leadership stayed with the witness: %+v", tc.nodes[0].Status())
}

func TestClusterFailoverOnMasterLoss(t *testing.T) {
	tc := newTestCluster(t, RoleDirector, RoleDirector, RoleWitness)
	m := tc.waitMaster(10*time.Second, -1)
	start := time.Now()
	tc.stop(m)
	next := tc.waitMaster(5*time.Second, m)
	t.Logf("new master %s after %v", tc.cfgs[next].Name, time.Since(start))
	tc.checkNoOverlap()

	// The old master restarts with its raft state and rejoins as backup.
	tc.start(m)
	time.Sleep(500 * time.Millisecond)
	if got := tc.masters(); len(got) != 1 {
		t.Fatalf("masters after rejoin = %v", got)
	}
	tc.checkNoOverlap()
}

func TestClusterPlannedFailover(t *testing.T) {
	tc := newTestCluster(t, RoleDirector, RoleDirector, RoleWitness)
	m := tc.waitMaster(10*time.Second, -1)
	other := 1 - m
	// Wait until gossip shows the other director.
	deadline := time.Now().Add(5 * time.Second)
	for len(tc.nodes[m].otherCandidates()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := tc.nodes[m].Failover("n3", false); err == nil {
		t.Fatal("failover to the witness was accepted")
	}
	tc.nodes[other].SetWarm(false)
	tc.waitWarm(m, tc.cfgs[other].Name, false)
	if _, err := tc.nodes[m].Failover(tc.cfgs[other].Name, false); err == nil {
		t.Fatal("failover to a cold director was accepted without force")
	}
	tc.nodes[other].SetWarm(true)
	tc.waitWarm(m, tc.cfgs[other].Name, true)
	start := time.Now()
	to, err := tc.nodes[m].Failover("", false)
	if err != nil {
		t.Fatal(err)
	}
	if to != tc.cfgs[other].Name {
		t.Fatalf("failover chose %s", to)
	}
	got := tc.waitMaster(2*time.Second, m)
	t.Logf("switchover to %s took %v", tc.cfgs[got].Name, time.Since(start))
	tc.checkNoOverlap()
}

func TestClusterReplicatesConfig(t *testing.T) {
	tc := newTestCluster(t, RoleDirector, RoleDirector, RoleWitness)
	m := tc.waitMaster(10*time.Second, -1)
	if _, err := tc.nodes[(m+1)%3].ApplyConfig([]byte("x: 1\n"), "test"); err != ErrNotLeader {
		t.Fatalf("ApplyConfig on a follower = %v, want ErrNotLeader", err)
	}
	for i, doc := range []string{"a: 1\n", "a: 2\n", "a: 3\n"} {
		// Leadership may still be settling (a witness handing over):
		// like the API, retry on the current master.
		var v uint64
		var err error
		for try := 0; try < 50; try++ {
			if v, err = tc.nodes[m].ApplyConfig([]byte(doc), "test"); err != ErrNotLeader {
				break
			}
			m = tc.waitMaster(5*time.Second, -1)
		}
		if err != nil {
			t.Fatal(err)
		}
		if v != uint64(i+1) {
			t.Fatalf("version %d, want %d", v, i+1)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, n := range tc.nodes {
		for {
			if r, ok := n.Config(0); ok && r.Version == 3 {
				if string(r.Doc) != "a: 3\n" {
					t.Fatalf("%s has doc %q", n.cfg.Name, r.Doc)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not reach version 3", n.cfg.Name)
			}
			time.Sleep(5 * time.Millisecond)
		}
		h := n.ConfigHistory()
		if len(h) != 3 || h[0].Version != 1 || h[2].Version != 3 || h[0].Doc != nil {
			t.Fatalf("%s history %+v", n.cfg.Name, h)
		}
	}
	// A restarted follower keeps the replicated configuration.
	f := (m + 1) % 3
	tc.stop(f)
	tc.start(f)
	deadline = time.Now().Add(5 * time.Second)
	for {
		if r, ok := tc.nodes[f].Config(2); ok && string(r.Doc) == "a: 2\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("restarted node lost the configuration history")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConfigValidate(t *testing.T) {
	base := Config{Name: "a", DataDir: "/tmp/x", Bind: netip.MustParseAddr("127.0.0.1")}
	base.setDefaults()
	for name, mut := range map[string]func(*Config){
		"no name":        func(c *Config) { c.Name = "" },
		"bad role":       func(c *Config) { c.Role = "boss" },
		"priority":       func(c *Config) { c.Priority = 300 },
		"lease too long": func(c *Config) { c.Timing.Lease = c.Timing.Heartbeat },
		"self missing":   func(c *Config) { c.Peers = []Peer{{Name: "b", Addr: c.Bind}} },
		"dup peer": func(c *Config) {
			c.Peers = []Peer{{Name: "a", Addr: c.Bind}, {Name: "a", Addr: c.Bind}}
		},
	} {
		c := base
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	if ok, w := FaultTolerance([]Peer{{Name: "a"}, {Name: "b"}}); ok || w == "" {
		t.Fatal("a two-voter cluster is reported as fault tolerant")
	}
}

func TestClusterGossipEncryption(t *testing.T) {
	tc := newTestClusterWith(t, func(i int, c *Config) { c.GossipKey = []byte("0123456789abcdef") }, RoleDirector, RoleDirector, RoleWitness)
	m := tc.waitMaster(10*time.Second, -1)
	deadline := time.Now().Add(5 * time.Second)
	for len(tc.nodes[m].otherCandidates()) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("encrypted gossip never formed a cluster")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c := tc.cfgs[0]
	c.GossipKey = []byte("short")
	if err := c.Validate(); err == nil {
		t.Fatal("a 5-byte gossip key was accepted")
	}
}

func TestSeedNeverOverwrites(t *testing.T) {
	tc := newTestCluster(t, RoleDirector, RoleDirector, RoleWitness)
	m := tc.waitMaster(10*time.Second, -1)
	var v uint64
	var seeded bool
	var err error
	for try := 0; try < 50; try++ {
		if v, seeded, err = tc.nodes[m].SeedConfig([]byte("seed: 1\n"), "seed"); err != ErrNotLeader {
			break
		}
		m = tc.waitMaster(5*time.Second, -1)
	}
	if err != nil || !seeded || v != 1 {
		t.Fatalf("first seed: v=%d seeded=%v err=%v", v, seeded, err)
	}
	if _, err := tc.nodes[m].ApplyConfig([]byte("op: 2\n"), "operator"); err != nil {
		t.Fatal(err)
	}
	v, seeded, err = tc.nodes[m].SeedConfig([]byte("seed: again\n"), "seed")
	if err != nil || seeded || v != 2 {
		t.Fatalf("second seed: v=%d seeded=%v err=%v; want a no-op at version 2", v, seeded, err)
	}
	if r, _ := tc.nodes[m].Config(0); string(r.Doc) != "op: 2\n" {
		t.Fatalf("current config %q", r.Doc)
	}
}

// With preemption on, a planned failover to a lower-priority director
// sticks: the new master has not necessarily applied the "preferred" entry
// when it takes over, and must not preempt before it has.
func TestPlannedFailoverSticksWithPreemption(t *testing.T) {
	tc := newTestClusterWith(t, func(i int, c *Config) { c.Preempt = true }, RoleDirector, RoleDirector, RoleWitness)
	// n2 has the higher priority (101): preemption makes it master.
	deadline := time.Now().Add(10 * time.Second)
	for !(len(tc.masters()) == 1 && tc.masters()[0] == 1) {
		if time.Now().After(deadline) {
			t.Fatalf("n2 never became master by preemption: %v", tc.masters())
		}
		time.Sleep(5 * time.Millisecond)
	}
	tc.waitWarm(1, "n1", true)
	for trial := 0; trial < 5; trial++ {
		from, to := 1, 0
		if trial%2 == 1 {
			from, to = 0, 1
		}
		if _, err := tc.nodes[from].Failover(tc.cfgs[to].Name, false); err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		tc.waitMaster(2*time.Second, from)
		end := time.Now().Add(time.Second)
		for time.Now().Before(end) {
			if m := tc.masters(); len(m) == 1 && m[0] != to {
				t.Fatalf("trial %d: mastership went back to %s after a planned failover to %s", trial, tc.cfgs[m[0]].Name, tc.cfgs[to].Name)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	tc.checkNoOverlap()
}

// The configuration history survives a snapshot and a restart that
// restores from it (the log before the snapshot is compacted away).
func TestSnapshotRestore(t *testing.T) {
	tc := newTestCluster(t, RoleDirector, RoleDirector, RoleWitness)
	m := tc.waitMaster(10*time.Second, -1)
	for i := 1; i <= 3; i++ {
		doc := []byte(fmt.Sprintf("v: %d\n", i))
		_, err := tc.nodes[m].ApplyConfig(doc, "test")
		for try := 0; err == ErrNotLeader && try < 50; try++ {
			m = tc.waitMaster(5*time.Second, -1)
			_, err = tc.nodes[m].ApplyConfig(doc, "test")
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tc.nodes[m].Failover("", true); err != nil { // record a preferred master too
		t.Fatal(err)
	}
	f := (m + 1) % 3
	deadline := time.Now().Add(5 * time.Second)
	for {
		if r, ok := tc.nodes[f].Config(0); ok && r.Version == 3 && tc.nodes[f].fsm.Preferred() != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("follower never reached version 3 and the preferred master")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := tc.nodes[f].raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	preferred := tc.nodes[f].fsm.Preferred()
	tc.stop(f)
	tc.start(f)
	// Restored from the snapshot, before any new entry arrives.
	r, ok := tc.nodes[f].Config(2)
	if !ok || string(r.Doc) != "v: 2\n" || len(tc.nodes[f].ConfigHistory()) != 3 {
		t.Fatalf("after restore: %+v %v, history %d", r, ok, len(tc.nodes[f].ConfigHistory()))
	}
	if got := tc.nodes[f].fsm.Preferred(); got != preferred || got == "" {
		t.Fatalf("preferred master after restore = %q, want %q", got, preferred)
	}
}
