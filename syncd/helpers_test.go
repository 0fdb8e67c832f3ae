package syncd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/lbha/lbha/dest"
	"github.com/lbha/lbha/persist"
	"github.com/lbha/lbha/syncd/wire"
)

var (
	testVIP   = netip.MustParseAddr("192.0.2.100")
	testVIP6  = netip.MustParseAddr("2001:db8::100")
	testRS    = netip.MustParseAddr("198.51.100.11")
	testRS6   = netip.MustParseAddr("2001:db8:1::11")
	quietLog  = slog.New(slog.NewTextHandler(io.Discard, nil))
	testSvc   = &persist.Service{Addr: testVIP, Port: 80, Timeout: 360 * time.Second}
	testSvc6  = &persist.Service{Addr: testVIP6, Port: 80, Timeout: 360 * time.Second}
	testDest  = dest.New(testRS, 80, dest.Route, 1)
	testDest6 = dest.New(testRS6, 80, dest.Route, 1)
)

// testResolver is a backup's service configuration: the one VIP:80 with
// one real server per family.
func testResolver() (persist.Resolver, *dest.Dest, *dest.Dest) {
	d4 := dest.New(testRS, 80, dest.Route, 1)
	d6 := dest.New(testRS6, 80, dest.Route, 1)
	return func(q persist.DestQuery) *dest.Dest {
		switch {
		case q.Virtual == netip.AddrPortFrom(testVIP, 80) && q.DestAddr.Addr() == testRS:
			return d4
		case q.Virtual == netip.AddrPortFrom(testVIP6, 80) && q.DestAddr.Addr() == testRS6:
			return d6
		}
		return nil
	}, d4, d6
}

