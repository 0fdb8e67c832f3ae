package config

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"net/netip"

	"gopkg.in/yaml.v3"

	"github.com/lbha/lbha/dest"
)

// Marshal encodes a configuration as YAML that Parse reads back to the same
// model. Settings equal to their defaults are left out, so the output shows
// only what differs.
func Marshal(c *Config) ([]byte, error) {
	return encode(marshalConfig(c))
}

// MarshalServices encodes services as a YAML document with a single
// "services" key, readable by ParseServices and mergeable into a
// configuration.
func MarshalServices(svcs []Service) ([]byte, error) {
	m := newMap()
	if len(svcs) == 0 {
		put(m, "services", &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle})
	} else {
		put(m, "services", marshalServices(svcs))
	}
	return encode(m)
}

func encode(n *yaml.Node) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("config: encode: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: encode: %w", err)
	}
	return buf.Bytes(), nil
}

func newMap() *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode} }

func put(m *yaml.Node, k string, v *yaml.Node) {
	m.Content = append(m.Content, strNode(k), v)
}

// putMap adds a mapping unless it is empty.
func putMap(m *yaml.Node, k string, v *yaml.Node) {
	if len(v.Content) > 0 {
		put(m, k, v)
	}
}

// strNode is a string scalar; the encoder quotes values that would read
// back as another type. Strings with control characters are double-quoted:
// yaml.v3 writes some of them (a lone newline) as block scalars that do not
// read back the same.
func strNode(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	if strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f || !unicode.IsPrint(r) && r != ' ' }) >= 0 {
		n.Style = yaml.DoubleQuotedStyle
	}
	return n
}

func intNode(v int64) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatInt(v, 10)}
}

func boolNode(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}

func putStr(m *yaml.Node, k, v, def string) {
	if v != def {
		put(m, k, strNode(v))
	}
}

func putInt(m *yaml.Node, k string, v, def int) {
	if v != def {
		put(m, k, intNode(int64(v)))
	}
}

func putDur(m *yaml.Node, k string, v, def time.Duration) {
	if v != def {
		put(m, k, strNode(v.String()))
	}
}

func strSeq(ss []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode}
	for _, s := range ss {
		n.Content = append(n.Content, strNode(s))
	}
	return n
}

