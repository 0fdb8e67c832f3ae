package persist

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbha/lbha/dest"
)

// TestConcurrent runs a dataplane, a sync receiver, an expiry loop, a
// reader and a reconfigurer at once (meant for -race), then checks that
// the destination counters still match the table.
func TestConcurrent(t *testing.T) {
	tbl, clk := newTestTable(t, func(c *Config) { c.Shards = 4 })
	dests := []*dest.Dest{
		newDest("198.51.100.11", 80, dest.Masq, 1),
		newDest("198.51.100.12", 80, dest.Route, 1),
		newDest("198.51.100.13", 80, dest.Tunnel, 1),
	}
	var events atomic.Int64
	tbl.SetObserver(func(Event) { events.Add(1) })
	svcs := []*Service{
		{Port: 80, Timeout: 300 * time.Second, Netmask: ip("255.255.255.0")},
		{Port: 80, Timeout: 60 * time.Second, OnePacket: true},
		{Port: 80},
		{Port: 80, Timeout: 60 * time.Second, Netmask: ip("0.0.0.0"), PE: true},
	}
	iters := 3000
	if testing.Short() {
		iters = 300
	}
	client := func(rng *rand.Rand) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, byte(2 + rng.IntN(2)), byte(1 + rng.IntN(20))}), uint16(1000+rng.IntN(50)))
	}
	var wg sync.WaitGroup
	for w := range 3 { // dataplane
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			var mine []Ref
			for range iters {
				switch rng.IntN(6) {
				case 0, 1, 2:
					svc := svcs[rng.IntN(len(svcs))]
					proto := []uint8{ProtoTCP, ProtoUDP}[rng.IntN(2)]
					pkt := &Packet{Proto: proto, Src: client(rng), Dst: ap("192.0.2.100:80"), PEData: []byte{byte(rng.IntN(4)) + 'a'}}
					if proto == ProtoTCP {
						pkt.State = State(rng.IntN(int(tcpStates)))
					}
					d := dests[rng.IntN(len(dests))]
					if s, err := tbl.Schedule(svc, pkt, fixed(d)); err == nil && s.Conn != 0 {
						mine = append(mine, s.Conn)
					}
				case 3:
					if len(mine) > 0 {
						_ = tbl.SetState(mine[rng.IntN(len(mine))], State(rng.IntN(int(tcpStates))))
					}
				case 4:
					if len(mine) > 0 {
						_, _ = tbl.Touch(mine[rng.IntN(len(mine))], rng.IntN(2) == 0)
					}
				case 5:
					if len(mine) > 0 {
						j := rng.IntN(len(mine))
						if rng.IntN(2) == 0 {
							tbl.Drop(mine[j])
						} else {
							tbl.Remove(mine[j])
						}
						mine = append(mine[:j], mine[j+1:]...)
					}
				}
			}
		})
	}
	wg.Go(func() { // sync receiver
		rng := rand.New(rand.NewPCG(10, 1))
		for i := range iters {
			d := dests[rng.IntN(len(dests))]
			in := SyncEntry{Proto: ProtoTCP, Client: client(rng), Virtual: ap("192.0.2.100:80"), DestAddr: netip.AddrPortFrom(d.Addr, 80),
				Flags: Flags([]uint32{0, 0x100, 0x1100}[rng.IntN(3)]), State: TCPEstablished, Timeout: uint32(rng.IntN(600))}
			if in.Flags&FlagTemplate != 0 {
				in.State = TemplateAssured
				in.Client = netip.AddrPortFrom(in.Client.Addr(), 0)
			}
			var resolve Resolver
			if rng.IntN(2) == 0 {
				resolve = func(DestQuery) *dest.Dest { return d }
			}
			_, _ = tbl.ApplySync(&in, resolve)
			if i%100 == 0 {
				tbl.Rebind(func(q DestQuery) *dest.Dest { return dests[0] })
			}
		}
	})
	wg.Go(func() { // expiry
		for range iters / 10 {
			tbl.Expire(clk.Advance(7 * time.Second))
		}
	})
	wg.Go(func() { // reader
		for range iters / 30 {
			n := 0
			tbl.Range(func(e Entry) bool {
				n++
				tbl.Lookup(&Key{Proto: e.Proto, Client: e.Client, Virtual: e.Virtual, Template: e.Template(), PEData: e.PEData})
				return n < 500
			})
			tbl.Len()
		}
	})
	wg.Go(func() { // reconfiguration
		rng := rand.New(rand.NewPCG(11, 1))
		for range iters / 3 {
			d := dests[rng.IntN(len(dests))]
			switch rng.IntN(3) {
			case 0:
				d.SetAvailable(!d.Available())
			case 1:
				d.SetWeight(rng.IntN(2))
			case 2:
				d.SetThresholds(uint32(rng.IntN(5)), 0)
			}
		}
	})
	wg.Wait()

	checkInvariants(t, tbl, dests)
	if events.Load() == 0 {
		t.Error("observer saw no events")
	}
	for range 3 {
		tbl.Range(func(e Entry) bool { tbl.Remove(e.Ref); return true })
		tbl.Expire(clk.Advance(time.Hour))
	}
	if c, tm := tbl.Len(); c+tm != 0 {
		t.Errorf("%d connections, %d templates left after draining", c, tm)
	}
	checkInvariants(t, tbl, dests)
}
