//go:build linux

package bench

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbha/lbha/internal/netlab"
)

// Addresses of the lab (documentation ranges only).
const (
	clientAddr  = "198.51.100.10/24" // client, towards lb
	clientAddr2 = "203.0.113.50/24"  // client's leg on the server network, for the direct path
	lbFront     = "198.51.100.1/24"
	lbBack      = "203.0.113.1/24"
	serverAddr  = "203.0.113.10/24"

	lbhaVIP    = "192.0.2.100"
	haproxyVIP = "192.0.2.101"
	serverIP   = "203.0.113.10"
	rrPort     = "8080" // request/response on the server
	sinkPort   = "9000" // discard on the server (and on both VIPs)
	vipPort    = "80"   // request/response on both VIPs
)

// settings are the knobs of one benchmark run; environment variables
// override them (see settingsFromEnv).
type settings struct {
	rounds       int
	concurrency  int
	connsTime    time.Duration
	streamTime   time.Duration
	warmup       time.Duration
	cpuProfileTo string // directory for lbproxy CPU profiles, or ""
}

func settingsFromEnv(b *testing.B) settings {
	s := settings{rounds: 3, concurrency: 64, connsTime: 5 * time.Second, streamTime: 4 * time.Second, warmup: time.Second}
	intEnv := func(name string, dst *int) {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				b.Fatalf("%s=%q: want a positive integer", name, v)
			}
			*dst = n
		}
	}
	intEnv("LBHA_BENCH_ROUNDS", &s.rounds)
	intEnv("LBHA_BENCH_CONCURRENCY", &s.concurrency)
	if v := os.Getenv("LBHA_BENCH_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("LBHA_BENCH_SECONDS=%q: want a positive integer", v)
		}
		s.connsTime, s.streamTime = time.Duration(n)*time.Second, time.Duration(n)*time.Second
	}
	s.cpuProfileTo = os.Getenv("LBHA_BENCH_PROXY_CPUPROFILE")
	return s
}

// guard skips unless the benchmark was asked for by name and by the
// environment, and the machine can run it.
func guard(b *testing.B) string {
	b.Helper()
	if f := flag.Lookup("test.bench"); f == nil || !strings.Contains(f.Value.String(), "Proxy") {
		b.Skip("BenchmarkProxy runs only with -bench Proxy (and LBHA_BENCH_PROXY=1)")
	}
	if os.Getenv("LBHA_BENCH_PROXY") != "1" {
		b.Skip("BenchmarkProxy runs only with LBHA_BENCH_PROXY=1 (it takes minutes)")
	}
	if os.Geteuid() != 0 {
		b.Skip("BenchmarkProxy needs root to create network namespaces")
	}
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		if _, err := os.Stat("/usr/sbin/haproxy"); err != nil {
			b.Skip("BenchmarkProxy needs haproxy (Debian package haproxy)")
		}
		haproxy = "/usr/sbin/haproxy"
	}
	return haproxy
}

