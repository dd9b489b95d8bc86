package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/declaw/declaw/internal/volume"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/limits"
	"github.com/declaw/declaw/internal/network"
	"github.com/declaw/declaw/internal/sandbox"
	"github.com/declaw/declaw/internal/sandboxrt/rttest"
	"github.com/declaw/declaw/internal/store/sqlite"
)

// The API tests run a real sandbox.Manager on fakes (runtime, network,
// templates, DNS), a real SQLite store and a fake envd on 127.0.0.1.

const testKey = "dk_test_0123456789"

// fakeNetwork hands out loopback slots (GuestIP 127.0.0.1, where the fake
// envd listens) and records the policies applied.
type fakeNetwork struct {
	mu       sync.Mutex
	next     int
	held     map[string]bool
	applied  []network.Policy
	releases int
}

func (n *fakeNetwork) Acquire(ctx context.Context) (*network.Slot, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next++
	name := fmt.Sprintf("fake-s%d", n.next)
	if n.held == nil {
		n.held = map[string]bool{}
	}
	n.held[name] = true
	return &network.Slot{Index: n.next, NetNS: name, NetNSPath: "/var/run/netns/" + name,
		HostIP: netip.MustParseAddr("127.0.0.2"), GuestIP: netip.MustParseAddr("127.0.0.1")}, nil
}

func (n *fakeNetwork) Apply(ctx context.Context, slot *network.Slot, p network.Policy) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.held[slot.NetNS] {
		return fmt.Errorf("fake network: apply to unknown slot %s", slot.NetNS)
	}
	n.applied = append(n.applied, p)
	return nil
}

func (n *fakeNetwork) Release(ctx context.Context, slot *network.Slot) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.held, slot.NetNS)
	n.releases++
	return nil
}

func (n *fakeNetwork) policies() []network.Policy {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.applied)
}

type fakeDNS struct{}

func (fakeDNS) Serve(netip.Addr, string, network.Parsed) error { return nil }
func (fakeDNS) Update(netip.Addr, network.Parsed) error        { return nil }
func (fakeDNS) Stop(netip.Addr) error                          { return nil }

type fakeTemplates struct{ dir string }

func (f fakeTemplates) RootFS(ctx context.Context, name string) (string, error) {
	if name == "base" || name == "python" {
		return filepath.Join(f.dir, name), nil
	}
	return "", fmt.Errorf("template %q: %w", name, sandbox.ErrTemplateUnknown)
}

// envdCall is one authenticated request the fake envd received.
type envdCall struct {
	Method, Path, RawQuery string
	Header                 http.Header
	BodyLen                int
}

// fakeEnvd serves envd's API on 127.0.0.1, accepting the tokens of the
// sandboxes the fake runtime holds.
type fakeEnvd struct {
	rt  *rttest.Fake
	srv *httptest.Server

	streamRelease chan struct{} // /commands/stream ends when this is closed

	mu    sync.Mutex
	calls []envdCall
}

func newFakeEnvd(t *testing.T, rt *rttest.Fake) *fakeEnvd {
	t.Helper()
	e := &fakeEnvd{rt: rt, streamRelease: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen for fake envd: %v", err)
	}
	e.srv = httptest.NewUnstartedServer(http.HandlerFunc(e.serve))
	e.srv.Listener.Close()
	e.srv.Listener = ln
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	return e
}

func (e *fakeEnvd) port() int { return e.srv.Listener.Addr().(*net.TCPAddr).Port }

func (e *fakeEnvd) validToken(tok string) bool {
	if tok == "" {
		return false
	}
	for _, id := range e.rt.IDs() {
		spec, _ := e.rt.Spec(id)
		if slices.Contains(spec.Env, envdapi.AccessTokenEnv+"="+tok) {
			return true
		}
	}
	return false
}

func (e *fakeEnvd) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/health" {
		w.WriteHeader(http.StatusOK)
		return
	}
	if !e.validToken(r.Header.Get(envdapi.AccessTokenHeader)) {
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(envdapi.Error{Message: "bad access token", Code: "unauthorized"})
		return
	}
	n, _ := io.Copy(io.Discard, r.Body)
	e.mu.Lock()
	if r.URL.Path != "/init" {
		e.calls = append(e.calls, envdCall{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: r.Header.Clone(), BodyLen: int(n)})
	}
	e.mu.Unlock()
	switch r.URL.Path {
	case "/init":
		w.WriteHeader(http.StatusNoContent)
	case "/commands":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(envdapi.CommandResult{Pid: 7, Stdout: "hi\n", ExitCode: 0})
	case "/commands/stream":
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fmt.Fprintf(w, "event: start\ndata: {\"type\":\"start\",\"pid\":7}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-e.streamRelease:
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Second):
		}
		fmt.Fprintf(w, "event: exit\ndata: {\"type\":\"exit\",\"exit_code\":0}\n\n")
	case "/snapshot":
		if r.Method == http.MethodGet {
			w.Write([]byte("fake snapshot archive"))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case "/files", "/files/raw":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Query().Get("path"), "bytes": n})
	default:
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(envdapi.Error{Message: "no such envd endpoint", Code: "not_found"})
	}
}

