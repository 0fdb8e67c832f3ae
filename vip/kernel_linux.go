//go:build linux

package vip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

const (
	// netlinkTimeout bounds every rtnetlink exchange, so that a kernel that
	// does not answer cannot wedge Set (and with it the renewals).
	netlinkTimeout = 5 * time.Second
	// writeTimeout bounds one announcement; sends are not expected to
	// block, but an announcement holds the VIP's lock while in flight.
	writeTimeout = time.Second
)

// linuxKernel programs one network namespace. The rtnetlink handle and every
// socket are opened in that namespace and keep it, so they can be used from
// any thread afterwards.
type linuxKernel struct {
	ns netns.NsHandle
	nl *netlink.Handle

	mu     sync.Mutex // serialises announcements; guards links and icmp
	links  map[string]*linkConn
	icmp   *ipv6.PacketConn // one raw ICMPv6 socket serves every interface
	closed bool
}

// linkConn holds the per-interface resources, opened on first use and
// reopened when the interface's index changes (deleted and re-created).
type linkConn struct {
	index int
	arp   *arp.Client // bound to the interface
	fwd   *os.File    // /proc/sys/net/ipv6/conf/IFACE/forwarding of the namespace
}

func newKernel(cfg Config) (kernel, error) {
	var ns netns.NsHandle
	var err error
	if cfg.NetNS == "" {
		ns, err = netns.Get()
	} else {
		ns, err = netns.GetFromPath(cfg.NetNS)
	}
	if err != nil {
		return nil, fmt.Errorf("vip: open network namespace %q: %w", cfg.NetNS, err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		_ = ns.Close()
		return nil, fmt.Errorf("vip: open rtnetlink: %w", err)
	}
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		h.Close()
		_ = ns.Close()
		return nil, fmt.Errorf("vip: rtnetlink timeout: %w", err)
	}
	return &linuxKernel{ns: ns, nl: h, links: map[string]*linkConn{}}, nil
}

// nlAddr converts v for netlink; lifetime 0 leaves IFA_CACHEINFO out, which
// the kernel takes as forever.
func nlAddr(v VIP, lifetime time.Duration) *netlink.Addr {
	a := v.Prefix.Addr()
	na := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(v.Prefix.Bits(), a.BitLen())}}
	if lifetime > 0 {
		s := int(lifetime / time.Second)
		na.ValidLft, na.PreferedLft = s, s
	}
	if a.Is6() {
		// Skip duplicate address detection: the VIP is usable at once
		// instead of "tentative" for 1-2 s, and a stale copy on a frozen
		// predecessor must not make the new master give it up.
		na.Flags = unix.IFA_F_NODAD
	}
	return na
}

func (k *linuxKernel) link(name string) (netlink.Link, error) {
	l, err := k.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", name, err)
	}
	return l, nil
}

func (k *linuxKernel) add(v VIP, lifetime time.Duration) error {
	l, err := k.link(v.Interface)
	if err != nil {
		return err
	}
	// AddrAdd sets NLM_F_EXCL, so an address already there is reported
	// rather than silently given our lifetime.
	err = k.nl.AddrAdd(l, nlAddr(v, lifetime))
	if errors.Is(err, unix.EEXIST) {
		return errExists
	}
	return err
}

