package config

import (
	"math/bits"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lbha/lbha/dest"
)

// Validate checks the whole configuration, fields and the relations
// between them, and returns a *ValidationError listing every problem, or
// nil. Problems carry a model path and no file position.
func (c *Config) Validate() error {
	var ps problems
	c.validate(&ps)
	return ps.err()
}

// ValidateServices checks services alone, as Validate would check them
// inside a configuration.
func ValidateServices(svcs []Service) error {
	var ps problems
	validateServices(&ps, "services", svcs)
	return ps.err()
}

func (c *Config) validate(ps *problems) {
	c.validateNode(ps)
	c.validateCluster(ps)
	validateAPI(ps, &c.API, c.Cluster.TLS != nil)
	switch c.Dataplane {
	case DataplaneAuto, DataplaneKernel, DataplaneUserspace:
	default:
		ps.add("dataplane", "unknown dataplane %q (want auto, kernel or userspace)", c.Dataplane)
	}
	if c.DataplaneOptions.DrainTimeout < 0 {
		ps.add("dataplane_options.drain_timeout", "must not be negative")
	}
	validateVIPs(ps, c.VIPs)
	c.validateSync(ps)
	validateServices(ps, "services", c.Services)
	if c.Node.Role == RoleWitness {
		// A witness only votes: it must never be able to hold a VIP or
		// forward traffic, so settings that would make it do so are errors
		// rather than ignored.
		if len(c.VIPs) > 0 {
			ps.add("vips", "a witness holds no VIPs")
		}
		if len(c.Services) > 0 {
			ps.add("services", "a witness runs no dataplane and has no services")
		}
		if c.Sync.Interface != "" {
			ps.add("sync.interface", "a witness takes no part in connection sync")
		}
		if len(c.Cluster.TrackInterfaces) > 0 {
			ps.add("cluster.track_interfaces", "a witness never becomes master: nothing to track")
		}
	}
}

func (c *Config) validateNode(ps *problems) {
	n := &c.Node
	if n.Name == "" {
		ps.add("node.name", "is required")
	} else if strings.ContainsAny(n.Name, " \t\r\n") {
		ps.add("node.name", "%q contains white space", n.Name)
	}
	switch n.Role {
	case RoleDirector:
		if n.Priority < 1 || n.Priority > 255 {
			ps.add("node.priority", "%d is out of range 1..255", n.Priority)
		}
	case RoleWitness:
		if n.Priority != 0 {
			ps.add("node.priority", "applies to directors only; a witness is never master")
		}
	case "":
		ps.add("node.role", "is required (director or witness)")
	default:
		ps.add("node.role", "unknown role %q (want director or witness)", n.Role)
	}
	if n.DataDir == "" {
		ps.add("node.data_dir", "is required")
	} else if !filepath.IsAbs(n.DataDir) {
		ps.add("node.data_dir", "%q is not an absolute path", n.DataDir)
	}
	if n.BindAddress.IsValid() {
		checkUnicast(ps, "node.bind_address", n.BindAddress)
	} else if len(c.Cluster.Peers) > 0 {
		ps.add("node.bind_address", "is required when the cluster has peers")
	}
}

func checkUnicast(ps *problems, path string, a netip.Addr) {
	switch {
	case a.Zone() != "":
		ps.add(path, "%s: zones are not supported", a)
	case a.IsUnspecified(), a.IsMulticast():
		ps.add(path, "%s is not a unicast address", a)
	}
}

