package ftp_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lbha/lbha/ipvs/userspace/ftp"
)

// ioTimeout bounds every blocking step of the tests.
const ioTimeout = 10 * time.Second

func loopback(network string) netip.Addr {
	if network == "tcp6" {
		return netip.IPv6Loopback()
	}
	return netip.MustParseAddr("127.0.0.1")
}

// listenOn listens on ip with a kernel-chosen port, skipping the test if
// the loopback address of that family is unavailable.
func listenOn(t *testing.T, ip netip.Addr) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
	if err != nil {
		if ip.Is6() {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func addrPort(a net.Addr) netip.AddrPort {
	return a.(*net.TCPAddr).AddrPort()
}

func dialTo(ap netip.AddrPort) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ap.String())
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln := listenOn(t, loopback("tcp4"))
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	t.Cleanup(func() {
		c.Close()
		s.Close()
	})
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// dribble hands out what it reads one byte at a time, so every control line
// reaches Relay split across as many reads as it has bytes. It keeps
// CloseWrite.
type dribble struct{ *net.TCPConn }

func (d dribble) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return d.TCPConn.Read(p)
}

// noHalfClose hides CloseWrite.
type noHalfClose struct{ net.Conn }

// fakeServer is a scripted FTP server for one control connection. It
// understands PASV, EPSV, PORT, EPRT, RETR (sends payload), STOR (replies
// with the length and SHA-256 of what it read) and QUIT.
type fakeServer struct {
	ln      net.Listener
	payload []byte
	done    chan error

	mu         sync.Mutex
	listening  []netip.AddrPort // its passive data listeners
	toldActive []netip.AddrPort // addresses from PORT and EPRT
}

func startServer(t *testing.T, ip netip.Addr, payload []byte) *fakeServer {
	s := &fakeServer{ln: listenOn(t, ip), payload: payload, done: make(chan error, 1)}
	go func() { s.done <- s.serveOne() }()
	return s
}

func (s *fakeServer) serveOne() error {
	c, err := s.ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	br := bufio.NewReader(c)
	reply := func(format string, args ...any) {
		fmt.Fprintf(c, format+"\r\n", args...)
	}
	var pasv net.Listener
	var active netip.AddrPort
	openData := func() (net.Conn, error) {
		if pasv != nil {
			defer func() { pasv.Close(); pasv = nil }()
			pasv.(*net.TCPListener).SetDeadline(time.Now().Add(ioTimeout))
			return pasv.Accept()
		}
		return net.DialTimeout("tcp", active.String(), ioTimeout)
	}
	listen := func() (netip.AddrPort, error) {
		ip := addrPort(c.LocalAddr()).Addr()
		ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
		if err != nil {
			return netip.AddrPort{}, err
		}
		pasv = ln
		ap := addrPort(ln.Addr())
		s.mu.Lock()
		s.listening = append(s.listening, ap)
		s.mu.Unlock()
		return ap, nil
	}
	reply("220 fake FTP server ready")
	for {
		line, err := br.ReadString('\n')
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		line = strings.TrimRight(line, "\r\n")
		verb, _, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "PASV":
			ap, err := listen()
			if err != nil {
				return err
			}
			a := ap.Addr().As4()
			reply("227 Entering Passive Mode (%d,%d,%d,%d,%d,%d).", a[0], a[1], a[2], a[3], ap.Port()>>8, ap.Port()&0xff)
		case "EPSV":
			ap, err := listen()
			if err != nil {
				return err
			}
			reply("229 Entering Extended Passive Mode (|||%d|)", ap.Port())
		case "PORT", "EPRT":
			parse := ftp.ParsePORT
			if strings.EqualFold(verb, "EPRT") {
				parse = ftp.ParseEPRT
			}
			ap, ok := parse(line)
			if !ok {
				reply("501 bad address")
				continue
			}
			active = ap
			s.mu.Lock()
			s.toldActive = append(s.toldActive, ap)
			s.mu.Unlock()
			reply("200 %s command successful", verb)
		case "RETR":
			reply("150 opening data connection")
			dc, err := openData()
			if err != nil {
				return err
			}
			_, err = dc.Write(s.payload)
			dc.Close()
			if err != nil {
				return err
			}
			reply("226 sent %d bytes", len(s.payload))
		case "STOR":
			reply("150 opening data connection")
			dc, err := openData()
			if err != nil {
				return err
			}
			dc.SetDeadline(time.Now().Add(ioTimeout))
			b, err := io.ReadAll(dc)
			dc.Close()
			if err != nil {
				return err
			}
			reply("226 stored %d %x", len(b), sha256.Sum256(b))
		case "QUIT":
			reply("221 bye")
			return nil
		default:
			reply("502 %s not implemented", verb)
		}
	}
}

