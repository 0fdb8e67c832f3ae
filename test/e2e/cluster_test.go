package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbha/lbha/internal/netlab"
)

func TestElectionAndCLI(t *testing.T) {
	c := newCluster(t, "director", "director", "witness")
	m := c.waitStableMaster(15 * time.Second)
	if m == "wit1" {
		t.Fatal("the witness became master")
	}
	out, err := c.cli(c.node("wit1"), "members")
	if err != nil {
		t.Fatalf("members: %v\n%s", err, out)
	}
	for _, want := range []string{"NODE", "dir1", "dir2", "wit1", "voter", "witness"} {
		if !strings.Contains(out, want) {
			t.Fatalf("members output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("lbha members:\n%s", out)
	out, err = c.cli(c.node(m), "status")
	if err != nil || !strings.Contains(out, "MASTER") || !strings.Contains(out, "lease left") {
		t.Fatalf("status on the master: %v\n%s", err, out)
	}
	t.Logf("lbha status:\n%s", out)
	// Prometheus metrics, scraped from inside the master's namespace.
	var body []byte
	// (net/http dials from another goroutine, outside the namespace: dial
	// here and speak HTTP over the connection.)
	err = c.node(m).ns.Do(func() error {
		conn, err := net.Dial("tcp", c.node(m).addr+":9470")
		if err != nil {
			return err
		}
		defer conn.Close()
		req, _ := http.NewRequest(http.MethodGet, "http://"+c.node(m).addr+":9470/metrics", nil)
		if err := req.Write(conn); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(resp.Body)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^lbha_failovers_total [1-9]`).Match(body) {
		t.Errorf("metrics lack a non-zero lbha_failovers_total")
	}
	for _, want := range []string{`lbha_state{state="MASTER"} 1`, "lbha_raft_term ", "lbha_is_leader 1", "lbha_config_version", `lbha_vip_announcements_total{kind="arp"}`, "lbha_vips_held 1"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// The notify hook ran with the new state and the VIPs as arguments.
	if !netlab.WaitFor(3*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(c.node(m).dir, "notify.log"))
		return strings.Contains(string(b), "MASTER 192.0.2.100/24")
	}) {
		b, _ := os.ReadFile(filepath.Join(c.node(m).dir, "notify.log"))
		t.Fatalf("notify.log of the master: %q", b)
	}
	// The master seeds the cluster configuration from its file.
	if !netlab.WaitFor(5*time.Second, func() bool {
		st, err := c.status(c.node("wit1"))
		return err == nil && st.ConfigVersion >= 1
	}) {
		t.Fatal("the witness never received configuration version 1")
	}
}

func TestCrashFailoverKill9(t *testing.T) {
	c := newCluster(t, "director", "director", "witness")
	m := c.waitStableMaster(15 * time.Second)
	start := time.Now()
	if err := kill(c.node(m), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	next := c.waitMaster(5*time.Second, map[string]bool{m: true})
	t.Logf("master %s killed; %s is master after %v (as seen through the CLI)", m, next, time.Since(start).Round(time.Millisecond))
	if next == "wit1" {
		t.Fatal("the witness became master")
	}
	// The killed node restarts with its raft state (same term or later,
	// no bootstrap) and rejoins. dir1 has the highest priority and
	// preemption is on by default, so it takes mastership back, as VRRP
	// would.
	before, _ := c.status(c.node(next))
	c.start(c.node(m))
	if !netlab.WaitFor(10*time.Second, func() bool {
		st, err := c.status(c.node(m))
		return err == nil && st.Leader != "" && st.Term >= before.Term
	}) {
		c.dumpLogs()
		t.Fatalf("%s did not rejoin", m)
	}
	want := next
	if m == "dir1" {
		want = "dir1"
	}
	var got []string
	if !netlab.WaitFor(5*time.Second, func() bool {
		got = c.masters(nil)
		return len(got) == 1 && got[0] == want
	}) {
		t.Fatalf("masters after %s rejoined: %v, want [%s]", m, got, want)
	}
}

func TestPlannedFailover(t *testing.T) {
	c := newCluster(t, "director", "director", "witness")
	m := c.waitStableMaster(15 * time.Second)
	other := "dir1"
	if m == "dir1" {
		other = "dir2"
	}
	// Gossip must know the other director before a transfer is allowed.
	var out string
	if !netlab.WaitFor(5*time.Second, func() bool {
		var err error
		out, err = c.cli(c.node(other), "failover", "--to", other)
		return err == nil
	}) {
		t.Fatalf("failover --to %s (asked on the target, forwarded to the leader): %s", other, out)
	}
	t.Logf("%s", strings.TrimSpace(out))
	if got := c.waitMaster(2*time.Second, map[string]bool{m: true}); got != other {
		t.Fatalf("master is %s, want %s", got, other)
	}
	out, err := c.cli(c.node(other), "failover", "--to", "wit1")
	if err == nil || !strings.Contains(out, "witness") {
		t.Fatalf("failover to the witness was not refused clearly: %v\n%s", err, out)
	}
}

func TestConfigApplyFromBackup(t *testing.T) {
	c := newCluster(t, "director", "director", "witness")
	m := c.waitStableMaster(15 * time.Second)
	backup := "dir1"
	if m == "dir1" {
		backup = "dir2"
	}
	n := c.node(backup)
	doc, err := os.ReadFile(n.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	doc = append(doc, []byte("services:\n  - {protocol: tcp, address: 192.0.2.100:80, real_servers: [{address: 198.51.100.11:80}]}\n")...)
	file := filepath.Join(t.TempDir(), "new.yaml")
	if err := os.WriteFile(file, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	var out string
	if !netlab.WaitFor(5*time.Second, func() bool {
		out, err = c.cli(n, "config", "apply", file)
		return err == nil
	}) {
		t.Fatalf("config apply on backup %s: %v\n%s", backup, err, out)
	}
	if !strings.Contains(out, "applied") {
		t.Fatalf("config apply said: %s", out)
	}
	for _, x := range c.nodes {
		if !netlab.WaitFor(5*time.Second, func() bool {
			out, err := c.cli(x, "config", "show")
			return err == nil && strings.Contains(out, "198.51.100.11:80")
		}) {
			t.Fatalf("%s never showed the applied configuration", x.name)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("node: {name: x, role: boss}\n"), 0o644)
	if out, err := c.cli(n, "config", "apply", bad); err == nil || !strings.Contains(out, "bad.yaml:1:") {
		t.Fatalf("an invalid file was not refused with a located error: %v\n%s", err, out)
	}
	out, err = c.cli(n, "config", "history")
	if err != nil || !strings.Contains(out, "VERSION") {
		t.Fatalf("config history: %v\n%s", err, out)
	}
	t.Logf("lbha config history:\n%s", out)
}

func TestJoinAndLeave(t *testing.T) {
	c := newCluster(t, "director", "director", "witness")
	c.waitStableMaster(15 * time.Second)
	// A fourth node, configured with every peer, starts with --join.
	n := c.addNode("dir3", "192.0.2.14")
	n.proc = n.ns.Start(lbhaBin, "agent", "--join", "--config", n.cfgPath)
	var out string
	var err error
	if !netlab.WaitFor(10*time.Second, func() bool {
		out, err = c.cli(n, "join", c.nodes[0].addr)
		return err == nil
	}) {
		t.Fatalf("join: %v\n%s", err, out)
	}
	voters := func(at *node) int {
		out, err := c.cli(at, "members")
		if err != nil {
			return -1
		}
		return strings.Count(out, " voter ")
	}
	if !netlab.WaitFor(5*time.Second, func() bool { return voters(c.nodes[0]) == 4 && voters(n) == 4 }) {
		out, _ := c.cli(n, "members")
		t.Fatalf("after join, members of dir3:\n%s", out)
	}
	if out, err := c.cli(n, "leave"); err != nil || !strings.Contains(out, "left") {
		t.Fatalf("leave: %v\n%s", err, out)
	}
	if err := n.proc.Wait(5 * time.Second); err != nil {
		t.Fatalf("agent of dir3 did not stop after leaving: %v", err)
	}
	if !netlab.WaitFor(5*time.Second, func() bool { return voters(c.nodes[0]) == 3 }) {
		out, _ := c.cli(c.nodes[0], "members")
		t.Fatalf("after leave, members:\n%s", out)
	}
}

// TestNodesAdoptClusterConfig: VIPs come from the replicated configuration,
// not from a node's local file: after `lbha config apply` moves the VIP, a
// node restarted with its old file still serves the cluster's VIP.
func TestNodesAdoptClusterConfig(t *testing.T) {
	c := newCluster(t, "director", "director", "witness")
	m := c.waitStableMaster(15 * time.Second)
	doc, err := os.ReadFile(c.node(m).cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "moved.yaml")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(string(doc), "192.0.2.100/24", "192.0.2.101/24")), 0o644); err != nil {
		t.Fatal(err)
	}
	if !netlab.WaitFor(5*time.Second, func() bool { _, err := c.cli(c.node("wit1"), "config", "apply", file); return err == nil }) {
		t.Fatal("config apply failed")
	}
	holds := func(n *node, addr string) bool {
		o, _ := n.ns.Run("ip", "-o", "addr", "show", "dev", "eth0")
		return strings.Contains(o, addr)
	}
	if !netlab.WaitFor(3*time.Second, func() bool { return holds(c.node(m), "192.0.2.101/24") && !holds(c.node(m), "192.0.2.100/24") }) {
		t.Fatalf("master %s did not move to the applied VIP", m)
	}
	// Restart the master with its old file (VIP .100); whoever is master
	// afterwards must hold .101 only.
	if err := kill(c.node(m), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.waitMaster(5*time.Second, map[string]bool{m: true})
	c.start(c.node(m))
	if !netlab.WaitFor(10*time.Second, func() bool {
		st, err := c.status(c.node(m))
		return err == nil && st.ConfigVersion >= 2
	}) {
		st, err := c.status(c.node(m))
		c.dumpLogs()
		t.Fatalf("restarted %s did not catch up with the cluster configuration: %+v %v", m, st, err)
	}
	time.Sleep(time.Second) // let preemption settle
	cur := c.waitMaster(5*time.Second, nil)
	if !netlab.WaitFor(3*time.Second, func() bool { return holds(c.node(cur), "192.0.2.101/24") }) {
		t.Fatalf("master %s does not hold the cluster's VIP", cur)
	}
	for _, n := range c.nodes {
		if holds(n, "192.0.2.100/24") {
			t.Fatalf("%s holds the VIP of its stale local file", n.name)
		}
	}
}

// TestSyncWarmth: the master runs the sync master, the backup the sync
// backup, which reports warm to the cluster only after a full resync.
func TestSyncWarmth(t *testing.T) {
	c := newCluster(t, "director", "director", "witness")
	m := c.waitStableMaster(15 * time.Second)
	backup := "dir1"
	if m == "dir1" {
		backup = "dir2"
	}
	var out string
	if !netlab.WaitFor(5*time.Second, func() bool {
		out, _ = c.cli(c.node(backup), "sync", "stats")
		return strings.Contains(out, "role") && strings.Contains(out, "backup") && regexp.MustCompile(`warm\s+yes`).MatchString(out)
	}) {
		t.Fatalf("backup %s never warm:\n%s", backup, out)
	}
	t.Logf("lbha sync stats on the backup:\n%s", out)
	out, err := c.cli(c.node(m), "sync", "stats", "--json")
	if err != nil || !strings.Contains(out, `"role": "master"`) || !strings.Contains(out, `"ResyncsServed": 1`) {
		t.Fatalf("sync stats on the master: %v\n%s", err, out)
	}
	out, _ = c.cli(c.node(m), "members")
	if strings.Count(out, " yes   ") < 2 {
		t.Logf("members:\n%s", out)
	}
}
