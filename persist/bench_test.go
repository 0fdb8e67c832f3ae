package persist

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lbha/lbha/dest"
)

// Sizes the table benchmarks run at. 10M takes about 1.3 GB and a minute
// to build, so it only runs when asked for: LBHA_BENCH_10M=1, or a -bench
// pattern that names 10M (e.g. -bench 'LookupTemplate/10M').
func benchSizes() []int {
	sizes := []int{1_000_000}
	if os.Getenv("LBHA_BENCH_10M") == "1" {
		return append(sizes, 10_000_000)
	}
	if f := flag.Lookup("test.bench"); f != nil && strings.Contains(f.Value.String(), "10M") {
		return append(sizes, 10_000_000)
	}
	return sizes
}

func sizeName(n int) string {
	if n%1_000_000 == 0 {
		return fmt.Sprintf("%dM", n/1_000_000)
	}
	return fmt.Sprint(n)
}

// benchClient returns the i-th client address, all distinct below 2^24.
func benchClient(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

var (
	benchVIP = netip.MustParseAddr("192.0.2.100")
	// One-packet UDP: Schedule creates the template only.
	benchTmplSvc = &Service{Addr: benchVIP, Port: 53, Timeout: time.Hour, OnePacket: true}
)

// fillTemplates builds a table holding n templates (one per client).
func fillTemplates(tb fataler, n int) (*Table, []*dest.Dest) {
	return fillTemplatesShards(tb, n, 64)
}

func fillTemplatesShards(tb fataler, n, shards int) (*Table, []*dest.Dest) {
	tbl, _ := newTestTable(tb, func(c *Config) { c.Shards = shards })
	dests := []*dest.Dest{
		newDest("198.51.100.11", 53, dest.Masq, 1),
		newDest("198.51.100.12", 53, dest.Masq, 1),
		newDest("198.51.100.13", 53, dest.Masq, 1),
	}
	pkt := &Packet{Proto: ProtoUDP, Dst: netip.AddrPortFrom(benchVIP, 53)}
	for i := range n {
		pkt.Src = netip.AddrPortFrom(benchClient(i), 40000)
		if _, err := tbl.Schedule(benchTmplSvc, pkt, fixed(dests[i%3])); err != nil {
			tb.Fatalf("fill %d: %v", i, err)
		}
	}
	return tbl, dests
}

// lazyTable builds the n-template table on first use, so that a -bench
// pattern selecting one size does not build the others.
func lazyTable(n int) func(fataler) (*Table, []*dest.Dest) {
	var tbl *Table
	var dests []*dest.Dest
	return func(tb fataler) (*Table, []*dest.Dest) {
		if tbl == nil {
			tbl, dests = fillTemplates(tb, n)
		}
		return tbl, dests
	}
}

// scatter maps i to 0..n-1 in a cache-hostile order (multiplicative
// hashing, then a multiply-shift range reduction: no division).
func scatter(i, n int) int { return int(uint64(uint32(i)*0x9E3779B1) * uint64(n) >> 32) }

// BenchmarkLookupTemplate: Lookup of an existing template.
//   - N: uniformly random over all N templates, the worst case: nearly
//     every lookup misses the CPU caches twice (index slot, then entry);
//   - N/hot64K: random over 64K of them, a working set that stays in the
//     caches, as recently active clients do.
func BenchmarkLookupTemplate(b *testing.B) {
	for _, n := range benchSizes() {
		table := lazyTable(n)
		vip := netip.AddrPortFrom(benchVIP, 53)
		for _, set := range []struct {
			name string
			size int
		}{{sizeName(n), n}, {sizeName(n) + "/hot64K", 1 << 16}} {
			b.Run(set.name, func(b *testing.B) {
				tbl, _ := table(b)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					// Spread the hot set over the whole client range.
					c := scatter(scatter(i, set.size), n)
					k := Key{Proto: ProtoUDP, Client: netip.AddrPortFrom(benchClient(c), 0), Virtual: vip, Template: true}
					if _, _, ok := tbl.Lookup(&k); !ok {
						b.Fatal("template not found")
					}
					i++
				}
			})
		}
	}
}