func newTable(tb testing.TB) *persist.Table {
	tb.Helper()
	t, err := persist.New(persist.Config{Shards: 8})
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// clientAddr returns the i-th test client, IPv4 or IPv6.
func clientAddr(i int, v6 bool) netip.AddrPort {
	if v6 {
		a := netip.MustParseAddr("2001:db8:c::").As16()
		a[12], a[13], a[14], a[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
		return netip.AddrPortFrom(netip.AddrFrom16(a), uint16(10000+i%50000))
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(10000+i%50000))
}

// schedule creates the template and connection of client i.
func schedule(tb testing.TB, tbl *persist.Table, i int, v6 bool) persist.Scheduled {
	tb.Helper()
	svc, d, vip := testSvc, testDest, testVIP
	if v6 {
		svc, d, vip = testSvc6, testDest6, testVIP6
	}
	s, err := tbl.Schedule(svc, &persist.Packet{
		Proto: persist.ProtoTCP, Src: clientAddr(i, v6), Dst: netip.AddrPortFrom(vip, 80), State: persist.TCPSynRecv,
	}, func() *dest.Dest { return d })
	if err != nil {
		tb.Fatalf("schedule client %d: %v", i, err)
	}
	return s
}

// fakeSender records datagrams.
type fakeSender struct {
	ch chan []byte
	mu sync.Mutex
	n  int
}

func newFakeSender() *fakeSender { return &fakeSender{ch: make(chan []byte, 1<<16)} }

func (f *fakeSender) Send(b []byte) error {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
	f.ch <- append([]byte(nil), b...)
	return nil
}

// collect decodes datagrams until want entries arrived or d passed.
func (f *fakeSender) collect(tb testing.TB, want int, d time.Duration) []wire.Entry {
	tb.Helper()
	var out []wire.Entry
	deadline := time.After(d)
	for len(out) < want {
		select {
		case b := <-f.ch:
			m, problems, err := wire.Decode(b)
			if err != nil || problems != nil {
				tb.Fatalf("master sent an undecodable datagram: %v %v", problems, err)
			}
			out = append(out, m.Entries...)
		case <-deadline:
			return out
		}
	}
	return out
}

// quiet asserts nothing more is sent for d.
func (f *fakeSender) quiet(tb testing.TB, d time.Duration) {
	tb.Helper()
	select {
	case b := <-f.ch:
		m, _, _ := wire.Decode(b)
		tb.Fatalf("unexpected datagram with %d entries: %+v", len(m.Entries), m.Entries)
	case <-time.After(d):
	}
}

// fakeReceiver hands out datagrams pushed into it.
type fakeReceiver struct {
	ch     chan []byte
	closed chan struct{}
	once   sync.Once
}

func newFakeReceiver() *fakeReceiver {
	return &fakeReceiver{ch: make(chan []byte, 1024), closed: make(chan struct{})}
}

var fakeSource = netip.MustParseAddrPort("203.0.113.2:40000")

func (f *fakeReceiver) Read(buf []byte) (int, netip.AddrPort, error) {
	select {
	case b := <-f.ch:
		n := copy(buf, b)
		if n < len(b) {
			return n, fakeSource, ErrTruncated
		}
		return n, fakeSource, nil
	case <-f.closed:
		return 0, netip.AddrPort{}, net.ErrClosed
	}
}

func (f *fakeReceiver) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

// startMaster runs a Master until the test ends.
func startMaster(tb testing.TB, cfg MasterConfig, tbl *persist.Table, tx DatagramSender) *Master {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLog
	}
	m, err := NewMaster(cfg, tbl, tx)
	if err != nil {
		tb.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- m.Run(context.Background()) }()
	tb.Cleanup(func() {
		m.Close()
		if err := <-errc; err != nil {
			tb.Errorf("master Run: %v", err)
		}
	})
	// Run installs the observer asynchronously; wait until it is there
	// so that no change made by the test is missed.
	waitRunning(tb, func() bool { m.runMu.Lock(); defer m.runMu.Unlock(); return m.cancel != nil })
	time.Sleep(5 * time.Millisecond)
	return m
}

func waitRunning(tb testing.TB, cond func() bool) {
	tb.Helper()
	if !waitFor(2*time.Second, cond) {
		tb.Fatal("engine did not start")
	}
}

// startBackup runs a Backup until the test ends.
func startBackup(tb testing.TB, cfg BackupConfig, tbl *persist.Table, rx DatagramReceiver, resolve persist.Resolver) *Backup {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLog
	}
	b, err := NewBackup(cfg, tbl, rx, resolve)
	if err != nil {
		tb.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- b.Run(context.Background()) }()
	tb.Cleanup(func() {
		b.Close()
		if err := <-errc; err != nil {
			tb.Errorf("backup Run: %v", err)
		}
	})
	return b
}

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// view is what must agree between a master's and a backup's entry.
type view struct {
	Proto    uint8
	Client   string
	Virtual  string
	DestAddr string
	Template bool
	Flags    persist.Flags
	State    persist.State
	Dest     string
	PEData   string
}

// backupView is how an entry of table looks after syncing: the backup
// adds SYNC.
func tableViews(tbl *persist.Table, addSync bool) []view {
	var out []view
	tbl.Range(func(e persist.Entry) bool {
		v := view{
			Proto: e.Proto, Client: e.Client.String(), Virtual: e.Virtual.String(), DestAddr: e.DestAddr.String(),
			Template: e.Template(), Flags: e.Flags, State: e.State, PEData: string(e.PEData),
		}
		if addSync {
			v.Flags |= persist.FlagSync
		}
		if e.Dest != nil {
			v.Dest = netip.AddrPortFrom(e.Dest.Addr, e.Dest.Port).String()
		}
		out = append(out, v)
		return true
	})
	sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]) < fmt.Sprint(out[j]) })
	return out
}

// lifetimes maps each entry's key to its remaining lifetime.
func lifetimes(tbl *persist.Table) map[string]time.Duration {
	out := map[string]time.Duration{}
	tbl.Range(func(e persist.Entry) bool {
		out[fmt.Sprint(e.Proto, e.Client, e.Virtual, e.Template())] = e.Expires
		return true
	})
	return out
}

func tableLen(tbl *persist.Table) int {
	c, t := tbl.Len()
	return c + t
}
