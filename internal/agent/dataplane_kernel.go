package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/lbha/lbha/cluster"
	"github.com/lbha/lbha/ipvs"
	"github.com/lbha/lbha/ipvs/kernel"
)

// kernelEngine is the kernel IPVS dataplane, as the agent uses it.
type kernelEngine struct {
	prog  ipvs.Programmer
	obs   ipvs.Observer
	close func() error
}

// openKernel opens the kernel's IPVS, or says why it cannot (an error
// wrapping kernel.ErrNoIPVS when the kernel has none).
func openKernel(_ *slog.Logger) (*kernelEngine, error) {
	b, err := kernel.Open()
	if err != nil {
		return nil, err
	}
	return &kernelEngine{prog: canonicalProgrammer{b}, obs: b, close: b.Close}, nil
}

// canonicalProgrammer reads the kernel's state in the form lbha's desired
// state takes, so that fields the kernel fills in itself are not seen as
// drift.
type canonicalProgrammer struct{ *kernel.Backend }

func (c canonicalProgrammer) State() ([]ipvs.ServiceState, error) {
	st, err := c.Backend.State()
	if err != nil {
		return nil, err
	}
	return kernel.Canonical(st), nil
}

// kernelSync runs the kernel's own connection sync daemon by role when the
// kernel dataplane is in use: the kernel's connection table is the one to
// replicate, and lbha's syncd cannot see it. The master thread runs on the
// master, the backup thread everywhere else, as keepalived's lvs_sync_daemon
// does. Role changes are applied by run, so a slow netlink answer never
// holds up the state change that asked for them.
type kernelSync struct {
	a    *Agent
	want chan kernel.Role // latest wanted role, capacity 1

	mu     sync.Mutex
	d      *kernel.SyncDaemons
	role   kernel.Role // running role, 0 if none
	closed bool
}

func newKernelSync(a *Agent) *kernelSync {
	return &kernelSync{a: a, want: make(chan kernel.Role, 1)}
}

// follow asks for the daemon of the node's state; it does not wait.
func (k *kernelSync) follow(st cluster.State) {
	want := kernel.Backup
	if st == cluster.StateMaster {
		want = kernel.Master
	}
	for {
		select {
		case k.want <- want:
			return
		default:
			select { // replace a request not yet taken
			case <-k.want:
			default:
			}
		}
	}
}

// run applies the wanted role until ctx ends, retrying failures.
func (k *kernelSync) run(ctx context.Context) {
	var want kernel.Role
	retry := time.NewTicker(2 * time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case want = <-k.want:
		case <-retry.C:
		}
		if want != 0 {
			k.apply(want)
		}
	}
}

func (k *kernelSync) apply(want kernel.Role) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.role == want || k.closed {
		return
	}
	if k.d == nil {
		d, err := kernel.DialSyncDaemons()
		if err != nil {
			k.a.log.Error("kernel sync daemon", "err", err)
			return
		}
		k.d = d
	}
	c := k.a.cfg.Sync
	if k.role != 0 {
		if err := k.d.Stop(k.role); err != nil {
			k.a.log.Warn("stopping the kernel sync daemon", "role", k.role, "err", err)
		}
		k.role = 0
	}
	err := k.d.Start(kernel.Daemon{Role: want, Interface: c.Interface, SyncID: uint32(c.SyncID),
		MaxLen: uint16(c.MaxLen), Group: c.Group, Port: uint16(c.Port), TTL: uint8(c.TTL)})
	if err != nil {
		k.a.log.Error("starting the kernel sync daemon", "role", want, "err", err)
		return
	}
	k.role = want
	k.a.log.Info("kernel sync daemon", "role", want.String(), "interface", c.Interface)
}

func (k *kernelSync) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	if k.d == nil {
		return nil
	}
	var errs []error
	if k.role != 0 {
		errs = append(errs, k.d.Stop(k.role))
	}
	errs = append(errs, k.d.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kernel sync daemon: %w", err)
	}
	return nil
}
