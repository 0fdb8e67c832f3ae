package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbha/lbha/internal/netlab"
)

// The dataplane tests put three real servers (processes answering with their
// name) and a client namespace on the cluster network, with the userspace
// dataplane (this kernel has no IPVS). The client has addresses in two
// /24s: 192.0.2.50-59 and 203.0.113.10-19, so persistence by /24 shows.

const vipAddr = "192.0.2.100"

type realServerNode struct {
	name, addr string
	ns         *netlab.Node
	proc       *netlab.Process
	downFile   string
}

type lbEnv struct {
	*cluster
	client  *netlab.Node
	servers []*realServerNode
}

// services returns the services section: one service per scheduler under
// test, each over the three real servers with the given weights.
func servicesYAML(weights map[string][3]int, omit map[string]int) string {
	var b strings.Builder
	b.WriteString("services:\n")
	svc := func(name string, port int, sched, extra string) {
		w, ok := weights[name]
		if !ok {
			w = [3]int{1, 1, 1}
		}
		fmt.Fprintf(&b, "  - name: %s\n    protocol: tcp\n    address: %s:%d\n    scheduler: %s\n%s    real_servers:\n", name, vipAddr, port, sched, extra)
		for i := range 3 {
			if o, ok := omit[name]; ok && o == i {
				continue
			}
			fmt.Fprintf(&b, "      - {address: 192.0.2.%d:7000, forward: masq, weight: %d}\n", 21+i, w[i])
		}
	}
	svc("rr", 80, "rr", "")
	svc("wrr", 81, "wrr", "")
	svc("wlc", 82, "wlc", "")
	svc("sticky", 83, "rr", "    persistence: {timeout: 600s, netmask: 255.255.255.0}\n")
	svc("checked", 84, "rr", "    health_check: {type: http, port: 7080, path: /health, interval: 300ms, timeout: 250ms, rise: 2, fall: 2}\n    sorry_server: 192.0.2.24:7000\n")
	return b.String()
}

func newLBEnv(t *testing.T, extraYAML string, roles ...string) *lbEnv {
	t.Helper()
	env := &lbEnv{}
	opts := clusterOpts{
		directorYAML: extraYAML + servicesYAML(map[string][3]int{"wrr": {3, 2, 1}, "wlc": {1, 1, 2}}, nil),
		beforeStart: func(c *cluster) {
			for i := range 4 { // rs4 is the sorry server
				rs := &realServerNode{name: fmt.Sprintf("rs%d", i+1), addr: fmt.Sprintf("192.0.2.%d", 21+i)}
				rs.ns = c.lab.Node(rs.name)
				rs.ns.Attach(c.sw, "eth0", rs.addr+"/24")
				rs.downFile = filepath.Join(t.TempDir(), "down")
				rs.proc = rs.ns.Start(realServerBin, "--name", rs.name, "--tcp", rs.addr+":7000",
					"--http", rs.addr+":7080", "--down-file", rs.downFile)
				env.servers = append(env.servers, rs)
			}
			env.client = c.lab.Node("client")
			addrs := []string{}
			for i := range 10 {
				addrs = append(addrs, fmt.Sprintf("192.0.2.%d/24", 50+i), fmt.Sprintf("203.0.113.%d/24", 10+i))
			}
			env.client.Attach(c.sw, "eth0", addrs...)
			// The client learns the VIP's new owner from gratuitous ARP.
			env.client.Sysctl("net.ipv4.conf.eth0.arp_accept", "1")
			for _, n := range c.nodes {
				if n.role == "director" {
					// Replies to the 203.0.113.0/24 clients go out on the
					// shared segment.
					n.ns.MustRun("ip", "route", "add", "203.0.113.0/24", "dev", "eth0")
				}
			}
		},
	}
	env.cluster = newClusterWith(t, opts, roles...)
	return env
}

// ask opens a connection from src to the VIP's port and returns the name the
// real server greeted with; the connection stays open if keep.
func (e *lbEnv) ask(src string, port int, keep bool) (string, net.Conn, error) {
	var name string
	var conn net.Conn
	err := e.client.Do(func() error {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", net.JoinHostPort(vipAddr, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			c.Close()
			return fmt.Errorf("greeting: %w", err)
		}
		_ = c.SetReadDeadline(time.Time{})
		name = strings.TrimSpace(line)
		if keep {
			conn = c
		} else {
			c.Close()
		}
		return nil
	})
	if conn != nil {
		e.t.Cleanup(func() { conn.Close() })
	}
	return name, conn, err
}

func (e *lbEnv) mustAsk(src string, port int) string {
	e.t.Helper()
	name, _, err := e.ask(src, port, false)
	if err != nil {
		e.t.Fatalf("client %s -> VIP port %d: %v", src, port, err)
	}
	return name
}