// testProxy plays lbha's userspace proxy for one FTP session: it accepts a
// client on its VIP, dials the server, and runs Relay with hooks that open
// data listeners and RelayData, recording what they announced.
type testProxy struct {
	vip      net.Listener
	relayErr chan error

	mu        sync.Mutex
	passive   []netip.AddrPort // advertised to the client
	active    []netip.AddrPort // advertised to the server
	dataErrs  []error
	dataWG    sync.WaitGroup
	dataCount int
}

func startProxy(t *testing.T, ip netip.Addr, server netip.AddrPort, wrap func(*net.TCPConn) net.Conn) *testProxy {
	p := &testProxy{vip: listenOn(t, ip), relayErr: make(chan error, 1)}
	ctx := t.Context()
	go func() {
		c, err := p.vip.Accept()
		if err != nil {
			p.relayErr <- err
			return
		}
		s, err := net.DialTimeout("tcp", server.String(), ioTimeout)
		if err != nil {
			c.Close()
			p.relayErr <- err
			return
		}
		clientIP := addrPort(c.RemoteAddr()).Addr()
		serverIP := addrPort(s.RemoteAddr()).Addr()
		directorIP := addrPort(s.LocalAddr()).Addr()
		vipIP := addrPort(c.LocalAddr()).Addr()
		data := func(listenIP, peer netip.Addr, target netip.AddrPort, record *[]netip.AddrPort) (netip.AddrPort, error) {
			ln, err := net.Listen("tcp", netip.AddrPortFrom(listenIP, 0).String())
			if err != nil {
				return netip.AddrPort{}, err
			}
			adv := addrPort(ln.Addr())
			p.mu.Lock()
			*record = append(*record, adv)
			p.dataCount++
			p.mu.Unlock()
			p.dataWG.Add(1)
			go func() {
				defer p.dataWG.Done()
				err := ftp.RelayData(ctx, ln, peer, ioTimeout, dialTo(target))
				p.mu.Lock()
				p.dataErrs = append(p.dataErrs, err)
				p.mu.Unlock()
			}()
			return adv, nil
		}
		h := ftp.Hooks{
			Passive: func(serverData netip.AddrPort) (netip.AddrPort, error) {
				return data(vipIP, clientIP, serverData, &p.passive)
			},
			Active: func(clientData netip.AddrPort) (netip.AddrPort, error) {
				return data(directorIP, serverIP, clientData, &p.active)
			},
		}
		p.relayErr <- ftp.Relay(ctx, wrap(c.(*net.TCPConn)), wrap(s.(*net.TCPConn)), h)
	}()
	return p
}

// ftpClient is a scripted FTP client.
type ftpClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialClient(t *testing.T, ap netip.AddrPort) *ftpClient {
	c, err := net.DialTimeout("tcp", ap.String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(ioTimeout))
	fc := &ftpClient{t: t, c: c, br: bufio.NewReader(c)}
	fc.expect("220")
	return fc
}

func (fc *ftpClient) send(line string) {
	fc.t.Helper()
	if _, err := io.WriteString(fc.c, line+"\r\n"); err != nil {
		fc.t.Fatal(err)
	}
}

func (fc *ftpClient) expect(code string) string {
	fc.t.Helper()
	line, err := fc.br.ReadString('\n')
	if err != nil {
		fc.t.Fatalf("waiting for %s: %v", code, err)
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, code+" ") {
		fc.t.Fatalf("got reply %q, want %s", line, code)
	}
	return line
}

