// Package netlab builds throwaway network labs for lbha's integration and
// end-to-end tests: network namespaces ("nodes") joined by Linux bridges
// ("switches"), real processes started inside them, and partitions made with
// nftables drop rules inside a node.
//
// Everything a lab creates carries a unique prefix and is removed by the
// test's Cleanup, whether the test passed or not: processes are killed by
// PID (never by name), then namespaces are deleted, which takes their veth
// ends with them. Bridges live in a namespace of their own, so a lab never
// adds an interface, address or route to the host's namespace, and nothing
// a test sends can leave through the host's default route.
//
// # Privileges
//
// A lab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and the ip(8)
// command; New skips the test when either is missing. Partitions need
// nft(8).
package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Lab is one test's set of namespaces, bridges and processes.
type Lab struct {
	t      testing.TB
	prefix string
	swNS   string // namespace holding the bridges

	mu      sync.Mutex
	nodes   []*Node
	bridges int
	veths   int
	procs   []*Process
}

// New creates an empty lab whose resources are removed when t ends. It skips
// t when not running as root or when ip(8) is missing.
func New(t testing.TB) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netlab: needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("netlab: needs the ip command (Debian package iproute2)")
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	l := &Lab{t: t, prefix: "lb" + hex.EncodeToString(b[:])}
	l.swNS = l.prefix + "-sw"
	t.Cleanup(l.cleanup)
	l.mustIP("netns", "add", l.swNS)
	l.mustRun(l.swNS, "ip", "link", "set", "lo", "up")
	return l
}

// Prefix is the unique prefix of every name in this lab.
func (l *Lab) Prefix() string { return l.prefix }

// Node is a network namespace standing for one host.
type Node struct {
	lab  *Lab
	Name string // short name given by the test
	NS   string // namespace name (unique)
}

// Switch is a bridge that nodes attach to.
type Switch struct {
	lab  *Lab
	Name string // bridge device name inside the lab's switch namespace
}

// Switch creates a bridge. Multicast snooping is off so that every group
// reaches every port (lab-notes: snooping bridges lose non-link-local
// groups).
func (l *Lab) Switch() *Switch {
	l.mu.Lock()
	l.bridges++
	name := fmt.Sprintf("br%d", l.bridges)
	l.mu.Unlock()
	l.mustRun(l.swNS, "ip", "link", "add", name, "type", "bridge", "mcast_snooping", "0")
	l.mustRun(l.swNS, "ip", "link", "set", name, "up")
	return &Switch{lab: l, Name: name}
}

// Node creates a namespace with loopback up and the sysctls every lab host
// wants: no reverse-path filtering, promoted secondaries, and IPv6 DAD off so
// addresses are usable at once.
func (l *Lab) Node(name string) *Node {
	ns := l.prefix + "-" + name
	l.mustIP("netns", "add", ns)
	n := &Node{lab: l, Name: name, NS: ns}
	l.mu.Lock()
	l.nodes = append(l.nodes, n)
	l.mu.Unlock()
	n.MustRun("ip", "link", "set", "lo", "up")
	for _, kv := range [][2]string{
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.default.rp_filter", "0"},
		{"net.ipv4.conf.all.promote_secondaries", "1"},
		{"net.ipv4.conf.default.promote_secondaries", "1"},
		{"net.ipv6.conf.all.accept_dad", "0"},
		{"net.ipv6.conf.default.accept_dad", "0"},
	} {
		n.Sysctl(kv[0], kv[1])
	}
	return n
}

// Attach connects the node to sw through a veth pair; the node's end is
// called ifname and gets the given addresses (CIDR notation).
func (n *Node) Attach(sw *Switch, ifname string, addrs ...string) {
	l := n.lab
	l.mu.Lock()
	l.veths++
	peer := fmt.Sprintf("v%d", l.veths)
	l.mu.Unlock()
	tmp := peer + "n" // created in the switch namespace, then moved and renamed
	l.mustRun(l.swNS, "ip", "link", "add", peer, "type", "veth", "peer", "name", tmp)
	l.mustRun(l.swNS, "ip", "link", "set", peer, "master", sw.Name, "up")
	l.mustRun(l.swNS, "ip", "link", "set", tmp, "netns", n.NS)
	n.MustRun("ip", "link", "set", tmp, "name", ifname)
	for _, kv := range [][2]string{
		{"net.ipv4.conf." + ifname + ".rp_filter", "0"},
		{"net.ipv4.conf." + ifname + ".promote_secondaries", "1"},
		{"net.ipv6.conf." + ifname + ".accept_dad", "0"},
	} {
		n.Sysctl(kv[0], kv[1])
	}
	for _, a := range addrs {
		args := []string{"addr", "add", a, "dev", ifname}
		if strings.Contains(a, ":") {
			args = append(args, "nodad")
		}
		n.MustRun("ip", args...)
	}
	n.MustRun("ip", "link", "set", ifname, "up")
	// IPv6 configures the link-local address and the multicast route only
	// once the carrier is seen; wait so that callers can send at once.
	if !WaitFor(3*time.Second, func() bool {
		out, err := n.Run("ip", "-6", "addr", "show", "dev", ifname, "scope", "link")
		return err == nil && strings.Contains(out, "fe80::") && !strings.Contains(out, "tentative")
	}) {
		n.lab.t.Fatalf("netlab: %s: %s has no usable IPv6 link-local address", n.Name, ifname)
	}
}

