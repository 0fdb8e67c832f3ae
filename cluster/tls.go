package cluster

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// tlsStream is raft's stream layer over mutual TLS: every raft connection
// is authenticated both ways with the cluster's CA.
type tlsStream struct {
	net.Listener
	advertise net.Addr
	config    *tls.Config
}

func newTLSStream(bind string, advertise net.Addr, cfg *tls.Config) (*tlsStream, error) {
	l, err := tls.Listen("tcp", bind, cfg)
	if err != nil {
		return nil, err
	}
	return &tlsStream{Listener: l, advertise: advertise, config: cfg}, nil
}

// Addr is the address peers reach this node at.
func (s *tlsStream) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.Listener.Addr()
}

// Dial opens a TLS connection to a peer and completes the handshake within
// timeout, so a peer that accepts TCP but never answers TLS cannot stall
// raft.
func (s *tlsStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	conn, err := tls.DialWithDialer(d, "tcp", string(address), s.config)
	if err != nil {
		return nil, fmt.Errorf("cluster: raft TLS dial %s: %w", address, err)
	}
	return conn, nil
}