func (k *linuxKernel) lookup(v VIP) (present, permanent bool, err error) {
	l, err := k.link(v.Interface)
	if err != nil {
		return false, false, err
	}
	family := netlink.FAMILY_V4
	if v.Prefix.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := k.nl.AddrList(l, family)
	if err != nil {
		return false, false, fmt.Errorf("list addresses of %s: %w", v.Interface, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap() != v.Prefix.Addr() {
			continue
		}
		// IPv4 tells addresses apart by prefix length as well; IPv6 keeps
		// one address per interface whatever its prefix length.
		if bits, _ := a.Mask.Size(); family == netlink.FAMILY_V4 && bits != v.Prefix.Bits() {
			continue
		}
		return true, a.Flags&unix.IFA_F_PERMANENT != 0, nil
	}
	return false, false, nil
}

func (k *linuxKernel) replace(v VIP, lifetime time.Duration) error {
	l, err := k.link(v.Interface)
	if err != nil {
		return err
	}
	return k.nl.AddrReplace(l, nlAddr(v, lifetime))
}

func (k *linuxKernel) remove(v VIP) error {
	l, err := k.nl.LinkByName(v.Interface)
	if err != nil {
		if errors.As(err, &netlink.LinkNotFoundError{}) {
			return nil // the interface went, and the address with it
		}
		return fmt.Errorf("interface %s: %w", v.Interface, err)
	}
	err = k.nl.AddrDel(l, nlAddr(v, 0))
	if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) {
		return nil // already gone: expired, or removed by hand
	}
	return err
}

func (k *linuxKernel) announce(v VIP) (announcement, error) {
	l, err := k.link(v.Interface)
	if err != nil {
		return sentNothing, err
	}
	attrs := l.Attrs()
	if len(attrs.HardwareAddr) != 6 {
		// lo, tun and the like: no neighbour cache to update.
		return sentNothing, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return sentNothing, net.ErrClosed
	}
	lc := k.links[attrs.Name]
	if lc != nil && lc.index != attrs.Index {
		lc.close()
		lc = nil
	}
	if lc == nil {
		lc = &linkConn{index: attrs.Index}
		k.links[attrs.Name] = lc
	}
	a := v.Prefix.Addr()
	if a.Is4() {
		return sentGARP, k.sendGARP(lc, attrs, a)
	}
	return sentNA, k.sendNA(lc, attrs, a)
}

// sendGARP sends an RFC 5227 announcement: an ARP request whose sender and
// target protocol addresses are both the VIP, with a zero target hardware
// address, to the Ethernet broadcast address.
func (k *linuxKernel) sendGARP(lc *linkConn, attrs *netlink.LinkAttrs, a netip.Addr) error {
	if lc.arp == nil {
		c, err := k.openARP(attrs)
		if err != nil {
			return err
		}
		lc.arp = c
	}
	p, err := arp.NewPacket(arp.OperationRequest, attrs.HardwareAddr, a, make(net.HardwareAddr, 6), a)
	if err != nil {
		return fmt.Errorf("build ARP announcement: %w", err)
	}
	_ = lc.arp.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := lc.arp.WriteTo(p, ethernet.Broadcast); err != nil {
		// The socket may be bound to a vanished interface: reopen next time.
		_ = lc.arp.Close()
		lc.arp = nil
		return fmt.Errorf("send gratuitous ARP on %s: %w", attrs.Name, err)
	}
	return nil
}

// dropAll is a socket filter accepting nothing (BPF "ret #0"): the ARP
// socket only sends, and without it every ARP frame on the link would queue
// on it.
var dropAll = []bpf.RawInstruction{{Op: unix.BPF_RET | unix.BPF_K, K: 0}}

func (k *linuxKernel) openARP(attrs *netlink.LinkAttrs) (*arp.Client, error) {
	ifi := &net.Interface{Index: attrs.Index, MTU: attrs.MTU, Name: attrs.Name, HardwareAddr: attrs.HardwareAddr, Flags: attrs.Flags}
	var c *arp.Client
	err := k.inNS(func() error {
		pc, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), &packet.Config{Filter: dropAll})
		if err != nil {
			return err
		}
		// arp.New wants an IPv4 address on the interface (it is the
		// sender of its own requests, which we do not use); the VIP just
		// added is one.
		c, err = arp.New(ifi, pc)
		if err != nil {
			_ = pc.Close()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open ARP socket on %s: %w", attrs.Name, err)
	}
	return c, nil
}

