package ipvs

import (
	"encoding/binary"
	"net/netip"

	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/dest"
)

// HostMask4 is the Netmask of an IPv4 service that is not persistent, or
// persistent per client address: 255.255.255.255.
const HostMask4 = 0xFFFFFFFF

// HostPrefix6 is the Netmask of an IPv6 service that is not persistent or
// persistent per client address: the kernel refuses an IPv6 service whose
// netmask field is outside 1..128, even without persistence.
const HostPrefix6 = 128

// KeyOf returns the dataplane key of a configured service.
func KeyOf(s *config.Service) ServiceKey {
	if s.FWMark != 0 {
		return ServiceKey{Fwmark: s.FWMark, IPv6: s.AddrFamily() == config.Inet6}
	}
	return ServiceKey{Protocol: uint8(s.Protocol), Addr: s.Address.Addr(), Port: s.Address.Port()}
}

// ServiceOf returns the dataplane settings of a configured service.
func ServiceOf(s *config.Service) Service {
	out := Service{Key: KeyOf(s), Scheduler: s.Scheduler, Flags: uint32(s.SchedFlags), OnePacket: s.OnePacket}
	if out.Scheduler == "" {
		out.Scheduler = config.DefaultScheduler
	}
	v6 := s.AddrFamily() == config.Inet6
	out.Netmask = HostMask4
	if v6 {
		out.Netmask = HostPrefix6
	}
	if p := s.Persistence; p != nil {
		t := p.Timeout
		if t <= 0 {
			t = config.DefaultPersistenceTimeout
		}
		out.Timeout = uint32(t.Seconds())
		if v6 {
			out.Netmask = uint32(p.Prefix6())
		} else {
			m := p.Mask4().As4()
			out.Netmask = binary.BigEndian.Uint32(m[:])
		}
		out.PE = p.Engine
	}
	return out
}

// DestOf returns the dataplane settings of a configured real server.
func DestOf(rs *config.RealServer) Dest {
	return Dest{
		Addr:       rs.Address,
		Method:     rs.Forward,
		Weight:     rs.Weight,
		UThreshold: uint32(rs.UpperThreshold),
		LThreshold: uint32(rs.LowerThreshold),
		TunnelType: uint8(rs.TunnelType),
		TunnelPort: rs.TunnelPort,
	}
}

// Healthy reports the health verdict of a real server of a service; it is
// only asked for services with a health check.
type Healthy func(svc ServiceKey, rs netip.AddrPort) bool

// Desired turns the configured services into the state the dataplane must
// hold, given the health verdicts:
//
//   - a real server failing its check is quiesced (weight 0: persistent
//     clients stay, new ones go elsewhere) or, with on_failure: remove,
//     left out (its connections are dropped by the dataplane in time);
//   - when no real server of a service passes its check, the sorry server
//     (if any) joins with weight 1 and the forwarding method of the first
//     real server, as keepalived does.
//
// A nil healthy treats every server as healthy.
func Desired(svcs []config.Service, healthy Healthy) []ServiceState {
	out := make([]ServiceState, 0, len(svcs))
	for i := range svcs {
		s := &svcs[i]
		st := ServiceState{Service: ServiceOf(s)}
		up := 0
		for j := range s.RealServers {
			d := DestOf(&s.RealServers[j])
			ok := s.HealthCheck == nil || healthy == nil || healthy(st.Key, d.Addr)
			switch {
			case ok:
				up++
			case s.HealthCheck.OnFailure == config.Remove:
				continue
			default:
				d.Weight = 0
			}
			st.Dests = append(st.Dests, d)
		}
		if up == 0 && s.SorryServer.IsValid() && !hasDest(st.Dests, s.SorryServer) {
			method := dest.Route
			if len(s.RealServers) > 0 {
				method = s.RealServers[0].Forward
			}
			st.Dests = append(st.Dests, Dest{Addr: s.SorryServer, Method: method, Weight: 1})
		}
		out = append(out, st)
	}
	return out
}

func hasDest(ds []Dest, a netip.AddrPort) bool {
	for _, d := range ds {
		if d.Addr == a {
			return true
		}
	}
	return false
}
