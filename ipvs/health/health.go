// Package health runs the health checks of real servers: TCP connect,
// HTTP/HTTPS GET with an expected status and optional body substring, and
// commands, each at an interval with a timeout, turned into a healthy or
// failed verdict by rise and fall counts, as keepalived's checkers do.
//
// A server starts healthy (keepalived's default): it takes Fall consecutive
// failures to fail it and Rise consecutive successes to restore it. What a
// failure does to the server (quiesce or remove) is the caller's business.
package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lbha/lbha/config"
)

// Prober runs one check attempt; nil means the server passed.
type Prober interface {
	Probe(ctx context.Context) error
}

// maxBody bounds how much of an HTTP answer is read to look for ExpectBody.
const maxBody = 1 << 20

// NewProber builds the prober of hc for the real server at rs. A zero
// hc.Port means the real server's port.
func NewProber(hc config.HealthCheck, rs netip.AddrPort) (Prober, error) {
	if hc.Port != 0 {
		rs = netip.AddrPortFrom(rs.Addr(), uint16(hc.Port))
	}
	switch hc.Type {
	case config.CheckTCP:
		return tcpProber{addr: rs}, nil
	case config.CheckHTTP, config.CheckHTTPS:
		scheme := "http"
		tr := &http.Transport{DisableKeepAlives: true}
		if hc.Type == config.CheckHTTPS {
			scheme = "https"
			// Real servers behind a load balancer rarely hold a
			// certificate for their own address; like keepalived's
			// SSL_GET, the check tests the service, not the PKI.
			tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // see above
		}
		path := hc.Path
		if path == "" {
			path = "/"
		}
		status := hc.ExpectStatus
		if status == 0 {
			status = http.StatusOK
		}
		return httpProber{url: scheme + "://" + rs.String() + path, status: status, body: hc.ExpectBody,
			client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}, nil
	case config.CheckCommand:
		if hc.Command == "" {
			return nil, errors.New("health: command check without a command")
		}
		return commandProber{command: hc.Command, addr: rs}, nil
	}
	return nil, fmt.Errorf("health: unknown check type %q", hc.Type)
}

type tcpProber struct{ addr netip.AddrPort }

func (p tcpProber) Probe(ctx context.Context) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", p.addr.String())
	if err != nil {
		return fmt.Errorf("tcp connect %s: %w", p.addr, err)
	}
	return c.Close()
}

type httpProber struct {
	url    string
	status int
	body   string
	client *http.Client
}

func (p httpProber) Probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "lbha-health-check")
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", p.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != p.status {
		return fmt.Errorf("GET %s: status %d, want %d", p.url, resp.StatusCode, p.status)
	}
	if p.body == "" {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("GET %s: read body: %w", p.url, err)
	}
	if !strings.Contains(string(b), p.body) {
		return fmt.Errorf("GET %s: body lacks %q", p.url, p.body)
	}
	return nil
}

type commandProber struct {
	command string
	addr    netip.AddrPort
}

func (p commandProber) Probe(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", p.command)
	cmd.Env = append(os.Environ(), "LBHA_RS_ADDR="+p.addr.Addr().String(), "LBHA_RS_PORT="+strconv.Itoa(int(p.addr.Port())))
	// On timeout kill the whole process group: killing only the shell
	// would leave its children holding the output pipe open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("command %q: %w: %s", p.command, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// tracker turns attempt results into a verdict with rise/fall hysteresis.
type tracker struct {
	rise, fall int
	healthy    bool
	run        int // consecutive results against the current verdict
}

func newTracker(rise, fall int) *tracker {
	return &tracker{rise: max(rise, 1), fall: max(fall, 1), healthy: true}
}

// observe records one result and reports whether the verdict changed.
func (t *tracker) observe(ok bool) bool {
	if ok == t.healthy {
		t.run = 0
		return false
	}
	t.run++
	need := t.fall
	if !t.healthy {
		need = t.rise
	}
	if t.run < need {
		return false
	}
	t.healthy, t.run = ok, 0
	return true
}

// Status is a checker's view of its server.
type Status struct {
	Healthy bool      `json:"healthy"`
	Since   time.Time `json:"since"`
	LastErr string    `json:"last_error,omitempty"`
	Checks  uint64    `json:"checks"`
	Fails   uint64    `json:"failures"`
}

// Checker checks one real server periodically.
type Checker struct {
	prober   Prober
	interval time.Duration
	timeout  time.Duration

	mu sync.Mutex
	tr *tracker
	st Status
}

// NewChecker builds a checker of hc for the real server at rs.
func NewChecker(hc config.HealthCheck, rs netip.AddrPort) (*Checker, error) {
	p, err := NewProber(hc, rs)
	if err != nil {
		return nil, err
	}
	return newChecker(p, hc), nil
}

func newChecker(p Prober, hc config.HealthCheck) *Checker {
	d := config.DefaultHealthCheck()
	if hc.Interval <= 0 {
		hc.Interval = d.Interval
	}
	if hc.Timeout <= 0 || hc.Timeout > hc.Interval {
		hc.Timeout = min(d.Timeout, hc.Interval)
	}
	if hc.Rise <= 0 {
		hc.Rise = d.Rise
	}
	if hc.Fall <= 0 {
		hc.Fall = d.Fall
	}
	return &Checker{prober: p, interval: hc.Interval, timeout: hc.Timeout,
		tr: newTracker(hc.Rise, hc.Fall), st: Status{Healthy: true, Since: time.Now()}}
}

// Status returns the current verdict and counters.
func (c *Checker) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// Run checks until ctx ends, calling onChange (from Run's goroutine) each
// time the verdict changes, with the last attempt's error on a failure.
func (c *Checker) Run(ctx context.Context, onChange func(healthy bool, err error)) {
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, c.timeout)
		err := c.prober.Probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		c.st.Checks++
		if err != nil {
			c.st.Fails++
			c.st.LastErr = err.Error()
		}
		changed := c.tr.observe(err == nil)
		if changed {
			c.st.Healthy, c.st.Since = c.tr.healthy, time.Now()
		}
		healthy := c.tr.healthy
		c.mu.Unlock()
		if changed && onChange != nil {
			onChange(healthy, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