func marshalConfig(c *Config) *yaml.Node {
	def := Default()
	root := newMap()

	node := newMap()
	putStr(node, "name", c.Node.Name, "")
	putStr(node, "role", string(c.Node.Role), "")
	defPrio := DefaultPriority
	if c.Node.Role == RoleWitness {
		defPrio = 0
	}
	putInt(node, "priority", c.Node.Priority, defPrio)
	putStr(node, "data_dir", c.Node.DataDir, def.Node.DataDir)
	if c.Node.BindAddress.IsValid() {
		put(node, "bind_address", strNode(c.Node.BindAddress.String()))
	}
	putMap(root, "node", node)

	cl, dcl := &c.Cluster, &def.Cluster
	cm := newMap()
	if len(cl.Peers) > 0 {
		peers := &yaml.Node{Kind: yaml.SequenceNode}
		for _, p := range cl.Peers {
			pm := newMap()
			putStr(pm, "name", p.Name, "")
			if p.Address.IsValid() {
				put(pm, "address", strNode(p.Address.String()))
			}
			putStr(pm, "role", string(p.Role), "")
			peers.Content = append(peers.Content, pm)
		}
		put(cm, "peers", peers)
	}
	putInt(cm, "raft_port", cl.RaftPort, dcl.RaftPort)
	putInt(cm, "gossip_port", cl.GossipPort, dcl.GossipPort)
	putInt(cm, "api_port", cl.APIPort, dcl.APIPort)
	tm := newMap()
	putDur(tm, "heartbeat", cl.Timing.Heartbeat, dcl.Timing.Heartbeat)
	putDur(tm, "election", cl.Timing.Election, dcl.Timing.Election)
	putDur(tm, "lease", cl.Timing.Lease, dcl.Timing.Lease)
	putMap(cm, "timing", tm)
	if cl.Preempt != dcl.Preempt {
		put(cm, "preempt", boolNode(cl.Preempt))
	}
	putDur(cm, "preempt_delay", cl.PreemptDelay, 0)
	if len(cl.TrackInterfaces) > 0 {
		put(cm, "track_interfaces", strSeq(cl.TrackInterfaces))
	}
	if len(cl.CheckCommands) > 0 {
		seq := &yaml.Node{Kind: yaml.SequenceNode}
		dcc := DefaultLocalCheck()
		for _, cc := range cl.CheckCommands {
			m := newMap()
			putStr(m, "name", cc.Name, "")
			putStr(m, "command", cc.Command, "")
			putDur(m, "interval", cc.Interval, dcc.Interval)
			putDur(m, "timeout", cc.Timeout, dcc.Timeout)
			seq.Content = append(seq.Content, m)
		}
		put(cm, "check_commands", seq)
	}
	putStr(cm, "notify_command", cl.NotifyCommand, "")
	putStr(cm, "gossip_key_file", cl.GossipKeyFile, "")
	if cl.TLS != nil {
		m := newMap()
		putStr(m, "cert_file", cl.TLS.CertFile, "")
		putStr(m, "key_file", cl.TLS.KeyFile, "")
		putStr(m, "ca_file", cl.TLS.CAFile, "")
		put(cm, "tls", m) // even empty: presence is meaningful
	}
	putMap(root, "cluster", cm)

	am := newMap()
	putStr(am, "socket", c.API.Socket, def.API.Socket)
	putStr(am, "metrics_address", c.API.MetricsAddress, "")
	putStr(am, "tcp_address", c.API.TCPAddress, "")
	putStr(am, "token_file", c.API.TokenFile, "")
	putMap(root, "api", am)

	putStr(root, "dataplane", string(c.Dataplane), string(def.Dataplane))
	om := newMap()
	if c.DataplaneOptions.ExpireQuiescentTemplate {
		put(om, "expire_quiescent_template", boolNode(true))
	}
	putStr(om, "on_standby", string(c.DataplaneOptions.OnStandby), string(def.DataplaneOptions.OnStandby))
	putDur(om, "drain_timeout", c.DataplaneOptions.DrainTimeout, def.DataplaneOptions.DrainTimeout)
	putMap(root, "dataplane_options", om)

	if len(c.VIPs) > 0 {
		seq := &yaml.Node{Kind: yaml.SequenceNode}
		for _, v := range c.VIPs {
			m := newMap()
			if v.Address.IsValid() {
				put(m, "address", strNode(v.Address.String()))
			}
			putStr(m, "interface", v.Interface, "")
			seq.Content = append(seq.Content, m)
		}
		put(root, "vips", seq)
	}

	s, ds := &c.Sync, &def.Sync
	sm := newMap()
	putStr(sm, "interface", s.Interface, "")
	if s.Group != ds.Group && s.Group.IsValid() {
		put(sm, "group", strNode(s.Group.String()))
	}
	putInt(sm, "port", s.Port, ds.Port)
	putInt(sm, "syncid", s.SyncID, 0)
	putInt(sm, "maxlen", s.MaxLen, 0)
	putInt(sm, "ttl", s.TTL, ds.TTL)
	putStr(sm, "auth_key_file", s.AuthKeyFile, "")
	putDur(sm, "flush_interval", s.FlushInterval, ds.FlushInterval)
	putInt(sm, "version", s.Version, ds.Version)
	putMap(root, "sync", sm)

	if len(c.Services) > 0 {
		put(root, "services", marshalServices(c.Services))
	}
	return root
}

func marshalServices(svcs []Service) *yaml.Node {
	seq := &yaml.Node{Kind: yaml.SequenceNode}
	for i := range svcs {
		seq.Content = append(seq.Content, marshalService(&svcs[i]))
	}
	return seq
}

