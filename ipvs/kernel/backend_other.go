//go:build !linux

package kernel

import (
	"fmt"
	"runtime"

	"github.com/lbha/lbha/ipvs"
)

// Backend is the kernel's IPVS, which exists only on Linux; elsewhere Open
// fails, so that the rest of lbha (and its tests) still builds.
type Backend struct{}

var (
	_ ipvs.Programmer = (*Backend)(nil)
	_ ipvs.Observer   = (*Backend)(nil)
)

func unsupported() error {
	return fmt.Errorf("kernel: %s: %w", runtime.GOOS, ErrNoIPVS)
}

// Open fails with an error wrapping ErrNoIPVS.
func Open() (*Backend, error) { return nil, unsupported() }

// Close does nothing.
func (*Backend) Close() error { return nil }

// State fails.
func (*Backend) State() ([]ipvs.ServiceState, error) { return nil, unsupported() }

// Apply fails.
func (*Backend) Apply(ipvs.Op) error { return unsupported() }

// Status fails.
func (*Backend) Status() ([]ipvs.ServiceStatus, error) { return nil, unsupported() }

// Conns fails.
func (*Backend) Conns() ([]ipvs.Conn, error) { return nil, unsupported() }
