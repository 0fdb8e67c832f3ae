package ftp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// maxLine is the longest control line, CRLF included, that Relay parses.
// Control lines are short (RFC 959 replies and commands fit in a few hundred
// bytes); a longer one is passed through in pieces of at most this size, so
// a peer cannot make the relay buffer without bound.
const maxLine = 4096

// halfCloseLinger bounds how long Relay keeps copying the other direction
// after one side has closed its sending half. A server that reads EOF on the
// control connection answers (or not) and closes at once, and so does a
// client that reads EOF; a peer that keeps its half open would otherwise pin
// the relay until its context ends. A variable so tests can shorten it.
var halfCloseLinger = 10 * time.Second

// Hooks are the proxy's part in Relay. A nil hook leaves its lines unchanged.
//
// Passive runs on the goroutine copying server to client and Active on the
// one copying client to server, so the two may run concurrently. Each runs
// before its line is forwarded and holds up that direction until it returns:
// it should open its listener, start [RelayData] on a goroutine and return.
type Hooks struct {
	// Passive is called when the server announces where it listens for a
	// passive data connection, in a 227 reply to PASV or a 229 reply to
	// EPSV. serverData is the address in a 227 reply as the server wrote
	// it, or for 229 the remote address of the server control connection
	// with the announced port. The reply forwarded to the client names
	// advertise instead; for 229 only its port is used.
	Passive func(serverData netip.AddrPort) (advertise netip.AddrPort, err error)

	// Active is called when the client announces where it listens for an
	// active data connection, in a PORT or EPRT command. The command
	// forwarded to the server names advertise instead. A PORT command can
	// carry only an IPv4 address; EPRT takes either family.
	Active func(clientData netip.AddrPort) (advertise netip.AddrPort, err error)

	// Logger receives hook errors and addresses that cannot be written
	// back (Warn), and each rewrite (Debug). Nil discards.
	Logger *slog.Logger
}

// Relay copies the control connection of one FTP session between client
// and server until it ends, calling h when either side announces a data
// address and forwarding the rewritten line. A line whose hook fails, or
// whose advertised address does not fit the form, is forwarded unchanged
// and the problem logged.
//
// When one side closes its sending half, Relay closes the sending half of
// the other connection if it can (CloseWrite, as *net.TCPConn has) and keeps
// copying the other direction for up to ten seconds; without CloseWrite it
// stops at once. It returns nil when the session ends this way, ctx.Err()
// when ctx ends first, and the first read or write error otherwise. It
// closes both connections before returning.
func Relay(ctx context.Context, client, server net.Conn, h Hooks) error {
	r := relay{hooks: h, log: h.Logger}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.serverIP, r.serverIPOK = ipOf(server.RemoteAddr())

	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			client.Close()
			server.Close()
		})
	}
	defer closeBoth()
	stop := context.AfterFunc(ctx, closeBoth)

	dirs := [2]direction{
		{name: "client to server", src: client, dst: server, rewrite: r.clientLine},
		{name: "server to client", src: server, dst: client, rewrite: r.serverLine},
	}
	done := make(chan int, len(dirs))
	for i := range dirs {
		go func() {
			dirs[i].err = dirs[i].copy()
			done <- i
		}()
	}
	var first error
	closing := false
	for range dirs {
		i := <-done
		err := dirs[i].err
		switch {
		case closing:
			// Errors after closeBoth are its consequence.
		case err == nil:
			// FIN forwarded; let the other direction drain, briefly.
			deadline := time.Now().Add(halfCloseLinger)
			dirs[1-i].src.SetReadDeadline(deadline)
			dirs[1-i].dst.SetWriteDeadline(deadline)
		case errors.Is(err, errNoHalfClose), errors.Is(err, os.ErrDeadlineExceeded):
			closing = true
			closeBoth()
		default:
			first = fmt.Errorf("ftp: relay %s: %w", dirs[i].name, err)
			closing = true
			closeBoth()
		}
	}
	if !stop() {
		return ctx.Err()
	}
	return first
}

// errNoHalfClose reports a connection without CloseWrite; it is not a
// failure, only the reason to close everything.
var errNoHalfClose = errors.New("ftp: connection cannot half-close")

// closeWrite closes the sending half of c.
func closeWrite(c net.Conn) error {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return errNoHalfClose
	}
	if err := cw.CloseWrite(); err != nil {
		// The connection is gone; nothing is left to drain.
		return errNoHalfClose
	}
	return nil
}

type relay struct {
	hooks      Hooks
	log        *slog.Logger
	serverIP   netip.Addr
	serverIPOK bool
}

