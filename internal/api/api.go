// Package api is the agent's operator interface: JSON over HTTP, served on
// a Unix socket for the local CLI and on TCP (the peer API) so that a node
// can forward a request that only the leader can serve.
//
// The server knows nothing of raft: it calls a Backend, and when the backend
// answers cluster.ErrNotLeader it forwards the request once to the leader's
// peer API (a header marks forwarded requests so that two nodes with
// different views of the leader cannot bounce a request between them).
package api

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/lbha/lbha/cluster"
	"github.com/lbha/lbha/ipvs"
)

// Backend is what the API serves. cluster.Node implements most of it; the
// agent adds validation and its own status.
type Backend interface {
	Status() Status
	Members() []cluster.Member
	Failover(to string, force bool) (string, error)
	// ApplyConfig validates and replicates a configuration document.
	ApplyConfig(doc []byte, source string) (uint64, error)
	Config(version uint64) (cluster.Revision, bool)
	ConfigHistory() []cluster.Revision
	// LeaderAPI returns the peer API address (host:port) of the current
	// leader, or "" when unknown.
	LeaderAPI() string
	// Join adds a node (leader only); Leave removes one (leader only).
	Join(name string, addr netip.Addr) error
	Leave(name string) error
	// Self names this node, its bind address and its peer API port, for
	// lbha join/leave.
	Self() (name string, addr netip.Addr, apiPort int)
	// Stop ends the agent (after this node left the cluster).
	Stop()
	// SyncStatus describes the connection sync daemon.
	SyncStatus() any
	// Services describes the dataplane's virtual services with live
	// counters and health; Conns lists its connections and templates.
	Services() (Services, error)
	Conns() (Conns, error)
}

// Services is what `lbha services` shows.
type Services struct {
	// Dataplane is "kernel" or "userspace"; Version is the IPVS version
	// the dataplane reports (the kernel's, or the one the userspace proxy
	// mimics) and TableSize its connection hash size, for ipvsadm's
	// header line.
	Dataplane string               `json:"dataplane"`
	Version   string               `json:"version"`
	TableSize int                  `json:"table_size"`
	Services  []ipvs.ServiceStatus `json:"services"`
}

// Conns is what `lbha conns` shows.
type Conns struct {
	Dataplane string      `json:"dataplane"`
	Conns     []ipvs.Conn `json:"conns"`
}

// JoinViaRequest asks the local agent to join the cluster that the member
// at Peer (host or host:port of its peer API) belongs to.
type JoinViaRequest struct {
	Peer string `json:"peer"`
}

// MemberRequest names a node to add or remove.
type MemberRequest struct {
	Name    string     `json:"name"`
	Address netip.Addr `json:"address,omitzero"`
}

// Status is what `lbha status` shows.
type Status struct {
	cluster.Status
	VIPs      []string `json:"vips"`
	Dataplane string   `json:"dataplane,omitempty"`
}

// FailoverRequest asks for a planned switchover.
type FailoverRequest struct {
	To    string `json:"to,omitempty"`
	Force bool   `json:"force,omitempty"`
}

// FailoverResponse names the new master.
type FailoverResponse struct {
	To string `json:"to"`
}

// ConfigRequest carries a configuration document.
type ConfigRequest struct {
	Doc    []byte `json:"doc"`
	Source string `json:"source,omitempty"`
}

// ConfigResponse is the version a document became.
type ConfigResponse struct {
	Version uint64 `json:"version"`
}

// errorBody is the JSON of every error response.
type errorBody struct {
	Error string `json:"error"`
}

const forwardedHeader = "X-Lbha-Forwarded"

// ErrInvalid marks a configuration document that failed validation; the
// backend wraps the problems with it.
var ErrInvalid = errors.New("invalid configuration")

// Handler returns the HTTP handler of the API, forwarding to peers in clear
// text.
func Handler(b Backend, log *slog.Logger) http.Handler { return NewHandler(b, log, nil) }

