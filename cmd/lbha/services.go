package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/config/ipvsadm"
	"github.com/lbha/lbha/internal/api"
	"github.com/lbha/lbha/ipvs"
)

func init() {
	addCommand(newServicesCmd)
	addCommand(newConnsCmd)
}

// listFormat selects one of ipvsadm -L's layouts.
type listFormat int

// The layouts of ipvsadm -Ln, in the order ipvsadm gives them precedence.
const (
	fmtDefault     listFormat = iota // ipvsadm -Ln
	fmtStats                         // --stats
	fmtRate                          // --rate
	fmtThresholds                    // --thresholds
	fmtPersistConn                   // --persistent-conn
)

var newServicesCmd = newShowCmdFlags("services [--stats | --rate | --thresholds | --persistent-conn] [--exact] [--save]",
	"List the dataplane's virtual services and real servers as ipvsadm -Ln does, with their health", "/v1/services",
	func(cmd *cobra.Command) func(io.Writer, api.Services) error {
		cmd.Long = `List the virtual services and real servers that the dataplane (kernel IPVS or
lbha's userspace proxy) holds, in the layout of ipvsadm -Ln, byte for byte,
after a first line naming the dataplane.

When any service has a health check, real server lines get one more column
after ipvsadm's, under "Health": up, down, "down (removed)" for a failing
server that on_failure: remove took out of the dataplane (listed, although
ipvsadm would not show it), sorry for the sorry server standing in for a
service whose servers are all down, and - for a server without a check.

--stats, --rate, --thresholds and --persistent-conn print ipvsadm's other
layouts (without the servers taken out of the dataplane); counters above
99,999,999 are shown in K, M, G or T (steps of 1000) unless --exact.
--save prints the rules as ipvsadm -Sn does, for ipvsadm -R; --json the
agent's document.`
		var stats, rate, thresholds, persistConn, exact, save bool
		fl := cmd.Flags()
		fl.BoolVar(&stats, "stats", false, "show traffic counters (ipvsadm -Ln --stats)")
		fl.BoolVar(&rate, "rate", false, "show traffic rates per second (ipvsadm -Ln --rate)")
		fl.BoolVar(&thresholds, "thresholds", false, "show connection thresholds (ipvsadm -Ln --thresholds)")
		fl.BoolVar(&persistConn, "persistent-conn", false, "show persistence templates per real server (ipvsadm -Ln --persistent-conn)")
		fl.BoolVarP(&exact, "exact", "X", false, "show --stats and --rate numbers unscaled")
		fl.BoolVar(&save, "save", false, "print the rules as ipvsadm -Sn does")
		cmd.MarkFlagsMutuallyExclusive("stats", "rate", "thresholds", "persistent-conn", "save", "json")
		return func(w io.Writer, v api.Services) error {
			if save {
				svcs, err := configServices(v.Services)
				if err != nil {
					return &exitError{code: 1, err: err}
				}
				return ipvsadm.WriteSave(w, svcs)
			}
			f := fmtDefault
			switch {
			case stats:
				f = fmtStats
			case rate:
				f = fmtRate
			case thresholds:
				f = fmtThresholds
			case persistConn:
				f = fmtPersistConn
			}
			_, err := w.Write(appendServices(nil, v, f, exact))
			return err
		}
	})

var newConnsCmd = newShowCmdFlags("conns [--persistent-conn]",
	"List the dataplane's connections and persistence templates as ipvsadm -Lcn does", "/v1/conns",
	func(cmd *cobra.Command) func(io.Writer, api.Conns) error {
		cmd.Long = `List the connections and persistence templates of the dataplane (kernel IPVS
or lbha's userspace proxy) in the layout of ipvsadm -Lcn, after a first line
naming the dataplane. --persistent-conn adds the persistence engine's name
and data of the entries that have them.`
		var pe bool
		cmd.Flags().BoolVar(&pe, "persistent-conn", false, "add the pe name and pe_data columns (ipvsadm -Lcn --persistent-conn)")
		return func(w io.Writer, v api.Conns) error {
			_, err := w.Write(appendConns(nil, v, pe))
			return err
		}
	})

