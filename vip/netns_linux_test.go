//go:build linux

package vip

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/lbha/lbha/internal/netlab"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The lab's interfaces are called vip0 rather than eth0: if the Manager
// ever worked in the wrong namespace (the host's), it would find no such
// interface instead of changing the host.
const ifname = "vip0"

var (
	labV4 = VIP{Prefix: netip.MustParsePrefix("192.0.2.100/24"), Interface: ifname}
	labV6 = VIP{Prefix: netip.MustParsePrefix("2001:db8::100/64"), Interface: ifname}
)

func nsPath(n *netlab.Node) string { return filepath.Join("/run/netns", n.NS) }

// director creates a node on sw with its own address on the segment.
func director(l *netlab.Lab, sw *netlab.Switch, name string, host byte) *netlab.Node {
	n := l.Node(name)
	n.Attach(sw, ifname, fmt.Sprintf("192.0.2.%d/24", host), fmt.Sprintf("2001:db8::%d/64", host))
	return n
}

// nsManager starts a Manager working in n's namespace.
func nsManager(t *testing.T, n *netlab.Node, cfg Config) *Manager {
	t.Helper()
	cfg.NetNS = nsPath(n)
	cfg.Logger = testLogger(t, n.Name)
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("%s: Close: %v", n.Name, err)
		}
	})
	return m
}

func testLogger(t *testing.T, name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", name)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// addrLine returns ip(8)'s one-line description of prefix on vip0 in n, or
// "" when it is not there.
func addrLine(t *testing.T, n *netlab.Node, prefix string) string {
	t.Helper()
	out := n.MustRun("ip", "-o", "-d", "addr", "show", "dev", ifname)
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, " "+prefix+" ") {
			return l
		}
	}
	return ""
}

var lftRE = regexp.MustCompile(`valid_lft (\S+) preferred_lft (\S+)`)

func mac(t *testing.T, n *netlab.Node) net.HardwareAddr {
	t.Helper()
	hw, err := net.ParseMAC(strings.TrimSpace(n.MustRun("cat", "/sys/class/net/"+ifname+"/address")))
	if err != nil {
		t.Fatal(err)
	}
	return hw
}

