package syncd

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/lbha/lbha/internal/netlab"
)

func TestTransportMulticast(t *testing.T) {
	for _, tc := range []struct {
		name  string
		group netip.Addr
	}{
		{"ipv4 default group", netip.Addr{}},
		{"ipv6 group", netip.MustParseAddr("ff02::1:8848")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := netlab.New(t)
			sw := l.Switch()
			master, backup := l.Node("m"), l.Node("b")
			master.Attach(sw, "sync0", "203.0.113.2/24", "2001:db8:5::2/64")
			backup.Attach(sw, "sync0", "203.0.113.3/24", "2001:db8:5::3/64")
			cfg := TransportConfig{Interface: "sync0", Group: tc.group, RecvBuffer: 1 << 20}

			var rx, self *Receiver
			if err := backup.Do(func() (err error) { rx, err = ListenReceiver(cfg); return err }); err != nil {
				t.Fatal(err)
			}
			defer rx.Close()
			// A receiver on the master's own host must not hear the
			// master: multicast loopback is off, as in the kernel.
			if err := master.Do(func() (err error) { self, err = ListenReceiver(cfg); return err }); err != nil {
				t.Fatal(err)
			}
			defer self.Close()
			var tx *Sender
			if err := master.Do(func() (err error) { tx, err = DialSender(cfg); return err }); err != nil {
				t.Fatal(err)
			}
			defer tx.Close()
			if tc.group.Is6() {
				if !tx.LocalAddr().Addr().IsUnspecified() && !tx.LocalAddr().Addr().Is6() {
					t.Fatalf("IPv6 sender bound to %v", tx.LocalAddr())
				}
			} else if got := tx.LocalAddr().Addr(); got != netip.MustParseAddr("203.0.113.2") {
				t.Fatalf("sender source = %v, want the interface's primary address 203.0.113.2", got)
			}

			payloads := [][]byte{[]byte("one"), bytes.Repeat([]byte{0xab}, 1400), []byte("three")}
			// The IPv6 group join may need a moment to take effect.
			deadline := time.Now().Add(3 * time.Second)
			got := make(chan []byte, 16)
			go func() {
				buf := make([]byte, 2000)
				for {
					n, _, err := rx.Read(buf)
					if err != nil {
						close(got)
						return
					}
					got <- append([]byte(nil), buf[:n]...)
				}
			}()
			for i := 0; ; i++ {
				if err := tx.Send(payloads[0]); err != nil {
					t.Fatal(err)
				}
				select {
				case p := <-got:
					if !bytes.Equal(p, payloads[0]) {
						t.Fatalf("got %q", p)
					}
				case <-time.After(100 * time.Millisecond):
					if time.Now().After(deadline) {
						t.Fatal("no datagram reached the backup")
					}
					continue
				}
				break
			}
			for _, p := range payloads[1:] {
				if err := tx.Send(p); err != nil {
					t.Fatal(err)
				}
				select {
				case q := <-got:
					if !bytes.Equal(p, q) {
						t.Fatalf("got %d bytes, want %d", len(q), len(p))
					}
				case <-time.After(2 * time.Second):
					t.Fatal("datagram lost")
				}
			}
			_ = self.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, from, err := self.Read(make([]byte, 2000)); err == nil {
				t.Fatalf("master heard its own datagram (%d bytes from %v)", n, from)
			}
		})
	}
}

func TestTransportTruncation(t *testing.T) {
	l := netlab.New(t)
	sw := l.Switch()
	master, backup := l.Node("m"), l.Node("b")
	master.Attach(sw, "sync0", "203.0.113.2/24")
	backup.Attach(sw, "sync0", "203.0.113.3/24")
	cfg := TransportConfig{Interface: "sync0"}
	var rx *Receiver
	var tx *Sender
	if err := backup.Do(func() (err error) { rx, err = ListenReceiver(cfg); return err }); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	if err := master.Do(func() (err error) { tx, err = DialSender(cfg); return err }); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if err := tx.Send(make([]byte, 300)); err != nil {
		t.Fatal(err)
	}
	_ = rx.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err := rx.Read(make([]byte, 200))
	if !errors.Is(err, ErrTruncated) || n != 200 {
		t.Fatalf("Read of an oversized datagram = %d, %v; want 200, ErrTruncated", n, err)
	}
}

func TestTransportConfigErrors(t *testing.T) {
	for _, c := range []TransportConfig{
		{},
		{Interface: "x", Group: netip.MustParseAddr("192.0.2.1")},
		{Interface: "x", Port: 70000},
		{Interface: "x", TTL: 256},
	} {
		if _, err := c.withDefaults(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
