package sched

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lbha/lbha/dest"
)

// tb is what the helpers need from *testing.T, *testing.B and *rapid.T.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

// spec describes a destination for a test: weight, live counters, OVERLOAD
// and whether it has been removed from the service (not AVAILABLE).
type spec struct {
	w, act, inact int
	over          bool
	gone          bool
}

// mkDest returns 10.0.0.(i+1):80 in the state s.
func mkDest(t tb, i int, s spec) *dest.Dest {
	t.Helper()
	d := dest.New(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i + 1)}), 80, dest.Route, s.w)
	for range s.act {
		d.Bind(false, false)
	}
	for range s.inact {
		d.Bind(false, true)
	}
	if s.over {
		// OVERLOAD is only set by Bind reaching the upper threshold; bind
		// and unbind one more connection so the counters stay as given.
		total := s.act + s.inact
		if total == 0 {
			t.Fatalf("dest %d: an overloaded test dest needs at least one connection", i)
		}
		d.SetThresholds(uint32(total), 0)
		d.Bind(false, true)
		d.Unbind(false, true)
		if !d.Overloaded() {
			t.Fatalf("dest %d: could not set OVERLOAD", i)
		}
	}
	if s.gone {
		d.SetAvailable(false)
	}
	return d
}

func mkDests(t tb, specs ...spec) []*dest.Dest {
	t.Helper()
	ds := make([]*dest.Dest, len(specs))
	for i, s := range specs {
		ds[i] = mkDest(t, i, s)
	}
	return ds
}

// weights returns destinations 10.0.0.1.. with the given weights.
func weights(t tb, ws ...int) []*dest.Dest {
	t.Helper()
	specs := make([]spec, len(ws))
	for i, w := range ws {
		specs[i] = spec{w: w}
	}
	return mkDests(t, specs...)
}

func mustNew(t tb, name string, f Flags, o Options, ds []*dest.Dest) Scheduler {
	t.Helper()
	s, err := New(name, f, o)
	if err != nil {
		t.Fatalf("New(%q): %v", name, err)
	}
	if err := s.Update(ds); err != nil {
		t.Fatalf("%s: Update: %v", name, err)
	}
	return s
}

// index returns d's position in ds, -1 for nil (nothing picked).
func index(ds []*dest.Dest, d *dest.Dest) int {
	if d == nil {
		return -1
	}
	i := slices.Index(ds, d)
	if i < 0 {
		panic(fmt.Sprintf("picked %v, not in the list", d))
	}
	return i
}

// picks returns the indexes of n successive picks of p.
func picks(s Scheduler, ds []*dest.Dest, p Packet, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = index(ds, s.Pick(p))
	}
	return out
}

// letters renders pick indexes as A, B, C... and - for nil.
func letters(idx []int) string {
	var b strings.Builder
	for _, i := range idx {
		if i < 0 {
			b.WriteByte('-')
		} else {
			b.WriteByte(byte('A' + i))
		}
	}
	return b.String()
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		sched   string
		flags   Flags
		opts    Options
		wantErr string
	}{
		{name: "every scheduler plain", sched: "*"},
		{name: "generic flags anywhere", sched: "*", flags: Flag1 | Flag2 | Flag3},
		{name: "sh flags on sh", sched: "sh", flags: SHFallback | SHPort | Flag3},
		{name: "mh flags on mh", sched: "mh", flags: MHFallback | MHPort},
		{name: "unknown name", sched: "xyz", wantErr: `unknown scheduler "xyz"`},
		{name: "empty name", sched: "", wantErr: `unknown scheduler ""`},
		{name: "sh-port on mh", sched: "mh", flags: SHPort, wantErr: "sh-port are for sh only"},
		{name: "mh-fallback on sh", sched: "sh", flags: MHFallback, wantErr: "mh-fallback are for mh only"},
		{name: "sh-fallback on rr", sched: "rr", flags: SHFallback, wantErr: "for sh only"},
		{name: "persistent bit", sched: "rr", flags: 0x1, wantErr: "unknown flag bits 0x1"},
		{name: "negative lblc expiration", sched: "lblc", opts: Options{LBLCExpiration: -1}, wantErr: "LBLCExpiration"},
		{name: "negative lblcr expiration", sched: "lblcr", opts: Options{LBLCRExpiration: -time.Second}, wantErr: "LBLCRExpiration"},
		{name: "mh index too small", sched: "mh", opts: Options{MHTableIndex: 7}, wantErr: "MHTableIndex 7"},
		{name: "mh index too large", sched: "mh", opts: Options{MHTableIndex: 18}, wantErr: "MHTableIndex 18"},
		{name: "mh index 8", sched: "mh", opts: Options{MHTableIndex: 8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scheds := []string{tt.sched}
			if tt.sched == "*" {
				scheds = Names()
			}
			for _, name := range scheds {
				s, err := New(name, tt.flags, tt.opts)
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("New(%q, %#x) error = %v, want one containing %q", name, tt.flags, err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("New(%q, %#x): %v", name, tt.flags, err)
				}
				if s.Name() != name {
					t.Errorf("Name() = %q, want %q", s.Name(), name)
				}
				if d := s.Pick(Packet{}); d != nil {
					t.Errorf("%s: Pick with no destinations = %v, want nil", name, d)
				}
			}
		})
	}
}