func TestNetnsAddresses(t *testing.T) {
	l := netlab.New(t)
	sw := l.Switch()
	a := director(l, sw, "a", 1)
	cfg := DefaultConfig()
	cfg.Burst = 1
	m := nsManager(t, a, cfg)
	ctx := context.Background()

	added := time.Now()
	held, err := m.Set(ctx, []VIP{labV6, labV4})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]VIP{labV4, labV6}, held, cmpVIP); diff != "" {
		t.Fatalf("held (-want +got):\n%s", diff)
	}

	t.Run("finite lifetimes", func(t *testing.T) {
		for _, tt := range []struct {
			prefix string
			flags  []string
		}{
			{"192.0.2.100/24", []string{"dynamic"}},
			{"2001:db8::100/64", []string{"dynamic", "nodad"}},
		} {
			line := addrLine(t, a, tt.prefix)
			m := lftRE.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("%s: no lifetimes in %q", tt.prefix, line)
			}
			for _, lft := range m[1:] {
				if lft != "3sec" && lft != "2sec" {
					t.Errorf("%s: lifetime %s, want 3sec (or 2sec if a second passed): %q", tt.prefix, lft, line)
				}
			}
			for _, f := range tt.flags {
				if !strings.Contains(line, " "+f+" ") {
					t.Errorf("%s: flag %q missing: %q", tt.prefix, f, line)
				}
			}
		}
	})

	t.Run("idempotent", func(t *testing.T) {
		before := m.Counters()
		for range 3 {
			held, err := m.Set(ctx, []VIP{labV4, labV6, labV4})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]VIP{labV4, labV6}, held, cmpVIP); diff != "" {
				t.Fatalf("held (-want +got):\n%s", diff)
			}
		}
		after := m.Counters()
		if after.Adds != before.Adds || after.AddErrors != 0 || after.Removes != 0 {
			t.Errorf("repeated Set changed something: before %+v, after %+v", before, after)
		}
		if n := strings.Count(a.MustRun("ip", "-o", "addr", "show", "dev", ifname), "192.0.2.100/24"); n != 1 {
			t.Errorf("192.0.2.100/24 appears %d times", n)
		}
	})

	t.Run("renewed past the lifetime", func(t *testing.T) {
		time.Sleep(time.Until(added.Add(cfg.Lifetime + 1500*time.Millisecond)))
		for _, p := range []string{"192.0.2.100/24", "2001:db8::100/64"} {
			line := addrLine(t, a, p)
			if line == "" {
				t.Fatalf("%s expired although renewed every %v", p, cfg.RenewEvery)
			}
			if m := lftRE.FindStringSubmatch(line); m == nil || m[1] == "forever" {
				t.Errorf("%s: renewal lost the finite lifetime: %q", p, line)
			}
		}
		if c := m.Counters(); c.Renewals < 6 || c.RenewErrors != 0 || c.Expired != 0 {
			t.Errorf("counters = %+v, want 6 or more renewals and no errors", c)
		}
	})

	t.Run("remove one", func(t *testing.T) {
		held, err := m.Set(ctx, []VIP{labV4})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]VIP{labV4}, held, cmpVIP); diff != "" {
			t.Fatalf("held (-want +got):\n%s", diff)
		}
		if line := addrLine(t, a, "2001:db8::100/64"); line != "" {
			t.Errorf("removed VIP still there: %q", line)
		}
	})

	t.Run("operator's address and loopback refused", func(t *testing.T) {
		a.MustRun("ip", "addr", "add", "192.0.2.50/24", "dev", ifname)
		op := VIP{Prefix: netip.MustParsePrefix("192.0.2.50/24"), Interface: ifname}
		lo := VIP{Prefix: netip.MustParsePrefix("127.0.0.5/8"), Interface: "lo"}
		held, err := m.Set(ctx, []VIP{labV4, op, lo})
		if err == nil {
			t.Fatal("Set took the operator's address and a loopback VIP without complaint")
		}
		for _, want := range []string{"127.0.0.5 is a loopback address", "192.0.2.50/24 dev vip0: the address is already configured permanently"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		}
		if diff := cmp.Diff([]VIP{labV4}, held, cmpVIP); diff != "" {
			t.Errorf("held (-want +got):\n%s", diff)
		}
		if line := addrLine(t, a, "192.0.2.50/24"); strings.Contains(line, "valid_lft 3sec") || line == "" {
			t.Errorf("operator's address was touched: %q", line)
		}
	})

	t.Run("already gone is no error", func(t *testing.T) {
		a.MustRun("ip", "addr", "del", "192.0.2.100/24", "dev", ifname)
		held, err := m.Set(ctx, nil)
		if err != nil {
			t.Errorf("removing a VIP someone else already removed: %v", err)
		}
		if len(held) != 0 {
			t.Errorf("held = %v", held)
		}
	})

	t.Run("Close leaves nothing of ours", func(t *testing.T) {
		if _, err := m.Set(ctx, []VIP{labV4, labV6}); err != nil {
			t.Fatal(err)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		out := a.MustRun("ip", "-o", "addr", "show", "dev", ifname)
		for _, gone := range []string{"192.0.2.100/", "2001:db8::100/"} {
			if strings.Contains(out, gone) {
				t.Errorf("%s left after Close:\n%s", gone, out)
			}
		}
		for _, kept := range []string{"192.0.2.1/24", "2001:db8::1/64", "192.0.2.50/24"} {
			if !strings.Contains(out, kept) {
				t.Errorf("%s (not ours) removed by Close:\n%s", kept, out)
			}
		}
	})
}

// A Manager created on a thread inside the namespace (Config.NetNS empty)
// keeps working there when used from any other goroutine later.
func TestNetnsCreatedInsideNamespace(t *testing.T) {
	l := netlab.New(t)
	sw := l.Switch()
	a := director(l, sw, "a", 1)
	cfg := DefaultConfig()
	cfg.Lifetime = time.Second
	cfg.RenewEvery = 200 * time.Millisecond
	cfg.Burst = 2
	cfg.Spacing = 50 * time.Millisecond
	cfg.Logger = testLogger(t, "a")
	var m *Manager
	if err := a.Do(func() (err error) { m, err = New(cfg); return err }); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// Set runs on some other thread, in the test process's namespace.
	if _, err := m.Set(context.Background(), []VIP{labV4, labV6}); err != nil {
		t.Fatal(err)
	}
	if !netlab.WaitFor(5*time.Second, func() bool {
		c := m.Counters()
		return c.GARPs == 2 && c.NAs == 2 && c.Renewals >= 4
	}) {
		t.Fatalf("counters = %+v, want 2 GARPs, 2 NAs and renewals", m.Counters())
	}
	time.Sleep(1500 * time.Millisecond) // longer than Lifetime: renewals must have kept them
	for _, p := range []string{"192.0.2.100/24", "2001:db8::100/64"} {
		if addrLine(t, a, p) == "" {
			t.Errorf("%s not in the node's namespace", p)
		}
	}
	if c := m.Counters(); c.AnnounceErrors != 0 || c.RenewErrors != 0 || c.Expired != 0 {
		t.Errorf("counters = %+v", c)
	}
}

