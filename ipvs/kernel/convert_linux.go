//go:build linux

package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	mobyipvs "github.com/moby/ipvs"

	"github.com/lbha/lbha/dest"
	"github.com/lbha/lbha/ipvs"
)

// Service flags (IP_VS_SVC_F_*, include/uapi/linux/ip_vs.h).
const (
	svcPersistent = 0x0001
	// svcHashed is set by the kernel on every service it holds and read
	// back with the others; it is never ours to send or to compare.
	svcHashed    = 0x0002
	svcOnePacket = 0x0004
	svcSched1    = 0x0008
	svcSched2    = 0x0010
	svcSched3    = 0x0020

	svcSchedFlags = svcSched1 | svcSched2 | svcSched3
)

// maxTimeout is ipvsadm's limit on the persistence timeout (31 days): the
// kernel keeps timeout*HZ in an unsigned int, so a longer timeout would
// wrap and read back different, which the reconciler would take for drift.
const maxTimeout = 31 * 24 * 3600

// maxWeight is the largest weight State can read back: moby/ipvs v1.1.0
// parses IPVS_DEST_ATTR_WEIGHT (a u32) with native.Uint16, keeping the low
// 16 bits on little-endian machines. ipvsadm has the same limit.
const maxWeight = 65535

// family returns the address family of a service: its address's, or the
// one a fwmark service names.
func family(k ipvs.ServiceKey) uint16 {
	if (k.Fwmark != 0 && k.IPv6) || (k.Fwmark == 0 && k.Addr.Is6()) {
		return syscall.AF_INET6
	}
	return syscall.AF_INET
}

// checkAddr refuses addresses that would not reach the kernel as written:
// moby sends a v4-mapped IPv6 address as 4 bytes (net.IP.To4), and zones
// do not exist on the wire, so either would read back different.
func checkAddr(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("no address")
	case a.Is4In6():
		return fmt.Errorf("address %s is IPv4-mapped; use %s", a, a.Unmap())
	case a.Zone() != "":
		return fmt.Errorf("address %s has a zone", a)
	}
	return nil
}

// serviceKey returns the moby service that identifies k, which is all the
// kernel reads for deletions and real server commands.
func serviceKey(k ipvs.ServiceKey) (*mobyipvs.Service, error) {
	m := &mobyipvs.Service{AddressFamily: family(k)}
	if k.Fwmark != 0 {
		if k.Addr.IsValid() || k.Port != 0 || k.Protocol != 0 {
			return nil, errors.New("a fwmark service has no address, port or protocol")
		}
		m.FWMark = k.Fwmark
		return m, nil
	}
	if err := checkAddr(k.Addr); err != nil {
		return nil, err
	}
	if k.IPv6 {
		return nil, errors.New("IPv6 names the family of fwmark services only; an address service has its address's (see Canonical)")
	}
	if k.Protocol == 0 {
		return nil, errors.New("no protocol")
	}
	m.Protocol = uint16(k.Protocol)
	m.Address = net.IP(k.Addr.AsSlice())
	m.Port = k.Port
	return m, nil
}

// toService converts a service as it goes to the kernel. Flags carry the
// scheduler flags plus PERSISTENT (when Timeout > 0) and ONEPACKET; the
// netmask is encoded as moby sends it (see netmaskToMoby).
func toService(s ipvs.Service) (*mobyipvs.Service, error) {
	m, err := serviceKey(s.Key)
	if err != nil {
		return nil, err
	}
	if s.Scheduler == "" {
		return nil, errors.New("no scheduler")
	}
	if s.Flags&^svcSchedFlags != 0 {
		return nil, fmt.Errorf("flags %#x: only the scheduler flags 0x8, 0x10 and 0x20 go in Flags (persistence is Timeout, one-packet is OnePacket)", s.Flags)
	}
	if s.Timeout > maxTimeout {
		return nil, fmt.Errorf("persistence timeout %d s is over 31 days", s.Timeout)
	}
	m.SchedName = s.Scheduler
	m.PEName = s.PE
	m.Timeout = s.Timeout
	m.Flags = s.Flags
	if s.Timeout > 0 {
		m.Flags |= svcPersistent
	}
	if s.OnePacket {
		m.Flags |= svcOnePacket
	}
	v6 := m.AddressFamily == syscall.AF_INET6
	if v6 && s.Netmask > 128 {
		return nil, fmt.Errorf("IPv6 prefix length %d is over 128", s.Netmask)
	}
	m.Netmask = netmaskToMoby(v6, s.Netmask)
	return m, nil
}

// netmaskToMoby encodes ipvs.Service.Netmask for moby's Service.Netmask.
//
// The kernel keeps an IPv4 mask as a __be32 and an IPv6 prefix length as a
// plain number in the same 32 bits; it copies the attribute's four bytes
// in and out without conversion. moby writes and reads the attribute in
// native byte order. ipvs.Service.Netmask holds an IPv4 mask as its bytes
// read big-endian (255.255.255.0 is 0xffffff00), so moby must be given the
// native-endian reading of those same bytes (0x00ffffff on amd64). An IPv6
// prefix length is a number on both sides and passes unchanged; 0 means
// the default, 128, which is sent even for services that are not
// persistent because the kernel refuses an IPv6 service outside 1..128.
func netmaskToMoby(v6 bool, mask uint32) uint32 {
	if v6 {
		if mask == 0 {
			return 128
		}
		return mask
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], mask)
	return binary.NativeEndian.Uint32(b[:])
}

// netmaskFromMoby is the inverse of netmaskToMoby, except that an IPv6
// prefix length reads back as the kernel holds it (128 for a default).
func netmaskFromMoby(v6 bool, mask uint32) uint32 {
	if v6 {
		return mask
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], mask)
	return binary.BigEndian.Uint32(b[:])
}

