package sched

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/lbha/lbha/dest"
)

// DefaultName is the scheduler the kernel and ipvsadm use when none is given.
const DefaultName = "wlc"

// IP protocol numbers whose first header word holds the source and
// destination ports; sh-port and mh-port hash the source port only for these,
// as the kernel's ip_vs_sh_get_port/ip_vs_mh_get_port do.
const (
	ProtoTCP  = 6
	ProtoUDP  = 17
	ProtoSCTP = 132
)

// Packet is what a scheduler may look at in the first packet of a new
// connection.
type Packet struct {
	// Proto is the IP protocol number. The source port is only used by
	// sh-port/mh-port for TCP, UDP and SCTP.
	Proto uint8
	// Src and SrcPort are the client's address and port (sh, mh).
	Src     netip.Addr
	SrcPort uint16
	// Dst is the packet's destination address (dh, lblc, lblcr).
	Dst netip.Addr
}

// Scheduler chooses a destination of one virtual service.
//
// Pick and Update are safe for concurrent use (see the package
// documentation).
type Scheduler interface {
	// Name returns the kernel's name of the scheduler, e.g. "wlc".
	Name() string
	// Update installs dests, in the service's list order, as the
	// destination list. Call it after every change of the list or of a
	// weight, as the kernel calls add_dest/del_dest/upd_dest. The slice is
	// copied. It fails on nil entries, duplicate addr:port, or more
	// destinations than an mh table has slots; the previous list then stays.
	Update(dests []*dest.Dest) error
	// Pick returns the destination for a new connection, or nil when no
	// destination is eligible.
	Pick(p Packet) *dest.Dest
}

// Flags are the scheduler flags of a service (ipvsadm -b). The low bits are
// the kernel's IP_VS_SVC_F_SCHED1..3; the sh-/mh- names set the same kernel
// bit plus a tag bit that records which scheduler the name belongs to, so
// that New can refuse, say, sh-port on an mh service, as ipvsadm does.
type Flags uint32

// Flag values. SHFallback and MHFallback are SCHED1 on the wire, SHPort and
// MHPort SCHED2.
const (
	Flag1 Flags = 0x08 // IP_VS_SVC_F_SCHED1
	Flag2 Flags = 0x10 // IP_VS_SVC_F_SCHED2
	Flag3 Flags = 0x20 // IP_VS_SVC_F_SCHED3

	shTag Flags = 1 << 16
	mhTag Flags = 1 << 17

	SHFallback = Flag1 | shTag
	SHPort     = Flag2 | shTag
	MHFallback = Flag1 | mhTag
	MHPort     = Flag2 | mhTag

	kernelMask = Flag1 | Flag2 | Flag3
)

// Kernel returns the IP_VS_SVC_F_SCHED* bits to send to the kernel.
func (f Flags) Kernel() uint32 { return uint32(f & kernelMask) }

// FlagsFromKernel returns the flags for the service flag word v read from
// the kernel; bits other than SCHED1..3 are dropped.
func FlagsFromKernel(v uint32) Flags { return Flags(v) & kernelMask }

type flagName struct {
	name  string
	flag  Flags
	sched string // "" = any scheduler
}

var flagNames = []flagName{
	{"flag-1", Flag1, ""},
	{"flag-2", Flag2, ""},
	{"flag-3", Flag3, ""},
	{"sh-fallback", SHFallback, "sh"},
	{"sh-port", SHPort, "sh"},
	{"mh-fallback", MHFallback, "mh"},
	{"mh-port", MHPort, "mh"},
}

// ParseFlags parses ipvsadm's -b argument, a comma-separated list of
// flag-1, flag-2, flag-3, sh-fallback, sh-port (sh only), mh-fallback and
// mh-port (mh only), for scheduler sched ("" means DefaultName). Empty items
// are skipped, as ipvsadm's strtok does.
func ParseFlags(sched, list string) (Flags, error) {
	if sched == "" {
		sched = DefaultName
	}
	var f Flags
	for item := range strings.SplitSeq(list, ",") {
		if item == "" {
			continue
		}
		i := slices.IndexFunc(flagNames, func(n flagName) bool { return n.name == item })
		if i < 0 {
			return 0, fmt.Errorf("sched: invalid scheduler flag %q", item)
		}
		if s := flagNames[i].sched; s != "" && s != sched {
			return 0, fmt.Errorf("sched: scheduler flag %q is incompatible with scheduler %q", item, sched)
		}
		f |= flagNames[i].flag
	}
	return f, nil
}

// FormatFlags returns the flags as ipvsadm lists them for scheduler sched
// (comma-separated, "" when none): sh and mh name SCHED1/SCHED2 after their
// meaning, every other scheduler shows flag-1..flag-3.
func FormatFlags(sched string, f Flags) string {
	names := [3]string{"flag-1", "flag-2", "flag-3"}
	switch sched {
	case "sh":
		names[0], names[1] = "sh-fallback", "sh-port"
	case "mh":
		names[0], names[1] = "mh-fallback", "mh-port"
	}
	var out []string
	for i, bit := range []Flags{Flag1, Flag2, Flag3} {
		if f&bit != 0 {
			out = append(out, names[i])
		}
	}
	return strings.Join(out, ",")
}