// SetLink brings the node's end of a link up or down (a link flap).
func (n *Node) SetLink(ifname string, up bool) {
	state := "down"
	if up {
		state = "up"
	}
	n.MustRun("ip", "link", "set", ifname, state)
}

// Sysctl sets a sysctl inside the node's namespace.
func (n *Node) Sysctl(key, value string) {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	err := n.Do(func() error { return os.WriteFile(path, []byte(value), 0o644) })
	if err != nil {
		n.lab.t.Fatalf("netlab: %s: sysctl %s=%s: %v", n.Name, key, value, err)
	}
}

// Run runs a command inside the node and returns its combined output.
func (n *Node) Run(name string, args ...string) (string, error) {
	return n.lab.run(n.NS, name, args...)
}

// MustRun is Run that fails the test on error.
func (n *Node) MustRun(name string, args ...string) string {
	n.lab.t.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		n.lab.t.Fatalf("netlab: %s: %v", n.Name, err)
	}
	return out
}

// Do runs fn on an OS thread switched into the node's namespace, for Go code
// that opens sockets there. The thread is discarded afterwards rather than
// switched back, so no other goroutine can ever run in the wrong namespace.
func (n *Node) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Deliberately no UnlockOSThread: the thread dies with the goroutine.
		h, err := netns.GetFromName(n.NS)
		if err != nil {
			errc <- fmt.Errorf("netlab: open namespace %s: %w", n.NS, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("netlab: enter namespace %s: %w", n.NS, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Process is a command started inside a node.
type Process struct {
	Node   *Node
	Cmd    *exec.Cmd
	Output *SyncBuffer // combined stdout and stderr
	done   chan struct{}
	err    error
}

// Start starts a long-running command inside the node. It is killed by PID
// when the test ends if still running.
func (n *Node) Start(name string, args ...string) *Process {
	n.lab.t.Helper()
	argv := append([]string{"netns", "exec", n.NS, name}, args...)
	cmd := exec.Command("ip", argv...)
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group, so a signal to the group reaches the program
	// behind "ip netns exec" (which execs it, keeping the PID anyway).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		n.lab.t.Fatalf("netlab: %s: start %s: %v", n.Name, name, err)
	}
	p := &Process{Node: n, Cmd: cmd, Output: out, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	n.lab.mu.Lock()
	n.lab.procs = append(n.lab.procs, p)
	n.lab.mu.Unlock()
	return p
}

// PID returns the process ID.
func (p *Process) PID() int { return p.Cmd.Process.Pid }

// Signal sends sig to the process (SIGKILL, SIGSTOP, SIGCONT, ...).
func (p *Process) Signal(sig syscall.Signal) error { return syscall.Kill(p.PID(), sig) }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit, at most d.
func (p *Process) Wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("netlab: %s: pid %d still running after %v", p.Node.Name, p.PID(), d)
	}
}

// Stop sends SIGTERM, then SIGKILL if the process has not exited within d.
func (p *Process) Stop(d time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Signal(syscall.SIGCONT) // a stopped process cannot handle SIGTERM
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(d):
		_ = p.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// Partition drops every packet to and from the node except on loopback,
// with nftables rules inside its namespace; undo with Heal.
func (n *Node) Partition() {
	n.nft("add table inet netlab_partition",
		"add chain inet netlab_partition in { type filter hook input priority -300 ; policy drop ; }",
		"add chain inet netlab_partition out { type filter hook output priority -300 ; policy drop ; }",
		"add rule inet netlab_partition in iif lo accept",
		"add rule inet netlab_partition out oif lo accept")
}

// Heal removes a partition made by Partition.
func (n *Node) Heal() { n.nft("delete table inet netlab_partition") }

func (n *Node) nft(cmds ...string) {
	n.lab.t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		n.lab.t.Skip("netlab: needs nft (Debian package nftables)")
	}
	cmd := exec.Command("ip", "netns", "exec", n.NS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		n.lab.t.Fatalf("netlab: %s: nft: %v: %s", n.Name, err, out)
	}
}

// WaitFor polls cond every 10 ms until it returns true or d passes.
func WaitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *Lab) run(ns, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := append([]string{"netns", "exec", ns, name}, args...)
	out, err := exec.CommandContext(ctx, "ip", argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func (l *Lab) mustRun(ns, name string, args ...string) {
	l.t.Helper()
	if _, err := l.run(ns, name, args...); err != nil {
		l.t.Fatalf("netlab: %v", err)
	}
}

func (l *Lab) mustIP(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("netlab: ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func (l *Lab) cleanup() {
	l.mu.Lock()
	procs, nodes := l.procs, l.nodes
	l.mu.Unlock()
	for _, p := range procs {
		p.Stop(2 * time.Second)
		if l.t.Failed() {
			l.t.Logf("netlab: output of %s pid %d:\n%s", p.Node.Name, p.PID(), p.Output.String())
		}
	}
	var errs []error
	for _, n := range nodes {
		if out, err := exec.Command("ip", "netns", "del", n.NS).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %v: %s", n.NS, err, out))
		}
	}
	if out, err := exec.Command("ip", "netns", "del", l.swNS).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("delete %s: %v: %s", l.swNS, err, out))
	}
	if err := errors.Join(errs...); err != nil {
		l.t.Errorf("netlab: cleanup: %v", err)
	}
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