func marshalService(s *Service) *yaml.Node {
	m := newMap()
	putStr(m, "name", s.Name, "")
	if s.FWMark != 0 {
		put(m, "fwmark", intNode(int64(s.FWMark)))
		if s.Family == Inet6 {
			put(m, "family", strNode(Inet6.String()))
		}
	} else {
		if s.Protocol != 0 {
			put(m, "protocol", strNode(s.Protocol.String()))
		}
		if s.Address.IsValid() {
			put(m, "address", strNode(s.Address.String()))
		}
	}
	putStr(m, "scheduler", s.Scheduler, DefaultScheduler)
	if names := s.SchedFlags.Names(s.Scheduler); len(names) > 0 {
		seq := strSeq(names)
		seq.Style = yaml.FlowStyle
		put(m, "scheduler_flags", seq)
	}
	if p := s.Persistence; p != nil {
		pm := newMap()
		if p.Timeout != DefaultPersistenceTimeout {
			if p.Timeout%time.Second == 0 {
				put(pm, "timeout", intNode(int64(p.Timeout/time.Second)))
			} else {
				put(pm, "timeout", strNode(p.Timeout.String()))
			}
		}
		if p.Netmask.IsValid() && p.Netmask != HostMask4 {
			put(pm, "netmask", strNode(p.Netmask.String()))
		}
		if p.Prefix != 0 && p.Prefix != 128 {
			put(pm, "prefix", intNode(int64(p.Prefix)))
		}
		putStr(pm, "engine", p.Engine, "")
		put(m, "persistence", pm) // even empty: {} means persistent
	}
	if s.OnePacket {
		put(m, "one_packet", boolNode(true))
	}
	if len(s.RealServers) > 0 {
		seq := &yaml.Node{Kind: yaml.SequenceNode}
		for _, rs := range s.RealServers {
			seq.Content = append(seq.Content, marshalRealServer(s, &rs))
		}
		put(m, "real_servers", seq)
	}
	if hc := s.HealthCheck; hc != nil {
		put(m, "health_check", marshalHealthCheck(hc))
	}
	if s.SorryServer.IsValid() {
		put(m, "sorry_server", strNode(hostPort(s, s.SorryServer)))
	}
	return m
}

// hostPort writes an address the parser reads back unchanged: a fwmark
// service's port-less real servers stay port-less, everything else is
// written in full.
func hostPort(s *Service, ap netip.AddrPort) string {
	if s.FWMark != 0 && ap.Port() == 0 {
		return ap.Addr().String()
	}
	return ap.String()
}

func marshalRealServer(s *Service, rs *RealServer) *yaml.Node {
	m := newMap()
	if rs.Address.IsValid() {
		put(m, "address", strNode(hostPort(s, rs.Address)))
	}
	putInt(m, "weight", rs.Weight, DefaultWeight)
	if rs.Forward != dest.Route {
		for i, v := range forwardVals {
			if v == rs.Forward {
				put(m, "forward", strNode(forwardNames[i]))
			}
		}
	}
	if rs.TunnelType != TunnelIPIP {
		put(m, "tunnel_type", strNode(rs.TunnelType.String()))
	}
	if rs.TunnelPort != 0 {
		put(m, "tunnel_port", intNode(int64(rs.TunnelPort)))
	}
	if rs.TunnelChecksum != TunnelNoChecksum {
		put(m, "tunnel_checksum", strNode(rs.TunnelChecksum.String()))
	}
	putInt(m, "upper_threshold", rs.UpperThreshold, 0)
	putInt(m, "lower_threshold", rs.LowerThreshold, 0)
	return m
}

func marshalHealthCheck(hc *HealthCheck) *yaml.Node {
	def := DefaultHealthCheck()
	m := newMap()
	putStr(m, "type", string(hc.Type), "")
	putInt(m, "port", hc.Port, 0)
	putDur(m, "interval", hc.Interval, def.Interval)
	putDur(m, "timeout", hc.Timeout, def.Timeout)
	putInt(m, "rise", hc.Rise, def.Rise)
	putInt(m, "fall", hc.Fall, def.Fall)
	defPath, defStatus := "", 0
	if hc.Type == CheckHTTP || hc.Type == CheckHTTPS {
		defPath, defStatus = "/", 200
	}
	putStr(m, "path", hc.Path, defPath)
	putInt(m, "expect_status", hc.ExpectStatus, defStatus)
	putStr(m, "expect_body", hc.ExpectBody, "")
	putStr(m, "command", hc.Command, "")
	putStr(m, "on_failure", string(hc.OnFailure), string(def.OnFailure))
	return m
}
