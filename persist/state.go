package persist

import (
	"fmt"
	"time"
)

// IP protocol numbers the table knows.
const (
	ProtoIP   uint8 = 0 // fwmark templates
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoESP  uint8 = 50
	ProtoAH   uint8 = 51
	ProtoSCTP uint8 = 132
)

// State is a protocol state number as the kernel numbers it (and as the sync
// protocol carries it). Its meaning depends on the protocol, and on whether
// the entry is a template.
type State uint16

// TCP states (IP_VS_TCP_S_*).
const (
	TCPNone State = iota
	TCPEstablished
	TCPSynSent
	TCPSynRecv
	TCPFinWait
	TCPTimeWait
	TCPClose
	TCPCloseWait
	TCPLastAck
	TCPListen
	TCPSynAck
	tcpStates
)

// UDPNormal is the only UDP state (IP_VS_UDP_S_NORMAL).
const UDPNormal State = 0

// SCTP states as numbered by Linux 6.x (IP_VS_SCTP_S_*).
const (
	SCTPNone State = iota
	SCTPInit1
	SCTPInit
	SCTPCookieSent
	SCTPCookieReplied
	SCTPCookieWait
	SCTPCookie
	SCTPCookieEchoed
	SCTPEstablished
	SCTPShutdownSent
	SCTPShutdownReceived
	SCTPShutdownAckSent
	SCTPRejected
	SCTPClosed
	sctpStates
)

// Template states (IP_VS_CTPL_S_*).
const (
	TemplateNone State = iota
	// TemplateAssured is set once a connection controlled by the template
	// reached TCP or SCTP ESTABLISHED, or a UDP connection saw a reply.
	TemplateAssured
	templateStates
)

var tcpNames = [tcpStates]string{
	"NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
	"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK",
}

// sctpNames are the kernel's display names (/proc/net/ip_vs_conn), not the
// enum names.
var sctpNames = [sctpStates]string{
	"NONE", "INIT1", "INIT", "C-SENT", "C-REPLIED", "C-WAIT", "COOKIE",
	"C-ECHOED", "ESTABLISHED", "S-SENT", "S-RECEIVED", "S-ACK-SENT",
	"REJECTED", "CLOSED",
}

// tcpActive says which TCP states count as active connections. Since Linux
// 4.8 ("ipvs: count pre-established TCP states as active") the handshake
// states count too, so a burst of new connections weighs on the schedulers
// before the handshakes complete.
var tcpActive = [tcpStates]bool{
	TCPEstablished: true, TCPSynSent: true, TCPSynRecv: true, TCPSynAck: true,
}

// Default timeouts in seconds, from the kernel's tcp_timeouts, udp_timeouts
// and sctp_timeouts.
var (
	defaultTCPTimeouts = [tcpStates]uint32{
		TCPNone: 2, TCPEstablished: 15 * 60, TCPSynSent: 2 * 60, TCPSynRecv: 60,
		TCPFinWait: 2 * 60, TCPTimeWait: 2 * 60, TCPClose: 10, TCPCloseWait: 60,
		TCPLastAck: 30, TCPListen: 2 * 60, TCPSynAck: 120,
	}
	defaultUDPTimeout   uint32 = 5 * 60
	defaultSCTPTimeouts        = [sctpStates]uint32{
		SCTPNone: 2, SCTPInit1: 4, SCTPInit: 61, SCTPCookieSent: 61,
		SCTPCookieReplied: 61, SCTPCookieWait: 61, SCTPCookie: 61,
		SCTPCookieEchoed: 61, SCTPEstablished: 15 * 60, SCTPShutdownSent: 61,
		SCTPShutdownReceived: 61, SCTPShutdownAckSent: 61, SCTPRejected: 4,
		SCTPClosed: 61,
	}
)

// Timers the kernel uses outside the protocol tables.
const (
	// keepAliveTimeout is what ip_vs_conn_expire gives a template that still
	// controls connections; the template keeps it from then on.
	keepAliveTimeout = 60 * time.Second
	// syncDefaultTimeout is what ip_vs_proc_conn gives a synced template, or
	// a connection of a protocol without a timeout table, when the message
	// carries no timeout (always so for sync version 0).
	syncDefaultTimeout = 3 * 60 * time.Second
)

// numStates returns how many states the protocol has, and false if the
// kernel does not know the protocol (ip_vs_proto_get fails). AH and ESP are
// known with a single state and no timeout table.
func numStates(proto uint8) (State, bool) {
	switch proto {
	case ProtoTCP:
		return tcpStates, true
	case ProtoUDP:
		return 1, true
	case ProtoSCTP:
		return sctpStates, true
	case ProtoAH, ProtoESP:
		return 1, true
	}
	return 0, false
}

