package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/network"
	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/sandboxrt/rttest"
	"github.com/declaw/declaw/internal/store"
	"github.com/declaw/declaw/internal/store/sqlite"
)

// This file holds the hand-written fakes the orchestrator tests run on:
// no root, no network namespaces, no runsc. envd is an httptest server on
// 127.0.0.1 that every fake slot points at (Config.EnvdPort).

// eventLog records the order in which fakes were called.
type eventLog struct {
	mu  sync.Mutex
	evs []string
}

func (l *eventLog) add(ev string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, ev)
}

func (l *eventLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs)
}

// fakeNetwork hands out slots on the loopback: GuestIP 127.0.0.1 (the fake
// envd listens there), HostIP 127.0.0.2.
type fakeNetwork struct {
	log *eventLog

	mu         sync.Mutex
	next       int
	live       map[string]bool // netns name -> held
	acquires   int
	releases   int
	applied    []network.Policy
	AcquireErr error
	ApplyErr   error
}

func (n *fakeNetwork) Acquire(ctx context.Context) (*network.Slot, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.AcquireErr != nil {
		return nil, n.AcquireErr
	}
	n.next++
	name := fmt.Sprintf("fake-s%d", n.next)
	if n.live == nil {
		n.live = map[string]bool{}
	}
	n.live[name] = true
	n.acquires++
	n.log.add("network.acquire")
	return &network.Slot{
		Index: n.next, NetNS: name, NetNSPath: "/var/run/netns/" + name,
		HostIf: "fh" + name, GuestIf: "eth0",
		HostIP: netip.MustParseAddr("127.0.0.2"), GuestIP: netip.MustParseAddr("127.0.0.1"),
		Prefix: netip.MustParsePrefix("127.0.0.0/30"),
	}, nil
}

func (n *fakeNetwork) Apply(ctx context.Context, slot *network.Slot, p network.Policy) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.live[slot.NetNS] {
		return fmt.Errorf("fake network: apply to %s: %w", slot.NetNS, network.ErrUnknownSlot)
	}
	if n.ApplyErr != nil {
		return n.ApplyErr
	}
	n.applied = append(n.applied, p)
	n.log.add("network.apply")
	return nil
}

func (n *fakeNetwork) Release(ctx context.Context, slot *network.Slot) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.live[slot.NetNS] {
		return fmt.Errorf("fake network: release %s twice: %w", slot.NetNS, network.ErrUnknownSlot)
	}
	delete(n.live, slot.NetNS)
	n.releases++
	n.log.add("network.release")
	return nil
}

// counts returns acquires, releases and how many slots are held.
func (n *fakeNetwork) counts() (acquires, releases, held int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.acquires, n.releases, len(n.live)
}

func (n *fakeNetwork) policies() []network.Policy {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.applied)
}

// fakeDNS records Serve/Update/Stop calls.
type fakeDNS struct {
	log *eventLog

	mu       sync.Mutex
	serving  map[netip.Addr]string // addr -> sandbox id
	serves   int
	stops    int
	updates  []network.Parsed
	ServeErr error
}

func (d *fakeDNS) Serve(addr netip.Addr, sandboxID string, p network.Parsed) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ServeErr != nil {
		return d.ServeErr
	}
	if d.serving == nil {
		d.serving = map[netip.Addr]string{}
	}
	d.serving[addr] = sandboxID
	d.serves++
	d.log.add("dns.serve")
	return nil
}

func (d *fakeDNS) Update(addr netip.Addr, p network.Parsed) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.updates = append(d.updates, p)
	return nil
}

func (d *fakeDNS) Stop(addr netip.Addr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.serving, addr)
	d.stops++
	d.log.add("dns.stop")
	return nil
}

func (d *fakeDNS) counts() (serves, stops int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.serves, d.stops
}

// fakeTemplates knows "base" and "python"; others wrap ErrTemplateUnknown.
type fakeTemplates struct {
	dir string
}

