package syncd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/lbha/lbha/syncd/wire"
)

// Defaults of the kernel's sync daemon (spec §A.1).
var (
	DefaultGroup = netip.MustParseAddr("224.0.0.81")
)

const (
	DefaultPort = 8848
	DefaultTTL  = 1
	// DefaultRecvBuffer is the backup socket's receive buffer. The kernel
	// sizes it from sync_sock_size (default: the system default), which
	// lost half of a 1400-byte burst in our measurements; 4 MiB lost none
	// at 75k datagrams/s.
	DefaultRecvBuffer = 4 << 20
)

// TransportConfig says where sync datagrams travel. The zero value of each
// field means the kernel's default.
type TransportConfig struct {
	// Interface is the multicast interface (ipvsadm --mcast-interface).
	// Required.
	Interface string
	// Group is the multicast group; zero means 224.0.0.81. An IPv6 group
	// must be given explicitly: the kernel has no IPv6 default.
	Group netip.Addr
	// Port is the UDP port; zero means 8848.
	Port int
	// TTL is the multicast TTL or IPv6 hop limit; zero means 1.
	TTL int
	// RecvBuffer is the receiver's socket buffer in bytes; zero means
	// DefaultRecvBuffer. Set with SO_RCVBUFFORCE when privileged.
	RecvBuffer int
}

func (c TransportConfig) withDefaults() (TransportConfig, error) {
	if c.Interface == "" {
		return c, errors.New("syncd: transport: no multicast interface configured")
	}
	if !c.Group.IsValid() {
		c.Group = DefaultGroup
	}
	if !c.Group.IsMulticast() {
		return c, fmt.Errorf("syncd: transport: group %s is not a multicast address", c.Group)
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Port < 1 || c.Port > 65535 {
		return c, fmt.Errorf("syncd: transport: port %d out of range 1..65535", c.Port)
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.TTL < 1 || c.TTL > 255 {
		return c, fmt.Errorf("syncd: transport: ttl %d out of range 1..255", c.TTL)
	}
	if c.RecvBuffer == 0 {
		c.RecvBuffer = DefaultRecvBuffer
	}
	return c, nil
}

// groupAddr returns the destination for Send. An IPv6 group needs the
// interface as its zone, given by index: a name would be looked up at every
// send, in whatever network namespace the sending thread is in.
func (c TransportConfig) groupAddr(ifi *net.Interface) *net.UDPAddr {
	a := &net.UDPAddr{IP: c.Group.AsSlice(), Port: c.Port}
	if c.Group.Is6() {
		a.Zone = strconv.Itoa(ifi.Index)
	}
	return a
}

// Sender sends sync datagrams to the group the way the kernel's master
// thread does: from the interface's primary IPv4 address (IPv6: the
// kernel's source selection, a link-local address), multicast loopback
// off, the configured TTL, and path-MTU discovery off so that a datagram
// larger than the path is fragmented rather than dropped.
type Sender struct {
	conn *net.UDPConn
	dst  *net.UDPAddr
	v6   bool
}

// DialSender opens a sender. Its socket is bound to the interface.
func DialSender(cfg TransportConfig) (*Sender, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("syncd: sender: %w", err)
	}
	network, laddr := "udp4", &net.UDPAddr{}
	if cfg.Group.Is6() {
		network = "udp6"
	} else {
		src, err := primaryIPv4(ifi)
		if err != nil {
			return nil, err
		}
		laddr.IP = src.AsSlice()
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return control(rc, func(fd int) error {
			if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, cfg.Interface); err != nil {
				return fmt.Errorf("SO_BINDTODEVICE %s: %w", cfg.Interface, err)
			}
			if cfg.Group.Is4() {
				return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
			}
			return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT)
		})
	}}
	pc, err := lc.ListenPacket(context.Background(), network, laddr.String())
	if err != nil {
		return nil, fmt.Errorf("syncd: sender on %s: %w", cfg.Interface, err)
	}
	conn := pc.(*net.UDPConn)
	if cfg.Group.Is4() {
		p := ipv4.NewPacketConn(conn)
		err = errors.Join(p.SetMulticastInterface(ifi), p.SetMulticastLoopback(false), p.SetMulticastTTL(cfg.TTL))
	} else {
		p := ipv6.NewPacketConn(conn)
		err = errors.Join(p.SetMulticastInterface(ifi), p.SetMulticastLoopback(false), p.SetMulticastHopLimit(cfg.TTL))
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("syncd: sender on %s: multicast options: %w", cfg.Interface, err)
	}
	return &Sender{conn: conn, dst: cfg.groupAddr(ifi), v6: cfg.Group.Is6()}, nil
}