// capture records every frame of one EtherType arriving on vip0 in a node.
type capture struct {
	conn   *packet.Conn
	mu     sync.Mutex
	frames []frame
}

type frame struct {
	at time.Time
	b  []byte
}

func startCapture(t *testing.T, n *netlab.Node, proto ethernet.EtherType) *capture {
	t.Helper()
	c := &capture{}
	err := n.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		c.conn, err = packet.Listen(ifi, packet.Raw, int(proto), nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, _, err := c.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.frames = append(c.frames, frame{time.Now(), slices.Clone(buf[:n])})
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = c.conn.Close(); <-done })
	return c
}

// take returns and forgets the frames captured so far.
func (c *capture) take() []frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.frames
	c.frames = nil
	return f
}

type garp struct {
	at  time.Time
	eth *ethernet.Frame
	arp *arp.Packet
}

// garpsFrom picks the ARP frames sent by src.
func garpsFrom(t *testing.T, frames []frame, src net.HardwareAddr) []garp {
	t.Helper()
	var out []garp
	for _, f := range frames {
		var eth ethernet.Frame
		if err := eth.UnmarshalBinary(f.b); err != nil || !bytes.Equal(eth.Source, src) {
			continue
		}
		var p arp.Packet
		if err := p.UnmarshalBinary(eth.Payload); err != nil {
			t.Errorf("undecodable ARP from %s: %v", src, err)
			continue
		}
		out = append(out, garp{f.at, &eth, &p})
	}
	return out
}

type na struct {
	at       time.Time
	eth      *ethernet.Frame
	src, dst netip.Addr
	hopLimit byte
	msg      *ndp.NeighborAdvertisement
}

// nasFrom picks the neighbour advertisements sent by src.
func nasFrom(t *testing.T, frames []frame, src net.HardwareAddr) []na {
	t.Helper()
	var out []na
	for _, f := range frames {
		var eth ethernet.Frame
		if err := eth.UnmarshalBinary(f.b); err != nil || !bytes.Equal(eth.Source, src) {
			continue
		}
		ip := eth.Payload
		// Fixed IPv6 header only: an NA carries no extension headers.
		if len(ip) < 40 || ip[0]>>4 != 6 || ip[6] != 58 {
			continue
		}
		m, err := ndp.ParseMessage(ip[40:])
		if err != nil {
			continue
		}
		adv, ok := m.(*ndp.NeighborAdvertisement)
		if !ok {
			continue
		}
		out = append(out, na{
			at: f.at, eth: &eth, hopLimit: ip[7], msg: adv,
			src: netip.AddrFrom16([16]byte(ip[8:24])), dst: netip.AddrFrom16([16]byte(ip[24:40])),
		})
	}
	return out
}

// checkGaps checks that consecutive arrival times are spaced by about d:
// never much less (the sender waits at least d; arrival jitter is small),
// and not wildly more on a busy machine.
func checkGaps(t *testing.T, times []time.Time, d time.Duration) {
	t.Helper()
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < d-20*time.Millisecond || gap > d+300*time.Millisecond {
			t.Errorf("gap %d = %v, want about %v", i, gap, d)
		}
	}
}

