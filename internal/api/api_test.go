package api

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lbha/lbha/cluster"
)

// fakeBackend is a node that is leader or not; a follower knows the
// leader's peer API address.
type fakeBackend struct {
	name     string
	leader   bool
	leaderAt string
	versions []cluster.Revision
}

func (f *fakeBackend) Status() Status {
	return Status{Status: cluster.Status{Name: f.name, State: cluster.StateBackup}}
}
func (f *fakeBackend) Members() []cluster.Member { return nil }
func (f *fakeBackend) Failover(to string, force bool) (string, error) {
	if !f.leader {
		return "", cluster.ErrNotLeader
	}
	if to == "w" {
		return "", fmt.Errorf("%w: w is a witness", cluster.ErrRefused)
	}
	return to, nil
}
func (f *fakeBackend) ApplyConfig(doc []byte, source string) (uint64, error) {
	if strings.Contains(string(doc), "bad") {
		return 0, fmt.Errorf("%w: line 1: bad", ErrInvalid)
	}
	if !f.leader {
		return 0, cluster.ErrNotLeader
	}
	f.versions = append(f.versions, cluster.Revision{Version: uint64(len(f.versions) + 1), Doc: doc, Source: source})
	return uint64(len(f.versions)), nil
}
func (f *fakeBackend) Config(v uint64) (cluster.Revision, bool) {
	if v == 0 && len(f.versions) > 0 {
		return f.versions[len(f.versions)-1], true
	}
	for _, r := range f.versions {
		if r.Version == v {
			return r, true
		}
	}
	return cluster.Revision{}, false
}
func (f *fakeBackend) ConfigHistory() []cluster.Revision { return f.versions }
func (f *fakeBackend) LeaderAPI() string                 { return f.leaderAt }
func (f *fakeBackend) Join(name string, addr netip.Addr) error {
	if !f.leader {
		return cluster.ErrNotLeader
	}
	return nil
}
func (f *fakeBackend) Leave(name string) error { return f.Join(name, netip.Addr{}) }
func (f *fakeBackend) Self() (string, netip.Addr, int) {
	return f.name, netip.MustParseAddr("192.0.2.1"), 7001
}
func (f *fakeBackend) Stop()           {}
func (f *fakeBackend) SyncStatus() any { return map[string]string{"role": "off"} }

// serveUnix serves b on a Unix socket and returns a client of it.
func serveUnix(t *testing.T, b Backend) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = Serve(ctx, l, Handler(b, slog.Default())) }()
	return NewClient(sock)
}

func TestForwardsToLeaderOnce(t *testing.T) {
	leader := &fakeBackend{name: "l", leader: true}
	ls := httptest.NewServer(Handler(leader, slog.Default()))
	defer ls.Close()
	follower := &fakeBackend{name: "f", leaderAt: strings.TrimPrefix(ls.URL, "http://")}
	c := serveUnix(t, follower)
	ctx := context.Background()

	var resp ConfigResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/config", ConfigRequest{Doc: []byte("a: 1\n")}, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Version != 1 || len(leader.versions) != 1 {
		t.Fatalf("forwarded apply: version %d, leader has %d versions", resp.Version, len(leader.versions))
	}
	var fo FailoverResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/failover", FailoverRequest{To: "d2"}, &fo); err != nil || fo.To != "d2" {
		t.Fatalf("forwarded failover: %+v %v", fo, err)
	}
	err := c.Do(ctx, http.MethodPost, "/v1/failover", FailoverRequest{To: "w"}, &fo)
	if err == nil || !strings.Contains(err.Error(), "witness") {
		t.Fatalf("refused failover: %v", err)
	}

	// Two followers that each believe the other leads must not bounce a
	// request forever.
	a := &fakeBackend{name: "a"}
	b := &fakeBackend{name: "b"}
	as := httptest.NewServer(Handler(a, slog.Default()))
	defer as.Close()
	bs := httptest.NewServer(Handler(b, slog.Default()))
	defer bs.Close()
	a.leaderAt, b.leaderAt = strings.TrimPrefix(bs.URL, "http://"), strings.TrimPrefix(as.URL, "http://")
	err = serveUnix(t, a).Do(ctx, http.MethodPost, "/v1/config", ConfigRequest{Doc: []byte("x")}, nil)
	if err == nil || !strings.Contains(err.Error(), "already forwarded") {
		t.Fatalf("bounce: %v", err)
	}
}

func TestErrors(t *testing.T) {
	b := &fakeBackend{name: "l", leader: true}
	c := serveUnix(t, b)
	ctx := context.Background()
	if err := c.Do(ctx, http.MethodPost, "/v1/config", ConfigRequest{Doc: []byte("bad")}, nil); err == nil || !strings.Contains(err.Error(), "invalid configuration") {
		t.Fatalf("invalid config: %v", err)
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/config?version=7", nil, nil); err == nil || !strings.Contains(err.Error(), "no configuration version 7") {
		t.Fatalf("missing version: %v", err)
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/config?version=x", nil, nil); err == nil || !strings.Contains(err.Error(), "not a number") {
		t.Fatalf("bad version: %v", err)
	}
	if err := c.Do(ctx, http.MethodPost, "/v1/join", MemberRequest{Name: "n"}, nil); err == nil || !strings.Contains(err.Error(), "needs a node name and address") {
		t.Fatalf("join without address: %v", err)
	}
	err := NewClient(filepath.Join(t.TempDir(), "none.sock")).Do(ctx, http.MethodGet, "/v1/status", nil, nil)
	if !errors.Is(err, ErrNoAgent) {
		t.Fatalf("no agent: %v", err)
	}
}

func TestTCPAPIWithToken(t *testing.T) {
	b := &fakeBackend{name: "l", leader: true}
	srv := httptest.NewTLSServer(RequireToken(Handler(b, slog.Default()), "s3cret-token-0123"))
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	ctx := context.Background()
	var st Status
	if err := NewTCPClient(srv.URL, "s3cret-token-0123", roots).Do(ctx, http.MethodGet, "/v1/status", nil, &st); err != nil || st.Name != "l" {
		t.Fatalf("with the token: %+v %v", st, err)
	}
	for _, tok := range []string{"", "wrong", "s3cret-token-012"} {
		err := NewTCPClient(srv.URL, tok, roots).Do(ctx, http.MethodGet, "/v1/status", nil, &st)
		if err == nil || !strings.Contains(err.Error(), "token") {
			t.Fatalf("token %q: %v", tok, err)
		}
	}
	// A server whose certificate the client does not trust is refused.
	if err := NewTCPClient(srv.URL, "s3cret-token-0123", x509.NewCertPool()).Do(ctx, http.MethodGet, "/v1/status", nil, &st); err == nil {
		t.Fatal("an untrusted server certificate was accepted")
	}
}

func (f *fakeBackend) Services() (Services, error) { return Services{Dataplane: "fake"}, nil }

func (f *fakeBackend) Conns() (Conns, error) { return Conns{Dataplane: "fake"}, nil }
