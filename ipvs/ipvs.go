// Package ipvs owns the desired state of the dataplane: virtual services and
// their real servers as the kernel's IPVS (or lbha's userspace proxy) holds
// them, and the reconciliation that brings a dataplane to that state with a
// minimal, ordered set of changes.
//
// Plan is a pure function from (current, desired) to operations: services
// and real servers are added before anything is removed, so that traffic
// never finds a service missing while it changes; a changed service or
// real server is updated in place rather than re-created, which keeps its
// connections. Reconciler runs Plan against a Programmer (the kernel, a
// proxy, or a test fake) on every configuration change and periodically,
// which also repairs drift such as a hand-run ipvsadm.
package ipvs

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/lbha/lbha/dest"
)

// ServiceKey identifies a virtual service: protocol, address and port, or a
// firewall mark (with the address family of its destinations).
type ServiceKey struct {
	Fwmark   uint32     `json:"fwmark,omitempty"`   // non-zero for fwmark services; then Addr is unset
	IPv6     bool       `json:"ipv6,omitempty"`     // family of a fwmark service
	Protocol uint8      `json:"protocol,omitempty"` // 6, 17 or 132; 0 for fwmark services
	Addr     netip.Addr `json:"addr,omitzero"`      // the VIP
	Port     uint16     `json:"port,omitempty"`
}

func (k ServiceKey) String() string {
	if k.Fwmark != 0 {
		if k.IPv6 {
			return fmt.Sprintf("FWM %d IPv6", k.Fwmark)
		}
		return fmt.Sprintf("FWM %d", k.Fwmark)
	}
	name := map[uint8]string{6: "TCP", 17: "UDP", 132: "SCTP"}[k.Protocol]
	if name == "" {
		name = fmt.Sprintf("proto %d", k.Protocol)
	}
	return name + " " + netip.AddrPortFrom(k.Addr, k.Port).String()
}

// CompareKeys orders service keys as ipvsadm lists services: address
// services before fwmark services, then by family, protocol, address and
// port.
func CompareKeys(a, b ServiceKey) int { return compareKeys(a, b) }

