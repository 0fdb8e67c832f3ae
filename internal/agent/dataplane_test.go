package agent

import (
	"net/netip"
	"testing"

	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/ipvs"
)

// fakeObserver returns what a dataplane would hold.
type fakeObserver struct{ st []ipvs.ServiceStatus }

func (f fakeObserver) Status() ([]ipvs.ServiceStatus, error) { return f.st, nil }
func (f fakeObserver) Conns() ([]ipvs.Conn, error)           { return nil, nil }

// TestServicesView: a real server taken out by on_failure: remove is still
// listed (Removed), and the sorry server standing in is marked, so the
// operator sees why traffic goes where it goes.
func TestServicesView(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(`
node: {name: d1, role: director}
services:
  - protocol: tcp
    address: 192.0.2.100:80
    real_servers: [{address: 198.51.100.1:80}, {address: 198.51.100.2:80}]
    health_check: {type: tcp, on_failure: remove}
    sorry_server: 198.51.100.9:80
  - protocol: tcp
    address: 192.0.2.100:81
    real_servers: [{address: 198.51.100.1:81}]
`))
	if err != nil {
		t.Fatal(err)
	}
	desired := ipvs.Desired(cfg.Services, func(_ ipvs.ServiceKey, rs netip.AddrPort) bool {
		return rs != netip.MustParseAddrPort("198.51.100.2:80")
	})
	var held []ipvs.ServiceStatus
	for _, s := range desired {
		ss := ipvs.ServiceStatus{Service: s.Service}
		for _, d := range s.Dests {
			ss.Dests = append(ss.Dests, ipvs.DestStatus{Dest: d})
		}
		held = append(held, ss)
	}
	// Only rs1 is up: the sorry server is not needed; rs2 is removed.
	dp := &dataplane{name: "fake", obs: fakeObserver{held}, checks: map[checkKey]*realCheck{}}
	v, err := dp.servicesOf(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if v.Dataplane != "fake" || len(v.Services) != 2 {
		t.Fatalf("view %+v", v)
	}
	web := v.Services[0].Dests
	if len(web) != 2 || web[0].Addr.Addr() != netip.MustParseAddr("198.51.100.1") || web[0].Removed ||
		!web[1].Removed || web[1].Addr != netip.MustParseAddrPort("198.51.100.2:80") {
		t.Fatalf("web real servers %+v", web)
	}
	if d := v.Services[1].Dests; len(d) != 1 || d[0].Removed || d[0].Health != "" {
		t.Fatalf("unchecked service %+v", d)
	}

	// Every server down: the sorry server is in the dataplane and marked.
	desired = ipvs.Desired(cfg.Services, func(ipvs.ServiceKey, netip.AddrPort) bool { return false })
	held = held[:0]
	for _, s := range desired {
		ss := ipvs.ServiceStatus{Service: s.Service}
		for _, d := range s.Dests {
			ss.Dests = append(ss.Dests, ipvs.DestStatus{Dest: d})
		}
		held = append(held, ss)
	}
	dp.obs = fakeObserver{held}
	v, _ = dp.servicesOf(cfg)
	web = v.Services[0].Dests
	var sorry, removed int
	for _, d := range web {
		if d.Sorry {
			sorry++
		}
		if d.Removed {
			removed++
		}
	}
	if sorry != 1 || removed != 2 || len(web) != 3 {
		t.Fatalf("all down: %+v", web)
	}
}
