package userspace

import (
	"context"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// freebind lets a socket bind an address the host does not hold yet: the
// proxy may open its listeners a moment before the VIP is assigned.
func freebind(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if network == "tcp6" || network == "udp6" {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		}
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func family(a netip.Addr, proto string) string {
	if a.Is4() {
		return proto + "4"
	}
	return proto + "6"
}

func listenTCP(addr netip.AddrPort) (*net.TCPListener, error) {
	lc := net.ListenConfig{Control: freebind, KeepAlive: -1}
	l, err := lc.Listen(context.Background(), family(addr.Addr(), "tcp"), addr.String())
	if err != nil {
		return nil, err
	}
	return l.(*net.TCPListener), nil
}

func listenUDP(addr netip.AddrPort) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: freebind}
	c, err := lc.ListenPacket(context.Background(), family(addr.Addr(), "udp"), addr.String())
	if err != nil {
		return nil, err
	}
	uc := c.(*net.UDPConn)
	_ = uc.SetReadBuffer(4 << 20)
	return uc, nil
}
