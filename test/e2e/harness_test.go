package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lbha/lbha/internal/netlab"
)

var lbhaBin, realServerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lbha-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lbhaBin = filepath.Join(dir, "lbha")
	realServerBin = filepath.Join(dir, "realserver")
	for bin, pkg := range map[string]string{lbhaBin: "github.com/lbha/lbha/cmd/lbha", realServerBin: "github.com/lbha/lbha/test/realserver"} {
		build := exec.Command("go", "build", "-o", bin, pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: building", pkg+":", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is one lbha process in its namespace.
type node struct {
	name, role string
	addr       string
	ns         *netlab.Node
	dir        string // data directory and socket live here
	cfgPath    string
	proc       *netlab.Process
}

// cluster is a set of lbha nodes on one bridge.
type cluster struct {
	t     *testing.T
	lab   *netlab.Lab
	nodes []*node
	sw    *netlab.Switch // the cluster network
	front *netlab.Switch // the client-side network directors track

	opts clusterOpts

	mu       sync.Mutex
	isFrozen map[string]bool // SIGSTOPped: their CLI would hang
}

// clusterOpts extend the standard cluster.
type clusterOpts struct {
	// directorYAML is appended to every director's configuration
	// (services, dataplane options).
	directorYAML string
	// beforeStart runs once the namespaces and switches exist, before any
	// lbha process starts (real servers, clients, routes).
	beforeStart func(c *cluster)
}

func (c *cluster) setFrozen(name string, f bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isFrozen == nil {
		c.isFrozen = map[string]bool{}
	}
	c.isFrozen[name] = f
}

func (c *cluster) frozen() map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]bool{}
	for k, v := range c.isFrozen {
		out[k] = v
	}
	return out
}

// newCluster starts directors and a witness (roles in order, named dir1..,
// wit1..), each in its own namespace on one switch, addresses 192.0.2.11+.
func newCluster(t *testing.T, roles ...string) *cluster {
	t.Helper()
	return newClusterWith(t, clusterOpts{}, roles...)
}

func newClusterWith(t *testing.T, opts clusterOpts, roles ...string) *cluster {
	t.Helper()
	lab := netlab.New(t)
	sw, front := lab.Switch(), lab.Switch()
	c := &cluster{t: t, lab: lab, opts: opts}
	nd, nw := 0, 0
	for i, r := range roles {
		name := ""
		if r == "director" {
			nd++
			name = fmt.Sprintf("dir%d", nd)
		} else {
			nw++
			name = fmt.Sprintf("wit%d", nw)
		}
		n := &node{name: name, role: r, addr: fmt.Sprintf("192.0.2.%d", 11+i), dir: t.TempDir()}
		n.ns = lab.Node(name)
		n.ns.Attach(sw, "eth0", n.addr+"/24")
		if r == "director" {
			n.ns.Attach(front, "front0", fmt.Sprintf("198.51.100.%d/24", 11+i))
		}
		c.nodes = append(c.nodes, n)
	}
	c.sw, c.front = sw, front
	for i, n := range c.nodes {
		c.writeConfig(n, i)
	}
	if opts.beforeStart != nil {
		opts.beforeStart(c)
	}
	for _, n := range c.nodes {
		c.start(n)
	}
	return c
}

// addNode creates a further director (not started) whose configuration
// lists every existing node and itself.
func (c *cluster) addNode(name, addr string) *node {
	n := &node{name: name, role: "director", addr: addr, dir: c.t.TempDir()}
	n.ns = c.lab.Node(name)
	n.ns.Attach(c.sw, "eth0", addr+"/24")
	n.ns.Attach(c.front, "front0", "198.51.100.99/24")
	c.nodes = append(c.nodes, n)
	c.writeConfig(n, len(c.nodes)-1)
	return n
}

