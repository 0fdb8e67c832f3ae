package userspace

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/lbha/lbha/ipvs/userspace/ftp"
	"github.com/lbha/lbha/persist"
)

// ftpDataTimeout bounds the wait for the data connection an FTP command
// announced.
const ftpDataTimeout = 30 * time.Second

// ftp reports whether the service gets the FTP helper: TCP port 21, where
// the kernel's ip_vs_ftp registers by default.
func (s *service) ftp() bool { return s.key.Protocol == persist.ProtoTCP && s.key.Port == 21 }

// relayFTP relays an FTP control connection as the kernel's ip_vs_ftp does
// for NAT: the addresses in PASV/EPSV replies and PORT/EPRT commands are
// replaced with listeners of the proxy, so every data connection goes
// through the proxy to the real server that holds the control connection.
// Passive data connections are accepted on the VIP from the client only;
// active ones on the director's address towards the real server, from that
// server only. The relays splice; their bytes are not counted.
func (s *service) relayFTP(f *tcpFlow) (in, out int64) {
	vip := addrPortOf(f.client.LocalAddr()).Addr()
	client := addrPortOf(f.client.RemoteAddr()).Addr()
	server := addrPortOf(f.server.RemoteAddr()).Addr()
	director := addrPortOf(f.server.LocalAddr()).Addr()
	p := s.p
	hooks := ftp.Hooks{
		Logger: p.log.With("service", s.key.String(), "client", client),
		Passive: func(serverData netip.AddrPort) (netip.AddrPort, error) {
			return p.dataRelay(vip, client, func(ctx context.Context) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, family(serverData.Addr(), "tcp"), serverData.String())
			})
		},
		Active: func(clientData netip.AddrPort) (netip.AddrPort, error) {
			return p.dataRelay(director, server, func(ctx context.Context) (net.Conn, error) {
				// From the VIP, as the kernel's NAT makes it look.
				d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(vip, 0))}
				return d.DialContext(ctx, family(clientData.Addr(), "tcp"), clientData.String())
			})
		},
	}
	_ = ftp.Relay(p.ctx, f.client, f.server, hooks)
	return 0, 0
}

// dataRelay opens a listener on addr (any port) that relays one connection
// from peer to what dial reaches, and returns the listener's address.
func (p *Proxy) dataRelay(addr, peer netip.Addr, dial func(context.Context) (net.Conn, error)) (netip.AddrPort, error) {
	ln, err := listenTCP(netip.AddrPortFrom(addr, 0))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("FTP data listener on %s: %w", addr, err)
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := ftp.RelayData(p.ctx, ln, peer, ftpDataTimeout, dial); err != nil {
			p.log.Debug("FTP data connection", "listener", ln.Addr(), "err", err)
		}
	}()
	return addrPortOf(ln.Addr()), nil
}