func (e *fakeEnvd) received() []envdCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.calls)
}

// harness is the API server over a Manager on fakes.
type harness struct {
	srv  *httptest.Server
	api  *Server
	m    *sandbox.Manager
	st   *sqlite.Store
	rt   *rttest.Fake
	net  *fakeNetwork
	envd *fakeEnvd
	vols *volume.Manager
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessWith(t, nil)
}

// limitsSetup configures the harness's resource policy: cfg, and, with
// hostMB > 0, admission control on a host of that size.
type limitsSetup struct {
	cfg               limits.Config
	hostMB, reserveMB int64
	templates         sandbox.Templates // nil: fakeTemplates
}

func newHarnessWith(t *testing.T, setup func(*limitsSetup)) *harness {
	t.Helper()
	var ls limitsSetup
	if setup != nil {
		setup(&ls)
	}
	lc, err := ls.cfg.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	var adm *limits.Admission
	if ls.hostMB > 0 {
		lc.ReserveMB = ls.reserveMB
		if adm, err = limits.NewAdmission(lc, ls.hostMB); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	st, err := sqlite.Open(filepath.Join(dir, "declaw.db"))
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.AddAPIKey(t.Context(), HashKey(testKey), "test"); err != nil {
		t.Fatalf("AddAPIKey: %v", err)
	}
	h := &harness{st: st, rt: &rttest.Fake{}, net: &fakeNetwork{}}
	h.envd = newFakeEnvd(t, h.rt)
	var tmpls sandbox.Templates = fakeTemplates{dir: dir}
	if ls.templates != nil {
		tmpls = ls.templates
	}
	h.m = sandbox.New(sandbox.Config{
		Store: st, Runtime: h.rt, Network: h.net, Templates: tmpls, DNS: fakeDNS{},
		EnvdPath: "/opt/declaw/envd", RunDir: filepath.Join(dir, "run"), StateDir: dir, EnvdReady: 5 * time.Second,
		EnvdPort: h.envd.port(), Logf: t.Logf, Limits: lc, Admission: adm,
	})
	volStore, err := volume.NewLocalStore(filepath.Join(dir, "volumes"))
	if err != nil {
		t.Fatal(err)
	}
	h.vols = volume.NewManager(volume.Config{Store: volStore, TeamQuotaBytes: 1 << 20})
	h.api = New(Config{Sandboxes: h.m, Store: st, Logf: t.Logf, Volumes: h.vols, Health: func() map[string]any { return map[string]any{"runtime": "fake"} }})
	h.srv = httptest.NewServer(h.api)
	t.Cleanup(func() {
		h.srv.Close()
		if err := h.m.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown at cleanup: %v", err)
		}
	})
	return h
}

// do sends a request with the test key (unless headers set one of the auth
// headers, or "-auth" is given) and returns the response and its body.
// body: nil (none), string/[]byte (raw), otherwise JSON-encoded.
func (h *harness) do(t *testing.T, method, path string, body any, headers ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encode body: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, h.srv.URL+path, rd)
	if err != nil {
		t.Fatalf("NewRequest(%s %s): %v", method, path, err)
	}
	auth := true
	for i := 0; i < len(headers); i++ {
		if headers[i] == "-auth" {
			auth = false
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
		if k := http.CanonicalHeaderKey(headers[i]); k == "Authorization" || k == "X-Api-Key" {
			auth = false
		}
		i++
	}
	if auth {
		req.Header.Set("X-API-Key", testKey)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, b
}

// decode unmarshals a JSON body or fails naming the call.
func decode[T any](t *testing.T, call string, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: body %q is not the expected JSON: %v", call, b, err)
	}
	return v
}

// wantError checks status and that the body is exactly {"message","code"} with code.
func wantError(t *testing.T, call string, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("%s: status = %d, want %d (body %s)", call, resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type = %q, want application/json", call, ct)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Errorf("%s: error body %q is not JSON: %v", call, body, err)
		return
	}
	msg, _ := m["message"].(string)
	if len(m) != 2 || msg == "" || m["code"] != code {
		t.Errorf("%s: error body = %s, want exactly {\"message\": <non-empty>, \"code\": %q}", call, body, code)
	}
}

// createResp is the part of the create answer the tests read.
type createResp struct {
	SandboxID       string            `json:"sandbox_id"`
	TemplateID      string            `json:"template_id"`
	State           string            `json:"state"`
	Timeout         int               `json:"timeout"`
	Metadata        map[string]string `json:"metadata"`
	Envs            map[string]string `json:"envs"`
	EndAt           *time.Time        `json:"end_at"`
	EnvdAccessToken string            `json:"envd_access_token"`
	SandboxDomain   string            `json:"sandbox_domain"`
	GuestIP         string            `json:"guest_ip"`
	EnvdPort        int               `json:"envd_port"`
}

func (h *harness) create(t *testing.T, body any) createResp {
	t.Helper()
	resp, b := h.do(t, "POST", "/sandboxes", body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /sandboxes %v: status %d, want 201 (body %s)", body, resp.StatusCode, b)
	}
	return decode[createResp](t, "POST /sandboxes", b)
}
