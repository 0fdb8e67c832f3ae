package ftp_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbha/lbha/ipvs/userspace/ftp"
)

// closeRecorder records whether RelayData closed its listener. Checking
// with a dial instead would race with other processes binding the port.
type closeRecorder struct {
	net.Listener
	closed atomic.Bool
}

func (l *closeRecorder) Close() error {
	l.closed.Store(true)
	return l.Listener.Close()
}

// dataRun is one RelayData on a fresh loopback listener.
type dataRun struct {
	ln   *closeRecorder
	addr netip.AddrPort
	done chan error
}

func startData(t *testing.T, ctx context.Context, peer netip.Addr, timeout time.Duration, dial func(context.Context) (net.Conn, error)) *dataRun {
	t.Helper()
	ln := &closeRecorder{Listener: listenOn(t, loopback("tcp4"))}
	r := &dataRun{ln: ln, addr: addrPort(ln.Addr()), done: make(chan error, 1)}
	go func() { r.done <- ftp.RelayData(ctx, ln, peer, timeout, dial) }()
	return r
}

// wait returns RelayData's result and checks that it closed its listener.
func (r *dataRun) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		if !r.ln.closed.Load() {
			t.Error("RelayData returned without closing its listener")
		}
		return err
	case <-time.After(ioTimeout):
		t.Fatal("RelayData did not return")
		return nil
	}
}

func TestRelayDataBothWays(t *testing.T) {
	// The far side reads everything, then answers and closes: the answer
	// can only arrive if the client's FIN went through while the other
	// direction stayed open.
	far := listenOn(t, loopback("tcp4"))
	go func() {
		c, err := far.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(ioTimeout))
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "got %d", n)
	}()
	r := startData(t, t.Context(), netip.MustParseAddr("127.0.0.1"), ioTimeout, dialTo(addrPort(far.Addr())))

	c, err := net.DialTimeout("tcp", r.addr.String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	const size = 3<<20 + 5
	if _, err := io.Copy(c, io.LimitReader(zeros{}, size)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if want := fmt.Sprintf("got %d", size); err != nil || string(got) != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("RelayData: %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestRelayDataTimeout(t *testing.T) {
	dialed := false
	dial := func(context.Context) (net.Conn, error) {
		dialed = true
		return nil, errors.New("unexpected dial")
	}
	r := startData(t, t.Context(), netip.Addr{}, 50*time.Millisecond, dial)
	err := r.wait(t)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RelayData = %v, want context.DeadlineExceeded", err)
	}
	if dialed {
		t.Fatal("dialed without a connection")
	}
}

func TestRelayDataContextWhileWaiting(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	r := startData(t, ctx, netip.Addr{}, 0, dialTo(netip.AddrPort{}))
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := r.wait(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("RelayData = %v, want context.Canceled", err)
	}
}

func TestRelayDataWrongPeer(t *testing.T) {
	// Only 127.0.0.1 is used, so expect a peer the test never connects from.
	dial := func(context.Context) (net.Conn, error) {
		return nil, errors.New("dialed for a stranger")
	}
	r := startData(t, t.Context(), netip.MustParseAddr("127.0.0.2"), 300*time.Millisecond, dial)
	c, err := net.DialTimeout("tcp", r.addr.String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("stranger's connection was not closed")
	}
	if err := r.wait(t); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RelayData = %v, want context.DeadlineExceeded", err)
	}
}

func TestRelayDataDialError(t *testing.T) {
	errNoServer := errors.New("no route to real server")
	r := startData(t, t.Context(), netip.Addr{}, ioTimeout, func(context.Context) (net.Conn, error) {
		return nil, errNoServer
	})
	c, err := net.DialTimeout("tcp", r.addr.String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := r.wait(t); !errors.Is(err, errNoServer) || !strings.HasPrefix(err.Error(), "ftp: data: dial: ") {
		t.Fatalf("RelayData = %v, want the dial error wrapped", err)
	}
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read %v, want EOF", err)
	}
}

func TestRelayDataContextDuringTransfer(t *testing.T) {
	far := listenOn(t, loopback("tcp4"))
	farConn := make(chan net.Conn, 1)
	go func() {
		c, err := far.Accept()
		if err == nil {
			farConn <- c
		}
	}()
	ctx, cancel := context.WithCancel(t.Context())
	r := startData(t, ctx, netip.Addr{}, ioTimeout, dialTo(addrPort(far.Addr())))
	c, err := net.DialTimeout("tcp", r.addr.String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var f net.Conn
	select {
	case f = <-farConn:
		defer f.Close()
	case <-time.After(ioTimeout):
		t.Fatal("RelayData did not dial")
	}
	cancel()
	if err := r.wait(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("RelayData = %v, want context.Canceled", err)
	}
	for name, conn := range map[string]net.Conn{"client": c, "far side": f} {
		conn.SetReadDeadline(time.Now().Add(ioTimeout))
		if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s read %v, want EOF", name, err)
		}
	}
}