// counts asks n times from 192.0.2.50 and counts the answers.
func (e *lbEnv) counts(port, n int) map[string]int {
	e.t.Helper()
	out := map[string]int{}
	for range n {
		out[e.mustAsk("192.0.2.50", port)]++
	}
	return out
}

// echo checks that an open connection still relays.
func echo(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return fmt.Errorf("echo %q", line)
	}
	return nil
}

// applyServices replaces the services of the cluster configuration.
func (e *lbEnv) applyServices(n *node, svcs string) {
	e.t.Helper()
	doc, err := os.ReadFile(n.cfgPath)
	if err != nil {
		e.t.Fatal(err)
	}
	text := string(doc)
	text = text[:strings.Index(text, "services:\n")] + svcs
	path := filepath.Join(n.dir, "apply.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if out, err := e.cli(n, "config", "apply", path); err != nil {
		e.t.Fatalf("config apply: %v\n%s", err, out)
	}
}

type servicesView struct {
	Dataplane string `json:"dataplane"`
	Services  []struct {
		Key struct {
			Port int `json:"port"`
		} `json:"key"`
		Dests []struct {
			Addr        string `json:"addr"`
			Weight      int    `json:"weight"`
			Health      string `json:"health"`
			ActiveConns int    `json:"active_conns"`
		} `json:"dests"`
	} `json:"services"`
}

func (e *lbEnv) servicesText(n *node) string {
	out, _ := e.cli(n, "services")
	return out
}

func (e *lbEnv) services(n *node) servicesView {
	e.t.Helper()
	out, err := e.cli(n, "services", "--json")
	if err != nil {
		e.t.Fatalf("lbha services: %v\n%s", err, out)
	}
	var v servicesView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		e.t.Fatalf("lbha services --json: %v\n%s", err, out)
	}
	return v
}

// destOf returns the view of real server addr in the service on port.
func (v servicesView) dest(port int, addr string) (weight int, health string, ok bool) {
	for _, s := range v.Services {
		if s.Key.Port != port {
			continue
		}
		for _, d := range s.Dests {
			if d.Addr == addr {
				return d.Weight, d.Health, true
			}
		}
	}
	return 0, "", false
}

