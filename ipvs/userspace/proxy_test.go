package userspace

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/dest"
	"github.com/lbha/lbha/ipvs"
	"github.com/lbha/lbha/persist"
)

// The tests run on loopback only: every 127.0.0.0/8 address is local, so
// VIPs, real servers and clients of different /24s need no namespace.

// realServer answers every TCP connection with its name and a newline, then
// echoes; every UDP datagram with its name, a space and the datagram.
type realServer struct {
	name  string
	addr  netip.AddrPort
	ln    net.Listener
	pc    net.PacketConn
	mu    sync.Mutex
	conns []net.Conn
}

func startServer(t *testing.T, name, addr string) *realServer {
	t.Helper()
	rs := &realServer{name: name, addr: netip.MustParseAddrPort(addr)}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rs.ln, rs.pc = ln, pc
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rs.mu.Lock()
			rs.conns = append(rs.conns, c)
			rs.mu.Unlock()
			go func() {
				fmt.Fprintf(c, "%s\n", name)
				_, _ = io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(append([]byte(name+" "), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		rs.mu.Lock()
		for _, c := range rs.conns {
			c.Close()
		}
		rs.mu.Unlock()
	})
	return rs
}

type harness struct {
	t     *testing.T
	p     *Proxy
	table *persist.Table
	rec   *ipvs.Reconciler
}

func newHarness(t *testing.T, tc persist.Config, pc Config) *harness {
	t.Helper()
	table, err := persist.New(tc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = table.Run(ctx) }()
	pc.Table = table
	p, err := New(pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Close()
		cancel()
	})
	return &harness{t: t, p: p, table: table, rec: ipvs.NewReconciler(p)}
}

func (h *harness) apply(svcs ...ipvs.ServiceState) {
	h.t.Helper()
	if _, err := h.rec.Reconcile(svcs); err != nil {
		h.t.Fatal(err)
	}
}

func tcpService(vip string, sched string, timeout, mask uint32, dests ...ipvs.Dest) ipvs.ServiceState {
	ap := netip.MustParseAddrPort(vip)
	return ipvs.ServiceState{Service: ipvs.Service{
		Key:       ipvs.ServiceKey{Protocol: persist.ProtoTCP, Addr: ap.Addr(), Port: ap.Port()},
		Scheduler: sched, Timeout: timeout, Netmask: mask,
	}, Dests: dests}
}

func rs(addr string, weight int) ipvs.Dest {
	return ipvs.Dest{Addr: netip.MustParseAddrPort(addr), Method: dest.Masq, Weight: weight}
}

// ask connects to vip from src (a loopback address) and returns the name
// of the real server that answered, keeping the connection open if keep.
func ask(t *testing.T, src, vip string, keep bool) (string, net.Conn) {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", vip)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", vip, src, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		t.Fatalf("read from %s (client %s): %v", vip, src, err)
	}
	if !keep {
		c.Close()
		return strings.TrimSpace(line), nil
	}
	t.Cleanup(func() { c.Close() })
	return strings.TrimSpace(line), c
}

func threeServers(t *testing.T, port int) []*realServer {
	return []*realServer{
		startServer(t, "rs1", fmt.Sprintf("127.0.0.11:%d", port)),
		startServer(t, "rs2", fmt.Sprintf("127.0.0.12:%d", port)),
		startServer(t, "rs3", fmt.Sprintf("127.0.0.13:%d", port)),
	}
}

func TestRoundRobinAndWeights(t *testing.T) {
	threeServers(t, 18081)
	h := newHarness(t, persist.Config{}, Config{})
	vip := "127.0.0.100:18080"
	h.apply(tcpService(vip, "rr", 0, ipvs.HostMask4, rs("127.0.0.11:18081", 1), rs("127.0.0.12:18081", 1), rs("127.0.0.13:18081", 1)))
	if err := h.p.SetActive(true); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 6 {
		name, _ := ask(t, "127.0.0.1", vip, false)
		got = append(got, name)
	}
	if want := "rs1 rs2 rs3 rs1 rs2 rs3"; strings.Join(got, " ") != want {
		t.Fatalf("rr order %v, want %s", got, want)
	}

	// wrr 3:2:1: every cycle of six connections gives 3, 2 and 1. (The
	// order within a cycle depends on the order the servers were added in,
	// as in the kernel, whose current weight survives each add.)
	vip = "127.0.0.101:18080"
	h.apply(tcpService(vip, "wrr", 0, ipvs.HostMask4, rs("127.0.0.11:18081", 3), rs("127.0.0.12:18081", 2), rs("127.0.0.13:18081", 1)))
	for cycle := range 3 {
		count := map[string]int{}
		for range 6 {
			name, _ := ask(t, "127.0.0.1", vip, false)
			count[name]++
		}
		if count["rs1"] != 3 || count["rs2"] != 2 || count["rs3"] != 1 {
			t.Fatalf("wrr cycle %d: %v, want rs1:3 rs2:2 rs3:1", cycle, count)
		}
	}
}