// BenchmarkProxy compares lbha's userspace proxy with HAProxy and with no
// proxy at all, on the same machine in the same run:
//
//	client ──br1── lb (lbproxy on 192.0.2.100, haproxy on 192.0.2.101) ──br2── server
//	   └───────────────────────── br2 (direct path) ─────────────────────────┘
//
// Every socket of the load lives in a namespace of the lab, in a process of
// its own (loadgen, lbproxy, haproxy). Each round measures new connections
// per second (1 KB request, 1 KB response, close) and stream throughput
// with 1 and 4 connections, for the three paths in an order that rotates
// from round to round; the metrics are the medians over the rounds.
func BenchmarkProxy(b *testing.B) {
	haproxyBin := guard(b)
	set := settingsFromEnv(b)

	dir := b.TempDir() // before the lab, so that it is removed after the processes are killed
	loadgen := goBuild(b, dir, "loadgen", "github.com/lbha/lbha/test/loadgen")
	lbproxy := goBuild(b, dir, "lbproxy", "github.com/lbha/lbha/test/lbproxy")

	lab := netlab.New(b)
	front, back := lab.Switch(), lab.Switch()
	client, lb, server := lab.Node("client"), lab.Node("lb"), lab.Node("server")
	for _, n := range []*netlab.Node{client, lb, server} {
		tune(n)
	}
	client.Attach(front, "eth0", clientAddr)
	client.Attach(back, "eth1", clientAddr2)
	client.MustRun("ip", "route", "add", "192.0.2.0/24", "via", strings.Split(lbFront, "/")[0])
	lb.Attach(front, "eth0", lbFront)
	lb.Attach(back, "eth1", lbBack)
	lb.MustRun("ip", "addr", "add", lbhaVIP+"/32", "dev", "lo")
	lb.MustRun("ip", "addr", "add", haproxyVIP+"/32", "dev", "lo")
	server.Attach(back, "eth0", serverAddr)

	srv := server.Start(loadgen, "serve", "--addr", serverIP+":"+rrPort, "--sink", serverIP+":"+sinkPort)
	waitOutput(b, srv, "loadgen: listening")

	profile := func(name string) []string {
		if set.cpuProfileTo == "" {
			return nil
		}
		return []string{"--cpuprofile", filepath.Join(set.cpuProfileTo, "lbproxy-"+name+".prof")}
	}
	lbRR := lb.Start(lbproxy, append([]string{"--vip", lbhaVIP + ":" + vipPort, "--rs", serverIP + ":" + rrPort, "--sched", "rr"}, profile("conns")...)...)
	lbSink := lb.Start(lbproxy, append([]string{"--vip", lbhaVIP + ":" + sinkPort, "--rs", serverIP + ":" + sinkPort, "--sched", "rr"}, profile("stream")...)...)
	waitOutput(b, lbRR, "lbproxy: listening")
	waitOutput(b, lbSink, "lbproxy: listening")

	cfg := filepath.Join(dir, "haproxy.cfg")
	maxconn := haproxyMaxconn()
	if maxconn < 100000 {
		b.Logf("haproxy: maxconn %d instead of 100000: the file descriptor limit cannot be raised (no CAP_SYS_RESOURCE)", maxconn)
	}
	splice := os.Getenv("LBHA_BENCH_HAPROXY_SPLICE") == "1"
	if err := os.WriteFile(cfg, []byte(haproxyConfig(maxconn, splice)), 0o644); err != nil {
		b.Fatal(err)
	}
	hap := lb.Start(haproxyBin, "-f", cfg, "-db")
	waitListening(b, lb, hap, haproxyVIP+":"+vipPort, haproxyVIP+":"+sinkPort)

	paths := []path{
		{name: "direct", rr: serverIP + ":" + rrPort, sink: serverIP + ":" + sinkPort},
		{name: "lbha", rr: lbhaVIP + ":" + vipPort, sink: lbhaVIP + ":" + sinkPort, rrProc: lbRR, sinkProc: lbSink},
		{name: "haproxy", rr: haproxyVIP + ":" + vipPort, sink: haproxyVIP + ":" + sinkPort, rrProc: hap, sinkProc: hap},
	}
	tests := []test{
		{name: "conns", unit: "conns/s", args: func(p path) []string {
			return []string{"conns", "--target", p.rr, "--concurrency", strconv.Itoa(set.concurrency), "--size", "1024",
				"--warmup", set.warmup.String(), "--duration", set.connsTime.String()}
		}, d: set.warmup + set.connsTime},
		{name: "stream1", unit: "Gbit/s", args: func(p path) []string {
			return []string{"stream", "--target", p.sink, "--streams", "1", "--warmup", set.warmup.String(), "--duration", set.streamTime.String()}
		}, d: set.warmup + set.streamTime},
		{name: "stream4", unit: "Gbit/s", args: func(p path) []string {
			return []string{"stream", "--target", p.sink, "--streams", "4", "--warmup", set.warmup.String(), "--duration", set.streamTime.String()}
		}, d: set.warmup + set.streamTime},
	}

	b.ResetTimer()
	res := results{}
	for round := range set.rounds {
		for _, tc := range tests {
			for i := range paths {
				p := paths[(i+round)%len(paths)] // rotate the order so no path always goes first
				m := measure(b, client, loadgen, tc, p)
				res.add(tc.name, p.name, m.value)
				cpu := ""
				if m.cpu >= 0 {
					res.add(tc.name+"-cpu", p.name, m.cpuPerUnit())
					cpu = fmt.Sprintf(" proxy CPU %.2f cores, %.1f %s", m.cores(), m.cpuPerUnit(), tc.cpuUnit())
				}
				b.Logf("round %d %-7s %-7s %10.2f %s%s %s", round+1, tc.name, p.name, m.value, tc.unit, cpu, m.note)
			}
		}
	}
	b.StopTimer()

	// Stop the proxies explicitly so that their profiles are complete.
	for _, p := range []*netlab.Process{lbRR, lbSink, hap, srv} {
		p.Stop(5 * time.Second)
	}
	report(b, res, tests, paths, set)
}

