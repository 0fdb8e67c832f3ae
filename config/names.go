package config

import (
	"fmt"
	"slices"
	"strings"
)

// Schedulers lists the scheduler names lbha accepts: every scheduler of
// the Linux kernel, in the order of spec §D.
var Schedulers = []string{
	"rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "mh",
	"fo", "ovf", "lblc", "lblcr", "twos",
}

// KnownScheduler reports whether name is one of Schedulers.
func KnownScheduler(name string) bool { return slices.Contains(Schedulers, name) }

// SchedFlags holds a service's scheduler flags, as the kernel's
// IP_VS_SVC_F_SCHED1..3 bits so that they can be or-ed into service flags.
type SchedFlags uint32

// Scheduler flag bits. sh and mh give the first two bits their own names.
const (
	SchedFlag1 SchedFlags = 0x0008
	SchedFlag2 SchedFlags = 0x0010
	SchedFlag3 SchedFlags = 0x0020

	ShFallback = SchedFlag1
	ShPort     = SchedFlag2
	MhFallback = SchedFlag1
	MhPort     = SchedFlag2

	// SchedFlagsMask covers every scheduler flag bit.
	SchedFlagsMask = SchedFlag1 | SchedFlag2 | SchedFlag3
)

// ParseSchedFlag returns the bit of one flag name, checking it against the
// scheduler as ipvsadm does: sh-* only with sh, mh-* only with mh; flag-1..3
// with any scheduler, except flag-3 with sh or mh, which ipvsadm accepts but
// cannot save (it has no name for that bit there). An empty sched means the
// default, wlc.
func ParseSchedFlag(sched, name string) (SchedFlags, error) {
	if sched == "" {
		sched = DefaultScheduler
	}
	var bit SchedFlags
	var only string
	switch name {
	case "flag-1":
		bit = SchedFlag1
	case "flag-2":
		bit = SchedFlag2
	case "flag-3":
		bit = SchedFlag3
	case "sh-fallback":
		bit, only = ShFallback, "sh"
	case "sh-port":
		bit, only = ShPort, "sh"
	case "mh-fallback":
		bit, only = MhFallback, "mh"
	case "mh-port":
		bit, only = MhPort, "mh"
	default:
		return 0, fmt.Errorf("unknown scheduler flag %q (want flag-1, flag-2, flag-3, sh-fallback, sh-port, mh-fallback or mh-port)", name)
	}
	if bit == SchedFlag3 && (sched == "sh" || sched == "mh") {
		return 0, fmt.Errorf("scheduler flag flag-3 has no meaning for scheduler %s", sched)
	}
	if only != "" && sched != only {
		return 0, fmt.Errorf("scheduler flag %q is only valid with scheduler %s, not %s", name, only, sched)
	}
	return bit, nil
}

// Names returns the flag names in the order and spelling ipvsadm prints
// them for scheduler sched. sh and mh have no name for the third bit, so
// it is left out for them, as ipvsadm does.
func (f SchedFlags) Names(sched string) []string {
	var names []string
	switch sched {
	case "sh", "mh":
		if f&SchedFlag1 != 0 {
			names = append(names, sched+"-fallback")
		}
		if f&SchedFlag2 != 0 {
			names = append(names, sched+"-port")
		}
	default:
		for i, bit := range []SchedFlags{SchedFlag1, SchedFlag2, SchedFlag3} {
			if f&bit != 0 {
				names = append(names, fmt.Sprintf("flag-%d", i+1))
			}
		}
	}
	return names
}

// String returns the flags as a comma-separated list of generic names.
func (f SchedFlags) String() string { return strings.Join(f.Names(""), ",") }

// PersistenceEngines lists the persistence engines the kernel provides.
var PersistenceEngines = []string{"sip"}

// knownNames formats a list of accepted names for a message.
func knownNames(names []string) string { return strings.Join(names, ", ") }