func TestLeastConnectionCountsOpenFlows(t *testing.T) {
	threeServers(t, 18091)
	h := newHarness(t, persist.Config{}, Config{})
	vip := "127.0.0.100:18090"
	h.apply(tcpService(vip, "wlc", 0, ipvs.HostMask4, rs("127.0.0.11:18091", 1), rs("127.0.0.12:18091", 1), rs("127.0.0.13:18091", 2)))
	if err := h.p.SetActive(true); err != nil {
		t.Fatal(err)
	}
	// Four connections kept open: wlc fills by active/weight, so rs3
	// (weight 2) takes two of them.
	count := map[string]int{}
	for range 4 {
		name, _ := ask(t, "127.0.0.1", vip, true)
		count[name]++
	}
	if count["rs1"] != 1 || count["rs2"] != 1 || count["rs3"] != 2 {
		t.Fatalf("open connections per server %v, want rs1:1 rs2:1 rs3:2", count)
	}
	st, _ := h.p.Status()
	active := 0
	for _, d := range st[0].Dests {
		active += d.ActiveConns
	}
	if active != 4 || st[0].Stats.Conns != 4 {
		t.Fatalf("status: %d active, %d conns; want 4 and 4", active, st[0].Stats.Conns)
	}
}

func TestPersistenceNetmaskAndQuiesce(t *testing.T) {
	for _, expire := range []bool{false, true} {
		t.Run(fmt.Sprintf("expire_quiescent_template=%v", expire), func(t *testing.T) {
			port := 18101
			if expire {
				port = 18111
			}
			threeServers(t, port)
			h := newHarness(t, persist.Config{ExpireQuiescentTemplate: expire}, Config{})
			vip := fmt.Sprintf("127.0.0.100:%d", port-1)
			d := func(w1 int) []ipvs.Dest {
				return []ipvs.Dest{rs(fmt.Sprintf("127.0.0.11:%d", port), w1), rs(fmt.Sprintf("127.0.0.12:%d", port), 1), rs(fmt.Sprintf("127.0.0.13:%d", port), 1)}
			}
			h.apply(tcpService(vip, "rr", 600, 0xFFFFFF00, d(1)...))
			if err := h.p.SetActive(true); err != nil {
				t.Fatal(err)
			}
			// Every client of a /24 lands where the first one did.
			home := map[string]string{}
			for _, net24 := range []string{"127.0.1", "127.0.2", "127.0.3"} {
				for i := 1; i <= 5; i++ {
					name, _ := ask(t, fmt.Sprintf("%s.%d", net24, i), vip, false)
					if home[net24] == "" {
						home[net24] = name
					} else if name != home[net24] {
						t.Fatalf("client %s.%d went to %s, its /24 is on %s", net24, i, name, home[net24])
					}
				}
			}
			if home["127.0.1"] != "rs1" || home["127.0.2"] != "rs2" || home["127.0.3"] != "rs3" {
				t.Fatalf("homes %v", home)
			}
			// Quiesce rs1: new /24s never get it; 127.0.1.0/24 keeps it
			// unless expire_quiescent_template is set.
			h.apply(tcpService(vip, "rr", 600, 0xFFFFFF00, d(0)...))
			for i := 4; i <= 9; i++ {
				name, _ := ask(t, fmt.Sprintf("127.0.%d.1", i), vip, false)
				if name == "rs1" {
					t.Fatalf("new client 127.0.%d.1 sent to quiesced rs1", i)
				}
			}
			name, _ := ask(t, "127.0.1.77", vip, false)
			if expire && name == "rs1" {
				t.Fatal("template of a quiesced server still used with expire_quiescent_template")
			}
			if !expire && name != "rs1" {
				t.Fatalf("persistent client moved off quiesced rs1 to %s", name)
			}
			var templates int
			conns, _ := h.p.Conns()
			for _, c := range conns {
				if c.Template {
					templates++
					if c.Client.Port() != 0 || c.Client.Addr().As4()[3] != 0 {
						t.Fatalf("template client %s is not a masked /24", c.Client)
					}
				}
			}
			if templates < 3 {
				t.Fatalf("%d templates listed", templates)
			}
		})
	}
}

