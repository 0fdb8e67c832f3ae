//go:build !linux

package vip

import (
	"fmt"
	"runtime"
)

// newKernel fails: addresses, gratuitous ARP and neighbour advertisements
// are programmed only on Linux. The rest of the package builds everywhere,
// so that its users and its unit tests do too.
func newKernel(Config) (kernel, error) {
	return nil, fmt.Errorf("vip: not supported on %s", runtime.GOOS)
}