// TestNetnsAnnouncements captures, on a neighbour, what a takeover sends:
// the number, spacing and exact form of the gratuitous ARPs and neighbour
// advertisements, that a removal cuts a burst short, and the periodic
// refresh.
func TestNetnsAnnouncements(t *testing.T) {
	l := netlab.New(t)
	sw := l.Switch()
	b := director(l, sw, "b", 2)
	c := director(l, sw, "c", 3)
	bMAC := mac(t, b)
	arps := startCapture(t, c, ethernet.EtherTypeARP)
	ip6 := startCapture(t, c, ethernet.EtherTypeIPv6)
	ctx := context.Background()

	t.Run("burst", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Burst = 4
		cfg.Spacing = 150 * time.Millisecond
		cfg.Refresh = time.Hour
		m := nsManager(t, b, cfg)
		arps.take()
		ip6.take()
		if _, err := m.Set(ctx, []VIP{labV4, labV6}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(cfg.Burst)*cfg.Spacing + 500*time.Millisecond)

		gs := garpsFrom(t, arps.take(), bMAC)
		if len(gs) != cfg.Burst {
			t.Fatalf("%d ARP frames from b, want %d", len(gs), cfg.Burst)
		}
		var times []time.Time
		for _, g := range gs {
			times = append(times, g.at)
			want := arp.Packet{
				HardwareType: 1, ProtocolType: uint16(ethernet.EtherTypeIPv4),
				HardwareAddrLength: 6, IPLength: 4,
				Operation:          arp.OperationRequest,
				SenderHardwareAddr: bMAC, SenderIP: labV4.Prefix.Addr(),
				TargetHardwareAddr: net.HardwareAddr{0, 0, 0, 0, 0, 0}, TargetIP: labV4.Prefix.Addr(),
			}
			if diff := cmp.Diff(want, *g.arp, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("ARP announcement (-want +got):\n%s", diff)
			}
			if !bytes.Equal(g.eth.Destination, ethernet.Broadcast) {
				t.Errorf("sent to %s, want broadcast", g.eth.Destination)
			}
		}
		checkGaps(t, times, cfg.Spacing)

		ns := nasFrom(t, ip6.take(), bMAC)
		if len(ns) != cfg.Burst {
			t.Fatalf("%d neighbour advertisements from b, want %d", len(ns), cfg.Burst)
		}
		times = nil
		for _, n := range ns {
			times = append(times, n.at)
			want := &ndp.NeighborAdvertisement{
				Override: true, TargetAddress: labV6.Prefix.Addr(),
				Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: bMAC}},
			}
			if diff := cmp.Diff(want, n.msg, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("neighbour advertisement (-want +got):\n%s", diff)
			}
			if n.dst != netip.MustParseAddr("ff02::1") || !n.src.IsLinkLocalUnicast() || n.hopLimit != 255 {
				t.Errorf("sent %s -> %s hop limit %d, want link-local -> ff02::1 hop limit 255", n.src, n.dst, n.hopLimit)
			}
			if want := (net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}); !bytes.Equal(n.eth.Destination, want) {
				t.Errorf("sent to %s, want %s", n.eth.Destination, want)
			}
		}
		checkGaps(t, times, cfg.Spacing)
		if got := m.Counters(); got.GARPs != 4 || got.NAs != 4 || got.AnnounceErrors != 0 {
			t.Errorf("counters = %+v", got)
		}
		if _, err := m.Set(ctx, nil); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("removal cuts the burst short", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Burst = 20
		cfg.Spacing = 100 * time.Millisecond
		cfg.Refresh = time.Hour
		m := nsManager(t, b, cfg)
		arps.take()
		if _, err := m.Set(ctx, []VIP{labV4}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(250 * time.Millisecond)
		if _, err := m.Set(ctx, nil); err != nil {
			t.Fatal(err)
		}
		removed := time.Now()
		time.Sleep(500 * time.Millisecond)
		gs := garpsFrom(t, arps.take(), bMAC)
		if len(gs) < 2 || len(gs) > 4 {
			t.Errorf("%d GARPs in 250 ms at 100 ms spacing, want 3", len(gs))
		}
		for _, g := range gs {
			if g.at.After(removed.Add(20 * time.Millisecond)) {
				t.Errorf("GARP %v after the removal", g.at.Sub(removed))
			}
		}
	})

	t.Run("refresh while held", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Burst = 1
		cfg.Refresh = 200 * time.Millisecond
		m := nsManager(t, b, cfg)
		arps.take()
		if _, err := m.Set(ctx, []VIP{labV4}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond)
		gs := garpsFrom(t, arps.take(), bMAC)
		if len(gs) < 5 || len(gs) > 7 {
			t.Errorf("%d GARPs in 1.1 s (one on takeover, then every 200 ms), want 6", len(gs))
		}
		if _, err := m.Set(ctx, nil); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("router flag follows forwarding", func(t *testing.T) {
		b.Sysctl("net.ipv6.conf."+ifname+".forwarding", "1")
		defer b.Sysctl("net.ipv6.conf."+ifname+".forwarding", "0")
		cfg := DefaultConfig()
		cfg.Burst = 1
		cfg.Refresh = time.Hour
		m := nsManager(t, b, cfg)
		ip6.take()
		if _, err := m.Set(ctx, []VIP{labV6}); err != nil {
			t.Fatal(err)
		}
		var ns []na
		netlab.WaitFor(2*time.Second, func() bool { ns = append(ns, nasFrom(t, ip6.take(), bMAC)...); return len(ns) > 0 })
		if len(ns) != 1 || !ns[0].msg.Router || !ns[0].msg.Override {
			t.Errorf("advertisements %+v, want one with Router and Override", ns)
		}
	})
}