func TestNames(t *testing.T) {
	want := []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}
	got := Names()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Names() (-want +got):\n%s", diff)
	}
	got[0] = "changed"
	if Names()[0] != "rr" {
		t.Error("Names() returned the package's own slice")
	}
	if !slices.Contains(want, DefaultName) {
		t.Errorf("DefaultName %q not in Names()", DefaultName)
	}
}

func TestUpdateErrors(t *testing.T) {
	a := mkDest(t, 0, spec{w: 1})
	twin := dest.New(a.Addr, a.Port, dest.Masq, 3)
	tests := []struct {
		name    string
		dests   []*dest.Dest
		wantErr string
	}{
		{"nil entry", []*dest.Dest{a, nil}, "destination 1 is nil"},
		{"same pointer twice", []*dest.Dest{a, a}, "duplicate destination 10.0.0.1:80"},
		{"same addr:port twice", []*dest.Dest{a, twin}, "duplicate destination 10.0.0.1:80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, name := range Names() {
				s := mustNew(t, name, 0, Options{}, []*dest.Dest{a})
				err := s.Update(tt.dests)
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("%s: Update error = %v, want %q", name, err, tt.wantErr)
				}
				// The previous list stays in force.
				if got := s.Pick(Packet{Proto: ProtoTCP, Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.100")}); got != a {
					t.Errorf("%s: after a failed Update Pick = %v, want %v", name, got, a)
				}
			}
		})
	}
}

func TestUpdateCopiesSlice(t *testing.T) {
	ds := weights(t, 1, 1)
	for _, name := range Names() {
		s := mustNew(t, name, 0, Options{}, ds)
		mine := slices.Clone(ds)
		_ = s.Update(mine)
		mine[0], mine[1] = nil, nil
		if d := s.Pick(Packet{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2")}); d == nil {
			t.Errorf("%s: Pick = nil after the caller cleared its slice", name)
		}
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		sched, list string
		want        Flags
		wantErr     string
	}{
		{sched: "sh", list: "sh-fallback,sh-port", want: SHFallback | SHPort},
		{sched: "mh", list: "mh-port", want: MHPort},
		{sched: "rr", list: "flag-1,flag-3", want: Flag1 | Flag3},
		{sched: "sh", list: "flag-2", want: Flag2},
		{sched: "sh", list: ",,sh-port,", want: SHPort},
		{sched: "wlc", list: "", want: 0},
		{sched: "", list: "flag-2", want: Flag2},
		{sched: "rr", list: "sh-port", wantErr: `"sh-port" is incompatible with scheduler "rr"`},
		{sched: "", list: "mh-port", wantErr: `incompatible with scheduler "wlc"`},
		{sched: "sh", list: "mh-fallback", wantErr: "incompatible"},
		{sched: "sh", list: "sh-fallback,bogus", wantErr: `invalid scheduler flag "bogus"`},
		{sched: "sh", list: "SH-PORT", wantErr: "invalid scheduler flag"},
	}
	for _, tt := range tests {
		t.Run(tt.sched+"/"+tt.list, func(t *testing.T) {
			got, err := ParseFlags(tt.sched, tt.list)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("ParseFlags = %#x, want %#x", got, tt.want)
			}
			if _, err := New(orDefault(tt.sched), got, Options{}); err != nil {
				t.Errorf("New refuses parsed flags: %v", err)
			}
		})
	}
}

