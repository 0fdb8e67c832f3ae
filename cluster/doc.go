// Package cluster owns membership, master election and the replicated
// configuration of an lbha cluster.
//
// Membership and metadata (role, priority, health, sync warmth) travel by
// hashicorp/memberlist; hashicorp/raft, with its log and stable store on
// disk (raft-boltdb) and file snapshots, elects the leader and replicates
// the configuration history (an FSM of versioned documents).
//
// # Master election and fencing
//
// The master is the raft leader among directors, and only while it holds a
// lease: a quorum confirmed its leadership less than Timing.Lease ago.
// Followers do not start an election before Timing.Heartbeat without
// contact, and Lease < Heartbeat, so a master that can no longer reach a
// quorum has left MASTER (and withdrawn its VIPs through OnStateChange)
// before any other node can win. A witness votes but never becomes master:
// when it wins an election it hands leadership to the best director at once.
// An unhealthy director (FAULT) does the same. With preemption, a master
// hands leadership to a warm, healthy director of higher priority.
//
// The decision is the pure function step; Node runs it from one goroutine
// every tenth of the lease, re-reading the world each time (leadership as a
// current state, not a stream of events).
//
// A process frozen while master cannot withdraw anything; the vip package
// bounds that case with finite kernel address lifetimes.
package cluster