// direction copies one side of the control connection line by line.
type direction struct {
	name     string
	src, dst net.Conn
	rewrite  func(line []byte) []byte
	err      error
}

// copy returns nil when src ended and dst's sending half was closed.
func (d *direction) copy() error {
	br := bufio.NewReaderSize(d.src, maxLine)
	long := false // inside a line longer than maxLine
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			out := line
			if err == nil && !long {
				out = d.rewrite(line)
			}
			if _, werr := d.dst.Write(out); werr != nil {
				return werr
			}
		}
		switch {
		case err == nil:
			long = false
		case errors.Is(err, bufio.ErrBufferFull):
			long = true
		case errors.Is(err, io.EOF):
			return closeWrite(d.dst)
		default:
			return err
		}
	}
}

// splitEOL splits a line into its body and its terminator, "\r\n" or "\n".
func splitEOL(line []byte) (body, eol []byte) {
	n := len(line)
	if bytes.HasSuffix(line, []byte("\r\n")) {
		n -= 2
	} else if bytes.HasSuffix(line, []byte("\n")) {
		n--
	}
	return line[:n], line[n:]
}

func (r *relay) serverLine(line []byte) []byte {
	if r.hooks.Passive == nil {
		return line
	}
	body, eol := splitEOL(line)
	var out string
	switch {
	case bytes.HasPrefix(body, []byte("227 ")):
		s := string(body)
		serverData, ok := ParsePASV(s)
		if !ok {
			return line
		}
		adv, err := r.hooks.Passive(serverData)
		if err != nil {
			r.log.Warn("ftp: passive hook failed; reply forwarded unchanged", "reply", s, "server_data", serverData, "err", err)
			return line
		}
		if out, ok = RewritePASV(s, adv); !ok {
			r.log.Warn("ftp: advertised address does not fit a 227 reply; reply forwarded unchanged", "reply", s, "advertise", adv)
			return line
		}
	case bytes.HasPrefix(body, []byte("229 ")):
		s := string(body)
		port, ok := ParseEPSV(s)
		if !ok {
			return line
		}
		if !r.serverIPOK {
			r.log.Warn("ftp: server control connection has no IP address; 229 reply forwarded unchanged", "reply", s)
			return line
		}
		adv, err := r.hooks.Passive(netip.AddrPortFrom(r.serverIP, port))
		if err != nil {
			r.log.Warn("ftp: passive hook failed; reply forwarded unchanged", "reply", s, "server_data", netip.AddrPortFrom(r.serverIP, port), "err", err)
			return line
		}
		if out, ok = RewriteEPSV(s, adv.Port()); !ok {
			r.log.Warn("ftp: advertised port does not fit a 229 reply; reply forwarded unchanged", "reply", s, "advertise", adv)
			return line
		}
	default:
		return line
	}
	r.log.Debug("ftp: rewrote passive reply", "reply", out)
	return append([]byte(out), eol...)
}

func (r *relay) clientLine(line []byte) []byte {
	if r.hooks.Active == nil {
		return line
	}
	body, eol := splitEOL(line)
	if len(body) < 5 || body[4] != ' ' {
		return line
	}
	var parse func(string) (netip.AddrPort, bool)
	var rewrite func(string, netip.AddrPort) (string, bool)
	switch {
	case bytes.EqualFold(body[:4], []byte("PORT")):
		parse, rewrite = ParsePORT, RewritePORT
	case bytes.EqualFold(body[:4], []byte("EPRT")):
		parse, rewrite = ParseEPRT, RewriteEPRT
	default:
		return line
	}
	s := string(body)
	clientData, ok := parse(s)
	if !ok {
		return line
	}
	adv, err := r.hooks.Active(clientData)
	if err != nil {
		r.log.Warn("ftp: active hook failed; command forwarded unchanged", "command", s, "client_data", clientData, "err", err)
		return line
	}
	out, ok := rewrite(s, adv)
	if !ok {
		r.log.Warn("ftp: advertised address does not fit the command; command forwarded unchanged", "command", s, "advertise", adv)
		return line
	}
	r.log.Debug("ftp: rewrote active command", "command", out)
	return append([]byte(out), eol...)
}

// ipOf returns the IP address of a connection endpoint.
func ipOf(a net.Addr) (netip.Addr, bool) {
	if a == nil {
		return netip.Addr{}, false
	}
	if t, ok := a.(*net.TCPAddr); ok {
		ip := t.AddrPort().Addr()
		return ip.Unmap(), ip.IsValid()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}
