package ipvsadm

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"time"

	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/dest"
)

// WriteSave writes services as ipvsadm -Sn prints them. See AppendSave.
func WriteSave(w io.Writer, svcs []config.Service) error {
	b, err := AppendSave(nil, svcs)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("ipvsadm: write: %w", err)
	}
	return nil
}

// AppendSave appends to b the services as ipvsadm -Sn prints them: sorted
// as ipvsadm sorts them, one -A line per service followed by its -a lines.
// It fails on a service ipvsadm could not print: one with neither address
// nor fwmark, an unknown protocol, forwarding method, tunnel or checksum
// mode, or a scheduler flag with no name for its scheduler.
func AppendSave(b []byte, svcs []config.Service) ([]byte, error) {
	sorted := make([]*config.Service, len(svcs))
	for i := range svcs {
		sorted[i] = &svcs[i]
	}
	msort(sorted, cmpServices)
	for _, s := range sorted {
		var err error
		if b, err = appendService(b, s); err != nil {
			return nil, fmt.Errorf("ipvsadm: service %s: %w", s.Key(), err)
		}
	}
	return b, nil
}

func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	// ipvsadm prints IPv6 as [addr]:port with inet_ntop's text, which
	// netip's String matches (RFC 5952; ::ffff:a.b.c.d for mapped).
	return append(b, ap.String()...)
}

// appendSvcName appends ipvsadm's service designation, repeated on every
// line of the service.
func appendSvcName(b []byte, s *config.Service) ([]byte, error) {
	if s.FWMark != 0 {
		b = append(b, "-f "...)
		b = strconv.AppendUint(b, uint64(s.FWMark), 10)
		if s.AddrFamily() == config.Inet6 {
			b = append(b, " -6"...)
		}
		return b, nil
	}
	if !s.Address.IsValid() {
		return nil, errors.New("neither address nor fwmark")
	}
	switch s.Protocol {
	case config.TCP:
		b = append(b, "-t "...)
	case config.UDP:
		b = append(b, "-u "...)
	case config.SCTP:
		b = append(b, "--sctp-service "...)
	default:
		return nil, fmt.Errorf("protocol %s has no ipvsadm option", s.Protocol)
	}
	return appendAddrPort(b, s.Address), nil
}

func appendService(b []byte, s *config.Service) ([]byte, error) {
	name, err := appendSvcName(nil, s)
	if err != nil {
		return nil, err
	}
	if s.Scheduler == "" {
		return nil, errors.New("no scheduler")
	}
	b = append(b, "-A "...)
	b = append(b, name...)
	b = append(b, " -s "...)
	b = append(b, s.Scheduler...)
	if p := s.Persistence; p != nil {
		b = append(b, " -p "...)
		b = strconv.AppendInt(b, int64(p.Timeout/time.Second), 10)
		if s.AddrFamily() == config.Inet {
			if m := p.Mask4(); m != config.HostMask4 {
				b = append(b, " -M "...)
				b = append(b, m.String()...)
			}
		} else if n := p.Prefix6(); n != 128 {
			b = append(b, " -M "...)
			b = strconv.AppendInt(b, int64(n), 10)
		}
		if p.Engine != "" {
			b = append(b, " --pe "...)
			b = append(b, p.Engine...)
		}
	}
	if s.OnePacket {
		b = append(b, " -o"...)
	}
	if f := s.SchedFlags & config.SchedFlagsMask; f != 0 {
		names := f.Names(s.Scheduler)
		if len(names) < len(f.Names("")) {
			// ipvsadm would print a bare "-b " that it cannot read back.
			return nil, fmt.Errorf("scheduler flags %s have no names with scheduler %s", f, s.Scheduler)
		}
		b = append(b, " -b "...)
		for i, n := range names {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, n...)
		}
	}
	b = append(b, '\n')

	rss := make([]*config.RealServer, len(s.RealServers))
	for i := range s.RealServers {
		rss[i] = &s.RealServers[i]
	}
	msort(rss, cmpDests)
	for _, rs := range rss {
		if b, err = appendDest(b, name, s, rs); err != nil {
			return nil, fmt.Errorf("real server %s: %w", rs.Address, err)
		}
	}
	return b, nil
}

