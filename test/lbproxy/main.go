// Command lbproxy runs lbha's userspace dataplane alone, with one TCP
// service, for the proxy benchmark (test/bench):
//
//	lbproxy --vip 192.0.2.100:80 --rs 203.0.113.10:8080 [--rs ...] --sched rr
//
// It builds a persistence table and a userspace.Proxy, applies one
// ipvs.ServiceState through an ipvs.Reconciler, opens the listener with
// SetActive(true) and runs until SIGTERM or SIGINT. No cluster, no VIP
// management, no health checks: only the packet path a master runs.
//
// With --cpuprofile FILE it writes a CPU profile of its whole life, ended
// by the signal.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/lbha/lbha/dest"
	"github.com/lbha/lbha/ipvs"
	"github.com/lbha/lbha/ipvs/userspace"
	"github.com/lbha/lbha/persist"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var rs listFlag
	vip := flag.String("vip", "", "virtual service address (host:port), TCP")
	sched := flag.String("sched", "rr", "IPVS scheduler")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	flag.Var(&rs, "rs", "real server (host:port), repeatable")
	flag.Parse()
	if err := run(*vip, rs, *sched, *cpuprofile); err != nil {
		fmt.Fprintln(os.Stderr, "lbproxy:", err)
		os.Exit(1)
	}
}

func run(vip string, rs []string, sched, cpuprofile string) error {
	state, err := serviceState(vip, rs, sched)
	if err != nil {
		return err
	}
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	table, err := persist.New(persist.DefaultConfig())
	if err != nil {
		return err
	}
	go func() { _ = table.Run(ctx) }()
	p, err := userspace.New(userspace.Config{Table: table, Logger: log})
	if err != nil {
		return err
	}
	defer p.Close()
	if _, err := ipvs.NewReconciler(p).Reconcile([]ipvs.ServiceState{state}); err != nil {
		return err
	}
	if err := p.SetActive(true); err != nil {
		return err
	}
	// The benchmark waits for this line before sending load.
	fmt.Fprintf(os.Stderr, "lbproxy: listening on %s, real servers %s, scheduler %s\n", vip, strings.Join(rs, " "), sched)
	<-ctx.Done()
	return nil
}

func serviceState(vip string, rs []string, sched string) (ipvs.ServiceState, error) {
	v, err := netip.ParseAddrPort(vip)
	if err != nil {
		return ipvs.ServiceState{}, fmt.Errorf("--vip: %w", err)
	}
	if len(rs) == 0 {
		return ipvs.ServiceState{}, errors.New("at least one --rs is required")
	}
	netmask := uint32(ipvs.HostMask4)
	if v.Addr().Is6() {
		netmask = ipvs.HostPrefix6
	}
	st := ipvs.ServiceState{Service: ipvs.Service{
		Key:       ipvs.ServiceKey{Protocol: persist.ProtoTCP, Addr: v.Addr(), Port: v.Port()},
		Scheduler: sched,
		Netmask:   netmask,
	}}
	for _, r := range rs {
		a, err := netip.ParseAddrPort(r)
		if err != nil {
			return ipvs.ServiceState{}, fmt.Errorf("--rs: %w", err)
		}
		st.Dests = append(st.Dests, ipvs.Dest{Addr: a, Method: dest.Masq, Weight: 1})
	}
	return st, nil
}