// transfer describes one way of opening a data connection.
type transfer struct {
	cmd     string // PASV, EPSV, PORT or EPRT
	network string // tcp4 or tcp6
}

func (tr transfer) passive() bool { return tr.cmd == "PASV" || tr.cmd == "EPSV" }

// openData sets up one data connection as tr says and runs verb (RETR or
// STOR); it returns the data connection once both sides are connected,
// checking that each side was told the proxy's address, not the other's.
func (fc *ftpClient) openData(tr transfer, p *testProxy, srv *fakeServer, verb string) net.Conn {
	t := fc.t
	t.Helper()
	if tr.passive() {
		fc.send(tr.cmd)
		var got netip.AddrPort
		if tr.cmd == "PASV" {
			var ok bool
			if got, ok = ftp.ParsePASV(fc.expect("227")); !ok {
				t.Fatal("227 reply does not parse")
			}
		} else {
			port, ok := ftp.ParseEPSV(fc.expect("229"))
			if !ok {
				t.Fatal("229 reply does not parse")
			}
			got = netip.AddrPortFrom(addrPort(fc.c.RemoteAddr()).Addr(), port)
		}
		p.mu.Lock()
		adv := p.passive[len(p.passive)-1]
		p.mu.Unlock()
		srv.mu.Lock()
		real := srv.listening[len(srv.listening)-1]
		srv.mu.Unlock()
		if got != adv || got == real {
			t.Fatalf("%s reply names %v; proxy advertised %v, server listens on %v", tr.cmd, got, adv, real)
		}
		dc, err := net.DialTimeout("tcp", got.String(), ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		fc.send(verb + " file")
		fc.expect("150")
		return dc
	}

	ln := listenOn(t, loopback(tr.network))
	mine := addrPort(ln.Addr())
	if tr.cmd == "PORT" {
		a := mine.Addr().As4()
		fc.send(fmt.Sprintf("PORT %d,%d,%d,%d,%d,%d", a[0], a[1], a[2], a[3], mine.Port()>>8, mine.Port()&0xff))
	} else {
		af := 1
		if mine.Addr().Is6() {
			af = 2
		}
		fc.send(fmt.Sprintf("EPRT |%d|%s|%d|", af, mine.Addr(), mine.Port()))
	}
	fc.expect("200")
	p.mu.Lock()
	adv := p.active[len(p.active)-1]
	p.mu.Unlock()
	srv.mu.Lock()
	told := srv.toldActive[len(srv.toldActive)-1]
	srv.mu.Unlock()
	if told != adv || told == mine {
		t.Fatalf("server was told %v; proxy advertised %v, client listens on %v", told, adv, mine)
	}
	fc.send(verb + " file")
	fc.expect("150")
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(ioTimeout))
	dc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return dc
}

func TestRelayEndToEnd(t *testing.T) {
	payload := make([]byte, 1<<20+17)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	upload := payload[:300001]
	wraps := map[string]func(*net.TCPConn) net.Conn{
		"whole":   func(c *net.TCPConn) net.Conn { return c },
		"dribble": func(c *net.TCPConn) net.Conn { return dribble{c} },
	}
	for _, tr := range []transfer{
		{"PASV", "tcp4"},
		{"EPSV", "tcp4"},
		{"EPSV", "tcp6"},
		{"PORT", "tcp4"},
		{"EPRT", "tcp4"},
		{"EPRT", "tcp6"},
	} {
		for _, wname := range []string{"whole", "dribble"} {
			t.Run(tr.cmd+"/"+tr.network+"/"+wname, func(t *testing.T) {
				ip := loopback(tr.network)
				srv := startServer(t, ip, payload)
				p := startProxy(t, ip, addrPort(srv.ln.Addr()), wraps[wname])
				fc := dialClient(t, addrPort(p.vip.Addr()))

				// Download.
				dc := fc.openData(tr, p, srv, "RETR")
				dc.SetDeadline(time.Now().Add(ioTimeout))
				got, err := io.ReadAll(dc)
				dc.Close()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, payload) {
					t.Fatalf("RETR: got %d bytes, want the %d-byte payload", len(got), len(payload))
				}
				fc.expect("226")

				// Upload.
				dc = fc.openData(tr, p, srv, "STOR")
				dc.SetDeadline(time.Now().Add(ioTimeout))
				if _, err := dc.Write(upload); err != nil {
					t.Fatal(err)
				}
				dc.Close()
				want := fmt.Sprintf("226 stored %d %x", len(upload), sha256.Sum256(upload))
				if line := fc.expect("226"); line != want {
					t.Fatalf("STOR: server replied %q, want %q", line, want)
				}

				fc.send("QUIT")
				fc.expect("221")
				if _, err := fc.br.ReadByte(); err != io.EOF {
					t.Fatalf("after 221: read %v, want EOF", err)
				}
				fc.c.Close() // as clients do on EOF; Relay would otherwise linger
				if err := <-srv.done; err != nil {
					t.Fatalf("server: %v", err)
				}
				if err := <-p.relayErr; err != nil {
					t.Fatalf("Relay: %v", err)
				}
				p.dataWG.Wait()
				if p.dataCount != 2 {
					t.Fatalf("%d data connections, want 2", p.dataCount)
				}
				for _, err := range p.dataErrs {
					if err != nil {
						t.Fatalf("RelayData: %v", err)
					}
				}
			})
		}
	}
}