func TestUDPFlowsAndSIP(t *testing.T) {
	threeServers(t, 15061)
	h := newHarness(t, persist.Config{}, Config{})
	vip := netip.MustParseAddrPort("127.0.0.100:15060")
	svc := ipvs.ServiceState{Service: ipvs.Service{
		Key:       ipvs.ServiceKey{Protocol: persist.ProtoUDP, Addr: vip.Addr(), Port: vip.Port()},
		Scheduler: "rr", Timeout: 60, Netmask: 0, PE: "sip", // -M 0.0.0.0: the Call-ID alone decides
	}, Dests: []ipvs.Dest{rs("127.0.0.11:15061", 1), rs("127.0.0.12:15061", 1), rs("127.0.0.13:15061", 1)}}
	h.apply(svc)
	if err := h.p.SetActive(true); err != nil {
		t.Fatal(err)
	}
	sipMsg := func(callID string) []byte {
		return []byte("INVITE sip:a@example.test SIP/2.0\r\nCall-ID: " + callID + "\r\nCSeq: 1 INVITE\r\n\r\n")
	}
	send := func(src string, msg []byte) string {
		t.Helper()
		c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(src)), net.UDPAddrFromAddrPort(vip))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 2048)
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("no reply to %s: %v", src, err)
		}
		if from != vip {
			t.Fatalf("reply came from %s, not the VIP %s", from, vip)
		}
		name, _, _ := strings.Cut(string(buf[:n]), " ")
		return name
	}
	// Same Call-ID from different clients: one server (the SIP engine).
	a := send("127.0.5.1:40001", sipMsg("call-1@x"))
	b := send("127.0.6.1:40001", sipMsg("call-1@x"))
	if a != b {
		t.Fatalf("one Call-ID on two servers: %s and %s", a, b)
	}
	c := send("127.0.7.1:40001", sipMsg("call-2@x"))
	if c == a {
		t.Fatalf("second call scheduled on the same server %s by rr", c)
	}
	// Without a Call-ID the datagram is not scheduled.
	cn, _ := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(vip))
	defer cn.Close()
	_, _ = cn.Write([]byte("hello"))
	_ = cn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := cn.Read(make([]byte, 100)); err == nil {
		t.Fatal("a datagram without Call-ID was answered")
	}
	st, _ := h.p.Status()
	if st[0].Stats.InPkts != 3 || st[0].Stats.OutPkts != 3 {
		t.Fatalf("UDP counters %+v", st[0].Stats)
	}
}

func TestStandbyClosesFlowsAndStopsListening(t *testing.T) {
	threeServers(t, 18121)
	before := runtime.NumGoroutine()
	h := newHarness(t, persist.Config{}, Config{OnStandby: config.StandbyClose})
	vip := "127.0.0.100:18120"
	h.apply(tcpService(vip, "rr", 0, ipvs.HostMask4, rs("127.0.0.11:18121", 1), rs("127.0.0.12:18121", 1)))
	if err := h.p.SetActive(true); err != nil {
		t.Fatal(err)
	}
	var open []net.Conn
	for range 50 {
		_, c := ask(t, "127.0.0.1", vip, true)
		open = append(open, c)
	}
	if err := h.p.SetActive(false); err != nil {
		t.Fatal(err)
	}
	for _, c := range open {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, io.ErrNoProgress) {
			t.Fatal("flow still open after standby")
		}
	}
	if c, err := net.DialTimeout("tcp", vip, time.Second); err == nil {
		c.Close()
		t.Fatal("standby proxy still accepts")
	}
	// Back to active, then closed: every goroutine the proxy started ends.
	if err := h.p.SetActive(true); err != nil {
		t.Fatal(err)
	}
	ask(t, "127.0.0.1", vip, false)
	h.p.Close()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestDrainKeepsFlows(t *testing.T) {
	threeServers(t, 18131)
	h := newHarness(t, persist.Config{}, Config{OnStandby: config.StandbyDrain, DrainTimeout: 400 * time.Millisecond})
	vip := "127.0.0.100:18130"
	h.apply(tcpService(vip, "rr", 0, ipvs.HostMask4, rs("127.0.0.11:18131", 1)))
	if err := h.p.SetActive(true); err != nil {
		t.Fatal(err)
	}
	_, c := ask(t, "127.0.0.1", vip, true)
	if err := h.p.SetActive(false); err != nil {
		t.Fatal(err)
	}
	// Still relaying during the drain.
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("drained flow: %q, %v", line, err)
	}
	// Closed when the drain ends.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("flow survived the drain timeout")
	}
}