func appendDest(b, name []byte, s *config.Service, rs *config.RealServer) ([]byte, error) {
	if !rs.Address.IsValid() {
		return nil, errors.New("no address")
	}
	var sw string
	switch rs.Forward {
	case dest.Masq:
		sw = "-m"
	case dest.Tunnel:
		sw = "-i"
	case dest.Route, dest.Local:
		// ipvsadm saves a local-node destination as -g too.
		sw = "-g"
	default:
		return nil, fmt.Errorf("forwarding method %s cannot be saved", rs.Forward)
	}
	ap := rs.Address
	if s.FWMark == 0 && (rs.Forward == dest.Route || rs.Forward == dest.Tunnel) {
		// What ipvsadm -a sends, and so what the kernel holds.
		ap = netip.AddrPortFrom(ap.Addr(), s.Address.Port())
	}
	b = append(b, "-a "...)
	b = append(b, name...)
	b = append(b, " -r "...)
	b = appendAddrPort(b, ap)
	b = append(b, ' ')
	b = append(b, sw...)
	b = append(b, " -w "...)
	b = strconv.AppendInt(b, int64(rs.Weight), 10)
	if rs.Forward == dest.Tunnel {
		csum, err := csumOption(rs.TunnelChecksum)
		if err != nil {
			return nil, err
		}
		switch rs.TunnelType {
		case config.TunnelIPIP:
			b = append(b, " --tun-type ipip"...)
		case config.TunnelGUE:
			b = append(b, " --tun-type gue --tun-port "...)
			b = strconv.AppendUint(b, uint64(rs.TunnelPort), 10)
			b = append(b, ' ')
			b = append(b, csum...)
		case config.TunnelGRE:
			b = append(b, " --tun-type gre "...)
			b = append(b, csum...)
		default:
			return nil, fmt.Errorf("unknown tunnel type %d", rs.TunnelType)
		}
	}
	return append(b, '\n'), nil
}

func csumOption(c config.TunnelChecksum) (string, error) {
	switch c {
	case config.TunnelNoChecksum:
		return "--tun-nocsum", nil
	case config.TunnelChecksumOn:
		return "--tun-csum", nil
	case config.TunnelRemoteChecksum:
		return "--tun-remcsum", nil
	}
	return "", fmt.Errorf("unknown tunnel checksum mode %d", c)
}

// words returns an address as the four host-order 32-bit words of the
// kernel's union nf_inet_addr; an IPv4 address fills the first word.
func words(a netip.Addr) [4]uint32 {
	var w [4]uint32
	if a.Is4() {
		b := a.As4()
		w[0] = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		return w
	}
	b := a.As16()
	for i := range w {
		w[i] = uint32(b[4*i])<<24 | uint32(b[4*i+1])<<16 | uint32(b[4*i+2])<<8 | uint32(b[4*i+3])
	}
	return w
}

// diff is ipvsadm's "ntohl(a) - ntohl(b)" stored in an int: the unsigned
// difference wraps, so addresses 2^31 or more apart compare backwards.
func diff(a, b uint32) int { return int(int32(a - b)) }

// cmpAddr compares as ipvsadm does, by the first address's family.
func cmpAddr(a, b netip.Addr) int {
	wa, wb := words(a), words(b)
	if !a.Is4() {
		for i := range wa {
			if r := diff(wa[i], wb[i]); r != 0 {
				return r
			}
		}
		return 0
	}
	return diff(wa[0], wb[0])
}

// cmpServices is ipvsadm's ipvs_cmp_services.
func cmpServices(a, b *config.Service) int {
	if r := diff(a.FWMark, b.FWMark); r != 0 {
		return r
	}
	if r := int(a.AddrFamily()) - int(b.AddrFamily()); r != 0 {
		return r
	}
	// ipvsadm adds fwmark services with protocol TCP.
	pa, pb := a.Protocol, b.Protocol
	if a.FWMark != 0 {
		pa = config.TCP
	}
	if b.FWMark != 0 {
		pb = config.TCP
	}
	if r := int(pa) - int(pb); r != 0 {
		return r
	}
	if a.FWMark == 0 && b.FWMark == 0 {
		if r := cmpAddr(a.Address.Addr(), b.Address.Addr()); r != 0 {
			return r
		}
	}
	return int(a.Address.Port()) - int(b.Address.Port())
}

// cmpDests is ipvsadm's ipvs_cmp_dests.
func cmpDests(a, b *config.RealServer) int {
	if r := cmpAddr(a.Address.Addr(), b.Address.Addr()); r != 0 {
		return r
	}
	return int(a.Address.Port()) - int(b.Address.Port())
}

// Sort sorts s as ipvsadm's listing and save do (glibc's qsort on small
// tables), for views such as `lbha services` that must list in ipvsadm's
// order with ipvsadm's non-transitive comparisons.
func Sort[T any](s []T, cmp func(a, b T) int) { msort(s, cmp) }

// msort sorts as glibc's qsort does for tables this small (msort_with_tmp:
// top-down merge sort, left half on ties). With ipvsadm's comparison, which
// is not transitive across the wrap, only the same sequence of comparisons
// gives the same order.
func msort[T any](s []T, cmp func(a, b T) int) {
	if len(s) < 2 {
		return
	}
	msortRec(s, make([]T, len(s)), cmp)
}

func msortRec[T any](b, tmp []T, cmp func(a, b T) int) {
	n := len(b)
	if n <= 1 {
		return
	}
	n1 := n / 2
	msortRec(b[:n1], tmp, cmp)
	msortRec(b[n1:], tmp, cmp)
	i, j, k := 0, n1, 0
	for i < n1 && j < n {
		if cmp(b[i], b[j]) <= 0 {
			tmp[k] = b[i]
			i++
		} else {
			tmp[k] = b[j]
			j++
		}
		k++
	}
	k += copy(tmp[k:], b[i:n1])
	// Whatever remains of the right half is already in place.
	copy(b, tmp[:k])
}