// appendServices appends the listing of ipvsadm -Ln in format f, preceded
// by a line naming the dataplane; the default format gets a health column
// when any real server has a health state.
func appendServices(b []byte, v api.Services, f listFormat, exact bool) []byte {
	if v.Dataplane != "" {
		b = fmt.Appendf(b, "# dataplane: %s\n", v.Dataplane)
	}
	b = fmt.Appendf(b, "IP Virtual Server version %s (size=%d)\n", v.Version, v.TableSize)
	health := false
	if f == fmtDefault {
		for i := range v.Services {
			for j := range v.Services[i].Dests {
				health = health || healthLabel(&v.Services[i].Dests[j]) != "-"
			}
		}
	}
	b = appendTitle(b, f, health)
	for _, s := range sortedServices(v.Services) {
		b = appendService(b, s, f, exact, health)
	}
	return b
}

func appendTitle(b []byte, f listFormat, health bool) []byte {
	const local = "Prot LocalAddress:Port"
	switch f {
	case fmtStats:
		return fmt.Appendf(b, "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n",
			local, "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
	case fmtRate:
		return fmt.Appendf(b, "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n",
			local, "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
	case fmtThresholds:
		return fmt.Appendf(b, "%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n",
			local, "Uthreshold", "Lthreshold", "ActiveConn", "InActConn")
	case fmtPersistConn:
		return fmt.Appendf(b, "%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n",
			local, "Weight", "PersistConn", "ActiveConn", "InActConn")
	}
	b = append(b, local+" Scheduler Flags\n"...)
	b = append(b, "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"...)
	if health {
		// Aligned with the health values, one space after the last
		// ipvsadm column ("%-10u").
		b = append(b, "  Health"...)
	}
	return append(b, '\n')
}

// appendService appends a service line and its real server lines.
func appendService(b []byte, s *ipvs.ServiceStatus, f listFormat, exact, health bool) []byte {
	// ipvsadm cuts IPv4 names at 33 characters and real server names at
	// 28, which numeric addresses never reach.
	name := serviceName(s.Key)
	switch f {
	case fmtStats:
		b = fmt.Appendf(b, "%-33s", name)
		for _, n := range []uint64{s.Stats.Conns, s.Stats.InPkts, s.Stats.OutPkts, s.Stats.InBytes, s.Stats.OutBytes} {
			b = appendLargeNum(b, n, exact)
		}
	case fmtRate:
		b = fmt.Appendf(b, "%-33s", name)
		for _, n := range []uint64{s.Rates.CPS, s.Rates.InPPS, s.Rates.OutPPS, s.Rates.InBPS, s.Rates.OutBPS} {
			b = appendLargeNum(b, n, exact)
		}
	default:
		b = fmt.Appendf(b, "%s %s", name, s.Scheduler)
		if fl := config.SchedFlags(s.Flags) & config.SchedFlagsMask; fl != 0 {
			// sh and mh have no name for the third bit: ipvsadm then
			// prints "()".
			b = fmt.Appendf(b, " (%s)", strings.Join(fl.Names(s.Scheduler), ","))
		}
		if s.Timeout != 0 {
			b = fmt.Appendf(b, " persistent %d", s.Timeout)
			if !serviceIPv6(s.Key) {
				if s.Netmask != 0xffffffff {
					b = fmt.Appendf(b, " mask %s", mask4(s.Netmask))
				}
			} else if s.Netmask != 128 {
				b = fmt.Appendf(b, " mask %d", int32(s.Netmask))
			}
			if s.PE != "" {
				b = fmt.Appendf(b, " pe %s", s.PE)
			}
		}
		if s.OnePacket {
			b = append(b, " ops"...)
		}
	}
	b = append(b, '\n')

	for _, d := range sortedDests(s.Dests) {
		if d.Removed && !(f == fmtDefault && health) {
			continue // not in the dataplane: ipvsadm would not list it
		}
		addr := d.Addr.String()
		switch f {
		case fmtStats:
			b = fmt.Appendf(b, "  -> %-28s", addr)
			for _, n := range []uint64{d.Stats.Conns, d.Stats.InPkts, d.Stats.OutPkts, d.Stats.InBytes, d.Stats.OutBytes} {
				b = appendLargeNum(b, n, exact)
			}
		case fmtRate:
			// ipvsadm never scales a real server's first three rates.
			b = fmt.Appendf(b, "  -> %-28s %8d %8d %8d", addr, d.Rates.CPS, d.Rates.InPPS, d.Rates.OutPPS)
			b = appendLargeNum(b, d.Rates.InBPS, exact)
			b = appendLargeNum(b, d.Rates.OutBPS, exact)
		case fmtThresholds:
			b = fmt.Appendf(b, "  -> %-28s %-10d %-10d %-10d %-10d", addr, d.UThreshold, d.LThreshold, d.ActiveConns, d.InactConns)
		case fmtPersistConn:
			b = fmt.Appendf(b, "  -> %-28s %-9d %-11d %-10d %-10d", addr, d.Weight, d.PersistConns, d.ActiveConns, d.InactConns)
		default:
			b = fmt.Appendf(b, "  -> %-28s %-7s %-6d %-10d %-10d", addr, d.Method, d.Weight, d.ActiveConns, d.InactConns)
			if health {
				b = append(b, ' ')
				b = append(b, healthLabel(d)...)
			}
		}
		b = append(b, '\n')
	}
	return b
}

// healthLabel is the health column of a real server: "-" when it has no
// health state at all.
func healthLabel(d *ipvs.DestStatus) string {
	switch {
	case d.Sorry:
		return "sorry"
	case d.Removed:
		return "down (removed)"
	case d.Health != ipvs.HealthUnchecked:
		return d.Health
	}
	return "-"
}

// serviceName is ipvsadm's name of a service in listings: "%-4s %s" of
// protocol and address, or "FWM  <mark>" (" IPv6").
func serviceName(k ipvs.ServiceKey) string {
	if k.Fwmark != 0 {
		if k.IPv6 {
			return fmt.Sprintf("FWM  %d IPv6", k.Fwmark)
		}
		return fmt.Sprintf("FWM  %d", k.Fwmark)
	}
	proto := map[uint8]string{6: "TCP", 17: "UDP", 132: "SCTP"}[k.Protocol]
	if proto == "" {
		proto = "?"
	}
	return fmt.Sprintf("%-4s %s", proto, netip.AddrPortFrom(k.Addr, k.Port))
}

// serviceIPv6 reports whether a service is of family inet6.
func serviceIPv6(k ipvs.ServiceKey) bool {
	if k.Fwmark != 0 {
		return k.IPv6
	}
	return k.Addr.IsValid() && !k.Addr.Is4()
}

// mask4 returns an IPv4 netmask held as a big-endian uint32.
func mask4(m uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)})
}

