package kernel

// The real-kernel tier: these tests drive the IPVS of a real Linux kernel.
// They run only in the throwaway VM of scripts/qemu/run.sh (which sets
// LBHA_QEMU_GUEST=1), never against the IPVS of a machine someone uses:
// they replace its whole configuration. `make qemu` runs them.

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/lbha/lbha/dest"
	"github.com/lbha/lbha/ipvs"
	"github.com/lbha/lbha/syncd/wire"
)

func realKernel(t *testing.T) *Backend {
	t.Helper()
	if os.Getenv("LBHA_QEMU_GUEST") != "1" {
		t.Skip("real-kernel tier: runs in the qemu guest only (make qemu)")
	}
	b, err := Open()
	if err != nil {
		t.Fatalf("Open in the guest: %v", err)
	}
	t.Cleanup(func() {
		_, _ = ipvs.NewReconciler(b).Reconcile(nil)
		b.Close()
	})
	return b
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// realServices covers what the backend converts: protocols, fwmark of both
// families, IPv4 netmask and IPv6 prefix, persistence engine, one-packet,
// scheduler flags, forwarding methods, weights and thresholds.
func realServices() []ipvs.ServiceState {
	ap := netip.MustParseAddrPort
	return []ipvs.ServiceState{
		{Service: ipvs.Service{Key: ipvs.ServiceKey{Protocol: 6, Addr: vip4, Port: 80}, Scheduler: "wlc", Timeout: 600, Netmask: 0xFFFFFF00},
			Dests: []ipvs.Dest{
				{Addr: ap("198.51.100.11:8080"), Method: dest.Masq, Weight: 1, UThreshold: 100, LThreshold: 50},
				{Addr: ap("198.51.100.12:8080"), Method: dest.Masq, Weight: 3},
			}},
		{Service: ipvs.Service{Key: ipvs.ServiceKey{Protocol: 17, Addr: vip6, Port: 5060}, Scheduler: "rr", Timeout: 60, Netmask: 64, PE: "sip", OnePacket: true},
			Dests: []ipvs.Dest{{Addr: ap("[2001:db8::11]:5060"), Method: dest.Masq, Weight: 1}}},
		{Service: ipvs.Service{Key: ipvs.ServiceKey{Protocol: 132, Addr: vip4, Port: 3868}, Scheduler: "rr", Netmask: ipvs.HostMask4},
			Dests: []ipvs.Dest{{Addr: ap("198.51.100.13:3868"), Method: dest.Route, Weight: 1}}},
		{Service: ipvs.Service{Key: ipvs.ServiceKey{Fwmark: 7}, Scheduler: "sh", Flags: 0x18, Netmask: ipvs.HostMask4},
			Dests: []ipvs.Dest{{Addr: ap("198.51.100.11:0"), Method: dest.Tunnel, Weight: 2}}},
		{Service: ipvs.Service{Key: ipvs.ServiceKey{Fwmark: 8, IPv6: true}, Scheduler: "mh", Netmask: ipvs.HostPrefix6},
			Dests: []ipvs.Dest{{Addr: ap("[2001:db8::12]:0"), Method: dest.Route, Weight: 1}}},
	}
}

// TestRealKernelReconcile: what lbha programs is what ipvsadm reads back
// (the netmask byte order, the IPv6 prefix, the engine, the flags), a second
// reconcile changes nothing, and a hand edit is repaired.
func TestRealKernelReconcile(t *testing.T) {
	b := realKernel(t)
	rec := ipvs.NewReconciler(canonicalState{b})
	want := realServices()
	res, err := rec.Reconcile(want)
	if err != nil {
		t.Fatalf("reconcile into the kernel: %v", err)
	}
	if len(res.Applied) != 11 {
		t.Errorf("%d operations applied, want 11 (5 services, 6 real servers)", len(res.Applied))
	}
	got := lines(sh(t, "ipvsadm", "-Sn"))
	expect := lines(`
-A -t 192.0.2.100:80 -s wlc -p 600 -M 255.255.255.0
-a -t 192.0.2.100:80 -r 198.51.100.11:8080 -m -w 1
-a -t 192.0.2.100:80 -r 198.51.100.12:8080 -m -w 3
-A --sctp-service 192.0.2.100:3868 -s rr
-a --sctp-service 192.0.2.100:3868 -r 198.51.100.13:3868 -g -w 1
-A -u [2001:db8::100]:5060 -s rr -p 60 -M 64 --pe sip -o
-a -u [2001:db8::100]:5060 -r [2001:db8::11]:5060 -m -w 1
-A -f 7 -s sh -b sh-fallback,sh-port
-a -f 7 -r 198.51.100.11:0 -i -w 2 --tun-type ipip
-A -f 8 -6 -s mh
-a -f 8 -6 -r [2001:db8::12]:0 -g -w 1
`)
	if !slices.Equal(got, expect) {
		t.Errorf("ipvsadm -Sn after lbha's reconcile:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(expect, "\n"))
	}
	if th := sh(t, "ipvsadm", "-Ln", "--thresholds", "-t", "192.0.2.100:80"); !regexpLine(th, "198.51.100.11:8080", "100", "50") {
		t.Errorf("thresholds not in the kernel:\n%s", th)
	}

	// Read back exactly: nothing to do the second time.
	res, err = rec.Reconcile(want)
	if err != nil || len(res.Applied) != 0 {
		t.Fatalf("second reconcile applied %v (err %v): the readback differs from what was written", res.Applied, err)
	}
	st, err := b.State()
	if err != nil {
		t.Fatal(err)
	}
	if ops, _ := ipvs.Plan(Canonical(st), want); len(ops) != 0 {
		t.Errorf("State differs from the desired state: %v", ops)
	}

	// Someone edits the kernel by hand: the next reconcile repairs it.
	sh(t, "ipvsadm", "-E", "-t", "192.0.2.100:80", "-s", "rr", "-p", "600", "-M", "255.255.255.0")
	sh(t, "ipvsadm", "-d", "-t", "192.0.2.100:80", "-r", "198.51.100.12:8080")
	res, err = rec.Reconcile(want)
	if err != nil || !res.Drift || len(res.Applied) != 2 {
		t.Fatalf("drift repair: %+v, %v", res, err)
	}
	if got := lines(sh(t, "ipvsadm", "-Sn")); !slices.Equal(got, expect) {
		t.Errorf("after the repair:\n%s", strings.Join(got, "\n"))
	}

	// Status and Conns read the real kernel.
	status, err := b.Status()
	if err != nil || len(status) != 5 {
		t.Fatalf("Status: %d services, %v", len(status), err)
	}
	if _, err := b.Conns(); err != nil {
		t.Fatalf("Conns: %v", err)
	}

	// Everything removed.
	if _, err := rec.Reconcile(nil); err != nil {
		t.Fatal(err)
	}
	if out := strings.TrimSpace(sh(t, "ipvsadm", "-Sn")); out != "" {
		t.Fatalf("services left after reconciling to nothing:\n%s", out)
	}
}

type canonicalState struct{ *Backend }

func (c canonicalState) State() ([]ipvs.ServiceState, error) {
	st, err := c.Backend.State()
	return Canonical(st), err
}

// regexpLine reports whether some line of text contains every field.
func regexpLine(text string, fields ...string) bool {
	for _, l := range strings.Split(text, "\n") {
		f := strings.Fields(l)
		ok := true
		for _, want := range fields {
			if !slices.Contains(f, want) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// syncLink makes a dummy interface for the sync daemons.
func syncLink(t *testing.T, name, addr string) {
	t.Helper()
	sh(t, "ip", "link", "add", name, "type", "dummy")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", name).Run() })
	sh(t, "ip", "addr", "add", addr, "dev", name)
	sh(t, "ip", "link", "set", name, "up", "multicast", "on")
}

// TestRealKernelSyncDaemons: lbha's IPVS_CMD_NEW/DEL/GET_DAEMON messages
// start, list and stop the kernel's sync threads as ipvsadm sees them.
func TestRealKernelSyncDaemons(t *testing.T) {
	realKernel(t)
	syncLink(t, "sync0", "203.0.113.1/24")
	d, err := DialSyncDaemons()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	master := Daemon{Role: Master, Interface: "sync0", SyncID: 7, MaxLen: 1400, Group: netip.MustParseAddr("239.1.2.3"), Port: 8850, TTL: 2}
	backup := Daemon{Role: Backup, Interface: "sync0", SyncID: 7, Group: netip.MustParseAddr("239.1.2.3"), Port: 8850}
	if err := d.Start(master); err != nil {
		t.Fatalf("start master: %v", err)
	}
	if err := d.Start(backup); err != nil {
		t.Fatalf("start backup: %v", err)
	}
	out := sh(t, "ipvsadm", "-L", "--daemon")
	if !strings.Contains(out, "master sync daemon (mcast=sync0, syncid=7, maxlen=1400, group=239.1.2.3, port=8850, ttl=2)") ||
		!strings.Contains(out, "backup sync daemon (mcast=sync0, syncid=7") {
		t.Errorf("ipvsadm -L --daemon:\n%s", out)
	}
	list, err := d.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("List: %+v, %v", list, err)
	}
	for _, got := range list {
		if got.Role == Master && (got.Interface != "sync0" || got.SyncID != 7 || got.MaxLen != 1400 || got.Group != master.Group || got.Port != 8850 || got.TTL != 2) {
			t.Errorf("master as listed: %+v", got)
		}
	}
	if err := d.Stop(Master); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(Backup); err != nil {
		t.Fatal(err)
	}
	if list, err := d.List(); err != nil || len(list) != 0 {
		t.Fatalf("after stop: %+v, %v", list, err)
	}
	// A backup promoted to master: what the agent does on taking over.
	done := make(chan error, 1)
	var stepNo atomic.Int32
	go func() {
		for i, step := range []func() error{
			func() error { return d.Start(backup) },
			func() error { return d.Stop(Backup) },
			func() error { return d.Start(master) },
			func() error { return d.Stop(Master) },
		} {
			stepNo.Store(int32(i + 1))
			if err := step(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("backup -> master: %v", err)
		}
	case <-time.After(30 * time.Second):
		out, _ := exec.Command("sh", "-c", "ipvsadm -L --daemon; ps; cat /proc/$(pgrep kernel.test | head -n1)/task/*/wchan; echo; for p in $(pgrep ipvs); do echo $p; cat /proc/$p/stack; done").CombinedOutput()
		t.Fatalf("backup -> master switch hangs at step %d (start backup, stop backup, start master, stop master); ipvsadm -L --daemon:\n%s", stepNo.Load(), out)
	}
}

// TestRealKernelBackupReceivesLbha: datagrams encoded by lbha's codec are
// accepted by the kernel's backup thread, and /proc/net/ip_vs_conn, read by
// ParseConns, shows what was sent.
func TestRealKernelBackupReceivesLbha(t *testing.T) {
	realKernel(t)
	syncLink(t, "sync1", "203.0.113.2/24")
	d, err := DialSyncDaemons()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	group := netip.MustParseAddr("239.1.2.4")
	if err := d.Start(Daemon{Role: Backup, Interface: "sync1", SyncID: 9, Group: group, Port: 8851}); err != nil {
		t.Fatal(err)
	}
	defer d.Stop(Backup)

	ap := netip.MustParseAddr
	entries := []wire.Entry{
		{Protocol: 6, Flags: uint32(dest.Masq), State: 1, CPort: 40000, VPort: 80, DPort: 8080, Timeout: 900,
			CAddr: ap("203.0.113.50"), VAddr: vip4, DAddr: ap("198.51.100.11")},
		{Protocol: 6, Flags: uint32(dest.Masq) | wire.FlagTemplate, State: wire.TemplateAssured, VPort: 80, DPort: 8080, Timeout: 600,
			CAddr: ap("203.0.113.0"), VAddr: vip4, DAddr: ap("198.51.100.11")},
		{Protocol: 17, Flags: uint32(dest.Masq) | wire.FlagTemplate, State: wire.TemplateNone, VPort: 5060, DPort: 5060, Timeout: 60,
			CAddr: ap("::"), VAddr: vip6, DAddr: ap("2001:db8::11"), PEName: "sip", PEData: []byte("call-1@example.test")},
	}
	bld, err := wire.NewBuilder(wire.V1, 9, 1400)
	if err != nil {
		t.Fatal(err)
	}
	for i := range entries {
		if ok, err := bld.Add(&entries[i]); !ok || err != nil {
			t.Fatalf("encode entry %d: %v", i, err)
		}
	}
	ifi, err := net.InterfaceByName("sync1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("203.0.113.2")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pc := ipv4.NewPacketConn(c)
	// The backup thread is on this host: loop the datagram back to it.
	if err := pc.SetMulticastInterface(ifi); err != nil {
		t.Fatal(err)
	}
	if err := pc.SetMulticastLoopback(true); err != nil {
		t.Fatal(err)
	}
	dst := &net.UDPAddr{IP: group.AsSlice(), Port: 8851}
	var conns []ipvs.Conn
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.WriteToUDP(bld.Bytes(), dst); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		f, err := os.Open(ProcConnFile)
		if err != nil {
			t.Fatal(err)
		}
		conns, err = ParseConns(f)
		f.Close()
		if err != nil {
			t.Fatalf("ParseConns on the real /proc: %v", err)
		}
		if len(conns) >= 3 {
			break
		}
	}
	raw, _ := os.ReadFile(ProcConnFile)
	find := func(template bool, proto string, client string) *ipvs.Conn {
		for i := range conns {
			if conns[i].Template == template && conns[i].Proto == proto && conns[i].Client.Addr() == netip.MustParseAddr(client) {
				return &conns[i]
			}
		}
		return nil
	}
	conn := find(false, "TCP", "203.0.113.50")
	tmpl := find(true, "TCP", "203.0.113.0")
	sipT := find(true, "UDP", "::")
	switch {
	case conn == nil || tmpl == nil || sipT == nil:
		t.Fatalf("the kernel backup did not create every entry lbha sent:\n%s\nparsed: %+v", raw, conns)
	case conn.State != "ESTABLISHED" || conn.Client.Port() != 40000 || conn.Dest != netip.MustParseAddrPort("198.51.100.11:8080") || conn.Virtual != netip.MustParseAddrPort("192.0.2.100:80"):
		t.Errorf("connection as the kernel holds it: %+v", conn)
	case tmpl.State != "ASSURED" || tmpl.Client.Port() != 0:
		t.Errorf("template as the kernel holds it: %+v", tmpl)
	case sipT.PEName != "sip" || sipT.PEData != "call-1@example.test" || sipT.Virtual != netip.MustParseAddrPort("[2001:db8::100]:5060"):
		t.Errorf("SIP template as the kernel holds it: %+v\n%s", sipT, raw)
	}
	// Timeouts come from the message: a 900 s connection has more than
	// 14 minutes left.
	if conn != nil && conn.Expires < 14*time.Minute {
		t.Errorf("connection expires in %v, sent with 900 s", conn.Expires)
	}
}