// Options tune the schedulers that need more than the destination list.
// The zero value gives the kernel's defaults.
type Options struct {
	// Now is the clock of lblc and lblcr cache expiry. nil means time.Now.
	Now func() time.Time
	// LBLCExpiration is net.ipv4.vs.lblc_expiration: an lblc entry unused
	// this long goes at the next full check. 0 means 24h.
	LBLCExpiration time.Duration
	// LBLCRExpiration is net.ipv4.vs.lblcr_expiration: both the idle time
	// after which an lblcr entry goes and the time a server set must stay
	// unchanged before its most loaded member is dropped. 0 means 24h.
	LBLCRExpiration time.Duration
	// Rand is twos' random source; it must be safe for concurrent use if
	// Pick is called concurrently. nil means math/rand/v2's Uint32.
	Rand func() uint32
	// MHTableIndex is CONFIG_IP_VS_MH_TAB_INDEX, 8..17, selecting the mh
	// table size from 251 up to 131071 slots. 0 means 12 (4093 slots).
	MHTableIndex int
}

const defaultExpiration = 24 * time.Hour

// Validate reports an option out of range.
func (o Options) Validate() error {
	if o.LBLCExpiration < 0 {
		return fmt.Errorf("sched: options: LBLCExpiration %v is negative", o.LBLCExpiration)
	}
	if o.LBLCRExpiration < 0 {
		return fmt.Errorf("sched: options: LBLCRExpiration %v is negative", o.LBLCRExpiration)
	}
	if o.MHTableIndex != 0 && (o.MHTableIndex < 8 || o.MHTableIndex > 17) {
		return fmt.Errorf("sched: options: MHTableIndex %d is outside 8..17", o.MHTableIndex)
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LBLCExpiration == 0 {
		o.LBLCExpiration = defaultExpiration
	}
	if o.LBLCRExpiration == 0 {
		o.LBLCRExpiration = defaultExpiration
	}
	if o.Rand == nil {
		o.Rand = rand.Uint32
	}
	if o.MHTableIndex == 0 {
		o.MHTableIndex = 12
	}
	return o
}

// names lists the schedulers in the order of ipvsadm's manual page, twos
// (Linux 6.2) last.
var names = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}

// Names returns the names New accepts.
func Names() []string { return slices.Clone(names) }

// New returns an empty scheduler (no destinations: Pick returns nil until
// Update) named name, with the service's scheduler flags. It refuses an
// unknown name, flag bits other than SCHED1..3, and sh-/mh- flags on another
// scheduler. Generic flag-N bits are accepted everywhere, as the kernel
// accepts them; only sh and mh give SCHED1/SCHED2 a meaning.
func New(name string, flags Flags, opts Options) (Scheduler, error) {
	if !slices.Contains(names, name) {
		return nil, fmt.Errorf("sched: unknown scheduler %q", name)
	}
	if extra := flags &^ (kernelMask | shTag | mhTag); extra != 0 {
		return nil, fmt.Errorf("sched: %s: unknown flag bits %#x", name, uint32(extra))
	}
	if flags&shTag != 0 && name != "sh" {
		return nil, fmt.Errorf("sched: %s: flags %s are for sh only", name, FormatFlags("sh", flags&^mhTag))
	}
	if flags&mhTag != 0 && name != "mh" {
		return nil, fmt.Errorf("sched: %s: flags %s are for mh only", name, FormatFlags("mh", flags&^shTag))
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("sched: %s: %w", name, err)
	}
	opts = opts.withDefaults()
	fallback, port := flags&Flag1 != 0, flags&Flag2 != 0
	switch name {
	case "rr":
		return &rr{pos: -1}, nil
	case "wrr":
		return &wrr{cl: -1, di: 1}, nil
	case "lc":
		return newStateless(name, pickLC), nil
	case "wlc":
		return newStateless(name, pickWLC), nil
	case "sed":
		return newStateless(name, pickSED), nil
	case "nq":
		return newStateless(name, pickNQ), nil
	case "fo":
		return newStateless(name, pickFO), nil
	case "ovf":
		return newStateless(name, pickOVF), nil
	case "twos":
		return &twos{rand: opts.Rand}, nil
	case "sh":
		s := &sh{fallback: fallback, port: port}
		s.tab.Store(&shTable{})
		return s, nil
	case "dh":
		s := &dh{}
		s.tab.Store(&dhTable{})
		return s, nil
	case "mh":
		return newMH(opts.MHTableIndex, fallback, port), nil
	case "lblc":
		return newLBLC(opts.Now, opts.LBLCExpiration), nil
	default: // "lblcr"; names was checked above
		return newLBLCR(opts.Now, opts.LBLCRExpiration), nil
	}
}

// checkDests validates a destination list and returns a private copy.
func checkDests(ds []*dest.Dest) ([]*dest.Dest, error) {
	seen := make(map[netip.AddrPort]struct{}, len(ds))
	for i, d := range ds {
		if d == nil {
			return nil, fmt.Errorf("sched: update: destination %d is nil", i)
		}
		k := netip.AddrPortFrom(d.Addr, d.Port)
		if _, dup := seen[k]; dup {
			return nil, fmt.Errorf("sched: update: duplicate destination %s", k)
		}
		seen[k] = struct{}{}
	}
	return slices.Clone(ds), nil
}

// usable is the test every scheduler applies to a candidate: weight > 0 and
// OVERLOAD clear.
func usable(d *dest.Dest) bool { return d.Weight() > 0 && !d.Overloaded() }

// hasPorts reports whether the kernel reads ports for this protocol.
func hasPorts(proto uint8) bool {
	return proto == ProtoTCP || proto == ProtoUDP || proto == ProtoSCTP
}
