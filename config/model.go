package config

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/lbha/lbha/dest"
)

// Config is the whole configuration of one lbha node.
type Config struct {
	Node      Node
	Cluster   Cluster
	API       API
	Dataplane Dataplane
	// DataplaneOptions tune the dataplane; the zero value is the kernel's
	// defaults.
	DataplaneOptions DataplaneOptions
	VIPs             []VIP
	Sync             Sync
	Services         []Service
}

// Role is what a node does in the cluster.
type Role string

// Roles.
const (
	// RoleDirector runs the dataplane and may become master.
	RoleDirector Role = "director"
	// RoleWitness only votes in raft: it never holds a VIP or runs a
	// dataplane, and exists so that a pair of directors keeps a quorum.
	RoleWitness Role = "witness"
)

// Node describes this node.
type Node struct {
	// Name identifies the node among Cluster.Peers. Required.
	Name string
	// Role is director or witness. Required.
	Role Role
	// Priority orders directors for mastership, 1..255, higher wins
	// (default 100). A witness has none: zero.
	Priority int
	// DataDir holds the raft log and snapshots (default /var/lib/lbha).
	DataDir string
	// BindAddress is the address raft and gossip listen on. Required when
	// the cluster has peers.
	BindAddress netip.Addr
}

// Peer is one member of the cluster, this node included, so that every
// node can carry the same peer list.
type Peer struct {
	Name    string
	Address netip.Addr
	Role    Role
}

// Timing holds the raft timers. The master acts only while it holds a lease,
// so Lease < Heartbeat <= Election.
type Timing struct {
	Heartbeat time.Duration // default 100ms
	Election  time.Duration // default 100ms
	Lease     time.Duration // default 50ms
}

// LocalCheck is a local command whose failure makes this director step
// down (and keeps it from becoming master).
type LocalCheck struct {
	Name     string
	Command  string
	Interval time.Duration // default 2s
	Timeout  time.Duration // default 1s; at most Interval
}

// TLS names the files that secure raft and the API between nodes.
type TLS struct {
	CertFile string
	KeyFile  string
	CAFile   string
}

// Cluster describes the peers and how master election behaves.
type Cluster struct {
	Peers      []Peer
	RaftPort   int // default 7000
	GossipPort int // default 7946
	// APIPort is the TCP port of the peer API on BindAddress, through which
	// nodes forward operator requests to the leader (default 7001).
	APIPort int
	Timing  Timing
	// Preempt lets a healthier director with a higher priority take over
	// from the current master (default true), after PreemptDelay.
	Preempt         bool
	PreemptDelay    time.Duration
	TrackInterfaces []string
	CheckCommands   []LocalCheck
	// NotifyCommand runs on every state change, with the state as argument.
	NotifyCommand string
	GossipKeyFile string
	// TLS is nil when raft and the API run in clear text.
	TLS *TLS
}

// API is the control interface of the daemon.
type API struct {
	Socket string // Unix socket of the CLI (default /run/lbha/lbha.sock)
	// MetricsAddress is host:port of the Prometheus endpoint; empty
	// disables it.
	MetricsAddress string
	// TCPAddress (host:port), when set, also serves the operator API over
	// TLS (the node certificate of cluster.tls, which is then required) to
	// clients that present the bearer token in TokenFile (required).
	TCPAddress string
	TokenFile  string
}

// Dataplane selects the forwarding engine.
type Dataplane string

// Dataplanes.
const (
	DataplaneAuto      Dataplane = "auto" // kernel IPVS when available, else userspace
	DataplaneKernel    Dataplane = "kernel"
	DataplaneUserspace Dataplane = "userspace"
)

// StandbyAction says what the userspace dataplane does with the flows it
// proxies when its director stops being master.
type StandbyAction string

// Standby actions.
const (
	// StandbyClose closes every flow at once (the default): the VIP has
	// moved, so the flows' packets already reach the new master.
	StandbyClose StandbyAction = "close"
	// StandbyDrain stops accepting but lets existing flows run for up to
	// DrainTimeout (a planned switchover where clients still reach this
	// director, e.g. through a route that has not converged).
	StandbyDrain StandbyAction = "drain"
)