func (c *Config) validateCluster(ps *problems) {
	cl := &c.Cluster
	names := map[string]int{}
	addrs := map[netip.Addr]int{}
	directors, self := 0, -1
	for i, p := range cl.Peers {
		path := index("cluster.peers", i)
		if p.Name == "" {
			ps.add(field(path, "name"), "is required")
		} else if j, dup := names[p.Name]; dup {
			ps.add(field(path, "name"), "peer %q already defined as peers[%d]", p.Name, j)
		} else {
			names[p.Name] = i
		}
		if !p.Address.IsValid() {
			ps.add(field(path, "address"), "is required")
		} else if j, dup := addrs[p.Address]; dup {
			ps.add(field(path, "address"), "%s is already the address of peers[%d]", p.Address, j)
		} else {
			addrs[p.Address] = i
			checkUnicast(ps, field(path, "address"), p.Address)
		}
		switch p.Role {
		case RoleDirector:
			directors++
		case RoleWitness:
		case "":
			ps.add(field(path, "role"), "is required (director or witness)")
		default:
			ps.add(field(path, "role"), "unknown role %q (want director or witness)", p.Role)
		}
		if p.Name == c.Node.Name && p.Name != "" {
			self = i
		}
	}
	if len(cl.Peers) > 0 {
		switch {
		case c.Node.Name != "" && self < 0:
			ps.add("cluster.peers", "does not list this node (%q)", c.Node.Name)
		case self >= 0:
			p := cl.Peers[self]
			if c.Node.Role != "" && p.Role != "" && p.Role != c.Node.Role {
				ps.add(field(index("cluster.peers", self), "role"), "is %s but node.role is %s", p.Role, c.Node.Role)
			}
			if c.Node.BindAddress.IsValid() && p.Address.IsValid() && p.Address != c.Node.BindAddress {
				ps.add(field(index("cluster.peers", self), "address"), "is %s but node.bind_address is %s", p.Address, c.Node.BindAddress)
			}
		}
		if directors == 0 {
			ps.add("cluster.peers", "lists no director")
		}
		// Two voters (a pair without a witness) are allowed but cannot
		// survive a failure; the agent says so loudly at start and in
		// lbha status (cluster.FaultTolerance) rather than refusing.
	}
	checkPort(ps, "cluster.raft_port", cl.RaftPort)
	checkPort(ps, "cluster.gossip_port", cl.GossipPort)
	checkPort(ps, "cluster.api_port", cl.APIPort)
	if cl.RaftPort == cl.GossipPort && cl.RaftPort != 0 {
		ps.add("cluster.gossip_port", "must differ from raft_port (both use TCP)")
	}
	if cl.APIPort != 0 && (cl.APIPort == cl.RaftPort || cl.APIPort == cl.GossipPort) {
		ps.add("cluster.api_port", "must differ from raft_port and gossip_port")
	}
	t := cl.Timing
	ok := true
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"heartbeat", t.Heartbeat}, {"election", t.Election}, {"lease", t.Lease}} {
		if d.v <= 0 {
			ps.add(field("cluster.timing", d.name), "must be positive")
			ok = false
		}
	}
	if ok {
		// The master may act only while its lease is valid; a lease as long
		// as the heartbeat would let an old master act after a new one is
		// elected.
		if t.Lease >= t.Heartbeat {
			ps.add("cluster.timing.lease", "%s must be shorter than heartbeat (%s)", t.Lease, t.Heartbeat)
		}
		if t.Heartbeat > t.Election {
			ps.add("cluster.timing.heartbeat", "%s must not exceed election (%s)", t.Heartbeat, t.Election)
		}
	}
	if cl.PreemptDelay < 0 {
		ps.add("cluster.preempt_delay", "must not be negative")
	}
	seen := map[string]bool{}
	for i, name := range cl.TrackInterfaces {
		path := index("cluster.track_interfaces", i)
		checkIfName(ps, path, name)
		if seen[name] {
			ps.add(path, "interface %q listed twice", name)
		}
		seen[name] = true
	}
	for i, cc := range cl.CheckCommands {
		path := index("cluster.check_commands", i)
		if strings.TrimSpace(cc.Command) == "" {
			ps.add(field(path, "command"), "is required")
		}
		checkIntervalTimeout(ps, path, cc.Interval, cc.Timeout)
	}
	if cl.TLS != nil {
		if cl.TLS.CertFile == "" {
			ps.add("cluster.tls.cert_file", "is required with tls")
		}
		if cl.TLS.KeyFile == "" {
			ps.add("cluster.tls.key_file", "is required with tls")
		}
	}
}

func checkIntervalTimeout(ps *problems, path string, interval, timeout time.Duration) {
	if interval <= 0 {
		ps.add(field(path, "interval"), "must be positive")
	}
	if timeout <= 0 {
		ps.add(field(path, "timeout"), "must be positive")
	} else if interval > 0 && timeout > interval {
		ps.add(field(path, "timeout"), "%s exceeds the interval (%s)", timeout, interval)
	}
}

