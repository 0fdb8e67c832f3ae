package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
)

// ErrNoAgent means nothing listens on the socket.
var ErrNoAgent = errors.New("no lbha agent is running")

// Client talks to an agent's Unix socket, or to its TCP operator API.
type Client struct {
	socket string // or the https URL of the TCP API
	base   string // URL prefix of requests
	token  string
	http   *http.Client
}

// NewTCPClient returns a client of an agent's TCP operator API at url
// (https://host:port), authenticating with token and trusting the CA in
// roots (nil: the system roots).
func NewTCPClient(url, token string, roots *x509.CertPool) *Client {
	return &Client{socket: url, base: strings.TrimSuffix(url, "/"), token: token, http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}},
	}}
}

// NewClient returns a client of the agent listening on socket.
func NewClient(socket string) *Client {
	return &Client{socket: socket, base: "http://lbha", http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}},
	}}
}

// Do sends a request (in is nil for GET) and decodes the answer into out.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w at %s (start it with `lbha agent` or `lbha witness`, or pass --socket)", ErrNoAgent, c.socket)
		}
		return fmt.Errorf("agent at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("agent at %s: read answer: %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("agent answered %s", resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("agent at %s: undecodable answer: %w", c.socket, err)
		}
	}
	return nil
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