// DataplaneOptions are the dataplane's tunables.
type DataplaneOptions struct {
	// ExpireQuiescentTemplate is the kernel sysctl of that name: a
	// persistence template whose real server has weight 0 stops matching,
	// so its clients are scheduled again.
	ExpireQuiescentTemplate bool
	// OnStandby and DrainTimeout (default 30s) apply to the userspace
	// dataplane.
	OnStandby    StandbyAction
	DrainTimeout time.Duration
}

// VIP is a virtual address the master holds.
type VIP struct {
	// Address is the address with the prefix length it is assigned with,
	// e.g. 192.0.2.100/24.
	Address   netip.Prefix
	Interface string
}

// Sync configures the connection sync daemon (kernel ip_vs_sync format).
type Sync struct {
	// Interface carries the sync multicast; empty disables sync.
	Interface string
	// Group is the multicast group (default 224.0.0.81). The kernel has no
	// IPv6 default, so an IPv6 group must be configured explicitly.
	Group netip.Addr
	Port  int // default 8848
	// SyncID filters received messages, 0..255; 0 accepts every syncid.
	SyncID int
	// MaxLen is the UDP payload size, 1..65507; 0 keeps the kernel default
	// (1472 for an IPv4 group, 1452 for IPv6).
	MaxLen int
	TTL    int // 1..255, default 1
	// AuthKeyFile holds the HMAC key of lbha-to-lbha sync; empty keeps the
	// plain, kernel-compatible format.
	AuthKeyFile string
	// FlushInterval bounds how long lbha's own sender batches entries
	// (default 5ms; the kernel's daemon waits up to 2 s).
	FlushInterval time.Duration
	// Version is the message format sent, 0 or 1 (default 1). Version 0
	// carries IPv4 connections only.
	Version int
}

// Protocol is a service's transport protocol, numbered as IPPROTO_*.
type Protocol uint8

// Protocols.
const (
	TCP  Protocol = 6
	UDP  Protocol = 17
	SCTP Protocol = 132
)

// String returns the configuration name of the protocol.
func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	case 0:
		return "none"
	}
	return fmt.Sprintf("Protocol(%d)", uint8(p))
}

// Family is an address family, numbered as the Linux AF_* constants that
// the kernel and ipvsadm sort by.
type Family uint8

// Families.
const (
	Inet  Family = 2
	Inet6 Family = 10
)

// String returns the configuration name of the family.
func (f Family) String() string {
	switch f {
	case Inet:
		return "inet"
	case Inet6:
		return "inet6"
	}
	return fmt.Sprintf("Family(%d)", uint8(f))
}

// FamilyOf returns the family of a valid address.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() {
		return Inet
	}
	return Inet6
}

// Service is one virtual service: either a protocol and address:port, or a
// firewall mark.
type Service struct {
	// Name is an optional label; names must be unique when set.
	Name string
	// Protocol and Address identify an address service. Both are zero for
	// a fwmark service.
	Protocol Protocol
	Address  netip.AddrPort
	// FWMark identifies a fwmark service (> 0) and Family says whether it
	// matches IPv4 or IPv6 packets (default inet). Family is unused for
	// address services, whose family is their address's.
	FWMark uint32
	Family Family
	// Scheduler names the kernel scheduler (default wlc).
	Scheduler   string
	SchedFlags  SchedFlags
	Persistence *Persistence // nil: not persistent
	// OnePacket schedules every datagram on its own (UDP and fwmark only).
	OnePacket   bool
	RealServers []RealServer
	HealthCheck *HealthCheck // nil: real servers are not checked
	// SorryServer receives traffic when no real server is available; the
	// zero value means none.
	SorryServer netip.AddrPort
}

// AddrFamily returns the address family of the service.
func (s *Service) AddrFamily() Family {
	if s.FWMark != 0 || !s.Address.IsValid() {
		if s.Family == 0 {
			return Inet
		}
		return s.Family
	}
	return FamilyOf(s.Address.Addr())
}