func TestApplySemanticsAndResolve(t *testing.T) {
	h := newHarness(t, persist.Config{}, Config{})
	web := tcpService("127.0.0.100:18140", "wlc", 0, ipvs.HostMask4, rs("127.0.0.11:18141", 1), rs("127.0.0.12:18141", 2))
	h.apply(web)
	st, _ := h.p.State()
	if ops, _ := ipvs.Plan(st, []ipvs.ServiceState{web}); len(ops) != 0 {
		t.Fatalf("state differs from what was applied: %v", ops)
	}
	if err := h.p.Apply(ipvs.Op{Kind: ipvs.AddService, Service: web.Service}); err == nil {
		t.Fatal("adding an existing service succeeded")
	}
	for _, k := range []ipvs.ServiceKey{
		{Fwmark: 1},
		{Protocol: persist.ProtoSCTP, Addr: netip.MustParseAddr("127.0.0.100"), Port: 9},
		{Protocol: persist.ProtoTCP, Addr: netip.MustParseAddr("127.0.0.100"), Port: 0},
	} {
		err := h.p.Apply(ipvs.Op{Kind: ipvs.AddService, Service: ipvs.Service{Key: k, Scheduler: "rr"}})
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: error %v, want ErrUnsupported", k, err)
		}
	}
	d := h.p.Resolve(persist.DestQuery{Proto: persist.ProtoTCP, Virtual: netip.MustParseAddrPort("127.0.0.100:18140"),
		DestAddr: netip.MustParseAddrPort("127.0.0.12:18141")})
	if d == nil || d.Weight() != 2 {
		t.Fatalf("Resolve: %v", d)
	}
	if h.p.Resolve(persist.DestQuery{Proto: persist.ProtoUDP, Virtual: netip.MustParseAddrPort("127.0.0.100:18140"),
		DestAddr: netip.MustParseAddrPort("127.0.0.12:18141")}) != nil {
		t.Fatal("Resolve matched the wrong protocol")
	}
	// Removing a real server makes it unavailable (its templates die).
	h.apply(tcpService("127.0.0.100:18140", "wlc", 0, ipvs.HostMask4, rs("127.0.0.11:18141", 1)))
	if d.Available() {
		t.Fatal("removed real server still available")
	}
	// Drift repair: a change behind the reconciler's back is undone.
	if err := h.p.Apply(ipvs.Op{Kind: ipvs.DelDest, Service: web.Service, Dest: rs("127.0.0.11:18141", 1)}); err != nil {
		t.Fatal(err)
	}
	res, err := h.rec.Reconcile([]ipvs.ServiceState{tcpService("127.0.0.100:18140", "wlc", 0, ipvs.HostMask4, rs("127.0.0.11:18141", 1))})
	if err != nil || !res.Drift || len(res.Applied) != 1 {
		t.Fatalf("drift repair: %+v, %v", res, err)
	}
}

