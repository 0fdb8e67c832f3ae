package persist

import (
	"fmt"
	"math/bits"
	"net/netip"
	"time"

	"github.com/lbha/lbha/dest"
)

// ftpPort is the kernel's FTPPORT: a persistent service on it keys its
// templates with port 0 so the FTP data connections share the template.
const ftpPort = 21

// Service describes the virtual service a new connection arrived on, as far
// as scheduling needs it.
type Service struct {
	// Addr and Port are the virtual address and port; Port 0 is a
	// port-zero service (persistent only). Addr is not used for matching:
	// the packet's destination is.
	Addr netip.Addr
	Port uint16
	// Fwmark, when non-zero, makes this a fwmark service.
	Fwmark uint32
	// Timeout is the persistence timeout (ipvsadm -p); 0 means not
	// persistent. Timeouts are kept to the millisecond, up to about 49 days.
	Timeout time.Duration
	// Netmask is the IPv4 template granularity (ipvsadm -M); the zero Addr
	// means 255.255.255.255. Non-contiguous masks work as in the kernel.
	Netmask netip.Addr
	// PrefixLen is the IPv6 template granularity, 1..128; 0 means 128.
	PrefixLen int
	// OnePacket is ipvsadm -o: UDP connections are scheduled per datagram
	// and never stored.
	OnePacket bool
	// PE says the service has a persistence engine (--pe sip): every
	// packet must carry PEData, which becomes part of the template key.
	PE bool
}

// Packet is the first packet of a new connection.
type Packet struct {
	Proto  uint8 // ProtoTCP, ProtoUDP or ProtoSCTP
	Src    netip.AddrPort
	Dst    netip.AddrPort
	Fwmark uint32 // the packet's mark; stored in the entries
	// PEData is the persistence-engine datum extracted from the packet
	// (the SIP Call-ID), required when the service has a PE.
	PEData []byte
	// State is the state the connection enters with this packet, what the
	// kernel's state machine makes of it: TCPSynRecv for a SYN, or
	// TCPEstablished for a proxy that accepted the connection; UDPNormal
	// for UDP.
	State State
}

// Scheduled is the outcome of Schedule.
type Scheduled struct {
	// Conn is the new connection, 0 for a one-packet connection, which is
	// not stored. With ErrExists it is the connection already there.
	Conn Ref
	// Template is the template used or created, 0 for a non-persistent
	// service.
	Template Ref
	Dest     *dest.Dest
	DestPort uint16 // port to forward to
	Flags    Flags  // the connection's flags
}

// Schedule picks the destination of a new connection and records it, as the
// kernel's ip_vs_schedule and ip_vs_sched_persist do.
//
// For a persistent service it looks up the client's template; an existing
// valid template decides the destination, otherwise sched is asked and a
// template is created. A template is invalid when its destination was
// removed, or has weight 0 while ExpireQuiescentTemplate is set; it is then
// invalidated in place and never matches again. The new connection is
// linked to the template, whose timer restarts with its timeout.
//
// sched runs with the template's shard lock held, so that two packets of
// one client cannot create two templates; it must not call the Table.
// ErrNoDest reports that sched returned nil.
func (t *Table) Schedule(svc *Service, pkt *Packet, sched func() *dest.Dest) (Scheduled, error) {
	if svc == nil || pkt == nil || sched == nil {
		return Scheduled{}, fmt.Errorf("persist: schedule: nil argument: %w", ErrInvalid)
	}
	src, v6, ok := addrWords(pkt.Src.Addr())
	if !ok {
		return Scheduled{}, fmt.Errorf("persist: schedule: source address: %w", ErrInvalid)
	}
	dst, dv6, ok := addrWords(pkt.Dst.Addr())
	if !ok || dv6 != v6 {
		return Scheduled{}, fmt.Errorf("persist: schedule: destination address: %w", ErrInvalid)
	}
	switch pkt.Proto {
	case ProtoTCP, ProtoUDP, ProtoSCTP:
	default:
		return Scheduled{}, fmt.Errorf("persist: schedule: protocol %d: %w", pkt.Proto, ErrInvalid)
	}
	if err := validState(pkt.Proto, false, pkt.State); err != nil {
		return Scheduled{}, fmt.Errorf("persist: schedule: %w", err)
	}
	c := connSpec{pkt: pkt, ops: svc.OnePacket && pkt.Proto == ProtoUDP}
	c.key.set(pkt.Proto, v6, src, pkt.Src.Port(), dst, pkt.Dst.Port(), false, false)
	if svc.Timeout <= 0 {
		return t.scheduleConn(svc, c, sched)
	}
	return t.schedulePersist(svc, c, src, v6, dst, sched)
}