func checkPort(ps *problems, path string, port int) {
	if port < 1 || port > 65535 {
		ps.add(path, "%d is out of range 1..65535", port)
	}
}

// checkIfName applies the kernel's rules for interface names (dev_valid_name).
func checkIfName(ps *problems, path, name string) {
	switch {
	case name == "":
		ps.add(path, "interface name is empty")
	case len(name) > 15:
		ps.add(path, "interface name %q is longer than 15 bytes", name)
	case name == "." || name == "..", strings.ContainsAny(name, "/: \t\r\n"):
		ps.add(path, "%q is not a valid interface name", name)
	}
}

func validateAPI(ps *problems, a *API, tlsOn bool) {
	if a.Socket == "" {
		ps.add("api.socket", "is required")
	} else if !filepath.IsAbs(a.Socket) {
		ps.add("api.socket", "%q is not an absolute path", a.Socket)
	}
	if a.MetricsAddress != "" {
		_, port, err := net.SplitHostPort(a.MetricsAddress)
		if err != nil {
			ps.add("api.metrics_address", "%q is not host:port", a.MetricsAddress)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			ps.add("api.metrics_address", "%q: port must be 1..65535", a.MetricsAddress)
		}
	}
	if a.TCPAddress != "" {
		_, port, err := net.SplitHostPort(a.TCPAddress)
		if err != nil {
			ps.add("api.tcp_address", "%q is not host:port", a.TCPAddress)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			ps.add("api.tcp_address", "%q: port must be 1..65535", a.TCPAddress)
		}
		if !tlsOn {
			ps.add("api.tcp_address", "needs cluster.tls: the TCP operator API is served over TLS only")
		}
		if a.TokenFile == "" {
			ps.add("api.tcp_address", "needs api.token_file: TCP clients authenticate with a bearer token")
		}
	}
}

func validateVIPs(ps *problems, vips []VIP) {
	seen := map[netip.Addr]int{}
	for i, v := range vips {
		path := index("vips", i)
		if !v.Address.IsValid() {
			ps.add(field(path, "address"), "is required")
		} else {
			a := v.Address.Addr()
			checkUnicast(ps, field(path, "address"), a)
			if j, dup := seen[a]; dup {
				ps.add(field(path, "address"), "VIP %s already defined as vips[%d]", a, j)
			} else {
				seen[a] = i
			}
		}
		checkIfName(ps, field(path, "interface"), v.Interface)
	}
}

func (c *Config) validateSync(ps *problems) {
	s := &c.Sync
	if s.Interface != "" {
		checkIfName(ps, "sync.interface", s.Interface)
	}
	if !s.Group.IsValid() {
		ps.add("sync.group", "is required")
	} else if !s.Group.IsMulticast() {
		ps.add("sync.group", "%s is not a multicast address", s.Group)
	}
	checkPort(ps, "sync.port", s.Port)
	if s.SyncID < 0 || s.SyncID > 255 {
		ps.add("sync.syncid", "%d is out of range 0..255", s.SyncID)
	}
	// ipvsadm's limit: 65535 minus IPv4 and UDP headers.
	if s.MaxLen < 0 || s.MaxLen > 65507 {
		ps.add("sync.maxlen", "%d is out of range 1..65507 (0 for the kernel default)", s.MaxLen)
	}
	if s.TTL < 1 || s.TTL > 255 {
		ps.add("sync.ttl", "%d is out of range 1..255", s.TTL)
	}
	if s.FlushInterval <= 0 {
		ps.add("sync.flush_interval", "must be positive")
	}
	switch s.Version {
	case 0:
		for i := range c.Services {
			if c.Services[i].AddrFamily() == Inet6 {
				ps.add("sync.version", "version 0 carries IPv4 connections only, but services[%d] is IPv6", i)
				break
			}
		}
	case 1:
	default:
		ps.add("sync.version", "%d is not a sync version (want 0 or 1)", s.Version)
	}
}