func TestIPv6(t *testing.T) {
	startServer(t, "rs6", "[::1]:18151")
	h := newHarness(t, persist.Config{}, Config{})
	vip := netip.MustParseAddrPort("[::1]:18150")
	tcp := tcpService(vip.String(), "rr", 300, 64, rs("[::1]:18151", 1))
	udp := tcp
	udp.Key.Protocol = persist.ProtoUDP
	h.apply(tcp, udp)
	if err := h.p.SetActive(true); err != nil {
		t.Fatal(err)
	}
	if name, _ := ask(t, "::1", vip.String(), false); name != "rs6" {
		t.Fatalf("IPv6 TCP answered by %q", name)
	}
	c, err := net.DialUDP("udp6", nil, net.UDPAddrFromAddrPort(vip))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("x"))
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "rs6 x" {
		t.Fatalf("IPv6 UDP answer %q, %v", buf[:n], err)
	}
	conns, _ := h.p.Conns()
	var tmpl bool
	for _, c := range conns {
		if c.Template && c.Client.Addr() == netip.MustParseAddr("::") && c.Client.Port() == 0 {
			tmpl = true // ::1 masked to /64
		}
	}
	if !tmpl {
		t.Fatalf("no /64 template in %+v", conns)
	}
}

// TestNoGoroutineLeakUnderLoad opens and closes thousands of TCP and UDP
// flows concurrently; once they ended the proxy is back to its idle
// goroutines.
func TestNoGoroutineLeakUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	threeServers(t, 18161)
	h := newHarness(t, persist.Config{}, Config{UDPTimeout: 200 * time.Millisecond})
	vip := netip.MustParseAddrPort("127.0.0.100:18160")
	tcp := tcpService(vip.String(), "wlc", 0, ipvs.HostMask4, rs("127.0.0.11:18161", 1), rs("127.0.0.12:18161", 1), rs("127.0.0.13:18161", 1))
	udp := tcp
	udp.Key.Protocol = persist.ProtoUDP
	h.apply(tcp, udp)
	if err := h.p.SetActive(true); err != nil {
		t.Fatal(err)
	}
	idle := runtime.NumGoroutine()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				c, err := net.DialTimeout("tcp", vip.String(), 2*time.Second)
				if err != nil {
					errs <- err
					return
				}
				_ = c.SetDeadline(time.Now().Add(3 * time.Second))
				if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
					errs <- err
				}
				c.Close()
				u, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 9, byte(w+1))}, net.UDPAddrFromAddrPort(vip))
				if err != nil {
					errs <- err
					return
				}
				_, _ = u.Write([]byte{byte(i)})
				_ = u.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := u.Read(make([]byte, 64)); err != nil {
					errs <- fmt.Errorf("udp: %w", err)
				}
				u.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st, _ := h.p.Status()
	if st[0].Stats.Conns != 3200 {
		t.Fatalf("%d TCP connections scheduled, want 3200", st[0].Stats.Conns)
	}
	// TCP flows end with their connections, UDP flows after their idle
	// timeout (200 ms here).
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > idle+2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > idle+2 {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after the load, %d before:\n%s", n, idle, buf[:runtime.Stack(buf, true)])
	}
	if n := h.p.flowCount(); n != 0 {
		t.Fatalf("%d flows registered after the load", n)
	}
}

// TestUpperThresholdOverloads: a real server at its upper threshold gets no
// new connection until its load falls (OVERLOAD, as in the kernel).
func TestUpperThresholdOverloads(t *testing.T) {
	threeServers(t, 18171)
	h := newHarness(t, persist.Config{}, Config{})
	vip := "127.0.0.100:18170"
	capped := rs("127.0.0.11:18171", 10)
	capped.UThreshold = 2
	h.apply(tcpService(vip, "wlc", 0, ipvs.HostMask4, capped, rs("127.0.0.12:18171", 1)))
	if err := h.p.SetActive(true); err != nil {
		t.Fatal(err)
	}
	// wlc prefers rs1 (weight 10) until it holds 2 connections.
	got := map[string]int{}
	var held []net.Conn
	for range 5 {
		name, c := ask(t, "127.0.0.1", vip, true)
		got[name]++
		held = append(held, c)
	}
	if got["rs1"] != 2 || got["rs2"] != 3 {
		t.Fatalf("with rs1 capped at 2 connections: %v", got)
	}
	st, _ := h.p.Status()
	if d := st[0].Dests[0]; d.ActiveConns != 2 {
		t.Fatalf("rs1 has %d active connections", d.ActiveConns)
	}
	for _, c := range held {
		c.Close()
	}
}