// relayHarness runs Relay between two loopback TCP connections and hands
// out the application ends: cli talks to Relay's client side, srv to its
// server side.
type relayHarness struct {
	cli, srv *net.TCPConn
	done     chan error
}

func startRelay(t *testing.T, ctx context.Context, h ftp.Hooks, wrap func(net.Conn) net.Conn) *relayHarness {
	t.Helper()
	cli, relayClient := tcpPair(t)
	relayServer, srv := tcpPair(t)
	r := &relayHarness{cli: cli, srv: srv, done: make(chan error, 1)}
	go func() { r.done <- ftp.Relay(ctx, wrap(relayClient), wrap(relayServer), h) }()
	return r
}

func same(c net.Conn) net.Conn { return c }

func (r *relayHarness) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		return err
	case <-time.After(ioTimeout):
		t.Fatal("Relay did not return")
		return nil
	}
}

// readN reads exactly n bytes from c.
func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return string(b)
}

// lockedBuffer is a log sink shared by the relay goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRelaySplitWrites(t *testing.T) {
	h := ftp.Hooks{
		Passive: func(netip.AddrPort) (netip.AddrPort, error) { return ap("192.0.2.7:2020"), nil },
		Active:  func(netip.AddrPort) (netip.AddrPort, error) { return ap("198.51.100.9:3030"), nil },
	}
	r := startRelay(t, t.Context(), h, same)
	for _, piece := range []string{"PO", "RT 10,0,0", ",1,4,1\r", "\nNO", "OP\r\n"} {
		io.WriteString(r.cli, piece)
		time.Sleep(20 * time.Millisecond)
	}
	want := "PORT 198,51,100,9,11,214\r\nNOOP\r\n"
	if got := readN(t, r.srv, len(want)); got != want {
		t.Fatalf("server got %q, want %q", got, want)
	}
	for _, piece := range []string{"227 Entering Passive Mode (10,0", ",0,1,4,1)\r\n", "229 (|||", "6446|)\n"} {
		io.WriteString(r.srv, piece)
		time.Sleep(20 * time.Millisecond)
	}
	want = "227 Entering Passive Mode (192,0,2,7,7,228)\r\n229 (|||2020|)\n"
	if got := readN(t, r.cli, len(want)); got != want {
		t.Fatalf("client got %q, want %q", got, want)
	}
}

