package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lbha/lbha/cluster"
)

// metrics are the agent's Prometheus metrics. Gauges that mirror cluster
// state are read at scrape time (a collector), so they are never stale;
// events are counters updated as they happen.
type metrics struct {
	reg          *prometheus.Registry
	stateChanges *prometheus.CounterVec
	failovers    prometheus.Counter
	rsChanges    *prometheus.CounterVec
}

// realServerTransition counts a health verdict change.
func (m *metrics) realServerTransition(up bool) {
	if m == nil {
		return
	}
	to := "down"
	if up {
		to = "up"
	}
	m.rsChanges.WithLabelValues(to).Inc()
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		stateChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lbha_state_transitions_total",
			Help: "State transitions of this node, by the state entered.",
		}, []string{"state"}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lbha_failovers_total",
			Help: "Times this node became master.",
		}),
		rsChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lbha_realserver_health_transitions_total",
			Help: "Health verdict changes of real servers, by the verdict entered.",
		}, []string{"to"}),
	}
	m.reg.MustRegister(m.stateChanges, m.failovers, m.rsChanges, statusCollector{a},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(new cluster.State) {
	m.stateChanges.WithLabelValues(new.String()).Inc()
	if new == cluster.StateMaster {
		m.failovers.Inc()
	}
}

var (
	descState = prometheus.NewDesc("lbha_state", "1 for the node's current state (BACKUP, MASTER, FAULT, WITNESS).",
		[]string{"state"}, nil)
	descTerm          = prometheus.NewDesc("lbha_raft_term", "Current raft term.", nil, nil)
	descLeader        = prometheus.NewDesc("lbha_is_leader", "1 if this node is the raft leader.", nil, nil)
	descLastContact   = prometheus.NewDesc("lbha_raft_last_contact_seconds", "Time since a follower last heard the leader.", nil, nil)
	descLeaseLeft     = prometheus.NewDesc("lbha_lease_remaining_seconds", "Remaining lease of the master (0 elsewhere).", nil, nil)
	descVIPs          = prometheus.NewDesc("lbha_vips_held", "Number of VIPs this node holds.", nil, nil)
	descConfigVersion = prometheus.NewDesc("lbha_config_version", "Version of the replicated configuration applied here.", nil, nil)
	descTolerant      = prometheus.NewDesc("lbha_cluster_survives_one_failure", "1 if the voters can lose one node and keep a master.", nil, nil)
	descAnnounce      = prometheus.NewDesc("lbha_vip_announcements_total", "Gratuitous ARPs (arp) and unsolicited neighbour advertisements (ndp) sent.", []string{"kind"}, nil)
	descSyncWarm      = prometheus.NewDesc("lbha_sync_warm", "1 when this node's connection table is complete (master, or backup after a full resync).", nil, nil)
	descSyncDatagrams = prometheus.NewDesc("lbha_sync_datagrams_total", "Sync datagrams sent (master) and received (backup).", []string{"direction"}, nil)
	descSyncEntries   = prometheus.NewDesc("lbha_sync_entries_total", "Sync entries sent, received and applied.", []string{"what"}, nil)
	descSyncDropped   = prometheus.NewDesc("lbha_sync_dropped_total", "Sync datagrams and entries dropped, by reason.", []string{"reason"}, nil)
	descTableEntries  = prometheus.NewDesc("lbha_table_entries", "Entries of the connection table.", []string{"kind"}, nil)
	descVIPOps        = prometheus.NewDesc("lbha_vip_operations_total", "VIP address operations, by operation and result.", []string{"op", "result"}, nil)
	descDPOps         = prometheus.NewDesc("lbha_dataplane_operations_total", "Dataplane changes made by the reconciler, by result.", []string{"dataplane", "result"}, nil)
	descDPDrift       = prometheus.NewDesc("lbha_dataplane_drift_repairs_total", "Reconciles that found the dataplane changed behind lbha's back and repaired it.", []string{"dataplane"}, nil)
	descRSUp          = prometheus.NewDesc("lbha_realserver_up", "1 while a checked real server passes its health check.", []string{"service", "server"}, nil)
	descSvcConns      = prometheus.NewDesc("lbha_service_connections_total", "Connections scheduled by a virtual service.", []string{"service"}, nil)
	descSvcBytes      = prometheus.NewDesc("lbha_service_bytes_total", "Bytes through a virtual service, by direction.", []string{"service", "direction"}, nil)
	descRSActive      = prometheus.NewDesc("lbha_realserver_connections", "Connections bound to a real server, by state.", []string{"service", "server", "state"}, nil)
)

type statusCollector struct{ a *Agent }

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descTerm, descLeader, descLastContact, descLeaseLeft, descVIPs, descConfigVersion, descTolerant, descAnnounce, descVIPOps, descSyncWarm, descSyncDatagrams, descSyncEntries, descSyncDropped, descTableEntries, descDPOps, descDPDrift, descRSUp, descSvcConns, descSvcBytes, descRSActive} {
		ch <- d
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.a.Status()
	for _, s := range []cluster.State{cluster.StateBackup, cluster.StateMaster, cluster.StateFault, cluster.StateWitness} {
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, b2f(st.State == s), s.String())
	}
	ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(st.Term))
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, b2f(st.Leader == st.Name))
	ch <- prometheus.MustNewConstMetric(descLastContact, prometheus.GaugeValue, st.LastContact.Seconds())
	ch <- prometheus.MustNewConstMetric(descLeaseLeft, prometheus.GaugeValue, st.LeaseLeft.Seconds())
	ch <- prometheus.MustNewConstMetric(descVIPs, prometheus.GaugeValue, float64(len(st.VIPs)))
	ch <- prometheus.MustNewConstMetric(descConfigVersion, prometheus.GaugeValue, float64(st.ConfigVersion))
	ch <- prometheus.MustNewConstMetric(descTolerant, prometheus.GaugeValue, b2f(st.Tolerant))
	if c.a.vips != nil {
		v := c.a.vips.Counters()
		ch <- prometheus.MustNewConstMetric(descAnnounce, prometheus.CounterValue, float64(v.GARPs), "arp")
		ch <- prometheus.MustNewConstMetric(descAnnounce, prometheus.CounterValue, float64(v.NAs), "ndp")
		for _, op := range []struct {
			name     string
			ok, fail uint64
		}{{"add", v.Adds, v.AddErrors}, {"remove", v.Removes, v.RemoveErrors}, {"renew", v.Renewals, v.RenewErrors}} {
			ch <- prometheus.MustNewConstMetric(descVIPOps, prometheus.CounterValue, float64(op.ok), op.name, "ok")
			ch <- prometheus.MustNewConstMetric(descVIPOps, prometheus.CounterValue, float64(op.fail), op.name, "error")
		}
		ch <- prometheus.MustNewConstMetric(descVIPOps, prometheus.CounterValue, float64(v.Expired), "expire", "late-renewal")
	}
	if dp := c.a.dp; dp != nil {
		n := dp.rec.Counters()
		ch <- prometheus.MustNewConstMetric(descDPOps, prometheus.CounterValue, float64(n.Applied), dp.name, "applied")
		ch <- prometheus.MustNewConstMetric(descDPOps, prometheus.CounterValue, float64(n.Failed), dp.name, "failed")
		ch <- prometheus.MustNewConstMetric(descDPDrift, prometheus.CounterValue, float64(n.DriftRepairs), dp.name)
		if svcs, err := dp.services(); err == nil {
			for _, s := range svcs.Services {
				name := s.Key.String()
				ch <- prometheus.MustNewConstMetric(descSvcConns, prometheus.CounterValue, float64(s.Stats.Conns), name)
				ch <- prometheus.MustNewConstMetric(descSvcBytes, prometheus.CounterValue, float64(s.Stats.InBytes), name, "in")
				ch <- prometheus.MustNewConstMetric(descSvcBytes, prometheus.CounterValue, float64(s.Stats.OutBytes), name, "out")
				for _, d := range s.Dests {
					server := d.Addr.String()
					if d.Health != "" {
						ch <- prometheus.MustNewConstMetric(descRSUp, prometheus.GaugeValue, b2f(d.Health == "up"), name, server)
					}
					if d.Removed {
						continue
					}
					ch <- prometheus.MustNewConstMetric(descRSActive, prometheus.GaugeValue, float64(d.ActiveConns), name, server, "active")
					ch <- prometheus.MustNewConstMetric(descRSActive, prometheus.GaugeValue, float64(d.InactConns), name, server, "inactive")
				}
			}
		}
	}
	if c.a.sync != nil {
		ss := c.a.sync.status()
		st := ss.Stats
		ch <- prometheus.MustNewConstMetric(descSyncWarm, prometheus.GaugeValue, b2f(ss.Warm))
		ch <- prometheus.MustNewConstMetric(descSyncDatagrams, prometheus.CounterValue, float64(st.DatagramsSent), "sent")
		ch <- prometheus.MustNewConstMetric(descSyncDatagrams, prometheus.CounterValue, float64(st.DatagramsReceived), "received")
		for what, v := range map[string]uint64{"sent": st.EntriesSent, "received": st.EntriesReceived, "applied": st.EntriesApplied, "apply-error": st.ApplyErrors} {
			ch <- prometheus.MustNewConstMetric(descSyncEntries, prometheus.CounterValue, float64(v), what)
		}
		for reason, v := range map[string]uint64{"truncated": st.Truncated, "syncid": st.SyncIDMismatch, "auth-missing": st.AuthMissing, "auth-forged": st.AuthForged, "replayed": st.Replayed} {
			ch <- prometheus.MustNewConstMetric(descSyncDropped, prometheus.CounterValue, float64(v), reason)
		}
		for r, v := range st.DroppedByReason {
			ch <- prometheus.MustNewConstMetric(descSyncDropped, prometheus.CounterValue, float64(v), "wire-"+r.String())
		}
		ch <- prometheus.MustNewConstMetric(descTableEntries, prometheus.GaugeValue, float64(ss.Conns), "connection")
		ch <- prometheus.MustNewConstMetric(descTableEntries, prometheus.GaugeValue, float64(ss.Templates), "template")
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// serveMetrics serves /metrics on addr until ctx ends.
func (m *metrics) serve(ctx context.Context, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
