package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbha/lbha/config"
)

func TestTrackerRiseFall(t *testing.T) {
	tr := newTracker(2, 3)
	// Starts healthy; two failures are not enough with fall 3; a success
	// in between resets the count.
	steps := []struct {
		ok      bool
		changed bool
		healthy bool
	}{
		{false, false, true}, {false, false, true}, {true, false, true},
		{false, false, true}, {false, false, true}, {false, true, false},
		{true, false, false}, {false, false, false}, {true, false, false}, {true, true, true},
	}
	for i, s := range steps {
		if got := tr.observe(s.ok); got != s.changed || tr.healthy != s.healthy {
			t.Fatalf("step %d (ok=%v): changed %v healthy %v, want %v %v", i, s.ok, got, tr.healthy, s.changed, s.healthy)
		}
	}
}

func addrPort(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func TestProbers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	open := addrPort(t, ln.Addr())
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := addrPort(t, ln2.Addr())
	ln2.Close()
	defer ln.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "I am rs1") })
	mux.HandleFunc("/down", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	hs := httptest.NewServer(mux)
	defer hs.Close()
	hss := httptest.NewTLSServer(mux)
	defer hss.Close()
	web := addrPort(t, hs.Listener.Addr())
	webs := addrPort(t, hss.Listener.Addr())

	tests := []struct {
		name string
		hc   config.HealthCheck
		rs   netip.AddrPort
		err  string // "" = healthy
	}{
		{"tcp open", config.HealthCheck{Type: config.CheckTCP}, open, ""},
		{"tcp closed", config.HealthCheck{Type: config.CheckTCP}, closed, "connect"},
		{"tcp port override", config.HealthCheck{Type: config.CheckTCP, Port: int(open.Port())}, netip.AddrPortFrom(open.Addr(), 0), ""},
		{"http 200", config.HealthCheck{Type: config.CheckHTTP, Path: "/ok"}, web, ""},
		{"http body match", config.HealthCheck{Type: config.CheckHTTP, Path: "/ok", ExpectBody: "rs1"}, web, ""},
		{"http body mismatch", config.HealthCheck{Type: config.CheckHTTP, Path: "/ok", ExpectBody: "rs2"}, web, "body lacks"},
		{"http 503", config.HealthCheck{Type: config.CheckHTTP, Path: "/down"}, web, "status 503"},
		{"http expected 503", config.HealthCheck{Type: config.CheckHTTP, Path: "/down", ExpectStatus: 503}, web, ""},
		{"http redirect is not followed", config.HealthCheck{Type: config.CheckHTTP, Path: "/moved"}, web, "status 302"},
		{"https self-signed", config.HealthCheck{Type: config.CheckHTTPS, Path: "/ok", ExpectBody: "rs1"}, webs, ""},
		{"http refused", config.HealthCheck{Type: config.CheckHTTP}, closed, "GET"},
		{"command ok with env", config.HealthCheck{Type: config.CheckCommand, Command: `test "$LBHA_RS_ADDR:$LBHA_RS_PORT" = "127.0.0.1:` + fmt.Sprint(open.Port()) + `"`}, open, ""},
		{"command fails", config.HealthCheck{Type: config.CheckCommand, Command: "echo broken; exit 3"}, open, "broken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewProber(tt.hc, tt.rs)
			if err != nil {
				t.Fatal(err)
			}
			err = p.Probe(ctx)
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("unhealthy: %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("error %v, want one containing %q", err, tt.err)
			}
		})
	}
	if _, err := NewProber(config.HealthCheck{Type: "ping"}, open); err == nil {
		t.Fatal("unknown check type accepted")
	}
	if _, err := NewProber(config.HealthCheck{Type: config.CheckCommand}, open); err == nil {
		t.Fatal("command check without command accepted")
	}
}

func TestCommandTimeout(t *testing.T) {
	p, _ := NewProber(config.HealthCheck{Type: config.CheckCommand, Command: "sleep 5"}, netip.MustParseAddrPort("192.0.2.1:80"))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.Probe(ctx); err == nil {
		t.Fatal("a command past its timeout passed")
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("the timeout did not stop the command (%v)", time.Since(start))
	}
}

type flipProber struct{ ok atomic.Bool }

func (f *flipProber) Probe(context.Context) error {
	if f.ok.Load() {
		return nil
	}
	return errors.New("down")
}

// A failing server is taken out after fall × interval and brought back
// after rise × interval.
func TestCheckerTimings(t *testing.T) {
	p := &flipProber{}
	p.ok.Store(true)
	hc := config.HealthCheck{Interval: 20 * time.Millisecond, Timeout: 10 * time.Millisecond, Rise: 2, Fall: 3}
	c := newChecker(p, hc)
	type change struct {
		healthy bool
		at      time.Time
	}
	changes := make(chan change, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx, func(h bool, _ error) { changes <- change{h, time.Now()} })

	time.Sleep(50 * time.Millisecond)
	down := time.Now()
	p.ok.Store(false)
	ch := <-changes
	if ch.healthy {
		t.Fatal("first change was to healthy")
	}
	if d := ch.at.Sub(down); d < 40*time.Millisecond || d > 200*time.Millisecond {
		t.Fatalf("failed after %v, want about fall × interval = 60 ms", d)
	}
	if st := c.Status(); st.Healthy || st.LastErr != "down" || st.Fails < 3 {
		t.Fatalf("status %+v", st)
	}
	up := time.Now()
	p.ok.Store(true)
	ch = <-changes
	if !ch.healthy {
		t.Fatal("second change was not to healthy")
	}
	if d := ch.at.Sub(up); d < 20*time.Millisecond || d > 150*time.Millisecond {
		t.Fatalf("restored after %v, want about rise × interval = 40 ms", d)
	}
}
