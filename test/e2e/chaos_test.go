package e2e

import (
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lbha/lbha/internal/netlab"
)

// overlapWatch polls every running node's state and records any moment at
// which two nodes claim MASTER. (The CLI polls are a few milliseconds
// apart, so this is a coarse check; the fine one is the VIP holder check.)
type overlapWatch struct {
	mu      sync.Mutex
	overlap []string
	stop    chan struct{}
	done    chan struct{}
}

func (c *cluster) watchOverlap() *overlapWatch {
	w := &overlapWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			if m := c.masters(c.frozen()); len(m) > 1 {
				w.mu.Lock()
				w.overlap = m
				w.mu.Unlock()
			}
		}
	}()
	return w
}

func (w *overlapWatch) check(t *testing.T) {
	close(w.stop)
	<-w.done
	if w.overlap != nil {
		t.Fatalf("two masters at once: %v", w.overlap)
	}
}

func TestPartitionedMasterStepsDown(t *testing.T) {
	c := newCluster(t, "director", "director", "witness")
	m := c.waitStableMaster(15 * time.Second)
	w := c.watchOverlap()
	old := c.node(m)
	start := time.Now()
	old.ns.Partition()
	// The cut-off master must leave MASTER by itself (its CLI socket is a
	// file, so it still answers).
	var stepDown time.Duration
	if !netlab.WaitFor(3*time.Second, func() bool {
		st, err := c.status(old)
		if err == nil && st.State != "MASTER" {
			stepDown = time.Since(start)
			return true
		}
		return false
	}) {
		t.Fatalf("partitioned master %s still says MASTER", m)
	}
	next := c.waitMaster(5*time.Second, map[string]bool{m: true})
	t.Logf("partitioned master %s left MASTER after %v; %s is master after %v", m, stepDown.Round(time.Millisecond), next, time.Since(start).Round(time.Millisecond))
	old.ns.Heal()
	if !netlab.WaitFor(10*time.Second, func() bool {
		st, err := c.status(old)
		return err == nil && st.Leader != "" && st.Leader != m || (st.Leader == m && st.State == "MASTER")
	}) {
		t.Fatalf("%s did not rejoin after the partition healed", m)
	}
	w.check(t)
}