// Key returns a string that identifies the service as the kernel does:
// protocol, address and port, or fwmark and family.
func (s *Service) Key() string {
	if s.FWMark != 0 {
		return fmt.Sprintf("fwmark %d %s", s.FWMark, s.AddrFamily())
	}
	return fmt.Sprintf("%s %s", s.Protocol, s.Address)
}

// Persistence makes a service send each client (masked by Netmask or
// Prefix) to the same real server for Timeout after its last connection.
type Persistence struct {
	// Timeout, in whole seconds, 1 s .. 31 days (default 360 s).
	Timeout time.Duration
	// Netmask is the client granularity of an IPv4 service (default, and
	// zero value, 255.255.255.255).
	Netmask netip.Addr
	// Prefix is the client granularity of an IPv6 service, 1..128 (default,
	// and zero value, 128).
	Prefix int
	// Engine names a persistence engine: "" or "sip" (Call-ID affinity).
	Engine string
}

// DefaultPersistenceTimeout is the timeout of a persistence block without
// one, as ipvsadm uses for a bare -p.
const DefaultPersistenceTimeout = 360 * time.Second

// MaxPersistenceTimeout is the longest timeout ipvsadm accepts; it keeps
// timeout*HZ inside the kernel's unsigned int.
const MaxPersistenceTimeout = 31 * 24 * time.Hour

// HostMask4 is the default IPv4 persistence netmask.
var HostMask4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// Mask4 returns the IPv4 netmask, the zero value meaning 255.255.255.255.
func (p *Persistence) Mask4() netip.Addr {
	if !p.Netmask.IsValid() {
		return HostMask4
	}
	return p.Netmask
}

// Prefix6 returns the IPv6 prefix length, the zero value meaning 128.
func (p *Persistence) Prefix6() int {
	if p.Prefix == 0 {
		return 128
	}
	return p.Prefix
}

// TunnelType is the encapsulation of a tunnel real server, numbered as the
// kernel's IP_VS_CONN_F_TUNNEL_TYPE_*.
type TunnelType uint8

// Tunnel types.
const (
	TunnelIPIP TunnelType = 0
	TunnelGUE  TunnelType = 1
	TunnelGRE  TunnelType = 2
)

// String returns the name ipvsadm uses.
func (t TunnelType) String() string {
	switch t {
	case TunnelIPIP:
		return "ipip"
	case TunnelGUE:
		return "gue"
	case TunnelGRE:
		return "gre"
	}
	return fmt.Sprintf("TunnelType(%d)", uint8(t))
}

// TunnelChecksum is the checksum mode of a GUE or GRE tunnel, numbered as
// ipvsadm indexes its --tun-nocsum/--tun-csum/--tun-remcsum options.
type TunnelChecksum uint8

// Tunnel checksum modes.
const (
	TunnelNoChecksum     TunnelChecksum = 0
	TunnelChecksumOn     TunnelChecksum = 1
	TunnelRemoteChecksum TunnelChecksum = 2
)

// String returns the configuration name of the mode.
func (c TunnelChecksum) String() string {
	switch c {
	case TunnelNoChecksum:
		return "nocsum"
	case TunnelChecksumOn:
		return "csum"
	case TunnelRemoteChecksum:
		return "remcsum"
	}
	return fmt.Sprintf("TunnelChecksum(%d)", uint8(c))
}

// RealServer is one destination of a service.
type RealServer struct {
	// Address of the real server. When the configuration omits the port it
	// is the service port.
	Address netip.AddrPort
	// Weight is 0..65535 (default 1); 0 quiesces the server.
	Weight int
	// Forward is dest.Masq, dest.Route (default) or dest.Tunnel.
	Forward        dest.Method
	TunnelType     TunnelType
	TunnelPort     uint16 // GUE only
	TunnelChecksum TunnelChecksum
	// UpperThreshold and LowerThreshold bound active+inactive connections
	// (0 = no limit). ipvsadm -S does not save them.
	UpperThreshold int
	LowerThreshold int
}

// MaxThreshold is the largest connection threshold ipvsadm accepts (INT_MAX).
const MaxThreshold = 1<<31 - 1

// CheckType is the kind of health check.
type CheckType string