// TestNetnsNeighbourFlips moves the VIPs between two directors while a
// client has neighbour entries for them, and measures how long after the
// new holder's Set the client's entries point at the new holder. The
// client keeps arp_accept=0: only an announcement that updates an existing
// entry can do this, within milliseconds (without one, the entry would go
// stale and be re-resolved only seconds later).
func TestNetnsNeighbourFlips(t *testing.T) {
	l := netlab.New(t)
	sw := l.Switch()
	dirs := []*netlab.Node{director(l, sw, "a", 1), director(l, sw, "b", 2)}
	c := director(l, sw, "c", 3)
	for _, k := range []string{"all", "default", ifname} {
		c.Sysctl("net.ipv4.conf."+k+".arp_accept", "0")
	}
	macs := []net.HardwareAddr{mac(t, dirs[0]), mac(t, dirs[1])}
	cfg := DefaultConfig()
	cfg.Burst = 2
	cfg.Spacing = 100 * time.Millisecond
	ms := []*Manager{nsManager(t, dirs[0], cfg), nsManager(t, dirs[1], cfg)}
	ctx := context.Background()
	vips := []VIP{labV4, labV6}

	if _, err := ms[0].Set(ctx, vips); err != nil {
		t.Fatal(err)
	}
	c.MustRun("ping", "-c1", "-W2", "192.0.2.100")
	c.MustRun("ping", "-6", "-c1", "-W2", "2001:db8::100")
	neigh := func(ip string) string { return c.MustRun("ip", "neigh", "show", ip, "dev", ifname) }
	for _, ip := range []string{"192.0.2.100", "2001:db8::100"} {
		if got := neigh(ip); !strings.Contains(got, "lladdr "+macs[0].String()) {
			t.Fatalf("client's entry for %s after ping: %q, want a's MAC %s", ip, got, macs[0])
		}
	}

	cns, err := netns.GetFromPath(nsPath(c))
	if err != nil {
		t.Fatal(err)
	}
	defer cns.Close()
	updates := make(chan netlink.NeighUpdate, 256)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.NeighSubscribeAt(cns, updates, done); err != nil {
		t.Fatal(err)
	}

	const trials = 20
	var d4, d6 []time.Duration
	holder := 0
	for trial := range trials {
		next := 1 - holder
		if _, err := ms[holder].Set(ctx, nil); err != nil {
			t.Fatal(err)
		}
		for len(updates) > 0 {
			<-updates
		}
		start := time.Now()
		if _, err := ms[next].Set(ctx, vips); err != nil {
			t.Fatal(err)
		}
		var got4, got6 time.Duration
		timeout := time.After(2 * time.Second)
		for got4 == 0 || got6 == 0 {
			select {
			case u := <-updates:
				if !bytes.Equal(u.HardwareAddr, macs[next]) {
					continue
				}
				switch {
				case u.IP.Equal(net.ParseIP("192.0.2.100")) && got4 == 0:
					got4 = time.Since(start)
				case u.IP.Equal(net.ParseIP("2001:db8::100")) && got6 == 0:
					got6 = time.Since(start)
				}
			case <-timeout:
				t.Fatalf("trial %d: client's entries did not move to %s within 2 s (v4 %v, v6 %v):\n%s%s",
					trial, dirs[next].Name, got4, got6, neigh("192.0.2.100"), neigh("2001:db8::100"))
			}
		}
		d4, d6 = append(d4, got4), append(d6, got6)
		for _, ip := range []string{"192.0.2.100", "2001:db8::100"} {
			if got := neigh(ip); !strings.Contains(got, "lladdr "+macs[next].String()) {
				t.Errorf("trial %d: ip neigh for %s: %q, want %s", trial, ip, got, macs[next])
			}
		}
		holder = next
	}
	slices.Sort(d4)
	slices.Sort(d6)
	t.Logf("Set to client's neighbour entry flipped, %d trials: IPv4 (GARP) min %v median %v max %v; IPv6 (NA) min %v median %v max %v",
		trials, d4[0], d4[trials/2], d4[trials-1], d6[0], d6[trials/2], d6[trials-1])
	if d4[trials/2] > 200*time.Millisecond || d6[trials/2] > 200*time.Millisecond {
		t.Errorf("median flip time %v (v4) / %v (v6), want well under the 200 ms failover target", d4[trials/2], d6[trials/2])
	}
}

