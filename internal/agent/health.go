package agent

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lbha/lbha/config"
)

// trackInterval is how often tracked interfaces are read: a link that goes
// down costs at most this long before the director leaves mastership.
const trackInterval = 50 * time.Millisecond

// health watches the tracked interfaces and runs the check commands; the
// node is healthy while every interface is up and running and every check's
// last run succeeded.
type health struct {
	a      *Agent
	mu     sync.Mutex
	checks map[string]bool // last result per check name
	reason string          // why the node is unhealthy, "" if healthy
}

func (a *Agent) runHealth(ctx context.Context) {
	h := &health{a: a, checks: map[string]bool{}}
	for _, c := range a.cfg.Cluster.CheckCommands {
		h.checks[c.Name] = true // optimistic until the first run
		go h.runCheck(ctx, c)
	}
	tick := time.NewTicker(trackInterval)
	defer tick.Stop()
	for {
		h.evaluate()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (h *health) evaluate() {
	var problems []string
	for _, name := range h.a.cfg.Cluster.TrackInterfaces {
		ifi, err := net.InterfaceByName(name)
		switch {
		case err != nil:
			problems = append(problems, "interface "+name+" is missing")
		case ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagRunning == 0:
			problems = append(problems, "interface "+name+" is down")
		}
	}
	h.mu.Lock()
	for name, ok := range h.checks {
		if !ok {
			problems = append(problems, "check "+name+" fails")
		}
	}
	reason := strings.Join(problems, "; ")
	changed := reason != h.reason
	h.reason = reason
	h.mu.Unlock()
	if changed {
		if reason == "" {
			h.a.log.Info("node healthy again")
		} else {
			h.a.log.Warn("node unhealthy", "reason", reason)
		}
	}
	h.a.node.SetHealthy(reason == "")
}

func (h *health) runCheck(ctx context.Context, c config.LocalCheck) {
	tick := time.NewTicker(c.Interval)
	defer tick.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, c.Timeout)
		out, err := shell(cctx, c.Command).CombinedOutput()
		cancel()
		if ctx.Err() != nil {
			return
		}
		ok := err == nil
		h.mu.Lock()
		if h.checks[c.Name] != ok {
			h.a.log.Info("check result changed", "check", c.Name, "ok", ok, "err", err, "output", strings.TrimSpace(string(out)))
		}
		h.checks[c.Name] = ok
		h.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// shell returns a /bin/sh -c command that a cancelled ctx kills as a whole
// process group: killing only the shell would leave its children holding
// the output pipe, and the caller waiting.
func shell(ctx context.Context, script string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", script}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	return cmd
}
