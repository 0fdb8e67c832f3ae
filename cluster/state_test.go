package cluster

import "testing"

func TestStep(t *testing.T) {
	dir := func(name string, prio int, healthy, warm bool) candidate {
		return candidate{Name: name, Role: RoleDirector, Priority: prio, Alive: true, Healthy: healthy, Warm: warm}
	}
	witness := candidate{Name: "w", Role: RoleWitness, Alive: true, Healthy: true}
	tests := []struct {
		name string
		in   stepInput
		want stepOutput
	}{
		{"follower director is backup",
			stepInput{self: dir("a", 100, true, true), others: []candidate{dir("b", 100, true, true), witness}},
			stepOutput{state: StateBackup}},
		{"leader with lease is master",
			stepInput{self: dir("a", 100, true, true), leader: true, leaseValid: true},
			stepOutput{state: StateMaster}},
		{"leader whose lease lapsed is not master",
			stepInput{self: dir("a", 100, true, true), leader: true, leaseValid: false},
			stepOutput{state: StateBackup}},
		{"witness never master, hands over to best director",
			stepInput{self: witness, leader: true, leaseValid: true,
				others: []candidate{dir("a", 100, true, false), dir("b", 50, true, true)}},
			stepOutput{state: StateWitness, transferTo: "b"}}, // warm first
		{"witness follower does nothing",
			stepInput{self: witness, others: []candidate{dir("a", 100, true, true)}},
			stepOutput{state: StateWitness}},
		{"faulty leader hands over to a healthy director",
			stepInput{self: dir("a", 200, false, true), leader: true, leaseValid: true,
				others: []candidate{dir("b", 100, false, true), dir("c", 50, true, true), witness}},
			stepOutput{state: StateFault, transferTo: "c"}},
		{"faulty follower is fault",
			stepInput{self: dir("a", 200, false, true)},
			stepOutput{state: StateFault}},
		{"preemption by a higher, warm, healthy director",
			stepInput{self: dir("a", 100, true, true), leader: true, leaseValid: true, preempt: true,
				others: []candidate{dir("b", 150, true, true), dir("c", 200, true, false), witness}},
			stepOutput{state: StateMaster, transferTo: "b", preempting: true}},
		{"no preemption by equal priority",
			stepInput{self: dir("a", 100, true, true), leader: true, leaseValid: true, preempt: true,
				others: []candidate{dir("b", 100, true, true)}},
			stepOutput{state: StateMaster}},
		{"no preemption when disabled",
			stepInput{self: dir("a", 100, true, true), leader: true, leaseValid: true,
				others: []candidate{dir("b", 150, true, true)}},
			stepOutput{state: StateMaster}},
		{"dead directors are not candidates",
			stepInput{self: witness, leader: true,
				others: []candidate{{Name: "a", Role: RoleDirector, Priority: 200, Healthy: true, Warm: true}}},
			stepOutput{state: StateWitness}},
		{"ties go to name order",
			stepInput{self: witness, leader: true,
				others: []candidate{dir("d2", 100, true, true), dir("d1", 100, true, true)}},
			stepOutput{state: StateWitness, transferTo: "d1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := step(tt.in); got != tt.want {
				t.Fatalf("step = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestStepPreferredMasterIsNotPreempted(t *testing.T) {
	self := candidate{Name: "a", Role: RoleDirector, Priority: 100, Alive: true, Healthy: true, Warm: true}
	b := candidate{Name: "b", Role: RoleDirector, Priority: 200, Alive: true, Healthy: true, Warm: true}
	in := stepInput{self: self, leader: true, leaseValid: true, preempt: true, preferred: "a", others: []candidate{b}}
	if got := step(in); got.transferTo != "" {
		t.Fatalf("the operator's preferred master was preempted: %+v", got)
	}
	in.preferred = "b"
	if got := step(in); got.transferTo != "b" {
		t.Fatalf("a non-preferred master was not preempted: %+v", got)
	}
}