// path is one way from the client to the server: the addresses the load
// generator targets, and the proxy process whose CPU time is accounted (nil
// for the direct path).
type path struct {
	name, rr, sink   string
	rrProc, sinkProc *netlab.Process
}

func (p path) proc(tc test) *netlab.Process {
	if tc.name == "conns" {
		return p.rrProc
	}
	return p.sinkProc
}

type test struct {
	name, unit string
	args       func(path) []string
	d          time.Duration // how long the load generator runs
}

// cpuUnit is the unit of the proxy's CPU cost per unit of work.
func (tc test) cpuUnit() string {
	if tc.name == "conns" {
		return "cpu-us/conn"
	}
	return "cpu-s/GB"
}

// measurement is the outcome of one load generator run.
type measurement struct {
	value float64 // conns/s or Gbit/s over the measurement window
	note  string
	// cpu is the proxy's CPU time (user+system) over the whole run of the
	// load generator, warm-up included, or -1 without a proxy; wall is
	// that run's duration.
	cpu, wall time.Duration
	conns     bool
}

// cores is the proxy's average CPU use in cores.
func (m measurement) cores() float64 { return m.cpu.Seconds() / m.wall.Seconds() }

// cpuPerUnit is the proxy's CPU time per connection (µs) or per GB moved
// (s), assuming the warm-up ran at the measured rate.
func (m measurement) cpuPerUnit() float64 {
	if m.value <= 0 {
		return 0
	}
	if m.conns {
		return m.cpu.Seconds() * 1e6 / (m.value * m.wall.Seconds())
	}
	return m.cpu.Seconds() / (m.value / 8 * m.wall.Seconds())
}

// results maps test, then path, to the value of every round.
type results map[string]map[string][]float64

func (r results) add(test, path string, v float64) {
	if r[test] == nil {
		r[test] = map[string][]float64{}
	}
	r[test][path] = append(r[test][path], v)
}

