package e2e

import (
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/lbha/lbha/internal/netlab"
)

// TestFailoverTimes measures crash failover (kill -9 of the master until
// another director reports MASTER) and planned switchover (lbha failover),
// over LBHA_FAILOVER_TRIALS trials each (default: skipped, to keep the
// suite short). Times are as seen through the CLI, which polls every few
// milliseconds.
func TestFailoverTimes(t *testing.T) {
	trials, _ := strconv.Atoi(os.Getenv("LBHA_FAILOVER_TRIALS"))
	if trials <= 0 {
		t.Skip("set LBHA_FAILOVER_TRIALS=N to measure failover times")
	}
	c := newCluster(t, "director", "director", "witness")
	var crash, planned []time.Duration
	for i := 0; i < trials; i++ {
		m := c.waitStableMaster(15 * time.Second)
		start := time.Now()
		if err := kill(c.node(m), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		c.waitMaster(5*time.Second, map[string]bool{m: true})
		crash = append(crash, time.Since(start))
		c.start(c.node(m))
		// Wait until the restarted node is back and the cluster is calm.
		if !netlab.WaitFor(15*time.Second, func() bool {
			st, err := c.status(c.node(m))
			return err == nil && st.Leader != "" && len(c.masters(nil)) == 1
		}) {
			t.Fatalf("trial %d: %s did not rejoin", i, m)
		}
		time.Sleep(500 * time.Millisecond)

		m = c.waitMaster(5*time.Second, nil)
		other := "dir1"
		if m == "dir1" {
			other = "dir2"
		}
		start = time.Now()
		if out, err := c.cli(c.node(m), "failover", "--to", other); err != nil {
			t.Fatalf("trial %d: failover: %v\n%s", i, err, out)
		}
		if got := c.waitMaster(2*time.Second, map[string]bool{m: true}); got != other {
			t.Fatalf("trial %d: master %s, want %s", i, got, other)
		}
		planned = append(planned, time.Since(start))
		time.Sleep(300 * time.Millisecond)
	}
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		p := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
		t.Logf("%s over %d trials: min %v p50 %v p90 %v max %v", name, len(d),
			d[0].Round(time.Millisecond), p(0.5).Round(time.Millisecond), p(0.9).Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
	}
	report("crash failover (kill -9 to new MASTER)", crash)
	report("planned switchover (lbha failover to new MASTER, incl. CLI start)", planned)
}
