package ipvs

import (
	"net/netip"
	"testing"

	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/dest"
)

const desiredYAML = `
services:
  - protocol: tcp
    address: 192.0.2.10:80
    scheduler: wrr
    persistence: {timeout: 10m, netmask: 255.255.255.0}
    real_servers:
      - {address: 198.51.100.1, weight: 3, forward: masq}
      - {address: 198.51.100.2, weight: 2, forward: masq}
    health_check: {type: tcp, on_failure: quiesce}
    sorry_server: 198.51.100.9:8080
  - protocol: udp
    address: "[2001:db8::10]:5060"
    scheduler: rr
    persistence: {timeout: 60s, prefix: 64, engine: sip}
    one_packet: true
    real_servers:
      - {address: "2001:db8::1", forward: masq}
      - {address: "2001:db8::2", forward: masq}
    health_check: {type: tcp, on_failure: remove}
  - fwmark: 7
    family: inet6
    scheduler: sh
    scheduler_flags: [sh-fallback, sh-port]
    real_servers: [{address: "2001:db8::1"}]
`

func TestDesired(t *testing.T) {
	svcs, err := config.ParseServices("d.yaml", []byte(desiredYAML))
	if err != nil {
		t.Fatal(err)
	}
	down := map[netip.AddrPort]bool{}
	healthy := func(_ ServiceKey, rs netip.AddrPort) bool { return !down[rs] }
	st := Desired(svcs, healthy)
	if len(st) != 3 {
		t.Fatalf("%d services", len(st))
	}
	web, sip, fwm := st[0], st[1], st[2]
	if web.Netmask != 0xFFFFFF00 || web.Timeout != 600 || web.Scheduler != "wrr" || web.Key.Port != 80 || web.Key.Protocol != 6 {
		t.Errorf("web service %+v", web.Service)
	}
	if sip.Netmask != 64 || sip.PE != "sip" || !sip.OnePacket || sip.Timeout != 60 {
		t.Errorf("sip service %+v", sip.Service)
	}
	if fwm.Key != (ServiceKey{Fwmark: 7, IPv6: true}) || fwm.Netmask != HostPrefix6 || fwm.Flags != 0x18 || fwm.Timeout != 0 {
		t.Errorf("fwmark service %+v", fwm.Service)
	}
	if len(web.Dests) != 2 || web.Dests[0].Weight != 3 || web.Dests[0].Method != dest.Masq || web.Dests[0].Addr.Port() != 80 {
		t.Errorf("web dests %+v", web.Dests)
	}

	// One web server down: quiesced, still listed; no sorry server.
	rs1 := netip.MustParseAddrPort("198.51.100.1:80")
	rs2 := netip.MustParseAddrPort("198.51.100.2:80")
	down[rs1] = true
	st = Desired(svcs, healthy)
	if d := st[0].Dests; len(d) != 2 || d[0].Weight != 0 || d[1].Weight != 2 {
		t.Errorf("quiesce: %+v", d)
	}
	// Both down: the sorry server joins with weight 1 and the masq method.
	down[rs2] = true
	st = Desired(svcs, healthy)
	if d := st[0].Dests; len(d) != 3 || d[2].Addr != netip.MustParseAddrPort("198.51.100.9:8080") || d[2].Weight != 1 || d[2].Method != dest.Masq {
		t.Errorf("sorry: %+v", d)
	}
	// on_failure: remove drops the server from the dataplane.
	down[netip.MustParseAddrPort("[2001:db8::1]:5060")] = true
	st = Desired(svcs, healthy)
	if d := st[1].Dests; len(d) != 1 || d[0].Addr.Addr() != netip.MustParseAddr("2001:db8::2") {
		t.Errorf("remove: %+v", d)
	}
	// A server is only asked about when the service is checked.
	if d := Desired(svcs, func(ServiceKey, netip.AddrPort) bool { return false })[2].Dests; len(d) != 1 || d[0].Weight != 1 {
		t.Errorf("unchecked service affected by health: %+v", d)
	}
	// The result is a valid plan target.
	if _, err := Plan(nil, st); err != nil {
		t.Fatal(err)
	}
}
