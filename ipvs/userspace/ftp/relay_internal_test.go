package ftp

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestRelayLinger checks that a peer keeping its half open after the other
// side's FIN cannot pin Relay.
func TestRelayLinger(t *testing.T) {
	old := halfCloseLinger
	halfCloseLinger = 100 * time.Millisecond
	t.Cleanup(func() { halfCloseLinger = old })

	pair := func() (a, b *net.TCPConn) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); s.Close() })
		return c.(*net.TCPConn), s.(*net.TCPConn)
	}
	cli, relayClient := pair()
	relayServer, srv := pair()
	done := make(chan error, 1)
	go func() { done <- Relay(t.Context(), relayClient, relayServer, Hooks{}) }()

	cli.CloseWrite() // the server never closes
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Relay: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Relay still running after the linger")
	}
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(srv); err != nil {
		t.Fatalf("server: %v", err)
	}
}