// appendLargeNum is ipvsadm's print_largenum: a counter in 9 columns,
// divided by 1000 steps with a K, M, G or T suffix from 100 million on,
// or exact and widened as needed.
func appendLargeNum(b []byte, n uint64, exact bool) []byte {
	if exact {
		w := 9
		if l := len(strconv.FormatUint(n, 10)); l > 8 {
			w = l + 1
		}
		return fmt.Appendf(b, "%*d", w, n)
	}
	switch {
	case n < 100_000_000:
		return fmt.Appendf(b, "%9d", n)
	case n < 1_000_000_000:
		return fmt.Appendf(b, "%8dK", n/1_000)
	case n < 100_000_000_000:
		return fmt.Appendf(b, "%8dM", n/1_000_000)
	case n < 100_000_000_000_000:
		return fmt.Appendf(b, "%8dG", n/1_000_000_000)
	}
	return fmt.Appendf(b, "%8dT", n/1_000_000_000_000)
}

// sortedServices returns the services in ipvsadm's order: by fwmark,
// family, protocol, address and port, compared as libipvs's
// ipvs_cmp_services does (32-bit differences that wrap) and sorted as
// glibc's qsort does. config/ipvsadm sorts -Sn output the same way.
func sortedServices(ss []ipvs.ServiceStatus) []*ipvs.ServiceStatus {
	out := make([]*ipvs.ServiceStatus, len(ss))
	for i := range ss {
		out[i] = &ss[i]
	}
	ipvsadm.Sort(out, func(a, b *ipvs.ServiceStatus) int {
		ka, kb := a.Key, b.Key
		if r := wrapDiff(ka.Fwmark, kb.Fwmark); r != 0 {
			return r
		}
		if r := family(ka) - family(kb); r != 0 {
			return r
		}
		if r := int(protocol(ka)) - int(protocol(kb)); r != 0 {
			return r
		}
		if ka.Fwmark == 0 && kb.Fwmark == 0 {
			if r := cmpAddrIPVS(ka.Addr, kb.Addr); r != 0 {
				return r
			}
		}
		return int(ka.Port) - int(kb.Port)
	})
	return out
}