// BenchmarkLookupOrCreate: Schedule, the dataplane's call for a new flow.
//   - hit: the template exists (one-packet service, so no connection is
//     stored and the table does not grow);
//   - miss: a new client, so a template is created;
//   - conn: the template exists and a TCP connection is created and
//     removed again.
func BenchmarkLookupOrCreate(b *testing.B) {
	for _, n := range benchSizes() {
		table := lazyTable(n)
		b.Run(sizeName(n)+"/hit", func(b *testing.B) {
			tbl, dests := table(b)
			pkt := &Packet{Proto: ProtoUDP, Dst: netip.AddrPortFrom(benchVIP, 53)}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				pkt.Src = netip.AddrPortFrom(benchClient(scatter(i, n)), 40001)
				if _, err := tbl.Schedule(benchTmplSvc, pkt, fixed(dests[0])); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(sizeName(n)+"/miss", func(b *testing.B) {
			tbl, dests := table(b)
			pkt := &Packet{Proto: ProtoUDP, Dst: netip.AddrPortFrom(benchVIP, 53)}
			b.ReportAllocs()
			i := n
			for b.Loop() {
				pkt.Src = netip.AddrPortFrom(benchClient(i%(1<<24)), 40001)
				i++
				if _, err := tbl.Schedule(benchTmplSvc, pkt, fixed(dests[0])); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(sizeName(n)+"/conn", func(b *testing.B) {
			tbl, dests := table(b)
			svc := &Service{Addr: benchVIP, Port: 53, Timeout: time.Hour}
			pkt := &Packet{Proto: ProtoUDP, Dst: netip.AddrPortFrom(benchVIP, 53)}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				pkt.Src = netip.AddrPortFrom(benchClient(scatter(i, n)), 40002)
				s, err := tbl.Schedule(svc, pkt, fixed(dests[0]))
				if err != nil {
					b.Fatal(err)
				}
				tbl.Remove(s.Conn)
				i++
			}
		})
	}
}

// BenchmarkExpire: cost per expired entry of a mass expiry (connections
// with their templates' decrements), reported as ns/op per entry.
func BenchmarkExpire(b *testing.B) {
	const n = 100_000
	svc := &Service{Addr: benchVIP, Port: 80, Timeout: 10 * time.Second, Netmask: netip.MustParseAddr("255.255.255.0")}
	d := newDest("198.51.100.11", 80, dest.Masq, 1)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		tbl, clk := newTestTable(b, func(c *Config) { c.Shards = 64 })
		pkt := &Packet{Proto: ProtoTCP, Dst: netip.AddrPortFrom(benchVIP, 80), State: TCPSynRecv}
		for i := range n {
			pkt.Src = netip.AddrPortFrom(benchClient(i), 1000)
			// Spread deadlines over a minute.
			if i%(n/60) == 0 {
				clk.Advance(time.Second)
			}
			if _, err := tbl.Schedule(svc, pkt, fixed(d)); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		removed := 0
		for range 300 {
			removed += tbl.Expire(clk.Advance(time.Second))
		}
		if c, tm := tbl.Len(); c+tm != 0 || removed != n+n/256+1 && removed < n {
			b.Fatalf("left %d+%d, removed %d", c, tm, removed)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
}

// BenchmarkMemory reports the heap bytes each template costs, measured with
// runtime.ReadMemStats around building the table.
func BenchmarkMemory(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(sizeName(n), func(b *testing.B) {
			var perTemplate float64
			for b.Loop() {
				perTemplate = heapPerTemplate(b, n)
			}
			b.ReportMetric(perTemplate, "B/template")
		})
	}
}

func heapPerTemplate(tb fataler, n int) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tbl, _ := fillTemplates(tb, n)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if _, tm := tbl.Len(); tm != n {
		tb.Fatalf("%d templates, want %d", tm, n)
	}
	runtime.KeepAlive(tbl)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// TestMemoryPerTemplate holds the layout to its budget of 128 heap bytes
// per template.
func TestMemoryPerTemplate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 1M-entry table")
	}
	got := heapPerTemplate(t, 1_000_000)
	t.Logf("%.1f heap bytes per template at 1M", got)
	if got > 128 {
		t.Errorf("%.1f heap bytes per template, budget 128", got)
	}
}

// baselineKey is what a straightforward implementation would key a Go map
// with.
type baselineKey struct {
	proto           uint8
	client, virtual netip.AddrPort
}

// BenchmarkLookupBaselineGoMap is the yardstick for BenchmarkLookupTemplate,
// measured in the same run with the same keys and access pattern: a Go map
// from key to a 32-bit entry index (no entry read at all, so it is the
// cheaper of the two by one memory access). On hosts where one uncached
// access costs more than the absolute target, the ratio is the figure that
// carries over.
func BenchmarkLookupBaselineGoMap(b *testing.B) {
	for _, n := range benchSizes() {
		vip := netip.AddrPortFrom(benchVIP, 53)
		m := make(map[baselineKey]uint32, n)
		for i := 0; i < n; i++ {
			m[baselineKey{ProtoUDP, netip.AddrPortFrom(benchClient(i), 0), vip}] = uint32(i)
		}
		for _, set := range []struct {
			name string
			size int
		}{{sizeName(n), n}, {sizeName(n) + "/hot64K", 1 << 16}} {
			b.Run(set.name, func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					c := scatter(scatter(i, set.size), n)
					if _, ok := m[baselineKey{ProtoUDP, netip.AddrPortFrom(benchClient(c), 0), vip}]; !ok {
						b.Fatal("key not found")
					}
					i++
				}
			})
		}
		runtime.KeepAlive(m)
	}
}
