package netlab

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestLabConnectsAndPartitions(t *testing.T) {
	l := New(t)
	sw := l.Switch()
	a, b := l.Node("a"), l.Node("b")
	a.Attach(sw, "eth0", "192.0.2.1/24", "2001:db8::1/64")
	b.Attach(sw, "eth0", "192.0.2.2/24", "2001:db8::2/64")

	if out, err := a.Run("ping", "-c1", "-W1", "192.0.2.2"); err != nil {
		t.Fatalf("ping over the switch: %v\n%s", err, out)
	}
	if out, err := a.Run("ping", "-6", "-c1", "-W1", "2001:db8::2"); err != nil {
		t.Fatalf("ping6 over the switch: %v\n%s", err, out)
	}

	// Go code inside a namespace: a UDP socket in b receives from a.
	recv := make(chan string, 1)
	var pc net.PacketConn
	if err := b.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", "192.0.2.2:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 64)
		_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, _ := pc.ReadFrom(buf)
		recv <- string(buf[:n])
	}()
	if err := a.Do(func() error {
		c, err := net.Dial("udp4", pc.LocalAddr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hello"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := <-recv; got != "hello" {
		t.Fatalf("received %q, want hello", got)
	}

	if _, err := exec.LookPath("nft"); err == nil {
		b.Partition()
		if _, err := a.Run("ping", "-c1", "-W1", "192.0.2.2"); err == nil {
			t.Fatal("ping crossed a partition")
		}
		b.Heal()
		if out, err := a.Run("ping", "-c1", "-W1", "192.0.2.2"); err != nil {
			t.Fatalf("ping after heal: %v\n%s", err, out)
		}
	}

	p := a.Start("sleep", "60")
	p.Stop(time.Second)
	select {
	case <-p.Done():
	default:
		t.Fatal("Stop returned with the process still running")
	}
}

func TestLabRemovesItsNamespaces(t *testing.T) {
	var prefix string
	t.Run("lab", func(t *testing.T) {
		l := New(t)
		prefix = l.Prefix()
		l.Node("x").Attach(l.Switch(), "eth0", "192.0.2.1/24")
	})
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if prefix != "" && strings.Contains(string(out), prefix) {
		t.Fatalf("namespaces of %s left behind:\n%s", prefix, out)
	}
}