// StateName returns the name the kernel shows for state in
// /proc/net/ip_vs_conn and ipvsadm -Lc: NONE/ASSURED for templates, the
// protocol's state names otherwise ("UDP" for UDP connections).
func StateName(proto uint8, flags Flags, s State) string {
	if flags&FlagTemplate != 0 {
		switch s {
		case TemplateNone:
			return "NONE"
		case TemplateAssured:
			return "ASSURED"
		}
		return "ERR!"
	}
	switch proto {
	case ProtoTCP:
		if s < tcpStates {
			return tcpNames[s]
		}
	case ProtoUDP:
		if s == UDPNormal {
			return "UDP"
		}
	case ProtoSCTP:
		if s < sctpStates {
			return sctpNames[s]
		}
	case ProtoIP:
		return "NONE"
	}
	return "ERR!"
}

// Timeouts overrides the default state timeouts the way ipvsadm --set does.
// A zero field keeps the kernel default.
type Timeouts struct {
	TCP    time.Duration // TCP ESTABLISHED (default 900 s)
	TCPFin time.Duration // TCP FIN_WAIT (default 120 s)
	UDP    time.Duration // UDP (default 300 s)
}

// timeoutTable holds per-state timeouts in milliseconds.
type timeoutTable struct {
	tcp  [tcpStates]uint32
	udp  uint32
	sctp [sctpStates]uint32
}

func newTimeoutTable(o Timeouts) timeoutTable {
	var t timeoutTable
	for i, s := range defaultTCPTimeouts {
		t.tcp[i] = s * 1000
	}
	t.udp = defaultUDPTimeout * 1000
	for i, s := range defaultSCTPTimeouts {
		t.sctp[i] = s * 1000
	}
	if o.TCP > 0 {
		t.tcp[TCPEstablished] = durationMillis(o.TCP)
	}
	if o.TCPFin > 0 {
		t.tcp[TCPFinWait] = durationMillis(o.TCPFin)
	}
	if o.UDP > 0 {
		t.udp = durationMillis(o.UDP)
	}
	return t
}

// lookup returns the timeout of a connection state in milliseconds, and
// false for protocols without a timeout table or out-of-range states.
func (t *timeoutTable) lookup(proto uint8, s State) (uint32, bool) {
	switch proto {
	case ProtoTCP:
		if s < tcpStates {
			return t.tcp[s], true
		}
	case ProtoUDP:
		if s == UDPNormal {
			return t.udp, true
		}
	case ProtoSCTP:
		if s < sctpStates {
			return t.sctp[s], true
		}
	}
	return 0, false
}

// DefaultTimeout returns the kernel's default timeout of a connection state,
// and false if the protocol has no timeout table or the state is out of
// range.
func DefaultTimeout(proto uint8, s State) (time.Duration, bool) {
	t := newTimeoutTable(Timeouts{})
	ms, ok := t.lookup(proto, s)
	return time.Duration(ms) * time.Millisecond, ok
}

// stateActive reports whether a connection in state s counts as active on
// its destination. UDP and other protocols never do: their connections stay
// INACTIVE as the kernel binds them.
func stateActive(proto uint8, s State) bool {
	switch proto {
	case ProtoTCP:
		return s < tcpStates && tcpActive[s]
	case ProtoSCTP:
		return s == SCTPEstablished
	}
	return false
}

// stateAssures reports whether entering s makes the controlling template
// ASSURED (ip_vs_control_assure_ct on ESTABLISHED).
func stateAssures(proto uint8, s State) bool {
	return (proto == ProtoTCP && s == TCPEstablished) || (proto == ProtoSCTP && s == SCTPEstablished)
}

// maxTimeoutMillis is the longest timeout an entry can hold (about 49.7
// days); longer ones, which only a sync peer can ask for, are clamped.
const maxTimeoutMillis = 1<<32 - 1

func durationMillis(d time.Duration) uint32 {
	switch ms := d.Milliseconds(); {
	case ms < 0:
		return 0
	case ms > maxTimeoutMillis:
		return maxTimeoutMillis
	default:
		return uint32(ms)
	}
}

func validState(proto uint8, template bool, s State) error {
	if template {
		if s >= templateStates {
			return fmt.Errorf("template state %d: %w", s, ErrInvalid)
		}
		return nil
	}
	n, ok := numStates(proto)
	if !ok {
		return fmt.Errorf("protocol %d: %w", proto, ErrInvalid)
	}
	if s >= n {
		return fmt.Errorf("protocol %d state %d: %w", proto, s, ErrInvalid)
	}
	return nil
}
