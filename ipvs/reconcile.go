package ipvs

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// Programmer is a dataplane: the kernel's IPVS, the userspace proxy, or a
// test fake. Implementations must be safe for use by one Reconciler at a
// time; the Reconciler never calls them concurrently.
type Programmer interface {
	// State returns the services and real servers the dataplane holds.
	State() ([]ServiceState, error)
	// Apply performs one operation.
	Apply(Op) error
}

// Reconciler brings a Programmer to a desired state.
type Reconciler struct {
	p Programmer

	mu      sync.Mutex
	last    []ServiceState // last desired state fully applied
	applied atomic.Uint64
	failed  atomic.Uint64
	drift   atomic.Uint64
}

// NewReconciler returns a reconciler of p.
func NewReconciler(p Programmer) *Reconciler { return &Reconciler{p: p} }

// Result is what one reconciliation did.
type Result struct {
	Applied []Op
	// Drift is set when the dataplane had diverged from a desired state
	// that had been applied in full before (someone changed it by hand).
	Drift bool
}

// Reconcile plans from the dataplane's actual state to desired and applies
// every operation. An operation that fails is reported (all failures are
// joined in the error) and the others still run: the state reached is as
// close to desired as the dataplane allows, and the next call retries.
func (r *Reconciler) Reconcile(desired []ServiceState) (Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur, err := r.p.State()
	if err != nil {
		return Result{}, fmt.Errorf("ipvs: read dataplane state: %w", err)
	}
	ops, err := Plan(cur, desired)
	if err != nil {
		return Result{}, err
	}
	var res Result
	if len(ops) > 0 && r.last != nil && equalStates(r.last, canonical(desired)) {
		res.Drift = true
		r.drift.Add(1)
	}
	var errs []error
	for _, op := range ops {
		if err := r.p.Apply(op); err != nil {
			r.failed.Add(1)
			errs = append(errs, fmt.Errorf("%s: %w", op, err))
			continue
		}
		r.applied.Add(1)
		res.Applied = append(res.Applied, op)
	}
	if len(errs) > 0 {
		r.last = nil
		return res, fmt.Errorf("ipvs: %d of %d changes failed: %w", len(errs), len(ops), errors.Join(errs...))
	}
	r.last = canonical(desired)
	return res, nil
}

// Counters are the reconciler's lifetime totals.
type Counters struct {
	Applied, Failed, DriftRepairs uint64
}

// Counters returns the totals.
func (r *Reconciler) Counters() Counters {
	return Counters{Applied: r.applied.Load(), Failed: r.failed.Load(), DriftRepairs: r.drift.Load()}
}

// canonical returns a copy of states sorted by key, each with its real
// servers sorted by address, so that equal states compare equal.
func canonical(states []ServiceState) []ServiceState {
	out := make([]ServiceState, len(states))
	for i, s := range states {
		out[i] = ServiceState{Service: s.Service}
		if len(s.Dests) > 0 {
			out[i].Dests = sortedDests(s.Dests)
		}
	}
	slices.SortFunc(out, func(a, b ServiceState) int { return compareKeys(a.Key, b.Key) })
	return out
}

// equalStates compares two canonical states.
func equalStates(a, b []ServiceState) bool {
	return slices.EqualFunc(a, b, func(x, y ServiceState) bool {
		return x.Service == y.Service && slices.Equal(x.Dests, y.Dests)
	})
}
