// Package bench holds benchmarks that need a network lab: processes in
// network namespaces, measured against a baseline in the same run.
//
// BenchmarkProxy compares lbha's userspace proxy (test/lbproxy) with HAProxy
// and with no proxy, for new connections per second and stream throughput;
// the load comes from test/loadgen. Run it with
//
//	LBHA_BENCH_PROXY=1 go test -run '^$' -bench Proxy -benchtime 1x ./test/bench/ -v
//
// Environment: LBHA_BENCH_ROUNDS (default 3), LBHA_BENCH_CONCURRENCY (conns
// workers, default 64), LBHA_BENCH_SECONDS (measurement time of every run),
// LBHA_BENCH_PROXY_CPUPROFILE (a directory: lbproxy writes
// lbproxy-conns.prof and lbproxy-stream.prof there) and
// LBHA_BENCH_HAPROXY_SPLICE=1 (HAProxy with option splice-request and
// splice-response; the default configuration copies through its buffers,
// while lbha splices).
//
// Besides the rates, the benchmark reads each proxy's CPU time from
// /proc/PID/stat around every run and logs the CPU cost per connection and
// per GB: on a shared machine that figure is steadier than the rates.
//
// # Privileges
//
// BenchmarkProxy needs root (network namespaces) and haproxy(1). It runs only
// when asked for by name, -bench Proxy, with LBHA_BENCH_PROXY=1, because it
// takes minutes and `make bench` runs -bench . over every package.
package bench
