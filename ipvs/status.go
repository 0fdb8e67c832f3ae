package ipvs

import (
	"net/netip"
	"time"
)

// Stats are a service's or real server's traffic counters since it was
// added, as ipvsadm --stats shows them.
type Stats struct {
	Conns    uint64 `json:"conns"`
	InPkts   uint64 `json:"in_pkts"`
	OutPkts  uint64 `json:"out_pkts"`
	InBytes  uint64 `json:"in_bytes"`
	OutBytes uint64 `json:"out_bytes"`
}

// Rates are per-second averages of the counters, as ipvsadm --rate shows
// them.
type Rates struct {
	CPS    uint64 `json:"cps"`
	InPPS  uint64 `json:"in_pps"`
	OutPPS uint64 `json:"out_pps"`
	InBPS  uint64 `json:"in_bps"`
	OutBPS uint64 `json:"out_bps"`
}

// Health states of a real server, as the CLI shows them.
const (
	HealthUnchecked = ""     // no health check configured
	HealthUp        = "up"   // passing
	HealthDown      = "down" // failing: quiesced or removed per on_failure
)

// DestStatus is a real server as the dataplane holds it, with its live
// counters and health.
type DestStatus struct {
	Dest
	ActiveConns  int   `json:"active_conns"`
	InactConns   int   `json:"inact_conns"`
	PersistConns int   `json:"persist_conns"`
	Stats        Stats `json:"stats"`
	Rates        Rates `json:"rates"`
	// Health is HealthUnchecked, HealthUp or HealthDown; Removed is set
	// for a failing server that on_failure: remove took out of the
	// dataplane (it is listed so the operator still sees it). Sorry marks
	// the sorry server standing in for a service whose servers are all
	// down.
	Health      string `json:"health,omitempty"`
	HealthError string `json:"health_error,omitempty"`
	Removed     bool   `json:"removed,omitempty"`
	Sorry       bool   `json:"sorry,omitempty"`
}

// ServiceStatus is a virtual service with its real servers and counters.
type ServiceStatus struct {
	Service
	Dests []DestStatus `json:"dests"`
	Stats Stats        `json:"stats"`
	Rates Rates        `json:"rates"`
}

// Conn is one connection or persistence template as `ipvsadm -Lcn` lists
// it, from either dataplane.
type Conn struct {
	// Proto is the name ipvsadm shows: TCP, UDP, SCTP, or IP for a fwmark
	// template.
	Proto   string         `json:"proto"`
	Client  netip.AddrPort `json:"client"`
	Virtual netip.AddrPort `json:"virtual"`
	Dest    netip.AddrPort `json:"dest"`
	// State is the state name ipvsadm shows (ESTABLISHED, NONE, ASSURED…).
	State    string        `json:"state"`
	Expires  time.Duration `json:"expires"`
	Template bool          `json:"template"`
	PEName   string        `json:"pe_name,omitempty"`
	PEData   string        `json:"pe_data,omitempty"`
}

// Observer is a dataplane that reports live counters and connections.
type Observer interface {
	// Status returns every service with its real servers and counters.
	Status() ([]ServiceStatus, error)
	// Conns returns the connections and templates.
	Conns() ([]Conn, error)
}