// sortedDests returns real servers in ipvsadm's order (ipvs_cmp_dests).
func sortedDests(ds []ipvs.DestStatus) []*ipvs.DestStatus {
	out := make([]*ipvs.DestStatus, len(ds))
	for i := range ds {
		out[i] = &ds[i]
	}
	ipvsadm.Sort(out, func(a, b *ipvs.DestStatus) int {
		if r := cmpAddrIPVS(a.Addr.Addr(), b.Addr.Addr()); r != 0 {
			return r
		}
		return int(a.Addr.Port()) - int(b.Addr.Port())
	})
	return out
}

// family is the AF_* number of a service.
func family(k ipvs.ServiceKey) int {
	if serviceIPv6(k) {
		return int(config.Inet6)
	}
	return int(config.Inet)
}

// protocol is a service's protocol as the kernel holds it: ipvsadm adds
// fwmark services with TCP.
func protocol(k ipvs.ServiceKey) uint8 {
	if k.Fwmark != 0 {
		return uint8(config.TCP)
	}
	return k.Protocol
}

// wrapDiff is C's "int r = a - b" of two unsigned 32-bit values.
func wrapDiff(a, b uint32) int { return int(int32(a - b)) }

// cmpAddrIPVS compares as libipvs does, by the first address's family,
// word by word in host order with wrapping differences.
func cmpAddrIPVS(a, b netip.Addr) int {
	wa, wb := addrWords(a), addrWords(b)
	n := 4
	if a.Is4() {
		n = 1
	}
	for i := range n {
		if r := wrapDiff(wa[i], wb[i]); r != 0 {
			return r
		}
	}
	return 0
}

// addrWords returns an address as the kernel's union nf_inet_addr in
// host-order words; an IPv4 address fills the first word.
func addrWords(a netip.Addr) [4]uint32 {
	var w [4]uint32
	switch {
	case a.Is4():
		b := a.As4()
		w[0] = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	case a.IsValid():
		b := a.As16()
		for i := range w {
			w[i] = uint32(b[4*i])<<24 | uint32(b[4*i+1])<<16 | uint32(b[4*i+2])<<8 | uint32(b[4*i+3])
		}
	}
	return w
}