// addrOf reads an address moby returned, in the family it says.
func addrOf(ip net.IP, af uint16) (netip.Addr, error) {
	a, ok := netip.AddrFromSlice(ip)
	switch {
	case !ok:
		return netip.Addr{}, fmt.Errorf("address %v of %d bytes", ip, len(ip))
	case af == syscall.AF_INET && a.Unmap().Is4():
		return a.Unmap(), nil
	case af == syscall.AF_INET6 && a.Is6():
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("address %v in family %d", ip, af)
}

// fromService converts a service read from the kernel: HASHED and any
// other bit the reconciler does not manage are dropped, so that a service
// reads back equal to what was applied.
func fromService(m *mobyipvs.Service) (ipvs.Service, error) {
	var s ipvs.Service
	var v6 bool
	switch m.AddressFamily {
	case syscall.AF_INET:
	case syscall.AF_INET6:
		v6 = true
	default:
		return s, fmt.Errorf("address family %d", m.AddressFamily)
	}
	if m.FWMark != 0 {
		s.Key = ipvs.ServiceKey{Fwmark: m.FWMark, IPv6: v6}
	} else {
		a, err := addrOf(m.Address, m.AddressFamily)
		if err != nil {
			return s, err
		}
		if m.Protocol > 255 {
			return s, fmt.Errorf("protocol %d", m.Protocol)
		}
		s.Key = ipvs.ServiceKey{Protocol: uint8(m.Protocol), Addr: a, Port: m.Port}
	}
	s.Scheduler = m.SchedName
	s.Flags = m.Flags & svcSchedFlags
	s.OnePacket = m.Flags&svcOnePacket != 0
	// The kernel keeps the timeout of a service that is not persistent;
	// only PERSISTENT makes it one.
	if m.Flags&svcPersistent != 0 {
		s.Timeout = m.Timeout
	}
	s.Netmask = netmaskFromMoby(v6, m.Netmask)
	s.PE = m.PEName
	return s, nil
}

// toDest converts a real server of svc as it goes to the kernel.
func toDest(svc ipvs.ServiceKey, d ipvs.Dest) (*mobyipvs.Destination, error) {
	m, err := destKey(svc, d.Addr)
	if err != nil {
		return nil, err
	}
	switch {
	case d.Method > dest.Route:
		return nil, fmt.Errorf("forwarding method %s cannot be configured", d.Method)
	case d.Weight < 0 || d.Weight > maxWeight:
		return nil, fmt.Errorf("weight %d is outside 0..%d", d.Weight, maxWeight)
	case d.TunnelType != 0 || d.TunnelPort != 0:
		// moby/ipvs v1.1.0 has no IPVS_DEST_ATTR_TUN_TYPE/TUN_PORT: the
		// kernel would make an IPIP tunnel, silently.
		return nil, fmt.Errorf("tunnel type %d port %d: moby/ipvs v1.1.0 can only configure IPIP tunnels", d.TunnelType, d.TunnelPort)
	}
	m.ConnectionFlags = uint32(d.Method)
	m.Weight = d.Weight
	m.UpperThreshold = d.UThreshold
	m.LowerThreshold = d.LThreshold
	return m, nil
}

// destKey returns the moby destination that identifies a real server.
func destKey(svc ipvs.ServiceKey, ap netip.AddrPort) (*mobyipvs.Destination, error) {
	a := ap.Addr()
	if err := checkAddr(a); err != nil {
		return nil, fmt.Errorf("real server: %w", err)
	}
	// moby does not send IPVS_DEST_ATTR_ADDR_FAMILY, so the kernel reads
	// the address in the service's family: an IPv6 real server of an IPv4
	// service would become the IPv4 address of its first four bytes.
	if af := family(svc); (af == syscall.AF_INET6) != a.Is6() {
		return nil, fmt.Errorf("real server %s is not in the family of service %s (moby/ipvs v1.1.0 cannot send mixed families)", a, svc)
	}
	return &mobyipvs.Destination{
		Address:       net.IP(a.AsSlice()),
		Port:          ap.Port(),
		AddressFamily: family(svc),
	}, nil
}

// fromDest converts a real server read from the kernel.
func fromDest(m *mobyipvs.Destination) (ipvs.Dest, error) {
	a, err := addrOf(m.Address, m.AddressFamily)
	if err != nil {
		return ipvs.Dest{}, fmt.Errorf("real server: %w", err)
	}
	return ipvs.Dest{
		Addr:       netip.AddrPortFrom(a, m.Port),
		Method:     dest.Method(m.ConnectionFlags & mobyipvs.ConnFwdMask),
		Weight:     m.Weight,
		UThreshold: m.UpperThreshold,
		LThreshold: m.LowerThreshold,
	}, nil
}

// stats converts moby's counters. The kernel also sends 64-bit counters
// (IPVS_SVC_ATTR_STATS64) that moby does not read: Conns, InPkts and
// OutPkts wrap at 2^32.
func stats(s mobyipvs.SvcStats) (ipvs.Stats, ipvs.Rates) {
	return ipvs.Stats{
			Conns:    uint64(s.Connections),
			InPkts:   uint64(s.PacketsIn),
			OutPkts:  uint64(s.PacketsOut),
			InBytes:  s.BytesIn,
			OutBytes: s.BytesOut,
		}, ipvs.Rates{
			CPS:    uint64(s.CPS),
			InPPS:  uint64(s.PPSIn),
			OutPPS: uint64(s.PPSOut),
			InBPS:  uint64(s.BPSIn),
			OutBPS: uint64(s.BPSOut),
		}
}