func (r results) median(test, path string) float64 { return median(r[test][path]) }

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// measure runs one load generator process in the client namespace and
// returns its figure (conns/s or Gbit/s) and a note for the log.
func measure(b *testing.B, client *netlab.Node, loadgen string, tc test, p path) measurement {
	b.Helper()
	proxy := p.proc(tc)
	cpu0 := cpuTime(b, proxy)
	t0 := time.Now()
	proc := client.Start(loadgen, tc.args(p)...)
	if err := proc.Wait(tc.d + 30*time.Second); err != nil {
		b.Fatalf("%s %s: loadgen: %v\n%s", tc.name, p.name, err, proc.Output.String())
	}
	m := measurement{cpu: -1, wall: time.Since(t0), conns: tc.name == "conns"}
	if proxy != nil {
		m.cpu = cpuTime(b, proxy) - cpu0
	}
	line := lastJSONLine(proc.Output.String())
	switch tc.name {
	case "conns":
		var r struct {
			ConnsPerSec float64 `json:"conns_per_sec"`
			Errors      int64   `json:"errors"`
			P50ms       float64 `json:"p50_ms"`
			P99ms       float64 `json:"p99_ms"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			b.Fatalf("%s %s: loadgen output %q: %v", tc.name, p.name, proc.Output.String(), err)
		}
		if r.Errors > 0 {
			b.Errorf("%s %s: %d connections failed", tc.name, p.name, r.Errors)
		}
		m.value, m.note = r.ConnsPerSec, fmt.Sprintf("(p50 %.2f ms, p99 %.2f ms, errors %d)", r.P50ms, r.P99ms, r.Errors)
		return m
	default:
		var r struct {
			GbitPerSec float64 `json:"gbit_per_sec"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			b.Fatalf("%s %s: loadgen output %q: %v", tc.name, p.name, proc.Output.String(), err)
		}
		m.value = r.GbitPerSec
		return m
	}
}

// cpuTime returns the user plus system time of a process so far, 0 for
// nil. The program behind "ip netns exec" keeps its PID.
func cpuTime(b *testing.B, p *netlab.Process) time.Duration {
	b.Helper()
	if p == nil {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID()))
	if err != nil {
		b.Fatalf("%s pid %d: %v\n%s", p.Node.Name, p.PID(), err, p.Output.String())
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14, stime 15.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("pid %d: cannot parse /proc/pid/stat %q", p.PID(), raw)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/pid/stat's times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

func lastJSONLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.HasPrefix(l, "{") {
			return l
		}
	}
	return ""
}

// report logs the table and reports the medians and ratios as metrics.
func report(b *testing.B, res results, tests []test, paths []path, set settings) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "proxy benchmark: %d rounds, conns: concurrency %d, %v measured after %v warm-up; streams: %v measured\n",
		set.rounds, set.concurrency, set.connsTime, set.warmup, set.streamTime)
	fmt.Fprintf(&sb, "%-8s %-8s %-9s %-32s %10s\n", "test", "path", "unit", "runs", "median")
	for _, tc := range tests {
		for _, p := range paths {
			var runs []string
			for _, v := range res[tc.name][p.name] {
				runs = append(runs, strconv.FormatFloat(v, 'f', 2, 64))
			}
			fmt.Fprintf(&sb, "%-8s %-8s %-9s %-32s %10.2f\n", tc.name, p.name, tc.unit, strings.Join(runs, " "), res.median(tc.name, p.name))
		}
	}
	sb.WriteString("proxy CPU cost (median over the rounds):\n")
	for _, tc := range tests {
		for _, p := range paths[1:] {
			fmt.Fprintf(&sb, "  %-8s %-8s %8.2f %s\n", tc.name, p.name, res.median(tc.name+"-cpu", p.name), tc.cpuUnit())
		}
	}
	if lb, hp := res.median("conns-cpu", "lbha"), res.median("conns-cpu", "haproxy"); hp > 0 {
		b.ReportMetric(lb, "lbha-cpu-us/conn")
		b.ReportMetric(hp, "haproxy-cpu-us/conn")
		b.ReportMetric(lb/hp, "lbha/haproxy-cpu-per-conn-ratio")
		fmt.Fprintf(&sb, "  lbha/haproxy CPU per connection: %.3f\n", lb/hp)
	}
	sb.WriteString("ratios of the medians:\n")
	for _, tc := range tests {
		lbha := res.median(tc.name, "lbha")
		for _, base := range []string{"haproxy", "direct"} {
			ratio := 0.0
			if m := res.median(tc.name, base); m > 0 {
				ratio = lbha / m
			}
			name := fmt.Sprintf("lbha/%s-%s-ratio", base, tc.name)
			fmt.Fprintf(&sb, "  %-32s %.3f\n", name, ratio)
			b.ReportMetric(ratio, name)
		}
		for _, p := range paths {
			unit := p.name + "-" + tc.name + "-" + tc.unit
			if tc.name == "conns" {
				unit = p.name + "-" + tc.unit // "lbha-conns/s"
			}
			b.ReportMetric(res.median(tc.name, p.name), unit)
		}
	}
	b.Log("\n" + sb.String())
}

