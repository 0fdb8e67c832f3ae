package userspace

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/dest"
	"github.com/lbha/lbha/persist"
)

// tcpFlow is one proxied TCP connection.
type tcpFlow struct {
	s              *service
	ref            persist.Ref
	client, server *net.TCPConn
	once           sync.Once
}

func (f *tcpFlow) service() *service { return f.s }

func (f *tcpFlow) close() {
	f.once.Do(func() {
		f.client.Close()
		f.server.Close()
	})
}

func (f *tcpFlow) touch() { _, _ = f.s.p.table.Touch(f.ref, false) }

// acceptLoop accepts until the listener closes.
func (s *service) acceptLoop(ln *net.TCPListener) {
	defer s.p.wg.Done()
	var backoff time.Duration
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as
			// net/http does, rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.p.log.Warn("accept", "service", s.key, "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.p.wg.Add(1)
		go s.serveTCP(c)
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if ua, ok := a.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// scheduleTCP picks the real server of a new connection. A table entry
// left with the same addresses (a connection synced from the previous
// master, or one closed a moment ago) is replaced, as the kernel's
// conn_reuse_mode does for a new SYN.
func (s *service) scheduleTCP(src, dst netip.AddrPort) (persist.Scheduled, *settings, error) {
	st := s.settings.Load()
	pkt := persist.Packet{Proto: persist.ProtoTCP, Src: src, Dst: dst, State: persist.TCPEstablished}
	// The pick is made once: a retry after replacing a stale entry must
	// not advance the scheduler a second time (the kernel schedules once).
	var picked *dest.Dest
	pick := func() *dest.Dest {
		if picked == nil {
			picked = st.sched.Pick(schedPacket(persist.ProtoTCP, src, dst))
		}
		return picked
	}
	sc, err := s.p.table.Schedule(&st.psvc, &pkt, pick)
	if errors.Is(err, persist.ErrExists) {
		s.p.table.Drop(sc.Conn)
		sc, err = s.p.table.Schedule(&st.psvc, &pkt, pick)
	}
	return sc, st, err
}

func (s *service) serveTCP(c *net.TCPConn) {
	defer s.p.wg.Done()
	src, dst := addrPortOf(c.RemoteAddr()), addrPortOf(c.LocalAddr())
	sc, _, err := s.scheduleTCP(src, dst)
	if err != nil {
		// The kernel answers with an ICMP error or a reset; so do we.
		_ = c.SetLinger(0)
		c.Close()
		s.p.log.Debug("no real server", "service", s.key, "client", src, "err", err)
		return
	}
	rd := s.rdestOf(sc.Dest)
	target := netip.AddrPortFrom(sc.Dest.Addr, sc.DestPort)
	ctx, cancel := context.WithTimeout(context.Background(), s.p.cfg.DialTimeout)
	// No TCP keepalive on either side, as IPVS sends none: an idle flow
	// costs nothing, and it saves four system calls per connection.
	d := net.Dialer{KeepAlive: -1}
	up, err := d.DialContext(ctx, family(target.Addr(), "tcp"), target.String())
	cancel()
	if err != nil {
		s.p.table.Drop(sc.Conn)
		_ = c.SetLinger(0)
		c.Close()
		s.p.log.Debug("real server unreachable", "service", s.key, "server", target, "err", err)
		return
	}
	f := &tcpFlow{s: s, ref: sc.Conn, client: c, server: up.(*net.TCPConn)}
	s.stats.conns.Add(1)
	if rd != nil {
		rd.stats.conns.Add(1)
	}
	s.p.addFlow(f)
	if !s.p.accepting.Load() && s.p.cfg.OnStandby != config.StandbyDrain {
		f.close() // mastership was lost while this flow was being set up
	}
	var in, out int64
	if s.ftp() {
		in, out = s.relayFTP(f)
	} else {
		in, out = relay(f.client, f.server)
	}
	f.close()
	s.p.removeFlow(f)
	_ = s.p.table.SetState(f.ref, persist.TCPClose)
	s.stats.inBytes.Add(uint64(in))
	s.stats.outBytes.Add(uint64(out))
	if rd != nil {
		rd.stats.inBytes.Add(uint64(in))
		rd.stats.outBytes.Add(uint64(out))
	}
}

// relay copies both ways until both directions ended; io.Copy between two
// TCP connections splices in the kernel. A direction that ends cleanly
// half-closes the other side; an error closes both.
func relay(client, server *net.TCPConn) (in, out int64) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		in, err = io.Copy(server, client)
		if err != nil {
			client.Close()
			server.Close()
			return
		}
		_ = server.CloseWrite()
	}()
	out, err := io.Copy(client, server)
	if err != nil {
		client.Close()
		server.Close()
	} else {
		_ = client.CloseWrite()
	}
	<-done
	return in, out
}