func (f *fakeTemplates) RootFS(ctx context.Context, name string) (string, error) {
	switch name {
	case "base", "python":
		return filepath.Join(f.dir, name), nil
	}
	return "", fmt.Errorf("template %q: %w", name, ErrTemplateUnknown)
}

// loggingRuntime is rttest.Fake that logs destroys and can hold them
// until a gate is closed.
type loggingRuntime struct {
	*rttest.Fake
	log     *eventLog
	gate    chan struct{}   // if non-nil, Destroy waits for it to be closed
	onStart func(id string) // if non-nil, called after each start
}

func (r *loggingRuntime) Start(ctx context.Context, spec sandboxrt.Spec) error {
	if err := r.Fake.Start(ctx, spec); err != nil {
		return err
	}
	r.log.add("runtime.start")
	if r.onStart != nil {
		r.onStart(spec.ID)
	}
	return nil
}

func (r *loggingRuntime) Destroy(ctx context.Context, id string) error {
	if r.gate != nil {
		<-r.gate
	}
	r.log.add("runtime.destroy")
	return r.Fake.Destroy(ctx, id)
}

// fakeEnvd is envd's HTTP API on 127.0.0.1: it accepts the tokens the
// manager handed to the runtime (Spec.Env ENVD_ACCESS_TOKEN=...).
type fakeEnvd struct {
	t   *testing.T
	rt  *rttest.Fake
	srv *httptest.Server

	mu         sync.Mutex
	unhealthy  bool
	initStatus int
	inits      []envdapi.InitRequest
	paths      []string // method and path of every authenticated call

	// A toy filesystem per sandbox id, emptied when its container starts
	// (as a fresh overlay over the template is): GET /snapshot answers it
	// as JSON, PUT /snapshot merges such JSON into it.
	files     map[string]map[string]string
	putStatus int           // if set, PUT /snapshot fails with it
	putGate   chan struct{} // if set, PUT /snapshot waits for it to be closed
}

// started empties sandbox id's files (its container was started).
func (e *fakeEnvd) started(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.files == nil {
		e.files = map[string]map[string]string{}
	}
	e.files[id] = map[string]string{}
}

// write sets a file of sandbox id, as a command in it would.
func (e *fakeEnvd) write(id, path, content string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.files[id][path] = content
}

// fs returns a copy of sandbox id's files.
func (e *fakeEnvd) fs(id string) map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.files[id])
}

func (e *fakeEnvd) callPaths() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.paths)
}