func validateServices(ps *problems, path string, svcs []Service) {
	keys := map[string]int{}
	names := map[string]int{}
	for i := range svcs {
		s := &svcs[i]
		sp := index(path, i)
		validateService(ps, sp, s)
		if s.Name != "" {
			if j, dup := names[s.Name]; dup {
				ps.add(field(sp, "name"), "service name %q already used by services[%d]", s.Name, j)
			} else {
				names[s.Name] = i
			}
		}
		if s.FWMark == 0 && !s.Address.IsValid() {
			continue // reported already; no key to compare
		}
		k := s.Key()
		if j, dup := keys[k]; dup {
			at := "address"
			if s.FWMark != 0 {
				at = "fwmark"
			}
			ps.add(field(sp, at), "duplicate service %s, already defined as services[%d]", k, j)
		} else {
			keys[k] = i
		}
	}
}

func validateService(ps *problems, sp string, s *Service) {
	fam := s.AddrFamily()
	switch {
	case s.FWMark != 0 && s.Address.IsValid():
		ps.add(field(sp, "fwmark"), "a service has either an address or a fwmark, not both")
	case s.FWMark != 0:
		if s.Protocol != 0 {
			ps.add(field(sp, "protocol"), "does not apply to a fwmark service")
		}
		if s.Family != 0 && s.Family != Inet && s.Family != Inet6 {
			ps.add(field(sp, "family"), "unknown family %d", s.Family)
		}
	case s.Address.IsValid():
		switch s.Protocol {
		case TCP, UDP, SCTP:
		case 0:
			ps.add(field(sp, "protocol"), "is required (tcp, udp or sctp)")
		default:
			ps.add(field(sp, "protocol"), "unknown protocol %d", s.Protocol)
		}
		a := s.Address.Addr()
		if a.Zone() != "" {
			ps.add(field(sp, "address"), "%s: zones are not supported", a)
		} else if a.IsMulticast() {
			ps.add(field(sp, "address"), "%s is a multicast address", a)
		}
		if s.Address.Port() == 0 && s.Persistence == nil {
			// ipvsadm: "Zero port specified for non-persistent service";
			// the kernel would drop such traffic.
			ps.add(field(sp, "address"), "port 0 (all ports) requires persistence")
		}
	default:
		ps.add(field(sp, "address"), "is required (or fwmark)")
	}

	sched := s.Scheduler
	switch {
	case sched == "":
		ps.add(field(sp, "scheduler"), "is required")
	case !KnownScheduler(sched):
		ps.add(field(sp, "scheduler"), "unknown scheduler %q (want one of %s)", sched, knownNames(Schedulers))
	}
	if s.SchedFlags&^SchedFlagsMask != 0 {
		ps.add(field(sp, "scheduler_flags"), "unknown flag bits %#x", uint32(s.SchedFlags&^SchedFlagsMask))
	}
	if (sched == "sh" || sched == "mh") && s.SchedFlags&SchedFlag3 != 0 {
		// ipvsadm has no name for the third bit with sh or mh and cannot
		// save it.
		ps.add(field(sp, "scheduler_flags"), "flag-3 is not valid for scheduler %s", sched)
	}

	if p := s.Persistence; p != nil {
		pp := field(sp, "persistence")
		switch {
		case p.Timeout < time.Second:
			ps.add(field(pp, "timeout"), "%s is below the minimum of 1s", p.Timeout)
		case p.Timeout > MaxPersistenceTimeout:
			ps.add(field(pp, "timeout"), "%s exceeds the maximum of 31 days (2678400 s)", p.Timeout)
		case p.Timeout%time.Second != 0:
			ps.add(field(pp, "timeout"), "%s is not a whole number of seconds", p.Timeout)
		}
		if fam == Inet {
			if p.Prefix != 0 {
				ps.add(field(pp, "prefix"), "applies to IPv6 services; use netmask for an IPv4 service")
			}
			if p.Netmask.IsValid() && !contiguousMask(p.Netmask) {
				ps.add(field(pp, "netmask"), "%s is not a contiguous IPv4 netmask", p.Netmask)
			}
		} else {
			if p.Netmask.IsValid() {
				ps.add(field(pp, "netmask"), "applies to IPv4 services; use prefix (1..128) for an IPv6 service")
			}
			if p.Prefix < 0 || p.Prefix > 128 {
				ps.add(field(pp, "prefix"), "%d is out of range 1..128", p.Prefix)
			}
		}
		switch p.Engine {
		case "":
		case "sip":
			// The SIP engine parses UDP payloads only (ip_vs_pe_sip.c
			// fill_param); a fwmark service may still carry UDP.
			if s.FWMark == 0 && s.Protocol != UDP && s.Protocol != 0 {
				ps.add(field(pp, "engine"), "sip reads UDP payloads only, but the service is %s", s.Protocol)
			}
		default:
			ps.add(field(pp, "engine"), "unknown persistence engine %q (want sip)", p.Engine)
		}
	}
	if s.OnePacket && s.FWMark == 0 && (s.Protocol == TCP || s.Protocol == SCTP) {
		ps.add(field(sp, "one_packet"), "one-packet scheduling is for UDP and fwmark services, not %s", s.Protocol)
	}

	rsPath := field(sp, "real_servers")
	seen := map[netip.AddrPort]int{}
	for j := range s.RealServers {
		validateRealServer(ps, index(rsPath, j), s, &s.RealServers[j], fam)
		rs := &s.RealServers[j]
		if !rs.Address.IsValid() {
			continue
		}
		if k, dup := seen[rs.Address]; dup {
			ps.add(field(index(rsPath, j), "address"), "duplicate real server %s, already real_servers[%d]", rs.Address, k)
		} else {
			seen[rs.Address] = j
		}
	}

	if hc := s.HealthCheck; hc != nil {
		validateHealthCheck(ps, field(sp, "health_check"), s, hc)
	}
	if s.SorryServer.IsValid() {
		a := s.SorryServer.Addr()
		if s.Address.IsValid() || s.FWMark != 0 {
			if FamilyOf(a) != fam {
				ps.add(field(sp, "sorry_server"), "%s is %s but the service is %s", a, FamilyOf(a), fam)
			}
		}
		checkUnicast(ps, field(sp, "sorry_server"), a)
	}
}

