package ftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// RelayData relays one FTP data connection. It waits up to timeout for a
// connection on ln, closes ln, dials the other side with dial and copies
// both ways until both directions have ended, then closes both connections.
// The proxy runs it on a goroutine after opening ln from a hook: on the VIP
// for a passive transfer (dial reaches the server's data address), on its
// server-side address for an active one (dial reaches the client's).
//
// If peer is valid, connections from any other IP address are closed and
// RelayData keeps waiting: the kernel's helper likewise expects the data
// connection from the client (passive) or the real server (active), and
// anyone else who reaches the port first could otherwise take the transfer.
// An invalid peer (the zero netip.Addr) accepts the first connection.
//
// A timeout of zero or less waits until ctx ends. dial gets ctx bounded by
// timeout as well. Between two *net.TCPConn, io.Copy splices in the kernel.
// When one side closes its sending half, RelayData closes the sending half
// of the other (CloseWrite) and keeps copying the other direction; without
// CloseWrite it stops at once.
//
// It returns nil when the transfer ends, an error wrapping
// context.DeadlineExceeded when no connection came in time, ctx's error when
// ctx ends, and otherwise the first accept, dial or copy error. ln is closed
// in every case.
func RelayData(ctx context.Context, ln net.Listener, peer netip.Addr, timeout time.Duration, dial func(context.Context) (net.Conn, error)) error {
	c, err := acceptOne(ctx, ln, peer.Unmap(), timeout)
	if err != nil {
		return err
	}
	dctx, cancel := withTimeout(ctx, timeout)
	other, err := dial(dctx)
	cancel()
	if err != nil {
		c.Close()
		return fmt.Errorf("ftp: data: dial: %w", err)
	}
	return join(ctx, c, other)
}

func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// acceptOne returns the first connection on ln from peer (any peer if
// invalid), closing ln.
func acceptOne(ctx context.Context, ln net.Listener, peer netip.Addr, timeout time.Duration) (net.Conn, error) {
	defer ln.Close()
	actx, cancel := withTimeout(ctx, timeout)
	defer cancel()
	stop := context.AfterFunc(actx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if actx.Err() != nil {
				return nil, fmt.Errorf("ftp: data: waiting for a connection: %w", actx.Err())
			}
			return nil, fmt.Errorf("ftp: data: accept: %w", err)
		}
		if !peer.IsValid() {
			return c, nil
		}
		if ip, ok := ipOf(c.RemoteAddr()); ok && ip.WithZone("") == peer.WithZone("") {
			return c, nil
		}
		c.Close()
	}
}

// join copies between a and b until both directions end, or until one fails
// or ctx ends, and closes both.
func join(ctx context.Context, a, b net.Conn) error {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			a.Close()
			b.Close()
		})
	}
	defer closeBoth()
	stop := context.AfterFunc(ctx, closeBoth)

	errc := make(chan error, 2)
	pump := func(dst, src net.Conn) {
		// Plain io.Copy, no wrapping: *net.TCPConn's ReadFrom splices.
		_, err := io.Copy(dst, src)
		if err == nil {
			err = closeWrite(dst)
		}
		errc <- err
	}
	go pump(a, b)
	go pump(b, a)

	var first error
	closing := false
	for range 2 {
		err := <-errc
		switch {
		case closing || err == nil:
		case errors.Is(err, errNoHalfClose):
			closing = true
			closeBoth()
		default:
			first = fmt.Errorf("ftp: data: %w", err)
			closing = true
			closeBoth()
		}
	}
	if !stop() {
		return ctx.Err()
	}
	return first
}
