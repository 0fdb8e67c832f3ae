package syncd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/lbha/lbha/persist"
	"github.com/lbha/lbha/syncd/wire"
)

const (
	// helloTimeout bounds how long a connection may stay silent before
	// its hello, so that idle connections cannot pile up.
	helloTimeout = 10 * time.Second
	// resyncWriteTimeout bounds one frame's write: a backup that stops
	// reading is dropped rather than holding the stream open forever.
	resyncWriteTimeout = 30 * time.Second
)

// serveResync accepts backups until ctx is done, then closes the listener
// and every connection and waits for their goroutines.
func (m *Master) serveResync(ctx context.Context, ln net.Listener) {
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				break
			}
			m.log.Warn("resync accept failed", "err", err)
			sleep(ctx, 50*time.Millisecond)
			continue
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			break
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			err := m.serveOne(ctx, c)
			c.Close()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			if err != nil && ctx.Err() == nil {
				m.log.Info("resync connection ended", "peer", c.RemoteAddr().String(), "err", err)
			}
		})
	}
	wg.Wait()
}

// serveOne streams the table to one backup, then keeps the connection
// alive until it breaks.
func (m *Master) serveOne(ctx context.Context, c net.Conn) error {
	_ = c.SetReadDeadline(time.Now().Add(helloTimeout))
	h, key, err := readHello(c, m.cfg.Auth)
	if err != nil {
		m.stats.resyncsRefused.Add(1)
		return fmt.Errorf("syncd: resync: %w", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	fw := newFrameWriter(c, key, h.nonce)
	write := func(typ byte, p []byte) error {
		_ = c.SetWriteDeadline(time.Now().Add(resyncWriteTimeout))
		return fw.write(typ, p)
	}
	start := time.Now()
	conns, templates := m.table.Len()
	total := uint64(conns + templates)
	if err := write(frameHeader, putHeader(total, uint32(m.cfg.ResyncKeepalive/time.Millisecond))); err != nil {
		return fmt.Errorf("syncd: resync: %w", err)
	}
	b, err := wire.NewBuilder(wire.V1, m.cfg.SyncID, resyncMaxMsgLen)
	if err != nil {
		return fmt.Errorf("syncd: resync: %w", err)
	}
	var (
		sent uint64
		w    wire.Entry
		werr error
	)
	send := func() bool {
		if b.Len() == 0 {
			return true
		}
		n := b.Len()
		if werr = write(frameEntries, b.Bytes()); werr != nil {
			return false
		}
		sent += uint64(n)
		b.Reset()
		return true
	}
	m.table.Range(func(e persist.Entry) bool {
		if ctx.Err() != nil {
			werr = ctx.Err()
			return false
		}
		if !convertible(&e) || e.Expires <= 0 {
			return true
		}
		// The configured timeout as live sync sends it, and the time
		// left in lbha's remaining-lifetime option.
		if !toWire(&w, &e, seconds(e.Timeout)) {
			m.stats.entriesUnencodable.Add(1)
			return true
		}
		w.Expires = max(seconds(e.Expires), 1)
		ok, err := b.Add(&w)
		if err == nil && !ok {
			if !send() {
				return false
			}
			ok, err = b.Add(&w)
		}
		if err != nil || !ok {
			m.stats.entriesUnencodable.Add(1)
		}
		return true
	})
	if werr == nil {
		send()
	}
	if werr == nil {
		werr = write(frameEnd, putCount(sent))
	}
	if werr == nil {
		werr = fw.flush()
	}
	if werr != nil {
		return fmt.Errorf("syncd: resync: after %d of %d entries: %w", sent, total, werr)
	}
	m.stats.resyncsServed.Add(1)
	m.log.Info("resync served", "peer", c.RemoteAddr().String(), "entries", sent, "took", time.Since(start))

	t := time.NewTicker(m.cfg.ResyncKeepalive)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := write(frameKeepalive, nil); err != nil {
				return fmt.Errorf("syncd: resync keepalive: %w", err)
			}
			if err := fw.flush(); err != nil {
				return fmt.Errorf("syncd: resync keepalive: %w", err)
			}
		case <-ctx.Done():
			return nil
		}
	}
}
