// Package e2e runs lbha as real processes in network namespaces: directors
// and a witness on a bridge, talking raft and gossip over real sockets, with
// failures injected the hard way (kill -9, SIGSTOP, nftables partitions,
// restarts) and invariants checked from the outside through the operator
// CLI.
//
// The tests need root; they skip otherwise. TestMain builds the lbha binary
// once into a temporary directory.
package e2e
