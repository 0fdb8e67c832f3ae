package syncd

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/lbha/lbha/dest"
	"github.com/lbha/lbha/persist"
)

// BenchmarkSyncLag measures the time from a template's creation on the
// master to its arrival in the backup's table, across two network
// namespaces, at 10,000 new templates (and as many connections) per second
// for 2 s per iteration. It needs root.
//
//	go test ./syncd -run '^$' -bench SyncLag -benchtime 1x
func BenchmarkSyncLag(b *testing.B) {
	const (
		rate     = 10000 // templates per second
		duration = 2 * time.Second
		perIter  = int(rate * duration / time.Second)
	)
	s := newSyncLab(b)
	master, backup := newTable(b), newTable(b)
	s.startLabMaster(b, master, MasterConfig{RefreshInterval: -1}, nil)
	resolve, _, _ := testResolver()
	bk := startLabBackup(b, s.b, backup, BackupConfig{}, resolve)
	arr := watchArrivals(backup)
	var all []time.Duration
	b.ResetTimer()
	for iter := range b.N {
		created := make(map[netip.Addr]time.Time, perIter)
		start := time.Now()
		for i := range perIter {
			// Pace by the clock, ten at a time: a sleep is at least
			// tens of microseconds.
			if i%10 == 0 {
				if d := time.Until(start.Add(time.Duration(i) * time.Second / rate)); d > 0 {
					time.Sleep(d)
				}
			}
			n := iter*perIter + i
			created[clientAddr(n, false).Addr()] = time.Now()
			schedule(b, master, n, false)
		}
		want := (iter + 1) * perIter
		if !waitFor(5*time.Second, func() bool { return arr.len() == want }) {
			b.Fatalf("backup holds %d of %d templates: %+v", arr.len(), want, bk.Stats())
		}
		lags, missing := arr.lags(created)
		if missing > 0 {
			b.Fatalf("%d templates missing", missing)
		}
		all = append(all, lags...)
	}
	b.StopTimer()
	slices.Sort(all)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(percentile(all, 0.5)), "p50-ms")
	b.ReportMetric(ms(percentile(all, 0.99)), "p99-ms")
	b.ReportMetric(ms(slices.Max(all)), "max-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkResync1M measures a full resync of a million templates over
// loopback TCP, from the backup's start to its warm report. Filling the
// master's table takes a few seconds more; -short skips it.
//
//	go test ./syncd -run '^$' -bench Resync1M -benchtime 1x
func BenchmarkResync1M(b *testing.B) {
	if testing.Short() {
		b.Skip("fills a million-entry table")
	}
	const n = 1_000_000
	master, err := persist.New(persist.Config{})
	if err != nil {
		b.Fatal(err)
	}
	fillTemplates(b, master, n)
	ln := listenLoopback(b, "")
	startMaster(b, MasterConfig{RefreshInterval: -1, ResyncListener: ln}, master, newFakeSender())
	resolve, _, _ := testResolver()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		backup, err := persist.New(persist.Config{})
		if err != nil {
			b.Fatal(err)
		}
		warm := make(chan struct{})
		cfg := BackupConfig{ResyncAddr: ln.Addr().String(), Logger: quietLog, OnWarm: func(w bool) {
			if w {
				close(warm)
			}
		}}
		bk, err := NewBackup(cfg, backup, newFakeReceiver(), resolve)
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		b.StartTimer()
		start := time.Now()
		go func() { done <- bk.Run(context.Background()) }()
		select {
		case <-warm:
		case <-time.After(60 * time.Second):
			b.Fatalf("no warm report: %+v", bk.Stats())
		}
		took := time.Since(start)
		b.StopTimer()
		if got := tableLen(backup); got != n {
			b.Fatalf("backup holds %d of %d templates", got, n)
		}
		b.ReportMetric(took.Seconds(), "s/resync")
		b.ReportMetric(n/took.Seconds(), "entries/s")
		bk.Close()
		<-done
		b.StartTimer()
	}
}

// fillTemplates creates n templates and no connections: one-packet UDP
// connections are never stored, their templates are.
func fillTemplates(tb testing.TB, t *persist.Table, n int) {
	tb.Helper()
	svc := &persist.Service{Addr: testVIP, Port: 53, Timeout: 360 * time.Second, OnePacket: true}
	d := dest.New(testRS, 53, dest.Route, 1)
	sched := func() *dest.Dest { return d }
	for i := range n {
		_, err := t.Schedule(svc, &persist.Packet{Proto: persist.ProtoUDP, Src: clientAddr(i, false),
			Dst: netip.AddrPortFrom(testVIP, 53)}, sched)
		if err != nil {
			tb.Fatalf("template %d: %v", i, err)
		}
	}
	if c, tm := t.Len(); c != 0 || tm != n {
		tb.Fatalf("table holds %d connections and %d templates, want 0 and %d", c, tm, n)
	}
}