// NewHandler returns the HTTP handler of the API. With peerTLS set, requests
// forwarded to other nodes go over HTTPS with that configuration (its
// certificate authenticates this node, its RootCAs the peer).
func NewHandler(b Backend, log *slog.Logger, peerTLS *tls.Config) http.Handler {
	s := &server{b: b, log: log, scheme: "http", client: &http.Client{Timeout: 10 * time.Second}}
	if peerTLS != nil {
		s.scheme = "https"
		s.client.Transport = &http.Transport{TLSClientConfig: peerTLS}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { reply(w, b.Status()) })
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) { reply(w, b.Members()) })
	mux.HandleFunc("POST /v1/failover", s.failover)
	mux.HandleFunc("GET /v1/sync", func(w http.ResponseWriter, r *http.Request) { reply(w, b.SyncStatus()) })
	mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, r *http.Request) { replyOrFail(w, b.Services) })
	mux.HandleFunc("GET /v1/conns", func(w http.ResponseWriter, r *http.Request) { replyOrFail(w, b.Conns) })
	mux.HandleFunc("POST /v1/config", s.applyConfig)
	mux.HandleFunc("GET /v1/config", s.getConfig)
	mux.HandleFunc("GET /v1/config/history", func(w http.ResponseWriter, r *http.Request) { reply(w, b.ConfigHistory()) })
	mux.HandleFunc("POST /v1/join", func(w http.ResponseWriter, r *http.Request) {
		s.member(w, r, func(m MemberRequest) error {
			if m.Name == "" || !m.Address.IsValid() {
				return fmt.Errorf("%w: join needs a node name and address", errBadRequest)
			}
			return b.Join(m.Name, m.Address)
		})
	})
	mux.HandleFunc("POST /v1/leave", func(w http.ResponseWriter, r *http.Request) {
		s.member(w, r, func(m MemberRequest) error {
			if m.Name == "" {
				return fmt.Errorf("%w: leave needs a node name", errBadRequest)
			}
			return b.Leave(m.Name)
		})
	})
	mux.HandleFunc("POST /v1/join-via", s.joinVia)
	mux.HandleFunc("POST /v1/leave-self", s.leaveSelf)
	return mux
}

type server struct {
	b      Backend
	log    *slog.Logger
	scheme string // of peer URLs: http, or https with peer TLS
	client *http.Client
}

func (s *server) failover(w http.ResponseWriter, r *http.Request) {
	var req FailoverRequest
	body, ok := readBody(w, r, &req)
	if !ok {
		return
	}
	to, err := s.b.Failover(req.To, req.Force)
	if errors.Is(err, cluster.ErrNotLeader) {
		s.forward(w, r, body)
		return
	}
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, cluster.ErrRefused) {
			status = http.StatusConflict
		}
		fail(w, status, err)
		return
	}
	reply(w, FailoverResponse{To: to})
}

func (s *server) applyConfig(w http.ResponseWriter, r *http.Request) {
	var req ConfigRequest
	body, ok := readBody(w, r, &req)
	if !ok {
		return
	}
	v, err := s.b.ApplyConfig(req.Doc, req.Source)
	if errors.Is(err, cluster.ErrNotLeader) {
		s.forward(w, r, body)
		return
	}
	switch {
	case errors.Is(err, ErrInvalid):
		fail(w, http.StatusUnprocessableEntity, err)
	case err != nil:
		fail(w, http.StatusInternalServerError, err)
	default:
		reply(w, ConfigResponse{Version: v})
	}
}

var errBadRequest = errors.New("bad request")

// joinVia runs on the joining node: it asks a member's peer API to add
// this node (the member forwards to its leader).
func (s *server) joinVia(w http.ResponseWriter, r *http.Request) {
	var req JoinViaRequest
	if _, ok := readBody(w, r, &req); !ok {
		return
	}
	name, addr, port := s.b.Self()
	peer := req.Peer
	if _, _, err := net.SplitHostPort(peer); err != nil {
		peer = net.JoinHostPort(peer, strconv.Itoa(port))
	}
	status, body, err := s.post(r.Context(), peer, "/v1/join", MemberRequest{Name: name, Address: addr}, false)
	if err != nil {
		fail(w, http.StatusBadGateway, fmt.Errorf("ask %s to add %s: %w", peer, name, err))
		return
	}
	relay(w, status, body)
}