// configServices converts what the dataplane holds to configuration
// services, for ipvsadm.WriteSave: the ipvsadm-visible settings only, and
// the real servers in the dataplane (not those a failing health check
// removed). A persistence engine on a service that is not persistent has
// no configuration form and is an error.
//
// ipvs.Dest carries no tunnel checksum mode, so GUE and GRE real servers
// come out as --tun-nocsum.
func configServices(ss []ipvs.ServiceStatus) ([]config.Service, error) {
	out := make([]config.Service, 0, len(ss))
	for i := range ss {
		s, err := configService(&ss[i])
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", ss[i].Key, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func configService(st *ipvs.ServiceStatus) (config.Service, error) {
	k := st.Key
	s := config.Service{
		Scheduler:  st.Scheduler,
		SchedFlags: config.SchedFlags(st.Flags) & config.SchedFlagsMask,
		OnePacket:  st.OnePacket,
	}
	if k.Fwmark != 0 {
		s.FWMark = k.Fwmark
		s.Family = config.Inet
		if k.IPv6 {
			s.Family = config.Inet6
		}
	} else {
		if !k.Addr.IsValid() {
			return config.Service{}, errors.New("neither address nor fwmark")
		}
		s.Protocol = config.Protocol(k.Protocol)
		s.Address = netip.AddrPortFrom(k.Addr, k.Port)
	}
	switch {
	case st.Timeout != 0:
		p := config.Persistence{Timeout: time.Duration(st.Timeout) * time.Second, Engine: st.PE}
		if s.AddrFamily() == config.Inet {
			p.Netmask = mask4(st.Netmask)
		} else {
			p.Prefix = int(st.Netmask)
			if p.Prefix == 0 {
				p.Prefix = 128
			}
		}
		s.Persistence = &p
	case st.PE != "":
		return config.Service{}, fmt.Errorf("persistence engine %s on a service that is not persistent", st.PE)
	}
	for _, d := range st.Dests {
		if d.Removed {
			continue
		}
		s.RealServers = append(s.RealServers, config.RealServer{
			Address:        d.Addr,
			Weight:         d.Weight,
			Forward:        d.Method,
			TunnelType:     config.TunnelType(d.TunnelType),
			TunnelPort:     d.TunnelPort,
			UpperThreshold: int(d.UThreshold),
			LowerThreshold: int(d.LThreshold),
		})
	}
	return s, nil
}

// appendConns appends the listing of ipvsadm -Lcn, preceded by a line
// naming the dataplane.
func appendConns(b []byte, v api.Conns, pe bool) []byte {
	if v.Dataplane != "" {
		b = fmt.Appendf(b, "# dataplane: %s\n", v.Dataplane)
	}
	b = append(b, "IPVS connection entries\n"...)
	if pe {
		b = fmt.Appendf(b, "pro expire %-11s %-18s %-18s %-18s %-16s %s\n",
			"state", "source", "virtual", "destination", "pe name", "pe_data")
	} else {
		b = fmt.Appendf(b, "pro expire %-11s %-18s %-18s %s\n", "state", "source", "virtual", "destination")
	}
	for i := range v.Conns {
		c := &v.Conns[i]
		secs := max(int64(c.Expires/time.Second), 0)
		expire := fmt.Sprintf("%02d:%02d", secs/60, secs%60)
		if pe && c.PEName != "" && c.PEData != "" {
			// ipvsadm's row format: destination in 16 columns and pe
			// name in 18, the other way round from its title line.
			b = fmt.Appendf(b, "%-3s %-6s %-11s %-18s %-18s %-16s %-18s %s\n", c.Proto, expire, c.State,
				connAddr(c.Client), connAddr(c.Virtual), connAddr(c.Dest), c.PEName, c.PEData)
			continue
		}
		b = fmt.Appendf(b, "%-3s %-6s %-11s %-18s %-18s %s\n", c.Proto, expire, c.State,
			connAddr(c.Client), connAddr(c.Virtual), connAddr(c.Dest))
	}
	return b
}

// connAddr prints an address and port as ipvsadm -Lcn does: a.b.c.d:port
// or [v6]:port.
func connAddr(ap netip.AddrPort) string {
	if !ap.Addr().IsValid() {
		return "0.0.0.0:" + strconv.Itoa(int(ap.Port()))
	}
	return ap.String()
}
