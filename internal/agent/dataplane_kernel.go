package agent

import (
	"log/slog"

	"errors"

	"github.com/lbha/lbha/ipvs"
	"github.com/lbha/lbha/ipvs/kernel"
)

// kernelEngine is the kernel IPVS dataplane, as the agent uses it.
type kernelEngine struct {
	prog  ipvs.Programmer
	obs   ipvs.Observer
	close func() error
}

// openKernel opens the kernel's IPVS, or says why it cannot.
func openKernel(log *slog.Logger) (*kernelEngine, error) {
	d, err := kernel.DialSyncDaemons()
	if err != nil {
		return nil, err
	}
	d.Close()
	return nil, errors.New("kernel IPVS backend not available in this build")
}
