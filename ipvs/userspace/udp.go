package userspace

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lbha/lbha/dest"
	"github.com/lbha/lbha/persist"
	"github.com/lbha/lbha/persist/sip"
)

// touchUDPEvery throttles the table refreshes of a busy UDP flow: the
// entry lives 300 s, so one refresh a second is plenty.
const touchUDPEvery = time.Second

// udpService is the listening socket of a UDP service and its flows. A
// flow is the kernel's UDP connection: one client address and port (and,
// for a one-packet service, one real server), with its own connected
// socket towards the real server whose replies go back through the
// service's socket, so they come from the VIP.
type udpService struct {
	s        *service
	c        *net.UDPConn
	draining atomic.Bool // refuses new flows (mastership lost, drain mode)

	mu    sync.Mutex
	flows map[udpKey]*udpFlow

	stopOnce sync.Once
	done     chan struct{}

	noDest, noCallID atomic.Uint64
}

type udpKey struct {
	client netip.AddrPort
	dest   netip.AddrPort // one-packet services only
}

type udpFlow struct {
	u       *udpService
	key     udpKey
	up      *net.UDPConn
	ref     persist.Ref
	d       *rdest
	last    atomic.Int64 // unix nanoseconds of the last datagram either way
	touched atomic.Int64
	once    sync.Once
}

func newUDPService(s *service, c *net.UDPConn) *udpService {
	u := &udpService{s: s, c: c, flows: map[udpKey]*udpFlow{}, done: make(chan struct{})}
	s.p.wg.Add(2)
	go u.readLoop()
	go u.sweep()
	return u
}

func (u *udpService) stop() {
	u.stopOnce.Do(func() {
		close(u.done)
		u.c.Close()
		u.mu.Lock()
		fs := make([]*udpFlow, 0, len(u.flows))
		for _, f := range u.flows {
			fs = append(fs, f)
		}
		u.mu.Unlock()
		for _, f := range fs {
			f.close()
		}
	})
}

func (u *udpService) readLoop() {
	defer u.s.p.wg.Done()
	buf := make([]byte, 65535)
	vip := netip.AddrPortFrom(u.s.key.Addr, u.s.key.Port)
	for {
		n, src, err := u.c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		u.datagram(buf[:n], src, vip)
	}
}

// datagram forwards one client datagram, creating its flow if needed.
func (u *udpService) datagram(b []byte, src, vip netip.AddrPort) {
	st := u.s.settings.Load()
	if !st.psvc.OnePacket {
		u.mu.Lock()
		f := u.flows[udpKey{client: src}]
		u.mu.Unlock()
		if f != nil {
			f.send(b)
			return
		}
	}
	if u.draining.Load() {
		return
	}
	var pe []byte
	if st.psvc.PE {
		id, err := sip.CallID(b)
		if err != nil {
			// The kernel's SIP engine cannot key the template: the
			// packet is not scheduled.
			u.noCallID.Add(1)
			return
		}
		pe = id
	}
	pkt := persist.Packet{Proto: persist.ProtoUDP, Src: src, Dst: vip, PEData: pe, State: persist.UDPNormal}
	pick := func() *dest.Dest { return st.sched.Pick(schedPacket(persist.ProtoUDP, src, vip)) }
	table := u.s.p.table
	sc, err := table.Schedule(&st.psvc, &pkt, pick)
	if errors.Is(err, persist.ErrExists) {
		// An entry without a flow: synced from the previous master, or
		// its flow's socket was closed. The kernel would keep using it.
		if e, ok := table.Get(sc.Conn); ok && e.Dest != nil && e.Dest.Available() {
			sc.Dest, sc.DestPort, err = e.Dest, e.DestAddr.Port(), nil
		} else {
			table.Drop(sc.Conn)
			sc, err = table.Schedule(&st.psvc, &pkt, pick)
		}
	}
	if err != nil {
		u.noDest.Add(1)
		return
	}
	target := netip.AddrPortFrom(sc.Dest.Addr, sc.DestPort)
	key := udpKey{client: src}
	if st.psvc.OnePacket {
		key.dest = target
		u.mu.Lock()
		f := u.flows[key]
		u.mu.Unlock()
		if f != nil {
			u.s.stats.conns.Add(1)
			if f.d != nil {
				f.d.stats.conns.Add(1)
			}
			f.send(b)
			return
		}
	}
	up, err := net.DialUDP(family(target.Addr(), "udp"), nil, net.UDPAddrFromAddrPort(target))
	if err != nil {
		table.Drop(sc.Conn)
		u.noDest.Add(1)
		return
	}
	f := &udpFlow{u: u, key: key, up: up, ref: sc.Conn, d: u.s.rdestOf(sc.Dest)}
	f.last.Store(time.Now().UnixNano())
	u.mu.Lock()
	if _, dup := u.flows[key]; dup || u.draining.Load() {
		u.mu.Unlock()
		up.Close()
		return
	}
	u.flows[key] = f
	u.mu.Unlock()
	u.s.p.addFlow(f)
	u.s.stats.conns.Add(1)
	if f.d != nil {
		f.d.stats.conns.Add(1)
	}
	u.s.p.wg.Add(1)
	go f.replies()
	f.send(b)
}