// writeConfig writes n's configuration; i orders director priorities.
func (c *cluster) writeConfig(n *node, i int) {
	t := c.t
	var peers strings.Builder
	for _, p := range c.nodes {
		fmt.Fprintf(&peers, "    - {name: %s, address: %s, role: %s}\n", p.name, p.addr, p.role)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "node: {name: %s, role: %s, bind_address: %s, data_dir: %s", n.name, n.role, n.addr, filepath.Join(n.dir, "data"))
	if n.role == "director" {
		fmt.Fprintf(&b, ", priority: %d", 200-i)
	}
	b.WriteString("}\ncluster:\n  peers:\n" + peers.String())
	// The notify hook appends "STATE VIP..." to notify.log.
	script := filepath.Join(n.dir, "notify.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$@\" >> "+filepath.Join(n.dir, "notify.log")+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "  notify_command: %s\n", script)
	if n.role == "director" {
		b.WriteString("  track_interfaces: [front0]\n")
	}
	fmt.Fprintf(&b, "api: {socket: %s, metrics_address: \"%s:9470\"}\n", filepath.Join(n.dir, "lbha.sock"), n.addr)
	if n.role == "director" {
		b.WriteString("vips:\n  - {address: 192.0.2.100/24, interface: eth0}\n")
		b.WriteString("sync: {interface: eth0, syncid: 1}\n")
		b.WriteString(c.opts.directorYAML)
	}
	n.cfgPath = filepath.Join(n.dir, "lbha.yaml")
	if err := os.WriteFile(n.cfgPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) start(n *node) {
	cmd := "agent"
	if n.role == "witness" {
		cmd = "witness"
	}
	n.proc = n.ns.Start(lbhaBin, cmd, "--config", n.cfgPath, "--log-level", "info")
}

func (c *cluster) node(name string) *node {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no node %s", name)
	return nil
}

// cli runs the lbha CLI against a node's socket.
func (c *cluster) cli(n *node, args ...string) (string, error) {
	args = append(args, "--socket", filepath.Join(n.dir, "lbha.sock"))
	out, err := exec.Command(lbhaBin, args...).CombinedOutput()
	return string(out), err
}

type status struct {
	Name          string `json:"name"`
	State         string `json:"state"`
	Leader        string `json:"leader"`
	Term          uint64 `json:"term"`
	ConfigVersion uint64 `json:"config_version"`
}

func (c *cluster) status(n *node) (status, error) {
	out, err := c.cli(n, "status", "--json")
	if err != nil {
		return status{}, fmt.Errorf("%s: %v: %s", n.name, err, out)
	}
	var st status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return status{}, fmt.Errorf("%s: %v: %s", n.name, err, out)
	}
	return st, nil
}

// running reports whether a node's process is alive and not stopped.
func running(n *node) bool {
	select {
	case <-n.proc.Done():
		return false
	default:
		return true
	}
}

// masters returns the running, not frozen, nodes that say MASTER.
func (c *cluster) masters(skip map[string]bool) []string {
	var out []string
	frozen := c.frozen()
	for _, n := range c.nodes {
		if !running(n) || skip[n.name] || frozen[n.name] {
			continue
		}
		if st, err := c.status(n); err == nil && st.State == "MASTER" {
			out = append(out, n.name)
		}
	}
	return out
}

// waitMaster waits until exactly one reachable node is MASTER and it is not
// in skip, and returns its name.
func (c *cluster) waitMaster(d time.Duration, skip map[string]bool) string {
	c.t.Helper()
	var last []string
	ok := netlab.WaitFor(d, func() bool {
		last = c.masters(skip)
		return len(last) == 1
	})
	if !ok {
		c.dumpLogs()
		c.t.Fatalf("no single master within %v (masters: %v)", d, last)
	}
	return last[0]
}

// waitStableMaster waits until one node has been the only master for
// 700 ms: after start, the first winner may still hand mastership to a
// director of higher priority (preemption).
func (c *cluster) waitStableMaster(d time.Duration) string {
	c.t.Helper()
	var cur string
	var since time.Time
	ok := netlab.WaitFor(d, func() bool {
		m := c.masters(nil)
		if len(m) != 1 {
			cur = ""
			return false
		}
		if m[0] != cur {
			cur, since = m[0], time.Now()
		}
		return time.Since(since) >= 700*time.Millisecond
	})
	if !ok {
		c.dumpLogs()
		c.t.Fatalf("no stable master within %v", d)
	}
	return cur
}

func (c *cluster) dumpLogs() {
	for _, n := range c.nodes {
		out := n.proc.Output.String()
		if len(out) > 4000 {
			out = out[len(out)-4000:]
		}
		c.t.Logf("--- %s (pid %d) ---\n%s", n.name, n.proc.PID(), out)
	}
}

func kill(n *node, sig syscall.Signal) error { return n.proc.Signal(sig) }
