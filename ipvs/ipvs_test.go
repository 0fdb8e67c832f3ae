package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/lbha/lbha/dest"
)

func svc(port uint16, sched string) Service {
	return Service{Key: ServiceKey{Protocol: 6, Addr: netip.MustParseAddr("192.0.2.100"), Port: port}, Scheduler: sched}
}

func rs(last byte, w int) Dest {
	return Dest{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, last}), 80), Method: dest.Route, Weight: w}
}

func opsString(ops []Op) string {
	var b strings.Builder
	for _, o := range ops {
		fmt.Fprintln(&b, o)
	}
	return b.String()
}

func TestPlan(t *testing.T) {
	cur := []ServiceState{
		{Service: svc(80, "wlc"), Dests: []Dest{rs(11, 1), rs(12, 1)}},
		{Service: svc(443, "rr"), Dests: []Dest{rs(11, 1)}},
	}
	des := []ServiceState{
		{Service: svc(80, "wlc"), Dests: []Dest{rs(12, 5), rs(13, 1)}}, // weight change, add, remove
		{Service: svc(8080, "sh"), Dests: []Dest{rs(11, 1)}},           // new service
	}
	ops, err := Plan(cur, des)
	if err != nil {
		t.Fatal(err)
	}
	want := `add-service TCP 192.0.2.100:8080
update-dest TCP 192.0.2.100:80 -> 198.51.100.12:80
add-dest TCP 192.0.2.100:80 -> 198.51.100.13:80
add-dest TCP 192.0.2.100:8080 -> 198.51.100.11:80
del-dest TCP 192.0.2.100:80 -> 198.51.100.11:80
del-service TCP 192.0.2.100:443
`
	if got := opsString(ops); got != want {
		t.Fatalf("plan:\n%s\nwant:\n%s", got, want)
	}
	// A scheduler change is an in-place update (connections survive).
	ops, _ = Plan(des, []ServiceState{{Service: svc(80, "rr"), Dests: des[0].Dests}, des[1]})
	if got := opsString(ops); got != "update-service TCP 192.0.2.100:80\n" {
		t.Fatalf("scheduler change planned as:\n%s", got)
	}
	if _, err := Plan(nil, []ServiceState{{Service: svc(80, "rr")}, {Service: svc(80, "wlc")}}); err == nil {
		t.Fatal("duplicate desired service accepted")
	}
	if _, err := Plan(nil, []ServiceState{{Service: svc(80, "rr"), Dests: []Dest{rs(1, 1), rs(1, 2)}}}); err == nil {
		t.Fatal("duplicate desired real server accepted")
	}
}

// genState draws a small random dataplane state.
func genState(t *rapid.T, label string) []ServiceState {
	ports := rapid.SliceOfNDistinct(rapid.Uint16Range(1, 6), 0, 5, rapid.ID[uint16]).Draw(t, label+"-ports")
	var out []ServiceState
	for _, p := range ports {
		s := ServiceState{Service: svc(p, rapid.SampledFrom([]string{"rr", "wlc", "sh"}).Draw(t, label+"-sched"))}
		s.Timeout = rapid.SampledFrom([]uint32{0, 360}).Draw(t, label+"-timeout")
		lasts := rapid.SliceOfNDistinct(rapid.ByteRange(1, 6), 0, 5, rapid.ID[byte]).Draw(t, label+"-dests")
		for _, l := range lasts {
			s.Dests = append(s.Dests, rs(l, rapid.IntRange(0, 3).Draw(t, label+"-weight")))
		}
		out = append(out, s)
	}
	return out
}

// Applying a plan reaches the desired state; a second plan is empty; adds
// always come before deletions.
func TestPlanReachesDesired(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cur, des := genState(t, "cur"), genState(t, "des")
		ops, err := Plan(cur, des)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Apply(cur, ops)
		if err != nil {
			t.Fatalf("plan does not apply: %v\n%s", err, opsString(ops))
		}
		if !reflect.DeepEqual(canonical(got), canonical(des)) {
			t.Fatalf("reached %+v, want %+v", got, des)
		}
		if again, _ := Plan(got, des); len(again) != 0 {
			t.Fatalf("not idempotent: %s", opsString(again))
		}
		seenDel := false
		for _, o := range ops {
			if o.Kind == DelDest || o.Kind == DelService {
				seenDel = true
			} else if seenDel {
				t.Fatalf("an addition after a deletion:\n%s", opsString(ops))
			}
		}
	})
}

// fakeKernel is a dataplane held in memory that can fail chosen operations.
type fakeKernel struct {
	state []ServiceState
	fail  func(Op) error
}

func (f *fakeKernel) State() ([]ServiceState, error) { return f.state, nil }
func (f *fakeKernel) Apply(op Op) error {
	if f.fail != nil {
		if err := f.fail(op); err != nil {
			return err
		}
	}
	s, err := Apply(f.state, []Op{op})
	if err != nil {
		return err
	}
	f.state = s
	return nil
}

func TestReconcilerDriftAndFailures(t *testing.T) {
	k := &fakeKernel{}
	r := NewReconciler(k)
	des := []ServiceState{{Service: svc(80, "wlc"), Dests: []Dest{rs(11, 1), rs(12, 1)}}}
	res, err := r.Reconcile(des)
	if err != nil || len(res.Applied) != 3 || res.Drift {
		t.Fatalf("first reconcile: %+v %v", res, err)
	}
	if res, _ := r.Reconcile(des); len(res.Applied) != 0 {
		t.Fatalf("second reconcile changed things: %s", opsString(res.Applied))
	}
	// Someone runs ipvsadm by hand: a weight and an extra service.
	k.state[0].Dests[0].Weight = 9
	k.state = append(k.state, ServiceState{Service: svc(22, "rr")})
	res, err = r.Reconcile(des)
	if err != nil || !res.Drift || len(res.Applied) != 2 {
		t.Fatalf("drift repair: %+v %v", res, err)
	}
	if c := r.Counters(); c.DriftRepairs != 1 || c.Applied != 5 {
		t.Fatalf("counters %+v", c)
	}
	// A failing operation does not stop the others; the next call retries.
	des2 := append(des, ServiceState{Service: svc(443, "rr"), Dests: []Dest{rs(13, 1)}})
	des2[0].Dests = append([]Dest{}, rs(11, 2), rs(12, 1))
	k.fail = func(op Op) error {
		if op.Kind == AddService {
			return errors.New("EEXIST from a confused kernel")
		}
		return nil
	}
	res, err = r.Reconcile(des2)
	if err == nil || !strings.Contains(err.Error(), "2 of 3 changes failed") || len(res.Applied) != 1 {
		t.Fatalf("partial failure: %+v %v", res, err)
	}
	k.fail = nil
	if res, err = r.Reconcile(des2); err != nil || len(res.Applied) != 2 {
		t.Fatalf("retry: %+v %v", res, err)
	}
}