func TestRelayLongLines(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	h := ftp.Hooks{Active: func(netip.AddrPort) (netip.AddrPort, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		return ap("10.9.8.7:2020"), nil
	}}
	r := startRelay(t, t.Context(), h, same)

	const port = "PORT 1,2,3,4,5,6"
	pad := func(total int) string { return port + strings.Repeat(" ", total-len(port)-2) + "\r\n" }
	fits := pad(4096)    // the longest line Relay parses
	tooLong := pad(4097) // passed through unmodified
	tail := strings.Repeat("x", 4096) + port + "\r\n"
	in := fits + tooLong + tail + port + "\r\n"
	want := strings.Replace(fits, "1,2,3,4,5,6", "10,9,8,7,7,228", 1) + tooLong + tail + "PORT 10,9,8,7,7,228\r\n"

	go io.WriteString(r.cli, in)
	if got := readN(t, r.srv, len(want)); got != want {
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Fatalf("server got a different stream from byte %d: %q, want %q", i, got[i:min(i+40, len(got))], want[i:min(i+40, len(want))])
			}
		}
		t.Fatal("server got a different stream")
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 2 {
		t.Fatalf("Active called %d times, want 2", calls)
	}
}

func TestRelayHookErrors(t *testing.T) {
	var logs lockedBuffer
	h := ftp.Hooks{
		Passive: func(serverData netip.AddrPort) (netip.AddrPort, error) {
			if serverData.Port() == 1025 {
				return netip.AddrPort{}, errors.New("no VIP port left")
			}
			return ap("[2001:db8::1]:2020"), nil // cannot go into a 227 reply
		},
		Active: func(netip.AddrPort) (netip.AddrPort, error) {
			return netip.AddrPort{}, errors.New("listen failed")
		},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	}
	r := startRelay(t, t.Context(), h, same)

	up := "PORT 10,0,0,1,4,1\r\nEPRT |1|10.0.0.1|1025|\r\n"
	io.WriteString(r.cli, up)
	if got := readN(t, r.srv, len(up)); got != up {
		t.Fatalf("server got %q, want it unchanged: %q", got, up)
	}
	down := "227 Entering Passive Mode (10,0,0,1,4,1)\r\n227 Entering Passive Mode (10,0,0,1,4,2)\r\n"
	io.WriteString(r.srv, down)
	if got := readN(t, r.cli, len(down)); got != down {
		t.Fatalf("client got %q, want it unchanged: %q", got, down)
	}
	out := logs.String()
	for _, want := range []string{"listen failed", "no VIP port left", "does not fit a 227 reply"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "level=WARN"); n != 4 {
		t.Errorf("%d warnings logged, want 4:\n%s", n, out)
	}
}

func TestRelayHalfClose(t *testing.T) {
	r := startRelay(t, t.Context(), ftp.Hooks{}, same)
	io.WriteString(r.cli, "QUIT\r\n")
	r.cli.CloseWrite()

	r.srv.SetReadDeadline(time.Now().Add(ioTimeout))
	got, err := io.ReadAll(r.srv)
	if err != nil || string(got) != "QUIT\r\n" {
		t.Fatalf("server read %q, %v; want the command, then EOF", got, err)
	}
	// The server answers after the client's FIN and then closes.
	io.WriteString(r.srv, "221 bye\r\n")
	r.srv.Close()

	r.cli.SetReadDeadline(time.Now().Add(ioTimeout))
	got, err = io.ReadAll(r.cli)
	if err != nil || string(got) != "221 bye\r\n" {
		t.Fatalf("client read %q, %v; want the reply, then EOF", got, err)
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("Relay: %v", err)
	}
}

func TestRelayWithoutHalfClose(t *testing.T) {
	r := startRelay(t, t.Context(), ftp.Hooks{}, func(c net.Conn) net.Conn { return noHalfClose{c} })
	r.cli.Close()
	if err := r.wait(t); err != nil {
		t.Fatalf("Relay: %v", err)
	}
	r.srv.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := r.srv.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("server read %v, want EOF", err)
	}
}

func TestRelayContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	r := startRelay(t, ctx, ftp.Hooks{}, same)
	io.WriteString(r.cli, "NOOP\r\n")
	readN(t, r.srv, len("NOOP\r\n"))
	cancel()
	if err := r.wait(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Relay = %v, want context.Canceled", err)
	}
	for name, c := range map[string]net.Conn{"client": r.cli, "server": r.srv} {
		c.SetReadDeadline(time.Now().Add(ioTimeout))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s read %v, want EOF", name, err)
		}
	}
}