func TestFrozenMasterIsReplaced(t *testing.T) {
	c := newCluster(t, "director", "director", "witness")
	m := c.waitStableMaster(15 * time.Second)
	old := c.node(m)
	start := time.Now()
	if err := kill(old, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	c.setFrozen(m, true)
	next := c.waitMaster(5*time.Second, map[string]bool{m: true})
	took := time.Since(start)
	t.Logf("master %s frozen (SIGSTOP); %s is master after %v", m, next, took.Round(time.Millisecond))
	if took > time.Second {
		c.dumpLogs() // slow takeover: keep the evidence
	}
	// Frozen, it cannot withdraw its VIP: its kernel drops it when the
	// address lifetime (1 s) runs out, renewals having stopped.
	if !netlab.WaitFor(3*time.Second, func() bool {
		o, _ := old.ns.Run("ip", "-o", "addr", "show", "dev", "eth0")
		return !strings.Contains(o, "192.0.2.100/24")
	}) {
		t.Fatalf("the frozen master's kernel still holds the VIP %v after SIGSTOP", time.Since(start))
	}
	t.Logf("the frozen master's kernel dropped the VIP %v after SIGSTOP", time.Since(start).Round(time.Millisecond))
	w := c.watchOverlap()
	c.setFrozen(m, false)
	if err := kill(old, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Thawed, its lease has long expired: it must not claim MASTER next to
	// the new master (preemption may hand mastership back later, by
	// transfer, which the overlap watch also covers).
	if !netlab.WaitFor(10*time.Second, func() bool {
		st, err := c.status(old)
		return err == nil && st.Leader != ""
	}) {
		t.Fatalf("%s did not rejoin after SIGCONT", m)
	}
	time.Sleep(time.Second)
	w.check(t)
}

func TestTrackedInterfaceDownMakesFault(t *testing.T) {
	c := newCluster(t, "director", "director", "witness")
	m := c.waitStableMaster(15 * time.Second)
	old := c.node(m)
	// Directors track "front0", a second link to the client side; taking
	// it down must move mastership even though raft is fine.
	start := time.Now()
	old.ns.SetLink("front0", false)
	next := c.waitMaster(5*time.Second, map[string]bool{m: true})
	t.Logf("tracked link of %s down; %s is master after %v", m, next, time.Since(start).Round(time.Millisecond))
	st, err := c.status(old)
	if err != nil || st.State != "FAULT" {
		t.Fatalf("%s state = %+v, %v; want FAULT", m, st, err)
	}
	old.ns.SetLink("front0", true)
	if !netlab.WaitFor(5*time.Second, func() bool {
		st, err := c.status(old)
		return err == nil && st.State != "FAULT"
	}) {
		t.Fatalf("%s stayed FAULT after its link came back", m)
	}
}

// TestVIPFollowsMaster: the master holds the VIP (with a finite lifetime),
// backups do not, and after kill -9 of the master a client's neighbour entry
// for the VIP flips to the new master's MAC.
func TestVIPFollowsMaster(t *testing.T) {
	c := newCluster(t, "director", "director", "witness")
	client := c.lab.Node("client")
	client.Attach(c.sw, "eth0", "192.0.2.50/24")
	m := c.waitStableMaster(15 * time.Second)
	holders := func() []string {
		var out []string
		for _, n := range c.nodes {
			if !running(n) || n.role != "director" {
				continue
			}
			if o, _ := n.ns.Run("ip", "-o", "addr", "show", "dev", "eth0"); strings.Contains(o, "192.0.2.100/24") {
				out = append(out, n.name)
			}
		}
		return out
	}
	if !netlab.WaitFor(3*time.Second, func() bool { h := holders(); return len(h) == 1 && h[0] == m }) {
		t.Fatalf("VIP holders %v, want [%s]", holders(), m)
	}
	if o, _ := c.node(m).ns.Run("ip", "-o", "-d", "addr", "show", "dev", "eth0"); !strings.Contains(o, "valid_lft 1sec") && !strings.Contains(o, "valid_lft 0sec") {
		t.Fatalf("VIP has no finite lifetime:\n%s", o)
	}
	if out, err := client.Run("ping", "-c1", "-W1", "192.0.2.100"); err != nil {
		t.Fatalf("client cannot reach the VIP on %s: %v\n%s", m, err, out)
	}
	mac := func(n *node) string {
		o := n.ns.MustRun("cat", "/sys/class/net/eth0/address")
		return strings.TrimSpace(o)
	}
	neigh := func() string { o, _ := client.Run("ip", "neigh", "show", "192.0.2.100"); return o }
	if !strings.Contains(neigh(), mac(c.node(m))) {
		t.Fatalf("client neighbour entry %q does not point at %s", neigh(), m)
	}
	start := time.Now()
	if err := kill(c.node(m), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	next := c.waitMaster(5*time.Second, map[string]bool{m: true})
	want := mac(c.node(next))
	if !netlab.WaitFor(3*time.Second, func() bool { return strings.Contains(neigh(), want) }) {
		t.Fatalf("client neighbour entry %q never flipped to %s (%s)", neigh(), next, want)
	}
	t.Logf("kill -9 of %s: client's neighbour entry for the VIP points at %s after %v", m, next, time.Since(start).Round(time.Millisecond))
	// The dead master's kernel drops its VIP by itself within the lifetime.
	if !netlab.WaitFor(3*time.Second, func() bool {
		o, _ := c.node(m).ns.Run("ip", "-o", "addr", "show", "dev", "eth0")
		return !strings.Contains(o, "192.0.2.100/24")
	}) {
		t.Fatalf("the killed master %s still holds the VIP", m)
	}
	t.Logf("the killed master's kernel dropped the VIP %v after the kill", time.Since(start).Round(time.Millisecond))
}
