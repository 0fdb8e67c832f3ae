package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// Peer is one member of the cluster as configured.
type Peer struct {
	Name string
	Addr netip.Addr // address of its raft and gossip listeners
	Role Role
}

// Timing is the failure-detection and fencing profile.
//
// The default (100 ms heartbeat and election, 50 ms lease) re-elects in
// about 200 ms on a quiet LAN; slower links or loaded hosts need larger
// values, at the price of slower failover. Lease must stay below Heartbeat:
// followers wait at least Heartbeat without contact before they start an
// election, so a master whose lease (renewed by quorum contact) has expired
// has given up its VIPs before any other node can win.
type Timing struct {
	Heartbeat time.Duration
	Election  time.Duration
	Lease     time.Duration
}

// DefaultTiming is the fast profile.
func DefaultTiming() Timing {
	return Timing{Heartbeat: 100 * time.Millisecond, Election: 100 * time.Millisecond, Lease: 50 * time.Millisecond}
}

// Config configures a Node. Zero values take the defaults noted per field.
type Config struct {
	Name     string // unique node name; required
	Role     Role   // director (default) or witness
	Priority int    // 1..255, default 100; directors only
	DataDir  string // raft log, stable store and snapshots; required
	Bind     netip.Addr
	// RaftPort and GossipPort default to 7000 and 7946. Every peer uses
	// the same ports.
	RaftPort   int
	GossipPort int
	Peers      []Peer // the bootstrap membership, this node included
	// Join starts a new node without bootstrapping: it waits to be added
	// to the existing cluster (lbha join). Bootstrapping a node whose peer
	// list differs from the cluster's would fork the raft log.
	Join   bool
	Timing Timing // zero: DefaultTiming
	// Preempt lets a healthier, warm director of higher priority take
	// over from the master by leadership transfer after PreemptDelay.
	Preempt      bool
	PreemptDelay time.Duration
	// GossipKey encrypts and authenticates memberlist traffic (AES-GCM,
	// 16, 24 or 32 bytes); nil means clear text.
	GossipKey []byte
	// TLS, when set, secures raft with mutual TLS: it must hold this
	// node's certificate and the CA for both ClientCAs and RootCAs, with
	// ClientAuth set to require and verify client certificates.
	TLS    *tls.Config
	Logger *slog.Logger // default slog.Default()
}

func (c *Config) setDefaults() {
	if c.Role == "" {
		c.Role = RoleDirector
	}
	if c.Priority == 0 {
		c.Priority = 100
	}
	if c.RaftPort == 0 {
		c.RaftPort = 7000
	}
	if c.GossipPort == 0 {
		c.GossipPort = 7946
	}
	if c.Timing == (Timing{}) {
		c.Timing = DefaultTiming()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate checks the fields and their relations.
func (c *Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("name is empty"))
	}
	if c.Role != RoleDirector && c.Role != RoleWitness {
		errs = append(errs, fmt.Errorf("role %q is neither director nor witness", c.Role))
	}
	if c.Priority < 1 || c.Priority > 255 {
		errs = append(errs, fmt.Errorf("priority %d out of range 1..255", c.Priority))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data directory is empty"))
	}
	if !c.Bind.IsValid() {
		errs = append(errs, errors.New("bind address is not set"))
	}
	t := c.Timing
	if t.Lease <= 0 || t.Heartbeat <= 0 || t.Election <= 0 {
		errs = append(errs, fmt.Errorf("timing %+v: every duration must be positive", t))
	} else if t.Lease >= t.Heartbeat || t.Heartbeat > t.Election {
		errs = append(errs, fmt.Errorf("timing: need lease (%v) < heartbeat (%v) <= election (%v)", t.Lease, t.Heartbeat, t.Election))
	}
	self := false
	names := map[string]bool{}
	for _, p := range c.Peers {
		if names[p.Name] {
			errs = append(errs, fmt.Errorf("peer %q listed twice", p.Name))
		}
		names[p.Name] = true
		if p.Name == c.Name {
			self = true
		}
		if !p.Addr.IsValid() {
			errs = append(errs, fmt.Errorf("peer %q has no address", p.Name))
		}
	}
	if len(c.Peers) > 0 && !self {
		errs = append(errs, fmt.Errorf("peers do not include this node %q", c.Name))
	}
	if k := len(c.GossipKey); k != 0 && k != 16 && k != 24 && k != 32 {
		errs = append(errs, fmt.Errorf("gossip key is %d bytes; want 16, 24 or 32", k))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster: config: %w", err)
	}
	return nil
}

// FaultTolerance describes whether the configured voters survive the loss
// of one node: raft needs a majority, so two voters (a pair without a
// witness) stop electing a master once either is gone.
func FaultTolerance(peers []Peer) (survivesOneFailure bool, warning string) {
	n := len(peers)
	if n >= 3 {
		return true, ""
	}
	return false, fmt.Sprintf("cluster of %d voter(s) cannot survive the loss of a node: raft needs a majority; add a witness (lbha witness) as a third voter", n)
}