// Send sends one datagram.
func (s *Sender) Send(b []byte) error {
	if _, err := s.conn.WriteToUDP(b, s.dst); err != nil {
		return fmt.Errorf("syncd: send: %w", err)
	}
	return nil
}

// LocalAddr is the sender's source address, which receivers see.
func (s *Sender) LocalAddr() netip.AddrPort {
	return s.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Close closes the socket.
func (s *Sender) Close() error { return s.conn.Close() }

// MaxLen returns the sync_maxlen a kernel master uses on this sender's
// group for the configured value (0: the default, 1472 bytes over IPv4).
func (s *Sender) MaxLen(configured int) int { return wire.MasterMaxLen(configured, s.v6) }

// Receiver receives sync datagrams as the kernel's backup thread does: bound
// to the group address and port on the interface, joined to the group
// there.
type Receiver struct {
	conn *net.UDPConn
	mtu  int
	v6   bool
}

// ListenReceiver opens a receiver.
func ListenReceiver(cfg TransportConfig) (*Receiver, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("syncd: receiver: %w", err)
	}
	network := "udp4"
	if cfg.Group.Is6() {
		network = "udp6"
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return control(rc, func(fd int) error {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
				return err
			}
			if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, cfg.Interface); err != nil {
				return fmt.Errorf("SO_BINDTODEVICE %s: %w", cfg.Interface, err)
			}
			// SO_RCVBUFFORCE passes rmem_max when privileged; fall back
			// to the capped SO_RCVBUF otherwise.
			if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, cfg.RecvBuffer) != nil {
				_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, cfg.RecvBuffer)
			}
			return nil
		})
	}}
	bind := netip.AddrPortFrom(cfg.Group, uint16(cfg.Port))
	if cfg.Group.Is6() {
		bind = netip.AddrPortFrom(cfg.Group.WithZone(strconv.Itoa(ifi.Index)), uint16(cfg.Port))
	}
	pc, err := lc.ListenPacket(context.Background(), network, bind.String())
	if err != nil {
		return nil, fmt.Errorf("syncd: receiver on %s %s: %w", cfg.Interface, bind, err)
	}
	conn := pc.(*net.UDPConn)
	group := &net.UDPAddr{IP: cfg.Group.AsSlice()}
	if cfg.Group.Is4() {
		p := ipv4.NewPacketConn(conn)
		err = errors.Join(p.JoinGroup(ifi, group), p.SetMulticastLoopback(false))
	} else {
		p := ipv6.NewPacketConn(conn)
		err = errors.Join(p.JoinGroup(ifi, group), p.SetMulticastLoopback(false))
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("syncd: receiver on %s: join %s: %w", cfg.Interface, cfg.Group, err)
	}
	return &Receiver{conn: conn, mtu: ifi.MTU, v6: cfg.Group.Is6()}, nil
}

// ErrTruncated reports a datagram longer than the read buffer; the kernel
// backup drops such a datagram (its buffer is its maxlen), and so must the
// caller.
var ErrTruncated = errors.New("syncd: datagram longer than the receive buffer")

// Read reads one datagram into buf and returns its length and sender.
// A datagram longer than buf returns ErrTruncated with n = len(buf).
func (r *Receiver) Read(buf []byte) (n int, from netip.AddrPort, err error) {
	n, _, flags, addr, err := r.conn.ReadMsgUDPAddrPort(buf, nil)
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	if flags&unix.MSG_TRUNC != 0 {
		return n, addr, ErrTruncated
	}
	return n, addr, nil
}

// Close closes the socket; a blocked Read returns.
func (r *Receiver) Close() error { return r.conn.Close() }

// MaxLen returns the sync_maxlen, and so the receive buffer, of a kernel
// backup on this receiver's interface for the configured value (0: from
// the interface MTU).
func (r *Receiver) MaxLen(configured int) int { return wire.BackupMaxLen(configured, r.mtu, r.v6) }

func control(rc syscall.RawConn, f func(fd int) error) error {
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// primaryIPv4 returns the interface's first global IPv4 address, the
// kernel's inet_select_addr choice for the sync master's source.
func primaryIPv4(ifi *net.Interface) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("syncd: addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && !p.Addr().IsLinkLocalUnicast() {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("syncd: interface %s has no IPv4 address to send sync datagrams from", ifi.Name)
}