func TestFlagsKernel(t *testing.T) {
	tests := []struct {
		f    Flags
		want uint32
	}{
		{SHFallback, 0x08}, {MHFallback, 0x08}, {SHPort, 0x10}, {MHPort, 0x10},
		{Flag3, 0x20}, {SHFallback | SHPort | Flag3, 0x38},
	}
	for _, tt := range tests {
		if got := tt.f.Kernel(); got != tt.want {
			t.Errorf("%#x.Kernel() = %#x, want %#x", tt.f, got, tt.want)
		}
	}
	if got := FlagsFromKernel(0x3f); got != Flag1|Flag2|Flag3 {
		t.Errorf("FlagsFromKernel(0x3f) = %#x, want 0x38", got)
	}
}

func TestFormatFlags(t *testing.T) {
	tests := []struct {
		sched string
		f     Flags
		want  string
	}{
		{"sh", SHFallback | SHPort, "sh-fallback,sh-port"},
		{"sh", Flag1 | Flag3, "sh-fallback,flag-3"},
		{"mh", FlagsFromKernel(0x18), "mh-fallback,mh-port"},
		{"rr", Flag1 | Flag2 | Flag3, "flag-1,flag-2,flag-3"},
		{"wlc", 0, ""},
	}
	for _, tt := range tests {
		if got := FormatFlags(tt.sched, tt.f); got != tt.want {
			t.Errorf("FormatFlags(%q, %#x) = %q, want %q", tt.sched, tt.f, got, tt.want)
		}
	}
}

func FuzzParseFlags(f *testing.F) {
	for _, s := range []string{"sh-fallback,sh-port", "flag-1", "mh-port,,flag-3", "", ",", "bogus"} {
		f.Add("sh", s)
		f.Add("mh", s)
		f.Add("rr", s)
	}
	f.Fuzz(func(t *testing.T, sched, list string) {
		fl, err := ParseFlags(sched, list)
		if err != nil {
			return
		}
		// What parses formats back to a list that parses to the same bits.
		sched = orDefault(sched)
		again, err := ParseFlags(sched, FormatFlags(sched, fl))
		if err != nil {
			t.Fatalf("reparse of %q: %v", FormatFlags(sched, fl), err)
		}
		if again.Kernel() != fl.Kernel() {
			t.Fatalf("round trip %#x -> %q -> %#x", fl, FormatFlags(sched, fl), again)
		}
		if slices.Contains(Names(), sched) {
			if _, err := New(sched, fl, Options{}); err != nil {
				t.Fatalf("New(%q, %#x) refuses parsed flags: %v", sched, fl, err)
			}
		}
	})
}

// TestConcurrent runs Pick and Update together; run with -race.
func TestConcurrent(t *testing.T) {
	a := weights(t, 1, 2, 3)
	b := weights(t, 4, 0, 5, 6)
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			s := mustNew(t, name, 0, Options{}, a)
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Go(func() {
					for i := range 300 {
						p := Packet{Proto: ProtoTCP, Src: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), SrcPort: uint16(g), Dst: netip.AddrFrom4([4]byte{198, 51, 100, byte(i % 7)})}
						d := s.Pick(p)
						if d != nil && !slices.Contains(a, d) && !slices.Contains(b, d) {
							t.Errorf("picked a stranger %v", d)
							return
						}
					}
				})
			}
			for i := range 50 {
				if err := s.Update([][]*dest.Dest{a, b}[i%2]); err != nil {
					t.Error(err)
				}
			}
			wg.Wait()
		})
	}
}

func orDefault(sched string) string {
	if sched == "" {
		return DefaultName
	}
	return sched
}