// leaveSelf removes this node from the cluster, then stops the agent.
func (s *server) leaveSelf(w http.ResponseWriter, r *http.Request) {
	name, _, _ := s.b.Self()
	err := s.b.Leave(name)
	if errors.Is(err, cluster.ErrNotLeader) {
		leader := s.b.LeaderAPI()
		if leader == "" {
			fail(w, http.StatusServiceUnavailable, errors.New("no leader known; cannot leave cleanly"))
			return
		}
		var status int
		var body []byte
		status, body, err = s.post(r.Context(), leader, "/v1/leave", MemberRequest{Name: name}, true)
		if err == nil && status != http.StatusOK {
			relay(w, status, body)
			return
		}
	}
	if err != nil {
		fail(w, http.StatusInternalServerError, err)
		return
	}
	reply(w, MemberRequest{Name: name})
	go s.b.Stop()
}

// post sends a JSON request to a peer API.
func (s *server) post(ctx context.Context, hostport, path string, v any, forwarded bool) (int, []byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.scheme+"://"+hostport+path, bytesReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if forwarded {
		req.Header.Set(forwardedHeader, "1")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	return resp.StatusCode, body, err
}

func relay(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (s *server) member(w http.ResponseWriter, r *http.Request, op func(MemberRequest) error) {
	var req MemberRequest
	body, ok := readBody(w, r, &req)
	if !ok {
		return
	}
	err := op(req)
	switch {
	case errors.Is(err, cluster.ErrNotLeader):
		s.forward(w, r, body)
	case errors.Is(err, errBadRequest):
		fail(w, http.StatusBadRequest, err)
	case err != nil:
		fail(w, http.StatusInternalServerError, err)
	default:
		reply(w, req)
	}
}

func (s *server) getConfig(w http.ResponseWriter, r *http.Request) {
	var v uint64
	if q := r.URL.Query().Get("version"); q != "" {
		n, err := strconv.ParseUint(q, 10, 64)
		if err != nil {
			fail(w, http.StatusBadRequest, fmt.Errorf("version %q is not a number", q))
			return
		}
		v = n
	}
	rev, ok := s.b.Config(v)
	if !ok {
		if v == 0 {
			fail(w, http.StatusNotFound, errors.New("the cluster has no configuration yet"))
		} else {
			fail(w, http.StatusNotFound, fmt.Errorf("no configuration version %d", v))
		}
		return
	}
	reply(w, rev)
}

// forward sends the request once to the leader's peer API and relays the
// answer.
func (s *server) forward(w http.ResponseWriter, r *http.Request, body []byte) {
	if r.Header.Get(forwardedHeader) != "" {
		fail(w, http.StatusServiceUnavailable, errors.New("not the leader, and the request was already forwarded once; leadership is changing, retry"))
		return
	}
	leader := s.b.LeaderAPI()
	if leader == "" {
		fail(w, http.StatusServiceUnavailable, errors.New("no leader known; the cluster may have lost its quorum"))
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, s.scheme+"://"+leader+r.URL.RequestURI(), bytesReader(body))
	if err != nil {
		fail(w, http.StatusInternalServerError, err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(forwardedHeader, "1")
	resp, err := s.client.Do(req)
	if err != nil {
		fail(w, http.StatusBadGateway, fmt.Errorf("forward to leader %s: %w", leader, err))
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// maxBody bounds request bodies (configuration documents included).
const maxBody = 8 << 20

func readBody(w http.ResponseWriter, r *http.Request, v any) ([]byte, bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		fail(w, http.StatusBadRequest, fmt.Errorf("read request: %w", err))
		return nil, false
	}
	if len(body) > maxBody {
		fail(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request larger than %d bytes", maxBody))
		return nil, false
	}
	if len(body) > 0 {
		if err := json.Unmarshal(body, v); err != nil {
			fail(w, http.StatusBadRequest, fmt.Errorf("request is not valid JSON: %w", err))
			return nil, false
		}
	}
	return body, true
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// replyOrFail answers with what get returns, or 503 when the dataplane
// cannot tell.
func replyOrFail[T any](w http.ResponseWriter, get func() (T, error)) {
	v, err := get()
	if err != nil {
		fail(w, http.StatusServiceUnavailable, err)
		return
	}
	reply(w, v)
}

func fail(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Error: err.Error()})
}

// Serve serves h on l until ctx ends.
func Serve(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// RequireToken wraps h so that every request must carry
// "Authorization: Bearer <token>"; the comparison takes constant time.
func RequireToken(h http.Handler, token string) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			fail(w, http.StatusUnauthorized, errors.New("missing or wrong API token"))
			return
		}
		h.ServeHTTP(w, r)
	})
}
