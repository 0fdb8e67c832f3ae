package syncd

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/lbha/lbha/syncd/wire"
)

// minReadTimeout is the shortest silence after which a resync connection
// counts as dead, whatever keepalive the master announced.
const minReadTimeout = 3 * time.Second

// resyncLoop keeps a resync connection to the master: connect, receive
// the whole table, then stay connected (warm) until the connection breaks,
// and start over after a backoff.
func (b *Backup) resyncLoop(ctx context.Context) {
	backoff := b.cfg.ResyncBackoff
	for ctx.Err() == nil {
		completed, err := b.resyncOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if completed {
			backoff = b.cfg.ResyncBackoff
		}
		b.log.Warn("resync connection lost", "master", b.cfg.ResyncAddr, "err", err, "retry_in", backoff)
		// Jitter keeps backups that lost the same master from
		// reconnecting in lockstep.
		sleep(ctx, backoff/2+rand.N(backoff/2+1))
		backoff = min(2*backoff, b.cfg.ResyncMaxBackoff)
	}
}

// resyncOnce runs one resync connection until it breaks; completed
// reports whether the end marker arrived.
func (b *Backup) resyncOnce(ctx context.Context) (completed bool, err error) {
	conn, err := b.cfg.ResyncDial(ctx, b.cfg.ResyncAddr)
	if err != nil {
		b.stats.resyncFailures.Add(1)
		return false, fmt.Errorf("syncd: resync: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	started := false
	defer func() {
		if started {
			b.post(ctx, batch{kind: batchResyncAbort})
		} else {
			b.stats.resyncFailures.Add(1)
		}
	}()

	var h hello
	_, _ = crand.Read(h.nonce[:]) // never fails on Linux
	_ = conn.SetWriteDeadline(time.Now().Add(helloTimeout))
	if _, err := conn.Write(h.marshal(b.cfg.Auth)); err != nil {
		return false, fmt.Errorf("syncd: resync: hello: %w", err)
	}
	var key []byte
	if b.cfg.Auth != nil {
		key = b.cfg.Auth.keys[0].key
	}
	fr := newFrameReader(conn, key, h.nonce)
	timeout := helloTimeout
	var m wire.Message
	for {
		_ = conn.SetReadDeadline(time.Now().Add(timeout))
		typ, p, err := fr.read()
		if err != nil {
			if errors.Is(err, errAuth) {
				b.stats.authForged.Add(1)
			}
			return completed, fmt.Errorf("syncd: resync: %w", err)
		}
		switch {
		case typ == frameHeader && !started:
			total, ka, err := parseHeader(p)
			if err != nil {
				return false, fmt.Errorf("syncd: resync: %w", err)
			}
			timeout = max(3*time.Duration(ka)*time.Millisecond, minReadTimeout)
			started = true
			if !b.post(ctx, batch{kind: batchResyncStart, n: total}) {
				return false, ctx.Err()
			}
		case typ == frameEntries && started && !completed:
			entries := b.decode(&m, p)
			if len(entries) == 0 {
				continue
			}
			if !b.post(ctx, batch{kind: batchResyncEntries, entries: entries}) {
				return false, ctx.Err()
			}
		case typ == frameEnd && started && !completed:
			n, err := parseCount(p)
			if err != nil {
				return false, fmt.Errorf("syncd: resync: %w", err)
			}
			if !b.post(ctx, batch{kind: batchResyncEnd, n: n}) {
				return false, ctx.Err()
			}
			completed = true
		case typ == frameKeepalive && started:
		default:
			return completed, fmt.Errorf("syncd: resync: unexpected frame type %d", typ)
		}
	}
}

// post hands a resync batch to the applying goroutine, behind the live
// batches received so far.
func (b *Backup) post(ctx context.Context, bt batch) bool {
	select {
	case b.tokens <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	select {
	case b.in <- bt:
		return true
	case <-ctx.Done():
		<-b.tokens
		return false
	}
}
