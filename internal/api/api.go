// Package api serves the public REST+SSE API (wire-compatible with Declaw's):
// authentication, request decoding, the one error mapping, and forwarding of
// the per-sandbox command and file calls to envd.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/porttoken"
	"github.com/declaw/declaw/internal/sandbox"
	"github.com/declaw/declaw/internal/store"
	"github.com/declaw/declaw/internal/template"
	"github.com/declaw/declaw/internal/template/build"
	"github.com/declaw/declaw/internal/tenancy"
	"github.com/declaw/declaw/internal/volume"
)

// MaxJSONBody is the largest JSON request body (413 above it).
const MaxJSONBody = envdapi.MaxJSONBody

// Config wires the API server.
type Config struct {
	Sandboxes *sandbox.Manager
	Store     store.Store
	// Templates and Builds serve /templates (nil: 501).
	Templates *template.Manager
	Builds    *build.Service
	// OpenAPI is the OpenAPI document served at /openapi.yaml.
	OpenAPI []byte
	// Health adds fields to GET /health (runtime, accel, ...).
	Health func() map[string]any
	// KeyRecheck bounds how long a key revoked behind this server's back
	// (another server on a shared database) keeps working here, open
	// streams included (default tenancy.DefaultRecheck).
	KeyRecheck time.Duration
	// Volumes serves /volumes (nil: 501).
	Volumes *volume.Manager
	// PortTokenSecret keys the port access tokens (ports.go); empty draws
	// a random one per process (tokens then die with the server, as its
	// sandboxes do).
	PortTokenSecret []byte
	Logf            func(format string, args ...any)
}

// Server is the API's http.Handler.
type Server struct {
	cfg        Config
	mux        *http.ServeMux
	keys       *tenancy.Keys
	proxy      *envdProxy
	ports      *httputil.ReverseProxy // ports.go
	portTokens *porttoken.Signer

	owners   ownerCache // sandbox id -> owning team
	revokeMu sync.Mutex // serialises revokes (the last admin key stays)
}

// New builds the API handler.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.keys = tenancy.NewKeys(tenancy.KeysConfig{Store: cfg.Store, Recheck: cfg.KeyRecheck, Logf: cfg.Logf})
	s.proxy = newEnvdProxy(s)
	s.ports = newPortProxy(s)
	var err error
	if s.portTokens, err = porttoken.New(cfg.PortTokenSecret); err != nil {
		panic(err) // the system's random source failed
	}
	s.routes()
	return s
}

func (s *Server) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /health", s.health)
	m.HandleFunc("GET /openapi.yaml", s.openapi)

	m.HandleFunc("POST /sandboxes", s.auth(s.createSandbox))
	m.HandleFunc("GET /sandboxes", s.auth(s.listSandboxes))
	m.HandleFunc("POST /sandboxes/kill-many", s.auth(s.killMany))
	m.HandleFunc("GET /sandboxes/{id}", s.auth(s.getSandbox))
	m.HandleFunc("DELETE /sandboxes/{id}", s.auth(s.killSandbox))
	m.HandleFunc("GET /sandboxes/{id}/status", s.auth(s.sandboxStatus))
	m.HandleFunc("PATCH /sandboxes/{id}/timeout", s.auth(s.setTimeout))
	m.HandleFunc("POST /sandboxes/{id}/timeout", s.auth(s.setTimeout))
	m.HandleFunc("GET /sandboxes/{id}/audit", s.auth(s.listAudit))
	m.HandleFunc("PUT /sandboxes/{id}/network", s.auth(s.updateNetwork))
	m.HandleFunc("POST /sandboxes/{id}/pause", s.auth(s.pauseSandbox))
	m.HandleFunc("POST /sandboxes/{id}/resume", s.auth(s.resumeSandbox))
	m.HandleFunc("GET /sandboxes/{id}/metrics", s.auth(s.sandboxMetrics))
	m.HandleFunc("POST /sandboxes/{id}/snapshot", s.auth(s.createSnapshot))
	m.HandleFunc("GET /sandboxes/{id}/snapshots", s.auth(s.listSnapshots))
	m.HandleFunc("DELETE /sandboxes/{id}/snapshots/{sid}", s.auth(s.deleteSnapshot))
	m.HandleFunc("POST /sandboxes/{id}/restore", s.auth(s.restoreSandbox))

	m.HandleFunc("GET /teams", s.auth(s.listTeams))
	m.HandleFunc("POST /teams", s.auth(s.createTeam))
	m.HandleFunc("GET /teams/{team_id}", s.auth(s.getTeam))
	m.HandleFunc("GET /teams/{team_id}/api-keys", s.auth(s.listTeamKeys))
	m.HandleFunc("POST /teams/{team_id}/api-keys", s.auth(s.createKey))
	m.HandleFunc("GET /api-keys", s.auth(s.listKeys))
	m.HandleFunc("DELETE /api-keys/{key_id}", s.auth(s.revokeKey))

	m.HandleFunc("POST /volumes", s.auth(s.createVolume))
	m.HandleFunc("GET /volumes", s.auth(s.listVolumes))
	m.HandleFunc("GET /volumes/{id}", s.auth(s.getVolume))
	m.HandleFunc("GET /volumes/{id}/download", s.auth(s.downloadVolume))
	m.HandleFunc("DELETE /volumes/{id}", s.auth(s.deleteVolume))

	m.HandleFunc("POST /templates/build", s.auth(s.buildTemplate))
	m.HandleFunc("GET /templates/builds/{build_id}", s.auth(s.getBuild))
	m.HandleFunc("GET /templates/builds/{build_id}/logs", s.auth(s.getBuild))
	m.HandleFunc("DELETE /templates/builds/{build_id}", s.auth(s.cancelBuild))
	m.HandleFunc("GET /templates", s.auth(s.listTemplates))
	m.HandleFunc("GET /templates/{id}", s.auth(s.getTemplate))
	m.HandleFunc("DELETE /templates/{id}", s.auth(s.deleteTemplate))

	// Everything envd serves is forwarded as is.
	for _, p := range []string{"commands", "files", "pty", "stdio"} {
		m.HandleFunc("/sandboxes/{id}/"+p, s.auth(s.proxy.ServeHTTP))
		m.HandleFunc("/sandboxes/{id}/"+p+"/{rest...}", s.auth(s.proxy.ServeHTTP))
	}
	// Ports inside the sandbox (ports.go): API key or a signed port token.
	m.HandleFunc("POST /sandboxes/{id}/port-tokens", s.auth(s.createPortToken))
	m.HandleFunc("/sandboxes/{id}/ports/{port}", s.portAuth(s.portProxy))
	m.HandleFunc("/sandboxes/{id}/ports/{port}/{path...}", s.portAuth(s.portProxy))
	m.HandleFunc("/", s.noRoute)
}

