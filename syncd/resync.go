package syncd

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/netip"
)

// The full resync protocol, lbha to lbha over TCP.
//
// A backup connects to the master's resync address and sends a hello:
//
//	off  len  field
//	  0    4  magic "LBRS"
//	  4    1  version 1
//	  5    1  flags: bit 0 set when authenticated
//	  6    2  reserved, 0
//	  8   16  nonce, random per connection
//	 24    4  key id (see auth.go), 0 when not authenticated
//	 28   32  only when authenticated: HMAC-SHA256(key, bytes 0..27)
//
// The master answers with frames:
//
//	off  len  field
//	  0    4  length of the rest of the frame, big-endian
//	  4    1  type
//	  5    n  payload
//	 5+n  32  only when authenticated: HMAC-SHA256(key, nonce || frame
//	          number as 8 bytes big-endian, counting from 0 || bytes 0..4+n)
//
// Frame types: header (payload: total entries, 8 bytes; keepalive interval
// in milliseconds, 4 bytes), entries (payload: one version 1 sync message
// in the kernel's wire format: timeouts are the configured ones, and each
// entry carries lbha's remaining-lifetime option (wire.Entry.Expires) with
// the time left in seconds, rounded up, at least 1), end (payload: the number
// of entries sent, 8 bytes) and keepalive (no payload), which follows the
// end frame at the announced interval for as long as the connection lasts.
// The nonce and the frame numbers make a recorded stream useless to replay,
// and a dropped or reordered frame fail its tag.

// DefaultResyncPort is the master's resync port, next to the kernel's sync
// port 8848.
const DefaultResyncPort = 8849

const (
	resyncVersion   = 1
	helloLen        = 28
	helloFlagAuth   = 1
	nonceLen        = 16
	maxResyncFrame  = 1 << 20
	frameHeader     = 1
	frameEntries    = 2
	frameEnd        = 3
	frameKeepalive  = 4
	headerPayload   = 12
	endPayload      = 8
	resyncMaxMsgLen = 65535
)

var resyncMagic = [4]byte{'L', 'B', 'R', 'S'}

// ListenResync opens the master's resync listener on addr; an empty addr
// means DefaultResyncPort on the primary IPv4 address of the sync
// interface cfg.Interface, the address the master's datagrams come from.
func ListenResync(cfg TransportConfig, addr string) (net.Listener, error) {
	if addr == "" {
		a, err := DefaultResyncAddr(cfg.Interface)
		if err != nil {
			return nil, err
		}
		addr = a.String()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("syncd: resync listener: %w", err)
	}
	return ln, nil
}

// DefaultResyncAddr returns DefaultResyncPort on the primary IPv4 address
// of the interface, in the calling thread's network namespace.
func DefaultResyncAddr(iface string) (netip.AddrPort, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("syncd: resync address: %w", err)
	}
	a, err := primaryIPv4(ifi)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(a, DefaultResyncPort), nil
}

// hello is the backup's opening message.
type hello struct {
	auth  bool
	nonce [nonceLen]byte
	keyID [keyIDLen]byte
}

func (h *hello) marshal(a *Auth) []byte {
	b := make([]byte, helloLen, helloLen+tagLen)
	copy(b, resyncMagic[:])
	b[4] = resyncVersion
	copy(b[8:], h.nonce[:])
	if a == nil {
		return b
	}
	b[5] = helloFlagAuth
	k := a.keys[0]
	copy(b[24:], k.id[:])
	mac := hmac.New(sha256.New, k.key)
	mac.Write(b)
	return mac.Sum(b)
}

