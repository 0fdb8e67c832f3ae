package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lbha/lbha/cluster"
	"github.com/lbha/lbha/persist"
	"github.com/lbha/lbha/syncd"
)

// syncer runs the connection sync daemon by role: the master sends the
// table's changes and serves resyncs; every other director receives, asks
// the master for a full resync, and reports itself warm to the cluster only
// when that resync completed. A director without sync is always warm.
type syncer struct {
	a     *Agent
	table *persist.Table
	tc    syncd.TransportConfig
	auth  *syncd.Auth

	mu      sync.Mutex
	role    cluster.State // role the running daemon was started for
	cancel  context.CancelFunc
	done    chan struct{}
	master  *syncd.Master
	backup  *syncd.Backup
	resync  string // leader's resync address the backup was started with
	lastErr error
}

func (a *Agent) newSyncer() (*syncer, error) {
	c := a.cfg.Sync
	if c.Interface == "" {
		return nil, nil
	}
	var err error
	s := &syncer{a: a, table: a.table, role: -1, tc: syncd.TransportConfig{
		Interface: c.Interface, Group: c.Group, Port: c.Port, TTL: c.TTL,
	}}
	if c.AuthKeyFile != "" {
		if s.auth, err = syncd.LoadAuth(c.AuthKeyFile, ""); err != nil {
			return nil, fmt.Errorf("agent: sync.auth_key_file: %w", err)
		}
	}
	return s, nil
}

// run keeps the right daemon running for the node's state until ctx ends.
func (s *syncer) run(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		s.reconcile(ctx)
		select {
		case <-ctx.Done():
			s.stop()
			return
		case <-tick.C:
		}
	}
}

func (s *syncer) reconcile(ctx context.Context) {
	state := s.a.node.State()
	want := cluster.StateBackup
	if state == cluster.StateMaster {
		want = cluster.StateMaster
	}
	leaderResync := s.a.node.LeaderResyncAddress()
	s.mu.Lock()
	running, role, resync := s.cancel != nil, s.role, s.resync
	s.mu.Unlock()
	if running && role == want && (want == cluster.StateMaster || resync == leaderResync) {
		return
	}
	s.stop()
	if want == cluster.StateMaster {
		s.startMaster(ctx)
	} else {
		s.startBackup(ctx, leaderResync)
	}
}

func (s *syncer) startMaster(ctx context.Context) {
	log := s.a.log.With("component", "sync", "role", "master")
	tx, err := syncd.DialSender(s.tc)
	if err != nil {
		s.fail(log, err)
		return
	}
	ln, err := syncd.ListenResync(s.tc, "")
	if err != nil {
		tx.Close()
		s.fail(log, err)
		return
	}
	c := s.a.cfg.Sync
	m, err := syncd.NewMaster(syncd.MasterConfig{
		SyncID: uint8(c.SyncID), V0: c.Version == 0, MaxLen: c.MaxLen, FlushInterval: c.FlushInterval,
		ResyncListener: ln, Auth: s.auth, Logger: log,
	}, s.table, tx)
	if err != nil {
		ln.Close()
		tx.Close()
		s.fail(log, err)
		return
	}
	s.a.node.SetResyncAddress(ln.Addr().String())
	s.a.node.SetWarm(true) // the master's table is the reference
	s.launch(ctx, cluster.StateMaster, "", func(ctx context.Context) error {
		defer tx.Close()
		return m.Run(ctx)
	}, m, nil)
	log.Info("sync master started", "resync", ln.Addr().String())
}

func (s *syncer) startBackup(ctx context.Context, resync string) {
	log := s.a.log.With("component", "sync", "role", "backup")
	s.a.node.SetResyncAddress("")
	s.a.node.SetWarm(false)
	rx, err := syncd.ListenReceiver(s.tc)
	if err != nil {
		s.fail(log, err)
		return
	}
	c := s.a.cfg.Sync
	b, err := syncd.NewBackup(syncd.BackupConfig{
		SyncID: c.SyncID, MaxLen: c.MaxLen, ResyncAddr: resync, Auth: s.auth, Logger: log,
		OnWarm: func(w bool) { s.a.node.SetWarm(w) },
	}, s.table, rx, s.a.dp.resolve)
	if err != nil {
		rx.Close()
		s.fail(log, err)
		return
	}
	s.launch(ctx, cluster.StateBackup, resync, b.Run, nil, b)
	log.Info("sync backup started", "resync_from", resync)
}

func (s *syncer) launch(ctx context.Context, role cluster.State, resync string, run func(context.Context) error, m *syncd.Master, b *syncd.Backup) {
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	s.mu.Lock()
	s.role, s.cancel, s.done, s.master, s.backup, s.resync, s.lastErr = role, cancel, done, m, b, resync, nil
	s.mu.Unlock()
	go func() {
		defer close(done)
		if err := run(cctx); err != nil && !errors.Is(err, context.Canceled) {
			s.a.log.Warn("sync daemon stopped", "err", err)
		}
	}()
}

func (s *syncer) stop() {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.cancel, s.done = nil, nil
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (s *syncer) fail(log interface{ Error(string, ...any) }, err error) {
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
	log.Error("sync daemon", "err", err)
}

// SyncStatus is what `lbha sync stats` shows.
type SyncStatus struct {
	Role      string      `json:"role"` // master, backup, or off
	Interface string      `json:"interface,omitempty"`
	Warm      bool        `json:"warm"`
	Resync    string      `json:"resync,omitempty"`
	Conns     int         `json:"connections"`
	Templates int         `json:"templates"`
	Error     string      `json:"error,omitempty"`
	Stats     syncd.Stats `json:"stats"`
}

func (s *syncer) status() SyncStatus {
	if s == nil {
		return SyncStatus{Role: "off", Warm: true}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SyncStatus{Interface: s.tc.Interface, Resync: s.resync}
	st.Conns, st.Templates = s.table.Len()
	switch {
	case s.cancel == nil:
		st.Role = "stopped"
	case s.master != nil:
		st.Role, st.Warm, st.Stats = "master", true, s.master.Stats()
	case s.backup != nil:
		st.Role, st.Warm, st.Stats = "backup", s.backup.Warm(), s.backup.Stats()
	}
	if s.lastErr != nil {
		st.Error = s.lastErr.Error()
	}
	return st
}