func newFakeEnvd(t *testing.T, rt *rttest.Fake) *fakeEnvd {
	t.Helper()
	e := &fakeEnvd{t: t, rt: rt}
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

// tokens returns the access tokens of the sandboxes the runtime holds.
func tokensOf(rt *rttest.Fake) map[string]string {
	out := map[string]string{}
	for _, id := range rt.IDs() {
		spec, _ := rt.Spec(id)
		for _, kv := range spec.Env {
			if tok, ok := strings.CutPrefix(kv, envdapi.AccessTokenEnv+"="); ok {
				out[tok] = id
			}
		}
	}
	return out
}

func (e *fakeEnvd) serve(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	unhealthy, initStatus := e.unhealthy, e.initStatus
	e.mu.Unlock()
	if r.URL.Path == "/health" {
		if unhealthy {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	tok := r.Header.Get(envdapi.AccessTokenHeader)
	id, ok := tokensOf(e.rt)[tok]
	if !ok || tok == "" {
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(envdapi.Error{Message: "bad access token", Code: "unauthorized"})
		return
	}
	e.mu.Lock()
	e.paths = append(e.paths, r.Method+" "+r.URL.Path)
	e.mu.Unlock()
	switch r.URL.Path {
	case "/init":
		var req envdapi.InitRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		e.mu.Lock()
		e.inits = append(e.inits, req)
		e.mu.Unlock()
		if initStatus != 0 {
			w.WriteHeader(initStatus)
			json.NewEncoder(w).Encode(envdapi.Error{Message: "init failed", Code: "internal"})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case "/snapshot":
		e.serveSnapshot(w, r, id)
	default:
		http.NotFound(w, r)
	}
}

func (e *fakeEnvd) serveSnapshot(w http.ResponseWriter, r *http.Request, id string) {
	switch r.Method {
	case http.MethodGet:
		e.mu.Lock()
		b, _ := json.Marshal(e.files[id])
		e.mu.Unlock()
		w.Write(b)
	case http.MethodPut:
		e.mu.Lock()
		status, gate := e.putStatus, e.putGate
		e.mu.Unlock()
		if gate != nil {
			<-gate
		}
		if status != 0 {
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(envdapi.Error{Message: "cannot extract", Code: "internal"})
			return
		}
		var in map[string]string
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		e.mu.Lock()
		maps.Copy(e.files[id], in)
		e.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (e *fakeEnvd) initCalls() []envdapi.InitRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.inits)
}

// harness is a Manager on fakes and a real SQLite store.
type harness struct {
	m      *Manager
	cfg    Config
	rt     *loggingRuntime
	net    *fakeNetwork
	dns    *fakeDNS
	envd   *fakeEnvd
	st     *sqlite.Store
	log    *eventLog
	runDir string
}

func newHarness(t *testing.T, edit ...func(*harness)) *harness {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(filepath.Join(dir, "declaw.db"))
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	log := &eventLog{}
	h := &harness{
		rt:     &loggingRuntime{Fake: &rttest.Fake{}, log: log},
		net:    &fakeNetwork{log: log},
		dns:    &fakeDNS{log: log},
		st:     st,
		log:    log,
		runDir: filepath.Join(dir, "run"),
	}
	h.envd = newFakeEnvd(t, h.rt.Fake)
	h.rt.onStart = h.envd.started
	h.cfg = Config{
		Store: st, Runtime: h.rt, Network: h.net, Templates: &fakeTemplates{dir: dir}, DNS: h.dns,
		EnvdPath: "/opt/declaw/envd", RunDir: h.runDir, StateDir: dir, EnvdReady: 5 * time.Second, EnvdPort: h.envd.port(),
		Logf: t.Logf,
	}
	for _, f := range edit {
		f(h)
	}
	h.m = New(h.cfg)
	t.Cleanup(func() {
		if err := h.m.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown at cleanup: %v", err)
		}
	})
	return h
}

func (h *harness) create(t *testing.T, req CreateRequest) (*Info, string) {
	t.Helper()
	info, tok, err := h.m.Create(t.Context(), req)
	if err != nil {
		t.Fatalf("Create(%+v): %v", req, err)
	}
	return info, tok
}

func (h *harness) record(t *testing.T, id string) *store.Sandbox {
	t.Helper()
	rec, err := h.st.GetSandbox(t.Context(), id)
	if err != nil {
		t.Fatalf("store.GetSandbox(%s): %v", id, err)
	}
	return rec
}

// assertFreed checks that nothing the manager acquired is still held.
func (h *harness) assertFreed(t *testing.T) {
	t.Helper()
	if ids := h.rt.IDs(); len(ids) != 0 {
		t.Errorf("runtime still holds %v, want none", ids)
	}
	starts, destroys := h.rt.Counts()
	if starts != destroys {
		t.Errorf("runtime starts = %d, destroys = %d, want equal", starts, destroys)
	}
	if acq, rel, held := h.net.counts(); acq != rel || held != 0 {
		t.Errorf("network acquires = %d, releases = %d, held = %d; want acquires == releases, none held", acq, rel, held)
	}
	if serves, stops := h.dns.counts(); serves != stops {
		t.Errorf("dns serves = %d, stops = %d, want equal", serves, stops)
	}
	ents, err := os.ReadDir(h.runDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read run dir: %v", err)
	}
	if len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("run dir holds %v, want nothing", names)
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func intp(n int) *int { return &n }
