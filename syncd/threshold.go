package syncd

import "github.com/lbha/lbha/persist"

// Note reports an inbound packet of connection (or template) ref, whose
// in_pkts count is now pkts (what Table.Touch returns), for a Master in
// kernel-compatible mode (MasterConfig.Threshold set); otherwise it does
// nothing.
//
// It makes the kernel's decision (ip_vs_sync_conn_needed, spec §B.2): a
// TCP or SCTP connection is sent only in a state worth syncing
// (ESTABLISHED and the closing states); then, with Period > 0, a
// connection is sent when pkts % Period == Threshold and a template always
// passes; with Period 0 either is sent when pkts == Threshold. As in the
// kernel's v1 path the controlling template is considered next, whether
// or not the connection was sent; v0 considers it only if the connection
// was sent.
//
// Two parts of the kernel's decision come from elsewhere: a connection
// entering a closing state is sent at once through the change feed
// (step 3's "forced" send), and sync_refresh_period/sync_retries (step 4)
// are not modelled. The table does not count a template's own packets, so
// with Period 0 the template is judged by its connection's count.
func (m *Master) Note(ref persist.Ref, pkts uint32) {
	th := m.cfg.Threshold
	if th == nil {
		return
	}
	e, ok := m.table.Get(ref)
	if !ok || !convertible(&e) {
		return
	}
	sent := false
	if th.pass(&e, pkts) {
		m.enqueue(&e)
		sent = true
	}
	if e.Control == 0 || (m.cfg.V0 && !sent) {
		return
	}
	if t, ok := m.table.Get(e.Control); ok && convertible(&t) && th.pass(&t, pkts) {
		m.enqueue(&t)
	}
}

// pass is steps 3 (state filter) and 5 of the kernel's decision.
func (th *Threshold) pass(e *persist.Entry, pkts uint32) bool {
	template := e.Template()
	if !template && !syncState(e) {
		return false
	}
	if th.Period > 0 {
		return template || pkts%th.Period == th.Threshold
	}
	return pkts == th.Threshold
}

// syncState reports whether a connection's state is one the kernel syncs:
// for TCP and SCTP only ESTABLISHED and the closing states, for other
// protocols every state.
func syncState(e *persist.Entry) bool {
	switch e.Proto {
	case persist.ProtoTCP:
		switch e.State {
		case persist.TCPEstablished, persist.TCPFinWait, persist.TCPClose, persist.TCPCloseWait, persist.TCPTimeWait:
			return true
		}
		return false
	case persist.ProtoSCTP:
		switch e.State {
		case persist.SCTPEstablished, persist.SCTPShutdownSent, persist.SCTPShutdownReceived,
			persist.SCTPShutdownAckSent, persist.SCTPClosed:
			return true
		}
		return false
	}
	return true
}

// forcedSend reports whether a change in kernel-compatible mode is sent at
// once: a TCP or SCTP connection that moved into a closing state (the
// kernel's force = state != old_state, for states other than
// ESTABLISHED). The table reports a state change as an update.
func forcedSend(e *persist.Entry) bool {
	if e.Template() || (e.Proto != persist.ProtoTCP && e.Proto != persist.ProtoSCTP) {
		return false
	}
	established := (e.Proto == persist.ProtoTCP && e.State == persist.TCPEstablished) ||
		(e.Proto == persist.ProtoSCTP && e.State == persist.SCTPEstablished)
	return syncState(e) && !established
}