// connSpec carries the connection half of a scheduling decision.
type connSpec struct {
	key key
	pkt *Packet
	ops bool
}

// scheduleConn is the non-persistent path of ip_vs_schedule.
func (t *Table) scheduleConn(svc *Service, c connSpec, sched func() *dest.Dest) (Scheduled, error) {
	vport := c.pkt.Dst.Port()
	if svc.Fwmark == 0 && vport != svc.Port {
		// The kernel logs "port zero only supported in persistent
		// services" and drops.
		return Scheduled{}, fmt.Errorf("persist: schedule: packet port %d on service port %d without persistence: %w", vport, svc.Port, ErrInvalid)
	}
	d := sched()
	if d == nil {
		return Scheduled{}, fmt.Errorf("persist: schedule: %w", ErrNoDest)
	}
	dport := d.Port
	if dport == 0 {
		dport = vport
	}
	return t.createConn(c, d, dport, ctlRef{}, false)
}

// schedulePersist is ip_vs_sched_persist.
func (t *Table) schedulePersist(svc *Service, c connSpec, src addrw, v6 bool, dst addrw, sched func() *dest.Dest) (Scheduled, error) {
	pkt := c.pkt
	snet, err := maskClient(svc, src, v6)
	if err != nil {
		return Scheduled{}, fmt.Errorf("persist: schedule: %w", err)
	}
	if svc.PE {
		if len(pkt.PEData) == 0 {
			// The SIP engine drops a packet without a usable Call-ID.
			return Scheduled{}, fmt.Errorf("persist: schedule: no persistence-engine data: %w", ErrInvalid)
		}
		if len(pkt.PEData) > MaxPEData {
			return Scheduled{}, fmt.Errorf("persist: schedule: persistence-engine data of %d bytes: %w", len(pkt.PEData), ErrInvalid)
		}
	}
	timeout := durationMillis(svc.Timeout)
	if timeout == 0 {
		return Scheduled{}, fmt.Errorf("persist: schedule: persistence timeout %v: %w", svc.Timeout, ErrInvalid)
	}

	// Template key (see spec table "Template encoding"): the service port
	// keeps vport unless it is FTP; other ports mean a fwmark service
	// (keyed by the mark, protocol 0) or a port-zero service (vport 0).
	dport := pkt.Dst.Port()
	proto, vaddr, vport := pkt.Proto, dst, uint16(0)
	if dport == svc.Port {
		if svc.Port != ftpPort {
			vport = dport
		}
	} else if svc.Fwmark != 0 {
		// The mark big-endian in the first four bytes: as a
		// little-endian word, byte-reversed.
		proto = ProtoIP
		vaddr = addrw{w0: bits.ReverseBytes32(svc.Fwmark)}
	}
	var pe []byte
	if svc.PE {
		pe = pkt.PEData
	}
	var tk key
	tk.set(proto, v6, snet, 0, vaddr, vport, true, svc.PE)
	h := t.h.hash(&tk, pe)
	sh := t.shardOf(h)
	now := t.now()

	sh.mu.Lock()
	i, found := sh.find(&tk, pe, h)
	var d *dest.Dest
	if found {
		d = t.dests.get(sh.slab.at(i).dest)
		if !t.templateValid(d) {
			t.invalidate(sh, i, now)
			found = false
		}
	}
	if !found {
		if d = sched(); d == nil {
			sh.mu.Unlock()
			return Scheduled{}, fmt.Errorf("persist: schedule: %w", ErrNoDest)
		}
		var e *entry
		i, e, err = sh.insert(&tk, pe, h)
		if err != nil {
			sh.mu.Unlock()
			return Scheduled{}, fmt.Errorf("persist: schedule: template: %w", err)
		}
		if dport == svc.Port && svc.Port != ftpPort {
			e.dport = d.Port
		}
		setDaddr(e, d.Addr)
		e.flags = FlagTemplate
		e.fwmark = pkt.Fwmark
		e.timeout = timeout
		t.bind(e, d)
	}
	e := sh.slab.at(i)
	if c.ops {
		// The kernel links and at once unlinks the one-packet connection;
		// what stays is the template's packet count.
		e.inPkts++
	} else {
		e.link++ // n_control, reserved before the connection exists
	}
	sh.restart(i, now)
	tmpl := ctlRef{shard: sh.id, gen: e.gen, i: i}
	if found {
		t.emit(EventUpdated, sh, i, now, false)
	} else {
		t.emit(EventCreated, sh, i, now, false)
	}
	sh.mu.Unlock()

	// The connection goes to the packet's port, or to the destination's
	// port when the packet came to the service port and the destination
	// has one.
	toPort := dport
	if dport == svc.Port && d.Port != 0 {
		toPort = d.Port
	}
	s, err := t.createConn(c, d, toPort, tmpl, true)
	s.Template = makeRef(tmpl.shard, tmpl.gen, tmpl.i)
	if err != nil && !c.ops {
		t.release(tmpl, now)
	}
	return s, err
}