// sendNA sends an unsolicited neighbour advertisement for a to all nodes,
// with Override so that neighbours replace the link-layer address they
// have, and Router as the interface forwards or not (RFC 4861 §7.2.6).
func (k *linuxKernel) sendNA(lc *linkConn, attrs *netlink.LinkAttrs, a netip.Addr) error {
	if k.icmp == nil {
		pc, err := k.openICMP()
		if err != nil {
			return err
		}
		k.icmp = pc
	}
	na := &ndp.NeighborAdvertisement{
		Router:        k.forwarding(lc, attrs.Name),
		Override:      true,
		TargetAddress: a,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: attrs.HardwareAddr}},
	}
	b, err := ndp.MarshalMessage(na) // the kernel fills in the checksum
	if err != nil {
		return fmt.Errorf("build neighbour advertisement: %w", err)
	}
	// The interface goes in the control message rather than as a zone of
	// the destination: Go resolves zone names through a process-wide cache
	// filled from whatever namespace looked last.
	cm := &ipv6.ControlMessage{HopLimit: ndp.HopLimit, IfIndex: attrs.Index}
	_ = k.icmp.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := k.icmp.WriteTo(b, cm, &net.IPAddr{IP: net.IPv6linklocalallnodes}); err != nil {
		return fmt.Errorf("send neighbour advertisement on %s: %w", attrs.Name, err)
	}
	return nil
}

func (k *linuxKernel) openICMP() (*ipv6.PacketConn, error) {
	var pc *ipv6.PacketConn
	err := k.inNS(func() error {
		c, err := net.ListenPacket("ip6:58", "::") // raw ICMPv6
		if err != nil {
			return err
		}
		p := ipv6.NewPacketConn(c)
		// Hop limit 255 is how receivers know the message was not routed
		// (RFC 4861 §7.1.2). Our own stack ignores looped-back copies, but
		// there is no reason to make it look at them.
		var f ipv6.ICMPFilter
		f.SetAll(true) // send only: accept nothing
		for _, err := range []error{
			p.SetHopLimit(ndp.HopLimit),
			p.SetMulticastHopLimit(ndp.HopLimit),
			p.SetMulticastLoopback(false),
			p.SetICMPFilter(&f),
		} {
			if err != nil {
				_ = c.Close()
				return err
			}
		}
		pc = p
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open ICMPv6 socket: %w", err)
	}
	return pc, nil
}

// forwarding reports whether IPv6 forwarding is on for the interface. The
// sysctl file is opened inside the namespace (procfs resolves net sysctls
// by the opener's namespace) and re-read for every advertisement.
func (k *linuxKernel) forwarding(lc *linkConn, name string) bool {
	if lc.fwd == nil {
		_ = k.inNS(func() error {
			f, err := os.Open("/proc/sys/net/ipv6/conf/" + name + "/forwarding")
			lc.fwd = f
			return err
		})
		if lc.fwd == nil {
			return false
		}
	}
	var b [4]byte
	n, err := lc.fwd.ReadAt(b[:], 0)
	if n == 0 && err != nil {
		_ = lc.fwd.Close()
		lc.fwd = nil
		return false
	}
	return b[0] != '0'
}

// inNS runs fn on a thread in the Manager's namespace, for opening sockets.
// A thread that had to switch is never switched back: it stays locked and
// exits with the goroutine, so no other goroutine can run in the wrong
// namespace. When the thread is already there (the common case of a daemon
// in its own namespace) no setns is needed, nor CAP_SYS_ADMIN.
func (k *linuxKernel) inNS(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		cur, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current network namespace: %w", err)
			return
		}
		same := cur.Equal(k.ns)
		_ = cur.Close()
		if same {
			defer runtime.UnlockOSThread()
		} else if err := netns.Set(k.ns); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func (lc *linkConn) close() {
	if lc.arp != nil {
		_ = lc.arp.Close()
	}
	if lc.fwd != nil {
		_ = lc.fwd.Close()
	}
}

func (k *linuxKernel) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	for _, lc := range k.links {
		lc.close()
	}
	k.links = nil
	var err error
	if k.icmp != nil {
		err = k.icmp.Close()
	}
	k.nl.Close()
	return errors.Join(err, k.ns.Close())
}