func TestDataplaneUserspace(t *testing.T) {
	e := newLBEnv(t, "dataplane: userspace\n", "director", "director", "witness")
	master := e.node(e.waitStableMaster(20 * time.Second))
	// The first reconcile after the configuration arrives opens the
	// listeners; wait for the VIP to answer.
	if !netlab.WaitFor(10*time.Second, func() bool { _, _, err := e.ask("192.0.2.50", 80, false); return err == nil }) {
		e.dumpLogs()
		t.Fatal("the VIP does not answer")
	}

	t.Run("status and services name the dataplane", func(t *testing.T) {
		out, err := e.cli(master, "status")
		if err != nil || !strings.Contains(out, "userspace") {
			t.Fatalf("lbha status does not name the dataplane: %v\n%s", err, out)
		}
		if v := e.services(master); v.Dataplane != "userspace" || len(v.Services) != 5 {
			t.Fatalf("services view: %+v", v)
		}
		save, err := e.cli(master, "services", "--save")
		if err != nil {
			t.Fatal(err, save)
		}
		// The same services, as the configuration file says them in
		// ipvsadm's save format (config/ipvsadm is checked against real
		// ipvsadm output).
		want, err := exec.Command(lbhaBin, "config", "export-ipvsadm", master.cfgPath).CombinedOutput()
		if err != nil {
			t.Fatal(err, string(want))
		}
		if save != string(want) {
			t.Errorf("services --save differs from the configuration's ipvsadm -Sn:\n%s\nwant:\n%s", save, want)
		}
		for _, line := range []string{
			"-A -t 192.0.2.100:80 -s rr",
			"-a -t 192.0.2.100:80 -r 192.0.2.21:7000 -m -w 1",
			"-A -t 192.0.2.100:81 -s wrr",
			"-a -t 192.0.2.100:81 -r 192.0.2.21:7000 -m -w 3",
			"-A -t 192.0.2.100:83 -s rr -p 600 -M 255.255.255.0",
		} {
			if !strings.Contains(save, line+"\n") {
				t.Errorf("services --save lacks %q:\n%s", line, save)
			}
		}
	})

	t.Run("rr spreads evenly", func(t *testing.T) {
		if c := e.counts(80, 30); c["rs1"] != 10 || c["rs2"] != 10 || c["rs3"] != 10 {
			t.Fatalf("rr over 30 connections: %v", c)
		}
	})
	t.Run("wrr follows the weights", func(t *testing.T) {
		if c := e.counts(81, 30); c["rs1"] != 15 || c["rs2"] != 10 || c["rs3"] != 5 {
			t.Fatalf("wrr 3:2:1 over 30 connections: %v", c)
		}
	})
	t.Run("wlc balances open connections by weight", func(t *testing.T) {
		got := map[string]int{}
		for range 8 {
			name, _, err := e.ask("192.0.2.51", 82, true)
			if err != nil {
				t.Fatal(err)
			}
			got[name]++
		}
		if got["rs1"] != 2 || got["rs2"] != 2 || got["rs3"] != 4 {
			t.Fatalf("wlc 1:1:2 with 8 open connections: %v", got)
		}
	})

	var home192, home203 string
	t.Run("persistence keeps each /24 on one server", func(t *testing.T) {
		for i := range 10 {
			a := e.mustAsk(fmt.Sprintf("192.0.2.%d", 50+i), 83)
			b := e.mustAsk(fmt.Sprintf("203.0.113.%d", 10+i), 83)
			if i == 0 {
				home192, home203 = a, b
			}
			if a != home192 || b != home203 {
				t.Fatalf("client #%d: 192.0.2.0/24 on %s (home %s), 203.0.113.0/24 on %s (home %s)", i, a, home192, b, home203)
			}
		}
		if home192 == home203 {
			t.Fatalf("rr put both /24s on %s", home192)
		}
	})

	t.Run("failing health check quiesces within fall x interval, recovery within rise x interval", func(t *testing.T) {
		rs2 := e.servers[1]
		if err := os.WriteFile(rs2.downFile, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if !netlab.WaitFor(5*time.Second, func() bool {
			w, h, _ := e.services(master).dest(84, "192.0.2.22:7000")
			return w == 0 && h == "down"
		}) {
			t.Fatal("rs2 not quiesced after failing its check")
		}
		took := time.Since(start)
		// fall (2) x interval (300 ms), plus one interval of phase and the
		// CLI's own polling.
		if took > 1500*time.Millisecond {
			t.Errorf("quiesced after %v, want about fall x interval = 600 ms", took)
		}
		t.Logf("rs2 quiesced %v after its check started failing", took.Round(time.Millisecond))
		if c := e.counts(84, 12); c["rs2"] != 0 || c["rs1"] != 6 || c["rs3"] != 6 {
			t.Fatalf("connections with rs2 down: %v", c)
		}
		os.Remove(rs2.downFile)
		start = time.Now()
		if !netlab.WaitFor(5*time.Second, func() bool {
			w, h, _ := e.services(master).dest(84, "192.0.2.22:7000")
			return w == 1 && h == "up"
		}) {
			t.Fatal("rs2 not restored after passing its check again")
		}
		t.Logf("rs2 restored %v after its check passed again", time.Since(start).Round(time.Millisecond))
		if c := e.counts(84, 9); c["rs2"] != 3 {
			t.Fatalf("connections after recovery: %v", c)
		}
	})

	t.Run("sorry server when every real server is down", func(t *testing.T) {
		for _, rs := range e.servers[:3] {
			if err := os.WriteFile(rs.downFile, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if !netlab.WaitFor(5*time.Second, func() bool { return e.mustAsk("192.0.2.53", 84) == "rs4" }) {
			t.Fatalf("the sorry server does not answer with every server down:\n%s", e.servicesText(master))
		}
		if out := e.servicesText(master); !strings.Contains(out, "sorry") {
			t.Errorf("lbha services does not mark the sorry server:\n%s", out)
		}
		os.Remove(e.servers[0].downFile)
		if !netlab.WaitFor(5*time.Second, func() bool { return e.mustAsk("192.0.2.53", 84) == "rs1" }) {
			t.Fatalf("rs1 does not take over from the sorry server after recovering:\n%s", e.servicesText(master))
		}
		for _, rs := range e.servers[1:3] {
			os.Remove(rs.downFile)
		}
		if !netlab.WaitFor(5*time.Second, func() bool { return len(e.counts(84, 3)) == 3 }) {
			t.Fatal("the real servers did not all come back")
		}
	})

	t.Run("config change keeps established connections", func(t *testing.T) {
		held := map[string]net.Conn{}
		for len(held) < 3 {
			name, c, err := e.ask("192.0.2.52", 80, true)
			if err != nil {
				t.Fatal(err)
			}
			if _, dup := held[name]; dup {
				c.Close()
				continue
			}
			held[name] = c
		}
		// Remove rs2 from rr, quiesce rs1 there, keep the rest.
		e.applyServices(master, servicesYAML(map[string][3]int{"rr": {0, 1, 5}, "wrr": {3, 2, 1}, "wlc": {1, 1, 2}}, map[string]int{"rr": 1}))
		if !netlab.WaitFor(5*time.Second, func() bool {
			_, _, present := e.services(master).dest(80, "192.0.2.22:7000")
			w, _, _ := e.services(master).dest(80, "192.0.2.21:7000")
			return !present && w == 0
		}) {
			t.Fatal("configuration change not applied to the dataplane")
		}
		for _, name := range []string{"rs1", "rs3"} {
			if err := echo(held[name]); err != nil {
				t.Errorf("established connection to %s broken by the change: %v", name, err)
			}
		}
		if c := e.counts(80, 6); c["rs3"] != 6 {
			t.Fatalf("after the change rr went to %v, want only rs3", c)
		}
	})

	t.Run("quiesced server keeps its persistent clients", func(t *testing.T) {
		w := map[string][3]int{"rr": {0, 1, 5}, "wrr": {3, 2, 1}, "wlc": {1, 1, 2}, "sticky": {1, 1, 1}}
		idx := map[string]int{"rs1": 0, "rs2": 1, "rs3": 2}[home192]
		sw := w["sticky"]
		sw[idx] = 0
		w["sticky"] = sw
		e.applyServices(master, servicesYAML(w, map[string]int{"rr": 1}))
		if !netlab.WaitFor(5*time.Second, func() bool {
			wt, _, _ := e.services(master).dest(83, fmt.Sprintf("192.0.2.%d:7000", 21+idx))
			return wt == 0
		}) {
			t.Fatal("quiesce not applied")
		}
		if got := e.mustAsk("192.0.2.59", 83); got != home192 {
			t.Fatalf("persistent client moved from quiesced %s to %s", home192, got)
		}
	})

	t.Run("after kill -9 of the master, persistent clients keep their server", func(t *testing.T) {
		if err := kill(master, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var got string
		if !netlab.WaitFor(10*time.Second, func() bool {
			name, _, err := e.ask("203.0.113.11", 83, false)
			got = name
			return err == nil
		}) {
			e.dumpLogs()
			t.Fatal("the VIP does not answer after the master was killed")
		}
		t.Logf("VIP answered again %v after kill -9", time.Since(start).Round(time.Millisecond))
		if got != home203 {
			t.Fatalf("client of 203.0.113.0/24 moved from %s to %s across the failover", home203, got)
		}
		if got := e.mustAsk("192.0.2.57", 83); got != home192 {
			t.Fatalf("client of 192.0.2.0/24 moved from %s to %s across the failover", home192, got)
		}
	})
}

func TestDataplaneExpireQuiescentTemplate(t *testing.T) {
	// auto: the kernel has no IPVS, so the userspace dataplane.
	e := newLBEnv(t, "dataplane: auto\ndataplane_options: {expire_quiescent_template: true}\n", "director", "witness")
	master := e.node(e.waitStableMaster(20 * time.Second))
	if v := e.services(master); v.Dataplane != "userspace" {
		t.Fatalf("dataplane auto on a kernel without IPVS chose %q", v.Dataplane)
	}
	if !netlab.WaitFor(10*time.Second, func() bool { _, _, err := e.ask("192.0.2.50", 83, false); return err == nil }) {
		e.dumpLogs()
		t.Fatal("the VIP does not answer")
	}
	home := e.mustAsk("192.0.2.50", 83)
	idx := map[string]int{"rs1": 0, "rs2": 1, "rs3": 2}[home]
	w := map[string][3]int{"wrr": {3, 2, 1}, "wlc": {1, 1, 2}, "sticky": {1, 1, 1}}
	sw := w["sticky"]
	sw[idx] = 0
	w["sticky"] = sw
	e.applyServices(master, servicesYAML(w, nil))
	if !netlab.WaitFor(5*time.Second, func() bool {
		wt, _, _ := e.services(master).dest(83, fmt.Sprintf("192.0.2.%d:7000", 21+idx))
		return wt == 0
	}) {
		t.Fatal("quiesce not applied")
	}
	for i := range 5 {
		if got := e.mustAsk(fmt.Sprintf("192.0.2.%d", 51+i), 83); got == home {
			t.Fatalf("client 192.0.2.%d still sent to quiesced %s with expire_quiescent_template", 51+i, home)
		}
	}
}

func TestDataplaneKernelDemandedWithoutIPVS(t *testing.T) {
	c := newClusterWith(t, clusterOpts{directorYAML: "dataplane: kernel\n"}, "director", "witness")
	d := c.node("dir1")
	select {
	case <-d.proc.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("an agent demanding the kernel dataplane kept running on a kernel without IPVS")
	}
	out := d.proc.Output.String()
	if !strings.Contains(out, "dataplane kernel") || !strings.Contains(out, "has no IPVS") {
		t.Fatalf("the error does not say the kernel lacks IPVS:\n%s", out)
	}
}
