package vip

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"time"
)

// VIP is one virtual address: the address with the prefix length it is
// assigned with (192.0.2.100/24 puts 192.0.2.100 on the interface with a /24
// subnet route, as `ip addr add`), and the interface that carries it.
type VIP struct {
	Prefix    netip.Prefix
	Interface string
}

// String formats v like ip(8) does: "192.0.2.100/24 dev eth0".
func (v VIP) String() string { return v.Prefix.String() + " dev " + v.Interface }

// maxIfName is IFNAMSIZ minus the terminating NUL.
const maxIfName = 15

// Validate reports why v cannot be a VIP.
func (v VIP) Validate() error {
	if !v.Prefix.IsValid() {
		return errors.New("vip: Prefix: not a valid address with prefix length")
	}
	a := v.Prefix.Addr()
	switch {
	case a.Is4In6():
		return fmt.Errorf("vip: Prefix: %s is an IPv4-mapped IPv6 address; use the IPv4 form", a)
	case a.IsLoopback():
		// The kernel refuses these on lo (EINVAL) and they are never
		// reachable from the segment anyway.
		return fmt.Errorf("vip: Prefix: %s is a loopback address; use a unicast address of the segment", a)
	case a.IsUnspecified(), a.IsMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("vip: Prefix: %s is not a unicast address", a)
	}
	switch {
	case v.Interface == "":
		return errors.New("vip: Interface: is required")
	case len(v.Interface) > maxIfName:
		return fmt.Errorf("vip: Interface: %q is longer than %d bytes", v.Interface, maxIfName)
	}
	for _, r := range v.Interface {
		if r == '/' || r == ':' || r <= ' ' || r == 0x7f {
			return fmt.Errorf("vip: Interface: %q is not a valid interface name", v.Interface)
		}
	}
	return nil
}

// Config tunes a Manager. Start from DefaultConfig; in a Config built by
// hand, a zero field takes the default noted on it, except Lifetime.
type Config struct {
	// Lifetime is the valid_lft and preferred_lft given to every address,
	// in whole seconds (the kernel's granularity). The kernel deletes an
	// address that is not renewed within Lifetime, which bounds how long a
	// frozen master keeps its VIPs (see the package documentation). Zero
	// means forever: no fencing. DefaultConfig: 3 s.
	Lifetime time.Duration

	// RenewEvery is how often lifetimes are pushed back while held. At most
	// Lifetime/2, so that one late or failed renewal does not lose the VIP.
	// Zero: 1 s.
	RenewEvery time.Duration

	// Burst is the number of announcements sent on takeover. Zero: 5.
	Burst int

	// Spacing separates the announcements of a burst. Zero: 200 ms.
	//
	// The first announcement is what moves the clients (a neighbour entry
	// flips within about 0.1 ms of it); the repeats only matter when a frame
	// is lost, and then Spacing is roughly the outage the loss adds. 200 ms
	// keeps one lost frame inside the failover target (p99 <= 400 ms). A
	// spacing above a second (MetalLB uses 1.1 s) would only pay off if
	// updates were held back by neigh/locktime (1 s), which Linux applies
	// to ARP replies but not to the request form sent here. Five at 200 ms
	// still spread the repeats over 0.8 s instead of bunching them into
	// the same congestion that dropped the first.
	Spacing time.Duration

	// Refresh is the interval of the single announcement repeated for every
	// held VIP, for neighbours and switches that missed the burst (a link
	// that came back, a switch that flushed its table). Zero: 10 s.
	Refresh time.Duration

	// NetNS is the path of the network namespace to work in (for example
	// /run/netns/NAME or /proc/PID/ns/net). Empty means the namespace of
	// the thread calling New: a caller that has switched a locked thread
	// into a namespace may create the Manager there and use it from any
	// goroutine afterwards, since every socket keeps the namespace it was
	// opened in.
	NetNS string

	// Logger receives takeovers, removals, renewal failures and expiries
	// (announcements at debug level). Nil discards.
	Logger *slog.Logger
}

// Defaults applied by DefaultConfig and to zero fields.
const (
	DefaultLifetime   = 3 * time.Second
	DefaultRenewEvery = time.Second
	DefaultBurst      = 5
	DefaultSpacing    = 200 * time.Millisecond
	DefaultRefresh    = 10 * time.Second
)

// DefaultConfig returns the recommended configuration.
func DefaultConfig() Config {
	return Config{
		Lifetime:   DefaultLifetime,
		RenewEvery: DefaultRenewEvery,
		Burst:      DefaultBurst,
		Spacing:    DefaultSpacing,
		Refresh:    DefaultRefresh,
	}
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.RenewEvery == 0 {
		c.RenewEvery = DefaultRenewEvery
	}
	if c.Burst == 0 {
		c.Burst = DefaultBurst
	}
	if c.Spacing == 0 {
		c.Spacing = DefaultSpacing
	}
	if c.Refresh == 0 {
		c.Refresh = DefaultRefresh
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// maxBurst bounds a takeover burst: more than this is a configuration
// mistake that would flood the segment for no gain.
const maxBurst = 100

// Validate checks c after zero fields have taken their defaults; every
// problem names its field.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("vip: config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch {
	case c.Lifetime < 0:
		bad("Lifetime", "%v is negative (0 means forever)", c.Lifetime)
	case c.Lifetime%time.Second != 0:
		bad("Lifetime", "%v is not a whole number of seconds (the kernel counts lifetimes in seconds)", c.Lifetime)
	case c.Lifetime/time.Second >= math.MaxUint32:
		bad("Lifetime", "%v is too long for the kernel (less than 2^32-1 s)", c.Lifetime)
	}
	if c.RenewEvery < 0 {
		bad("RenewEvery", "%v is negative", c.RenewEvery)
	} else if c.Lifetime > 0 && c.RenewEvery > c.Lifetime/2 {
		bad("RenewEvery", "%v is more than half of Lifetime %v: one late renewal would lose the VIP", c.RenewEvery, c.Lifetime)
	}
	if c.Burst < 0 || c.Burst > maxBurst {
		bad("Burst", "%d is out of range 1..%d", c.Burst, maxBurst)
	}
	if c.Spacing < 0 {
		bad("Spacing", "%v is negative", c.Spacing)
	}
	if c.Refresh < 0 {
		bad("Refresh", "%v is negative", c.Refresh)
	}
	return errors.Join(errs...)
}

// Counters are cumulative event counts for metrics.
type Counters struct {
	Adds           uint64 // VIPs added or taken over (takeovers)
	AddErrors      uint64 // failed additions, foreign addresses included
	Removes        uint64 // VIPs removed by Set or Close
	RemoveErrors   uint64 // failed removals (retried every RenewEvery)
	Renewals       uint64 // successful lifetime renewals
	RenewErrors    uint64 // failed renewals
	Expired        uint64 // VIPs given up because a renewal came too late
	GARPs          uint64 // gratuitous ARP requests sent
	NAs            uint64 // unsolicited neighbour advertisements sent
	AnnounceErrors uint64 // announcements that could not be sent
}