// tune sets what a namespace under connection load needs: a wide port range
// and TIME_WAIT reuse for the sides that connect, deep accept queues for the
// sides that listen (lab-notes: TCP proxy baseline).
func tune(n *netlab.Node) {
	for _, kv := range [][2]string{
		{"net.ipv4.ip_local_port_range", "1024 65000"},
		{"net.ipv4.tcp_tw_reuse", "1"},
		{"net.core.somaxconn", "4096"},
		{"net.ipv4.tcp_max_syn_backlog", "4096"},
		{"net.ipv4.tcp_fin_timeout", "15"},
	} {
		n.Sysctl(kv[0], kv[1])
	}
}

// haproxyMaxconn is 100000 connections, or what the hard limit on file
// descriptors allows: HAProxy refuses to start when it cannot raise its
// limit to fit maxconn, and a process without CAP_SYS_RESOURCE cannot go
// past the hard limit. A connection takes two descriptors, plus half a pipe
// (two descriptors per maxconn/4) with splicing: three leaves room for both.
func haproxyMaxconn() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 100000
	}
	if room := (int64(lim.Max) - 100) / 3; room < 100000 {
		return int(max(room, 1000))
	}
	return 100000
}

// haproxyConfig is a minimal TCP configuration: no logging, round robin over
// one server. With splice, HAProxy moves data with splice(2) as lbha does
// (io.Copy between TCP connections); by default it copies through its
// buffers.
func haproxyConfig(maxconn int, splice bool) string {
	opt := ""
	if splice {
		opt = "    option splice-request\n    option splice-response\n"
	}
	return fmt.Sprintf(`global
    maxconn %[6]d
    nbthread 2

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
%[7]s
frontend rr
    bind %[1]s:%[2]s
    default_backend rr

backend rr
    balance roundrobin
    server s1 %[3]s:%[4]s

frontend sink
    bind %[1]s:%[5]s
    default_backend sink

backend sink
    balance roundrobin
    server s1 %[3]s:%[5]s
`, haproxyVIP, vipPort, serverIP, rrPort, sinkPort, maxconn, opt)
}

func goBuild(b *testing.B, dir, name, pkg string) string {
	b.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build %s: %v\n%s", pkg, err, msg)
	}
	return out
}

// waitOutput waits until the process has printed marker.
func waitOutput(b *testing.B, p *netlab.Process, marker string) {
	b.Helper()
	ok := netlab.WaitFor(10*time.Second, func() bool {
		select {
		case <-p.Done():
			return true
		default:
		}
		return strings.Contains(p.Output.String(), marker)
	})
	if !ok || !strings.Contains(p.Output.String(), marker) {
		b.Fatalf("%s pid %d: no %q:\n%s", p.Node.Name, p.PID(), marker, p.Output.String())
	}
}

// waitListening waits until every address has a listening TCP socket in the
// node (ss, which opens no connection).
func waitListening(b *testing.B, n *netlab.Node, p *netlab.Process, addrs ...string) {
	b.Helper()
	ok := netlab.WaitFor(10*time.Second, func() bool {
		select {
		case <-p.Done():
			return false
		default:
		}
		out, err := n.Run("ss", "-Hltn")
		if err != nil {
			return false
		}
		for _, a := range addrs {
			if !strings.Contains(out, a+" ") {
				return false
			}
		}
		return true
	})
	if !ok {
		b.Fatalf("%s: %v not listening:\n%s", n.Name, addrs, p.Output.String())
	}
}
