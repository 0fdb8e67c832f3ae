package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// historyLimit bounds the configuration documents kept in the replicated
// state (and so in every snapshot). Older versions keep their metadata only.
const historyLimit = 64

// Revision is one version of the replicated configuration.
type Revision struct {
	Version uint64    `json:"version"`
	Time    time.Time `json:"time"`   // when the leader proposed it
	Source  string    `json:"source"` // who submitted it (node, user)
	Digest  string    `json:"digest"` // sha256 of Doc, hex
	Doc     []byte    `json:"doc,omitempty"`
}

// command is a raft log entry. Only the leader builds commands, so Time is
// fixed before replication and Apply stays deterministic.
type command struct {
	Op     string    `json:"op"`
	Doc    []byte    `json:"doc,omitempty"`
	Source string    `json:"source,omitempty"`
	Node   string    `json:"node,omitempty"`
	Time   time.Time `json:"time"`
}

const (
	opSetConfig = "set-config"
	// opSeedConfig is set-config only if there is no configuration yet:
	// the check and the write happen in the same log entry, so a seed
	// can never overwrite an operator's apply that raced with it.
	opSeedConfig = "seed-config"
	// opPrefer records the operator's choice of master (lbha failover):
	// preemption never takes mastership away from the preferred node.
	opPrefer = "prefer"
)

// applyResult is what FSM.Apply returns through raft's ApplyFuture.
type applyResult struct {
	Version uint64
	Skipped bool // a seed found a configuration already there
	Err     error
}

// configFSM is the raft state machine: the history of configuration
// documents. Documents are validated before they are proposed; the FSM
// stores them as opaque bytes so that a node running an older lbha never
// fails to apply an entry.
type configFSM struct {
	mu        sync.RWMutex
	history   []Revision // ascending by Version; only the last historyLimit keep Doc
	preferred string     // the operator's preferred master, "" if none
	notify    chan struct{}
}

func newConfigFSM() *configFSM {
	return &configFSM{notify: make(chan struct{}, 1)}
}

// Apply implements raft.FSM.
func (f *configFSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	var c command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return applyResult{Err: fmt.Errorf("cluster: undecodable log entry %d: %w", l.Index, err)}
	}
	switch c.Op {
	case opSetConfig, opSeedConfig:
		f.mu.Lock()
		if c.Op == opSeedConfig && len(f.history) > 0 {
			v := f.history[len(f.history)-1].Version
			f.mu.Unlock()
			return applyResult{Version: v, Skipped: true}
		}
		v := uint64(1)
		if n := len(f.history); n > 0 {
			v = f.history[n-1].Version + 1
		}
		sum := sha256.Sum256(c.Doc)
		f.history = append(f.history, Revision{
			Version: v, Time: c.Time, Source: c.Source,
			Digest: hex.EncodeToString(sum[:]), Doc: c.Doc,
		})
		if n := len(f.history); n > historyLimit {
			f.history[n-historyLimit-1].Doc = nil
		}
		f.mu.Unlock()
		select {
		case f.notify <- struct{}{}:
		default:
		}
		return applyResult{Version: v}
	case opPrefer:
		f.mu.Lock()
		f.preferred = c.Node
		f.mu.Unlock()
		return applyResult{}
	default:
		return applyResult{Err: fmt.Errorf("cluster: unknown operation %q in log entry %d", c.Op, l.Index)}
	}
}

// Current returns the newest revision, or false when none was applied.
func (f *configFSM) Current() (Revision, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if len(f.history) == 0 {
		return Revision{}, false
	}
	return f.history[len(f.history)-1], true
}

// Preferred returns the operator's preferred master.
func (f *configFSM) Preferred() string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.preferred
}

// Get returns one version.
func (f *configFSM) Get(version uint64) (Revision, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, r := range f.history {
		if r.Version == version {
			return r, true
		}
	}
	return Revision{}, false
}

// History returns every revision's metadata, oldest first, without
// documents.
func (f *configFSM) History() []Revision {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]Revision, len(f.history))
	for i, r := range f.history {
		r.Doc = nil
		out[i] = r
	}
	return out
}

// Snapshot implements raft.FSM.
func (f *configFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return fsmSnapshot{History: append([]Revision(nil), f.history...), Preferred: f.preferred}, nil
}

// Restore implements raft.FSM.
func (f *configFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var snap fsmSnapshot
	if err := json.NewDecoder(rc).Decode(&snap); err != nil {
		return fmt.Errorf("cluster: restore snapshot: %w", err)
	}
	f.mu.Lock()
	f.history, f.preferred = snap.History, snap.Preferred
	f.mu.Unlock()
	select {
	case f.notify <- struct{}{}:
	default:
	}
	return nil
}

type fsmSnapshot struct {
	History   []Revision `json:"history"`
	Preferred string     `json:"preferred,omitempty"`
}

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("cluster: write snapshot: %w", err)
	}
	return sink.Close()
}

func (s fsmSnapshot) Release() {}