// Health check types.
const (
	CheckTCP     CheckType = "tcp"
	CheckHTTP    CheckType = "http"
	CheckHTTPS   CheckType = "https"
	CheckCommand CheckType = "command"
)

// FailureAction says what happens to a real server that fails its check.
type FailureAction string

// Failure actions.
const (
	// Quiesce sets the weight to 0: persistent clients keep their server,
	// new clients go elsewhere.
	Quiesce FailureAction = "quiesce"
	// Remove deletes the destination: its connections are dropped.
	Remove FailureAction = "remove"
)

// HealthCheck probes every real server of a service.
type HealthCheck struct {
	Type CheckType
	// Port overrides the real server's port (0: the real server's port).
	Port     int
	Interval time.Duration // default 2s
	Timeout  time.Duration // default 1s, at most Interval
	Rise     int           // successes to become healthy, default 2
	Fall     int           // failures to become unhealthy, default 3
	// Path, ExpectStatus and ExpectBody apply to http and https checks
	// only; the parser defaults them to "/" and 200 for those types.
	// ExpectBody is a substring of the response body.
	Path         string
	ExpectStatus int
	ExpectBody   string
	// Command runs through /bin/sh for command checks, with LBHA_RS_ADDR
	// and LBHA_RS_PORT set.
	Command   string
	OnFailure FailureAction // default quiesce
}

// Defaults of the configuration, as Default and the parser apply them.
const (
	DefaultPriority   = 100
	DefaultDataDir    = "/var/lib/lbha"
	DefaultRaftPort   = 7000
	DefaultGossipPort = 7946
	DefaultAPIPort    = 7001
	DefaultSocket     = "/run/lbha/lbha.sock"
	DefaultSyncPort   = 8848
	DefaultScheduler  = "wlc"
	DefaultWeight     = 1
)

// DefaultSyncGroup is the kernel's sync multicast group.
var DefaultSyncGroup = netip.AddrFrom4([4]byte{224, 0, 0, 81})

// Default returns a configuration with every default filled in and no
// node name, role, peers, VIPs or services.
func Default() *Config {
	return &Config{
		Node: Node{
			Priority: DefaultPriority,
			DataDir:  DefaultDataDir,
		},
		Cluster: Cluster{
			RaftPort:   DefaultRaftPort,
			GossipPort: DefaultGossipPort,
			APIPort:    DefaultAPIPort,
			Timing: Timing{
				Heartbeat: 100 * time.Millisecond,
				Election:  100 * time.Millisecond,
				Lease:     50 * time.Millisecond,
			},
			Preempt: true,
		},
		API:       API{Socket: DefaultSocket},
		Dataplane: DataplaneAuto,
		DataplaneOptions: DataplaneOptions{
			OnStandby:    StandbyClose,
			DrainTimeout: 30 * time.Second,
		},
		Sync: Sync{
			Group:         DefaultSyncGroup,
			Port:          DefaultSyncPort,
			TTL:           1,
			FlushInterval: 5 * time.Millisecond,
			Version:       1,
		},
	}
}

// DefaultService returns a service with the ipvsadm defaults and no
// identity.
func DefaultService() Service { return Service{Scheduler: DefaultScheduler} }

// DefaultRealServer returns a real server with ipvsadm's defaults: weight
// 1, direct routing.
func DefaultRealServer() RealServer {
	return RealServer{Weight: DefaultWeight, Forward: dest.Route}
}

// DefaultPersistence returns a persistence block as a bare ipvsadm -p sets
// it. The netmask is left to the service's family.
func DefaultPersistence() Persistence {
	return Persistence{Timeout: DefaultPersistenceTimeout}
}

// DefaultHealthCheck returns a health check's defaults, without a type.
func DefaultHealthCheck() HealthCheck {
	return HealthCheck{
		Interval:  2 * time.Second,
		Timeout:   time.Second,
		Rise:      2,
		Fall:      3,
		OnFailure: Quiesce,
	}
}

// DefaultLocalCheck returns a local check's defaults.
func DefaultLocalCheck() LocalCheck {
	return LocalCheck{Interval: 2 * time.Second, Timeout: time.Second}
}
