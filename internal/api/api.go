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
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/lbha/lbha/cluster"
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

// Handler returns the HTTP handler of the API.
func Handler(b Backend, log *slog.Logger) http.Handler {
	s := &server{b: b, log: log, client: &http.Client{Timeout: 10 * time.Second}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { reply(w, b.Status()) })
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) { reply(w, b.Members()) })
	mux.HandleFunc("POST /v1/failover", s.failover)
	mux.HandleFunc("POST /v1/config", s.applyConfig)
	mux.HandleFunc("GET /v1/config", s.getConfig)
	mux.HandleFunc("GET /v1/config/history", func(w http.ResponseWriter, r *http.Request) { reply(w, b.ConfigHistory()) })
	return mux
}

type server struct {
	b      Backend
	log    *slog.Logger
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
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+leader+r.URL.RequestURI(), bytesReader(body))
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