// noRoute answers a request no route took: 405 with an Allow header when
// the path exists for other methods, else 404; both in the API's error shape
// (the mux's own 405 is plain text and never reached behind this catch-all).
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pattern := s.mux.Handler(probe); pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		s.writeError(w, r, &Error{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed",
			Message: r.Method + " is not allowed on " + r.URL.Path + " (allowed: " + strings.Join(allow, ", ") + ")"})
		return
	}
	s.writeError(w, r, &Error{Status: http.StatusNotFound, Code: "not_found", Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.logf("api: panic serving %s %s: %v", r.Method, r.URL.Path, v)
			s.writeError(w, r, fmt.Errorf("panic: %v", v))
		}
	}()
	s.mux.ServeHTTP(w, r)
}

// HashKey returns the stored form of an API key.
func HashKey(key string) string { return tenancy.HashKey(key) }

// auth accepts "X-API-Key: K" or "Authorization: Bearer K". The handler
// runs with the key's caller in its context (tenancy.CallerFrom), under a
// context cancelled the moment the key is revoked, and only after the
// caller is found to own the resource its path names (ownership.go).
func (s *Server) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-API-Key")
		if key == "" {
			if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
				key = strings.TrimSpace(h[7:])
			}
		}
		if key == "" {
			s.writeError(w, r, &Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "missing API key (X-API-Key or Authorization: Bearer)"})
			return
		}
		caller, err := s.keys.Authenticate(r.Context(), key)
		if errors.Is(err, tenancy.ErrUnauthorized) {
			s.writeError(w, r, &Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "invalid API key"})
			return
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		ctx, release := s.keys.Hold(r.Context(), caller)
		defer release()
		r = r.WithContext(ctx)
		if err := s.checkOwner(r); err != nil {
			s.writeError(w, r, err)
			return
		}
		next(w, r)
	}
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{"status": "ok"}
	if s.cfg.Health != nil {
		for k, v := range s.cfg.Health() {
			out[k] = v
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) {
	if len(s.cfg.OpenAPI) == 0 {
		s.writeError(w, r, &Error{Status: http.StatusNotFound, Code: "not_found", Message: "no OpenAPI document"})
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(s.cfg.OpenAPI)
}

// decodeJSON reads a JSON body of at most MaxJSONBody bytes into v. An
// empty body leaves v untouched when allowEmpty.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxJSONBody))
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return nil
		}
		return badRequest("invalid_json", "request body is empty, a JSON object is expected")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return badRequest("invalid_json", "request body holds more than one JSON value")
	}
	return nil
}

func queryBool(r *http.Request, name string) bool {
	v, _ := strconv.ParseBool(r.URL.Query().Get(name))
	return v
}

func contextWith(r *http.Request, t proxyTarget) context.Context {
	return context.WithValue(r.Context(), targetKey{}, t)
}