func contiguousMask(m netip.Addr) bool {
	b := m.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	// A contiguous mask is ones followed by zeros: its complement plus one
	// is a power of two (or zero for 255.255.255.255).
	return bits.OnesCount32(^v+1) <= 1
}

func validateRealServer(ps *problems, rp string, s *Service, rs *RealServer, fam Family) {
	ap := field(rp, "address")
	if !rs.Address.IsValid() {
		ps.add(ap, "is required")
	} else {
		a := rs.Address.Addr()
		checkUnicast(ps, ap, a)
		if (s.Address.IsValid() || s.FWMark != 0) && FamilyOf(a) != fam {
			// ipvsadm allows this for tunnels, but the kernel refuses to
			// start a sync daemon while any service mixes families.
			ps.add(ap, "%s is %s but the service is %s; the kernel cannot sync services with mixed families", a, FamilyOf(a), fam)
		}
		if s.FWMark == 0 && s.Address.IsValid() && rs.Forward != dest.Masq && rs.Address.Port() != s.Address.Port() {
			ps.add(ap, "port %d differs from the service port %d; only masq forwarding can change the port", rs.Address.Port(), s.Address.Port())
		}
	}
	if rs.Weight < 0 || rs.Weight > dest.MaxWeight {
		ps.add(field(rp, "weight"), "%d is out of range 0..%d", rs.Weight, dest.MaxWeight)
	}
	switch rs.Forward {
	case dest.Masq, dest.Route, dest.Tunnel:
	default:
		ps.add(field(rp, "forward"), "%s is not a configurable forwarding method (want masq, route or tunnel)", rs.Forward)
	}
	if rs.Forward == dest.Tunnel {
		switch rs.TunnelType {
		case TunnelIPIP:
			if rs.TunnelPort != 0 {
				ps.add(field(rp, "tunnel_port"), "applies to gue tunnels only")
			}
			if rs.TunnelChecksum != TunnelNoChecksum {
				ps.add(field(rp, "tunnel_checksum"), "ipip tunnels have no checksum option")
			}
		case TunnelGUE:
			if rs.TunnelPort == 0 {
				ps.add(field(rp, "tunnel_port"), "is required for gue tunnels")
			}
		case TunnelGRE:
			if rs.TunnelPort != 0 {
				ps.add(field(rp, "tunnel_port"), "applies to gue tunnels only")
			}
			if rs.TunnelChecksum == TunnelRemoteChecksum {
				ps.add(field(rp, "tunnel_checksum"), "remcsum is for gue tunnels only")
			}
		default:
			ps.add(field(rp, "tunnel_type"), "unknown tunnel type %d", rs.TunnelType)
		}
		if rs.TunnelChecksum > TunnelRemoteChecksum {
			ps.add(field(rp, "tunnel_checksum"), "unknown checksum mode %d", rs.TunnelChecksum)
		}
	} else {
		for _, o := range []struct {
			name string
			set  bool
		}{
			{"tunnel_type", rs.TunnelType != TunnelIPIP},
			{"tunnel_port", rs.TunnelPort != 0},
			{"tunnel_checksum", rs.TunnelChecksum != TunnelNoChecksum},
		} {
			if o.set {
				ps.add(field(rp, o.name), "needs forward: tunnel (forward is %s)", strings.ToLower(rs.Forward.String()))
				break
			}
		}
	}
	thresholdOK := true
	for _, t := range []struct {
		name string
		v    int
	}{{"upper_threshold", rs.UpperThreshold}, {"lower_threshold", rs.LowerThreshold}} {
		if t.v < 0 || t.v > MaxThreshold {
			ps.add(field(rp, t.name), "%d is out of range 0..%d", t.v, MaxThreshold)
			thresholdOK = false
		}
	}
	// The kernel refuses l_threshold > u_threshold even when u is 0.
	if thresholdOK && rs.LowerThreshold > rs.UpperThreshold {
		ps.add(field(rp, "lower_threshold"), "%d is above upper_threshold (%d)", rs.LowerThreshold, rs.UpperThreshold)
	}
}

