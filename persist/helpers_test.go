package persist

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/lbha/lbha/dest"
)

// fakeClock is a Clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// fataler is what the helpers need of *testing.T, *testing.B and *rapid.T.
type fataler interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

var _ fataler = testing.TB(nil)

// newTestTable returns a table on a fake clock with a 1 s tick.
func newTestTable(tb fataler, mod func(*Config)) (*Table, *fakeClock) {
	tb.Helper()
	clk := newFakeClock()
	cfg := Config{Clock: clk, Tick: time.Second, Shards: 4}
	if mod != nil {
		mod(&cfg)
	}
	tbl, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return tbl, clk
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
func ip(s string) netip.Addr     { return netip.MustParseAddr(s) }

func newDest(addr string, port uint16, m dest.Method, w int) *dest.Dest {
	return dest.New(ip(addr), port, m, w)
}

// fixed returns a scheduler that always picks d.
func fixed(d *dest.Dest) func() *dest.Dest { return func() *dest.Dest { return d } }

// mustGet returns the entry r names or fails the test.
func mustGet(tb fataler, tbl *Table, r Ref) Entry {
	tb.Helper()
	e, ok := tbl.Get(r)
	if !ok {
		tb.Fatalf("Get(%#x): not found", uint64(r))
	}
	return e
}

// counters is a destination's connection counters.
type counters struct{ Active, Inact, Persist int }

func countersOf(d *dest.Dest) counters {
	return counters{d.ActiveConns(), d.InactConns(), d.PersistConns()}
}

// entries returns every entry of the table.
func entries(tbl *Table) []Entry {
	var out []Entry
	tbl.Range(func(e Entry) bool { out = append(out, e); return true })
	return out
}