// readHello reads and checks a hello; with a it must be authenticated by
// one of a's keys, which it returns.
func readHello(r io.Reader, a *Auth) (hello, []byte, error) {
	var h hello
	var b [helloLen + tagLen]byte
	if _, err := io.ReadFull(r, b[:helloLen]); err != nil {
		return h, nil, fmt.Errorf("hello: %w", err)
	}
	if [4]byte(b[0:4]) != resyncMagic || b[4] != resyncVersion || b[6] != 0 || b[7] != 0 || b[5]&^helloFlagAuth != 0 {
		return h, nil, errors.New("hello: not an lbha resync hello of version 1")
	}
	h.auth = b[5]&helloFlagAuth != 0
	h.nonce = [nonceLen]byte(b[8:24])
	h.keyID = [keyIDLen]byte(b[24:28])
	if h.auth != (a != nil) {
		return h, nil, fmt.Errorf("hello: authenticated %v, want %v: %w", h.auth, a != nil, errAuth)
	}
	if a == nil {
		return h, nil, nil
	}
	if _, err := io.ReadFull(r, b[helloLen:]); err != nil {
		return h, nil, fmt.Errorf("hello: %w", err)
	}
	key, ok := a.key(h.keyID)
	if !ok {
		return h, nil, fmt.Errorf("hello: unknown key: %w", errAuth)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(b[:helloLen])
	if !hmac.Equal(mac.Sum(nil), b[helloLen:]) {
		return h, nil, fmt.Errorf("hello: bad tag: %w", errAuth)
	}
	return h, key, nil
}

// frameWriter writes frames, tagged when it has a key.
type frameWriter struct {
	w     *bufio.Writer
	mac   hash.Hash
	nonce [nonceLen]byte
	n     uint64
	sum   []byte
}

func newFrameWriter(w io.Writer, key []byte, nonce [nonceLen]byte) *frameWriter {
	fw := &frameWriter{w: bufio.NewWriterSize(w, 64<<10), nonce: nonce}
	if key != nil {
		fw.mac = hmac.New(sha256.New, key)
	}
	return fw
}

func (fw *frameWriter) write(typ byte, payload []byte) error {
	var hdr [5]byte
	n := 1 + len(payload)
	if fw.mac != nil {
		n += tagLen
	}
	binary.BigEndian.PutUint32(hdr[:], uint32(n))
	hdr[4] = typ
	fw.w.Write(hdr[:])
	fw.w.Write(payload)
	if fw.mac != nil {
		fw.sum = frameTag(fw.mac, fw.sum[:0], fw.nonce, fw.n, hdr[:], payload)
		fw.w.Write(fw.sum)
	}
	fw.n++
	// bufio.Writer keeps the first error and returns it from every later
	// call, so checking once here is enough.
	_, err := fw.w.Write(nil)
	return err
}

func (fw *frameWriter) flush() error { return fw.w.Flush() }

func frameTag(mac hash.Hash, dst []byte, nonce [nonceLen]byte, n uint64, hdr, payload []byte) []byte {
	var num [8]byte
	binary.BigEndian.PutUint64(num[:], n)
	mac.Reset()
	mac.Write(nonce[:])
	mac.Write(num[:])
	mac.Write(hdr)
	mac.Write(payload)
	return mac.Sum(dst)
}

// frameReader reads frames, checking their tags when it has a key.
type frameReader struct {
	r     *bufio.Reader
	mac   hash.Hash
	nonce [nonceLen]byte
	n     uint64
	buf   []byte
	sum   []byte
}

func newFrameReader(r io.Reader, key []byte, nonce [nonceLen]byte) *frameReader {
	fr := &frameReader{r: bufio.NewReaderSize(r, 64<<10), nonce: nonce}
	if key != nil {
		fr.mac = hmac.New(sha256.New, key)
	}
	return fr
}

// read returns the next frame's type and payload; the payload is valid
// until the next read.
func (fr *frameReader) read() (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(fr.r, hdr[:4]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	min := 1
	if fr.mac != nil {
		min += tagLen
	}
	if n < min || n > maxResyncFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	if cap(fr.buf) < n {
		fr.buf = make([]byte, n)
	}
	b := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, b); err != nil {
		return 0, nil, fmt.Errorf("frame: %w", io.ErrUnexpectedEOF)
	}
	hdr[4] = b[0]
	payload := b[1:]
	if fr.mac != nil {
		tag := payload[len(payload)-tagLen:]
		payload = payload[:len(payload)-tagLen]
		fr.sum = frameTag(fr.mac, fr.sum[:0], fr.nonce, fr.n, hdr[:], payload)
		if !hmac.Equal(fr.sum, tag) {
			return 0, nil, fmt.Errorf("frame %d: bad tag: %w", fr.n, errAuth)
		}
	}
	fr.n++
	return hdr[4], payload, nil
}

// resyncDialer is the default way a backup reaches the master.
func resyncDialer(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

func putHeader(total uint64, keepaliveMS uint32) []byte {
	b := make([]byte, headerPayload)
	binary.BigEndian.PutUint64(b, total)
	binary.BigEndian.PutUint32(b[8:], keepaliveMS)
	return b
}

func parseHeader(p []byte) (total uint64, keepaliveMS uint32, err error) {
	if len(p) != headerPayload {
		return 0, 0, fmt.Errorf("header frame of %d bytes", len(p))
	}
	return binary.BigEndian.Uint64(p), binary.BigEndian.Uint32(p[8:]), nil
}

func putCount(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func parseCount(p []byte) (uint64, error) {
	if len(p) != endPayload {
		return 0, fmt.Errorf("end frame of %d bytes", len(p))
	}
	return binary.BigEndian.Uint64(p), nil
}