func compareKeys(a, b ServiceKey) int {
	return cmp.Or(cmp.Compare(a.Fwmark, b.Fwmark), boolCmp(a.IPv6, b.IPv6), cmp.Compare(a.Protocol, b.Protocol),
		a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// Service is a virtual service's settings, without its real servers.
type Service struct {
	Key       ServiceKey `json:"key"`
	Scheduler string     `json:"scheduler"`
	Flags     uint32     `json:"flags,omitempty"` // scheduler flags, the kernel's SCHED1..3 bits
	// Timeout is the persistence timeout in seconds; 0 means not
	// persistent.
	Timeout uint32 `json:"timeout,omitempty"`
	// Netmask is the persistence granularity: an IPv4 mask, or for IPv6 a
	// prefix length in its last byte (the kernel's convention).
	Netmask   uint32 `json:"netmask,omitempty"`
	PE        string `json:"pe,omitempty"` // persistence engine, "" or "sip"
	OnePacket bool   `json:"one_packet,omitempty"`
}

// Dest is one real server of a service as the dataplane holds it.
type Dest struct {
	Addr       netip.AddrPort `json:"addr"`
	Method     dest.Method    `json:"method"`
	Weight     int            `json:"weight"`
	UThreshold uint32         `json:"u_threshold,omitempty"`
	LThreshold uint32         `json:"l_threshold,omitempty"`
	TunnelType uint8          `json:"tunnel_type,omitempty"` // ipip 0, gue 1, gre 2 (IP_VS_CONN_F_TUNNEL_TYPE_*)
	TunnelPort uint16         `json:"tunnel_port,omitempty"`
}

// ServiceState is a service with its real servers.
type ServiceState struct {
	Service
	Dests []Dest `json:"dests"`
}

// OpKind says what an operation does.
type OpKind uint8

// Operation kinds, in the order Plan emits them.
const (
	AddService OpKind = iota + 1
	UpdateService
	AddDest
	UpdateDest
	DelDest
	DelService
)

func (k OpKind) String() string {
	return [...]string{"?", "add-service", "update-service", "add-dest", "update-dest", "del-dest", "del-service"}[min(int(k), 6)]
}

// Op is one change to the dataplane. Dest is set for dest operations.
type Op struct {
	Kind    OpKind
	Service Service
	Dest    Dest
}

func (o Op) String() string {
	if o.Kind >= AddDest && o.Kind <= DelDest {
		return fmt.Sprintf("%s %s -> %s", o.Kind, o.Service.Key, o.Dest.Addr)
	}
	return fmt.Sprintf("%s %s", o.Kind, o.Service.Key)
}

// Plan returns the operations that turn current into desired: first every
// service added and every service updated (settings), then real servers
// added and updated, then real servers removed, then services removed.
// Services appear in key order and real servers in address order, so a plan
// is deterministic. Duplicate keys in desired are an error.
func Plan(current, desired []ServiceState) ([]Op, error) {
	cur, err := index(current)
	if err != nil {
		return nil, fmt.Errorf("ipvs: current state: %w", err)
	}
	want, err := index(desired)
	if err != nil {
		return nil, fmt.Errorf("ipvs: desired state: %w", err)
	}
	keys := func(m map[ServiceKey]*ServiceState) []ServiceKey {
		ks := make([]ServiceKey, 0, len(m))
		for k := range m {
			ks = append(ks, k)
		}
		slices.SortFunc(ks, compareKeys)
		return ks
	}
	var adds, dests, dels, svcDels []Op
	for _, k := range keys(want) {
		w := want[k]
		c, ok := cur[k]
		switch {
		case !ok:
			adds = append(adds, Op{Kind: AddService, Service: w.Service})
			c = &ServiceState{}
		case c.Service != w.Service:
			adds = append(adds, Op{Kind: UpdateService, Service: w.Service})
		}
		cd := destIndex(c.Dests)
		wd := destIndex(w.Dests)
		for _, d := range sortedDests(w.Dests) {
			if old, ok := cd[d.Addr]; !ok {
				dests = append(dests, Op{Kind: AddDest, Service: w.Service, Dest: d})
			} else if old != d {
				dests = append(dests, Op{Kind: UpdateDest, Service: w.Service, Dest: d})
			}
		}
		for _, d := range sortedDests(c.Dests) {
			if _, ok := wd[d.Addr]; !ok {
				dels = append(dels, Op{Kind: DelDest, Service: w.Service, Dest: d})
			}
		}
	}
	for _, k := range keys(cur) {
		if _, ok := want[k]; !ok {
			svcDels = append(svcDels, Op{Kind: DelService, Service: cur[k].Service})
		}
	}
	return slices.Concat(adds, dests, dels, svcDels), nil
}

func index(states []ServiceState) (map[ServiceKey]*ServiceState, error) {
	m := make(map[ServiceKey]*ServiceState, len(states))
	for i := range states {
		s := &states[i]
		if _, dup := m[s.Key]; dup {
			return nil, fmt.Errorf("service %s listed twice", s.Key)
		}
		seen := map[netip.AddrPort]bool{}
		for _, d := range s.Dests {
			if seen[d.Addr] {
				return nil, fmt.Errorf("service %s: real server %s listed twice", s.Key, d.Addr)
			}
			seen[d.Addr] = true
		}
		m[s.Key] = s
	}
	return m, nil
}

func destIndex(ds []Dest) map[netip.AddrPort]Dest {
	m := make(map[netip.AddrPort]Dest, len(ds))
	for _, d := range ds {
		m[d.Addr] = d
	}
	return m
}

func sortedDests(ds []Dest) []Dest {
	out := slices.Clone(ds)
	slices.SortFunc(out, func(a, b Dest) int { return a.Addr.Compare(b.Addr) })
	return out
}

// Apply applies ops to a state held in memory, as a dataplane would, and
// returns the result. It is the reference semantics of each operation (for
// fakes and tests); it reports operations that make no sense for the
// state, such as adding a service that exists.
func Apply(state []ServiceState, ops []Op) ([]ServiceState, error) {
	m, err := index(slices.Clone(state))
	if err != nil {
		return nil, err
	}
	for _, op := range ops {
		k := op.Service.Key
		s, ok := m[k]
		switch op.Kind {
		case AddService:
			if ok {
				return nil, fmt.Errorf("ipvs: %s: exists", op)
			}
			m[k] = &ServiceState{Service: op.Service}
		case UpdateService:
			if !ok {
				return nil, fmt.Errorf("ipvs: %s: no such service", op)
			}
			s.Service = op.Service
		case DelService:
			if !ok {
				return nil, fmt.Errorf("ipvs: %s: no such service", op)
			}
			delete(m, k)
		case AddDest, UpdateDest, DelDest:
			if !ok {
				return nil, fmt.Errorf("ipvs: %s: no such service", op)
			}
			i := slices.IndexFunc(s.Dests, func(d Dest) bool { return d.Addr == op.Dest.Addr })
			switch {
			case op.Kind == AddDest && i >= 0:
				return nil, fmt.Errorf("ipvs: %s: exists", op)
			case op.Kind != AddDest && i < 0:
				return nil, fmt.Errorf("ipvs: %s: no such real server", op)
			case op.Kind == AddDest:
				s.Dests = append(slices.Clone(s.Dests), op.Dest)
			case op.Kind == UpdateDest:
				s.Dests = slices.Clone(s.Dests)
				s.Dests[i] = op.Dest
			default:
				s.Dests = slices.Delete(slices.Clone(s.Dests), i, i+1)
			}
		default:
			return nil, fmt.Errorf("ipvs: unknown operation %d", op.Kind)
		}
	}
	out := make([]ServiceState, 0, len(m))
	for _, s := range m {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b ServiceState) int { return compareKeys(a.Key, b.Key) })
	return out, nil
}