// templateValid is ip_vs_check_template without the expected-dest case.
// OVERLOAD does not invalidate a template.
func (t *Table) templateValid(d *dest.Dest) bool {
	return d != nil && d.Available() && !(t.cfg.ExpireQuiescentTemplate && d.Weight() == 0)
}

// invalidate takes a template out of the lookup index and gives it the
// kernel's invalid ports (cport 0, vport and dport 0xFFFF). Its timer is
// not restarted: it dies once its connections are gone.
func (t *Table) invalidate(sh *shard, i uint32, now int64) {
	e := sh.slab.at(i)
	sh.indexRemove(i, sh.hashOf(i))
	e.key.setCport(0)
	e.key.setVport(invalidPort)
	e.dport = invalidPort
	e.meta |= metaInvalid
	t.emit(EventUpdated, sh, i, now, false)
}

// createConn stores the connection half. tmpl names the controlling
// template when persistent, whose n_control the caller already raised.
func (t *Table) createConn(c connSpec, d *dest.Dest, dport uint16, tmpl ctlRef, persistent bool) (Scheduled, error) {
	pkt := c.pkt
	s := Scheduled{Dest: d, DestPort: dport}
	if c.ops {
		// Bound and unbound at once in the kernel; only OVERLOAD can
		// notice.
		inactive := !stateActive(pkt.Proto, pkt.State)
		d.Bind(false, inactive)
		d.Unbind(false, inactive)
		s.Flags = destConnFlags(d) | FlagOnePacket
		if !inactive {
			s.Flags &^= FlagInactive
		}
		return s, nil
	}
	h := t.h.hash(&c.key, nil)
	sh := t.shardOf(h)
	now := t.now()
	sh.mu.Lock()
	if i, ok := sh.find(&c.key, nil, h); ok {
		s.Conn = makeRef(sh.id, sh.slab.at(i).gen, i)
		sh.mu.Unlock()
		return s, fmt.Errorf("persist: schedule: %w", ErrExists)
	}
	i, e, err := sh.insert(&c.key, nil, h)
	if err != nil {
		sh.mu.Unlock()
		return s, fmt.Errorf("persist: schedule: connection: %w", err)
	}
	e.dport = dport
	setDaddr(e, d.Addr)
	e.fwmark = pkt.Fwmark
	e.state = pkt.State
	e.timeout, _ = t.timeouts.lookup(pkt.Proto, pkt.State)
	if persistent {
		e.link, e.linkShard, e.linkGen = tmpl.i+1, tmpl.shard, tmpl.gen
	}
	// Bound INACTIVE like every new connection, then moved by the state
	// the first packet put it in.
	t.bind(e, d)
	t.setActive(e, stateActive(pkt.Proto, pkt.State))
	sh.restart(i, now)
	s.Conn = makeRef(sh.id, e.gen, i)
	s.Flags = e.flags
	t.emit(EventCreated, sh, i, now, false)
	sh.mu.Unlock()
	if persistent && stateAssures(pkt.Proto, pkt.State) {
		t.assure(tmpl, now)
	}
	return s, nil
}

func setDaddr(e *entry, a netip.Addr) {
	w, v6, _ := addrWords(a)
	e.daddr = w
	if v6 {
		e.meta |= metaDestV6
	} else {
		e.meta &^= metaDestV6
	}
}

// maskClient applies the service's template granularity to the client
// address: an IPv4 netmask or an IPv6 prefix length.
func maskClient(svc *Service, src addrw, v6 bool) (addrw, error) {
	if v6 {
		plen := svc.PrefixLen
		if plen == 0 {
			plen = 128
		}
		if plen < 1 || plen > 128 {
			return src, fmt.Errorf("IPv6 prefix length %d: %w", plen, ErrInvalid)
		}
		p := netip.PrefixFrom(src.addr(true), plen).Masked()
		w, _, _ := addrWords(p.Addr())
		return w, nil
	}
	if !svc.Netmask.IsValid() {
		return src, nil // 255.255.255.255
	}
	m, mv6, _ := addrWords(svc.Netmask)
	if mv6 {
		return src, fmt.Errorf("netmask %v for IPv4: %w", svc.Netmask, ErrInvalid)
	}
	src.w0 &= m.w0
	return src, nil
}