// TestNetnsFrozenHolderLosesVIP runs a Manager in a child process, freezes
// it with SIGSTOP and checks that the kernel drops its VIPs within the
// lifetime, and that once thawed it does not put them back.
func TestNetnsFrozenHolderLosesVIP(t *testing.T) {
	const lifetime = 2 * time.Second
	l := netlab.New(t)
	sw := l.Switch()
	a := director(l, sw, "a", 1)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := a.Start("env", helperEnv+"=holder", exe, "-test.run=^TestHelperHolder$", "-test.v")
	if !netlab.WaitFor(10*time.Second, func() bool { return strings.Contains(p.Output.String(), "HELD") }) {
		t.Fatalf("helper did not take the VIPs:\n%s", p.Output)
	}
	// Longer than the lifetime: the helper's renewals keep the VIPs.
	time.Sleep(lifetime + 500*time.Millisecond)
	for _, pfx := range []string{"192.0.2.100/24", "2001:db8::100/64"} {
		if line := addrLine(t, a, pfx); line == "" || !strings.Contains(line, "valid_lft") || strings.Contains(line, "forever") {
			t.Fatalf("%s before the freeze: %q", pfx, line)
		}
	}

	ans, err := netns.GetFromPath(nsPath(a))
	if err != nil {
		t.Fatal(err)
	}
	defer ans.Close()
	h, err := netlink.NewHandleAt(ans)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	present := func() (v4, v6 bool) {
		list, err := h.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		for _, ad := range list {
			v4 = v4 || ad.IP.Equal(net.ParseIP("192.0.2.100"))
			v6 = v6 || ad.IP.Equal(net.ParseIP("2001:db8::100"))
		}
		return v4, v6
	}

	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	var gone4, gone6 time.Duration
	for time.Since(stopped) < lifetime+3*time.Second && (gone4 == 0 || gone6 == 0) {
		v4, v6 := present()
		if !v4 && gone4 == 0 {
			gone4 = time.Since(stopped)
		}
		if !v6 && gone6 == 0 {
			gone6 = time.Since(stopped)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("frozen holder: the kernel dropped the IPv4 VIP %v and the IPv6 VIP %v after SIGSTOP (lifetime %v, renewal every 500ms)",
		gone4, gone6, lifetime)
	for _, g := range []time.Duration{gone4, gone6} {
		// The last renewal was at most RenewEvery before the freeze.
		if g == 0 || g < lifetime-600*time.Millisecond || g > lifetime+time.Second {
			t.Errorf("VIP dropped %v after the freeze, want within (%v, %v]", g, lifetime-600*time.Millisecond, lifetime+time.Second)
		}
	}

	if err := p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	thawed := time.Now()
	for time.Since(thawed) < 1500*time.Millisecond {
		if v4, v6 := present(); v4 || v6 {
			t.Fatalf("thawed holder put its VIPs back (v4 %v, v6 %v) %v after SIGCONT:\n%s", v4, v6, time.Since(thawed), p.Output)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(p.Output.String(), "renewal came too late") {
		t.Errorf("thawed holder did not report the late renewal:\n%s", p.Output)
	}
	p.Stop(5 * time.Second)
}

const helperEnv = "LBHA_VIP_TEST_HELPER"

// TestHelperHolder is the child process of TestNetnsFrozenHolderLosesVIP:
// it holds the lab VIPs in the namespace it was started in until SIGTERM.
func TestHelperHolder(t *testing.T) {
	if os.Getenv(helperEnv) != "holder" {
		t.Skip("helper process for TestNetnsFrozenHolderLosesVIP")
	}
	cfg := DefaultConfig()
	cfg.Lifetime = 2 * time.Second
	cfg.RenewEvery = 500 * time.Millisecond
	cfg.Burst = 1
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stdout, nil))
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if _, err := m.Set(ctx, []VIP{labV4, labV6}); err != nil {
		t.Fatal(err)
	}
	fmt.Println("HELD")
	<-ctx.Done()
}