func validateHealthCheck(ps *problems, hp string, s *Service, hc *HealthCheck) {
	web := hc.Type == CheckHTTP || hc.Type == CheckHTTPS
	switch hc.Type {
	case CheckTCP, CheckHTTP, CheckHTTPS:
		if hc.Command != "" {
			ps.add(field(hp, "command"), "applies to command checks only")
		}
		if hc.Port == 0 {
			for j, rs := range s.RealServers {
				if rs.Address.IsValid() && rs.Address.Port() == 0 {
					ps.add(field(hp, "port"), "is required: real_servers[%d] has no port to probe", j)
					break
				}
			}
		}
	case CheckCommand:
		if strings.TrimSpace(hc.Command) == "" {
			ps.add(field(hp, "command"), "is required for command checks")
		}
	case "":
		ps.add(field(hp, "type"), "is required (tcp, http, https or command)")
	default:
		ps.add(field(hp, "type"), "unknown check type %q (want tcp, http, https or command)", hc.Type)
	}
	if hc.Port < 0 || hc.Port > 65535 {
		ps.add(field(hp, "port"), "%d is out of range 1..65535", hc.Port)
	}
	if web {
		if !strings.HasPrefix(hc.Path, "/") {
			ps.add(field(hp, "path"), "%q does not start with /", hc.Path)
		}
		if hc.ExpectStatus < 100 || hc.ExpectStatus > 599 {
			ps.add(field(hp, "expect_status"), "%d is not an HTTP status (100..599)", hc.ExpectStatus)
		}
	} else {
		if hc.Path != "" {
			ps.add(field(hp, "path"), "applies to http and https checks only")
		}
		if hc.ExpectStatus != 0 {
			ps.add(field(hp, "expect_status"), "applies to http and https checks only")
		}
		if hc.ExpectBody != "" {
			ps.add(field(hp, "expect_body"), "applies to http and https checks only")
		}
	}
	checkIntervalTimeout(ps, hp, hc.Interval, hc.Timeout)
	if hc.Rise < 1 {
		ps.add(field(hp, "rise"), "must be at least 1")
	}
	if hc.Fall < 1 {
		ps.add(field(hp, "fall"), "must be at least 1")
	}
	switch hc.OnFailure {
	case Quiesce, Remove:
	default:
		ps.add(field(hp, "on_failure"), "unknown action %q (want quiesce or remove)", hc.OnFailure)
	}
}