func (f *udpFlow) service() *service { return f.u.s }

func (f *udpFlow) close() {
	f.once.Do(func() {
		f.up.Close()
		f.u.mu.Lock()
		if f.u.flows[f.key] == f {
			delete(f.u.flows, f.key)
		}
		f.u.mu.Unlock()
		f.u.s.p.removeFlow(f)
	})
}

func (f *udpFlow) touch() {
	if f.ref != 0 {
		_, _ = f.u.s.p.table.Touch(f.ref, false)
	}
}

// mark records activity and refreshes the table entry at most once per
// touchUDPEvery.
func (f *udpFlow) mark(reply bool) {
	now := time.Now().UnixNano()
	f.last.Store(now)
	if f.ref != 0 && now-f.touched.Load() >= int64(touchUDPEvery) {
		f.touched.Store(now)
		_, _ = f.u.s.p.table.Touch(f.ref, reply)
	}
}

func (f *udpFlow) send(b []byte) {
	if _, err := f.up.Write(b); err != nil {
		return
	}
	f.mark(false)
	s := f.u.s
	s.stats.inPkts.Add(1)
	s.stats.inBytes.Add(uint64(len(b)))
	if f.d != nil {
		f.d.stats.inPkts.Add(1)
		f.d.stats.inBytes.Add(uint64(len(b)))
	}
}

// replies sends the real server's datagrams back to the client from the
// VIP until the flow closes.
func (f *udpFlow) replies() {
	defer f.u.s.p.wg.Done()
	defer f.close()
	buf := make([]byte, 65535)
	s := f.u.s
	for {
		n, err := f.up.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ICMP errors (port unreachable) surface as read errors on a
			// connected socket; the flow lives on until it idles out.
			continue
		}
		if _, err := f.u.c.WriteToUDPAddrPort(buf[:n], f.key.client); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		f.mark(true)
		s.stats.outPkts.Add(1)
		s.stats.outBytes.Add(uint64(n))
		if f.d != nil {
			f.d.stats.outPkts.Add(1)
			f.d.stats.outBytes.Add(uint64(n))
		}
	}
}

// sweep closes flows idle for longer than the UDP timeout.
func (u *udpService) sweep() {
	defer u.s.p.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-u.done:
			return
		case <-t.C:
		}
		limit := time.Now().Add(-u.s.p.cfg.UDPTimeout).UnixNano()
		u.mu.Lock()
		var idle []*udpFlow
		for _, f := range u.flows {
			if f.last.Load() < limit {
				idle = append(idle, f)
			}
		}
		u.mu.Unlock()
		for _, f := range idle {
			f.close()
		}
	}
}
