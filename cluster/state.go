package cluster

import (
	"cmp"
	"fmt"
	"slices"
)

// State is a node's VRRP-like state.
type State int

// States.
const (
	// StateBackup: a healthy director that is not master; ready to take
	// over.
	StateBackup State = iota
	// StateMaster: the raft leader holding a valid lease; the only node
	// that holds VIPs.
	StateMaster
	// StateFault: a director whose tracked interfaces or checks fail; it
	// never holds VIPs and hands leadership away.
	StateFault
	// StateWitness: a raft voter that never holds VIPs.
	StateWitness
)

func (s State) String() string {
	switch s {
	case StateBackup:
		return "BACKUP"
	case StateMaster:
		return "MASTER"
	case StateFault:
		return "FAULT"
	case StateWitness:
		return "WITNESS"
	}
	return "UNKNOWN"
}

// MarshalText makes states print as their names in JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a state name.
func (s *State) UnmarshalText(b []byte) error {
	for _, c := range []State{StateBackup, StateMaster, StateFault, StateWitness} {
		if c.String() == string(b) {
			*s = c
			return nil
		}
	}
	return fmt.Errorf("cluster: unknown state %q", b)
}

// Role is what a node may become.
type Role string

// Roles.
const (
	RoleDirector Role = "director"
	RoleWitness  Role = "witness"
)

// candidate is what the decision needs to know about one node.
type candidate struct {
	Name     string
	Role     Role
	Priority int
	Alive    bool // memberlist sees it
	Healthy  bool // tracked interfaces and checks pass
	Warm     bool // its sync state is complete
}

// stepInput is one observation of the world by the state goroutine.
type stepInput struct {
	self       candidate
	leader     bool // raft says this node leads
	leaseValid bool // leadership confirmed by a quorum within the lease
	preempt    bool
	// preferred is the operator's last choice of master (lbha failover):
	// it is never preempted while it can be master.
	preferred string
	others    []candidate
}

// stepOutput is what the node must do.
type stepOutput struct {
	state State
	// transferTo names the node leadership should move to, if any: a
	// witness or a faulty director hands leadership to the best director;
	// a master hands it to a director that preempts it.
	transferTo string
	// preempting is set when transferTo is a preemption, which waits
	// for the configured delay; hand-offs by a witness or a faulty node
	// are immediate.
	preempting bool
}

// step decides the node's state from one observation. It is a pure
// function so that every rule is testable without raft.
//
// Rules, in order:
//   - a witness is WITNESS; as leader it hands leadership to the best
//     director at once;
//   - an unhealthy director is FAULT; as leader it hands leadership to the
//     best healthy director at once;
//   - a director that leads with a valid lease is MASTER; with preemption
//     on, it hands leadership to a healthy, warm director of strictly
//     higher priority (the best one), unless it is the master the operator
//     chose with lbha failover;
//   - anything else is BACKUP, including a leader whose lease lapsed: it
//     must not hold VIPs until a quorum confirms it again.
func step(in stepInput) stepOutput {
	switch {
	case in.self.Role == RoleWitness:
		out := stepOutput{state: StateWitness}
		if in.leader {
			out.transferTo = bestDirector(in.others, func(c candidate) bool { return true })
		}
		return out
	case !in.self.Healthy:
		out := stepOutput{state: StateFault}
		if in.leader {
			out.transferTo = bestDirector(in.others, func(c candidate) bool { return true })
		}
		return out
	case in.leader && in.leaseValid:
		out := stepOutput{state: StateMaster}
		if in.preempt && in.preferred != in.self.Name {
			out.transferTo = bestDirector(in.others, func(c candidate) bool {
				return c.Warm && c.Priority > in.self.Priority
			})
			out.preempting = out.transferTo != ""
		}
		return out
	default:
		return stepOutput{state: StateBackup}
	}
}

// bestDirector returns the name of the alive, healthy director that
// satisfies ok and ranks first: warm before cold, then higher priority,
// then name order for a deterministic choice. "" if none.
func bestDirector(cs []candidate, ok func(candidate) bool) string {
	var pool []candidate
	for _, c := range cs {
		if c.Role == RoleDirector && c.Alive && c.Healthy && ok(c) {
			pool = append(pool, c)
		}
	}
	if len(pool) == 0 {
		return ""
	}
	slices.SortFunc(pool, func(a, b candidate) int {
		if a.Warm != b.Warm {
			if a.Warm {
				return -1
			}
			return 1
		}
		if a.Priority != b.Priority {
			return cmp.Compare(b.Priority, a.Priority)
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return pool[0].Name
}
