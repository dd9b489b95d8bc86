// Package sandbox is the orchestrator: it owns the lifecycle of every
// sandbox on this node (create, timeout, kill), wiring a template, a network
// slot, a runtime container and envd together, and records the result in
// the store.
//
// Lifecycle states: running -> (paused <-> running) -> killed. A create
// either ends in running or leaves nothing behind (its cleanup stack runs).
package sandbox

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/limits"
	"github.com/declaw/declaw/internal/network"
	"github.com/declaw/declaw/internal/policy"
	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/store"
)

// States as shown by the API.
const (
	StateRunning = "running"
	StatePaused  = "paused"
	StateKilled  = "killed"
)

// DefaultTimeout is the sandbox timeout when a create names none.
const DefaultTimeout = 300 * time.Second

// MaxTimeout bounds user-set timeouts.
const MaxTimeout = 7 * 24 * time.Hour

// Templates resolves a template name to a root filesystem, building
// built-in templates on first use.
type Templates interface {
	// RootFS returns the template's root filesystem directory, building it
	// first if it is a known built-in that is not built yet. It returns an
	// error wrapping ErrTemplateUnknown for unknown names.
	RootFS(ctx context.Context, name string) (string, error)
}

// Network hands out network slots and enforces their policy.
type Network interface {
	Acquire(ctx context.Context) (*network.Slot, error)
	Apply(ctx context.Context, slot *network.Slot, p network.Policy) error
	Release(ctx context.Context, slot *network.Slot) error
}

// Resolver answers the DNS queries of sandboxes on their slot's host address.
type Resolver interface {
	Serve(addr netip.Addr, sandboxID string, p network.Parsed) error
	Update(addr netip.Addr, p network.Parsed) error
	Stop(addr netip.Addr) error
}

// Egress is the transparent proxy that enforces domain rules; it learns
// which sandbox a connection comes from by the sandbox's guest address.
type Egress interface {
	Register(guestIP netip.Addr, sandboxID string, p network.Parsed) error
	Update(guestIP netip.Addr, p network.Parsed) error
	Unregister(guestIP netip.Addr)
}

// Content attaches content inspection to a sandbox's intercepted traffic.
type Content interface {
	// Attach starts inspecting the sandbox's web traffic with sec and
	// returns the PEM certificate of the sandbox's own CA, which is
	// installed in the sandbox's trust store.
	Attach(guestIP netip.Addr, sandboxID string, sec *policy.Security) (caPEM []byte, err error)
	// Detach stops it.
	Detach(guestIP netip.Addr)
}

// Config wires the manager. Store, Runtime, Network and Templates are required.
type Config struct {
	Store   store.Store
	Runtime sandboxrt.Runtime
	// BuildRuntime runs template build sandboxes (StartBuild): its root
	// filesystem is written through to the host directory. Optional.
	BuildRuntime sandboxrt.Runtime
	Network      Network
	Templates    Templates
	DNS          Resolver // optional: without it sandboxes have no name resolution
	Egress       Egress   // optional: without it domain rules allow nothing (fail closed)
	Content      Content  // optional: content inspection (PII, injection, ...) of intercepted traffic
	// WarmPool is how many booted sandboxes to keep ready per template
	// (see pool.go); empty = none.
	WarmPool        map[string]int
	WarmPoolMaxIdle time.Duration // pooled sandboxes older than this are replaced (default 30 min)
	// AuditRetention is how long audit events are kept (default
	// DefaultAuditRetention); a sandbox's audit.retention_hours overrides it.
	AuditRetention time.Duration
	EnvdPath       string // host path of the envd binary, bind-mounted into every sandbox
	RunDir         string // per-sandbox generated files live under RunDir/<id>
	StateDir       string // snapshots live under StateDir/snapshots
	// Limits is the resource policy (defaults, maxima); the zero value means
	// the documented defaults (limits.Config.Normalize).
	Limits limits.Config
	// Admission, if set, keeps the books of host memory committed to
	// sandboxes; a boot it refuses fails with a *limits.CapacityError.
	Admission *limits.Admission
	EnvdReady time.Duration // how long to wait for envd to answer (default 30 s)
	// EnvdPort is the TCP port envd is reached on at the slot's guest
	// address (0 = envdapi.Port). Tests point it at a fake envd.
	EnvdPort int
	Logf     func(format string, args ...any)
}

// Manager runs sandboxes. It is safe for concurrent use.
type Manager struct {
	cfg    Config
	client *http.Client // to envd: keep-alive, shared with the API proxy

	stopSampling context.CancelFunc

	secretsMu  sync.Mutex
	secrets    map[string][][]byte // sandbox id -> masked env values (see secrets.go)
	auditOff   map[string]bool     // sandbox id -> its policy turned audit off
	secretsGen uint64              // bumped whenever the two maps above are set
	secretsSet map[string]uint64   // sandbox id -> secretsGen when its entries were set
	pool       *pool
	poolKick   chan struct{} // wakes the pool (made before it, so boots may use it)

	mu        sync.Mutex
	instances map[string]*instance
	bySlot    map[int]string           // network slot index -> id of the sandbox holding it
	restoring map[string]chan struct{} // sandbox id -> closed when its restore ends (restore.go)
	closed    bool
}

// instance is the in-memory state of one live sandbox.
type instance struct {
	id       string
	template string
	slot     *network.Slot
	token    string
	base     *url.URL
	undo     cleanup
	spec     sandboxrt.Spec      // what the runtime was started with; a restore starts it again
	init     envdapi.InitRequest // what envd's /init got; a restore sends it again
	gone     chan struct{}       // closed once the sandbox is killed and forgotten

	dying atomic.Bool // an async kill was accepted: no more requests reach envd

	lifecycle Lifecycle
	intercept bool                // the security policy needs content: web traffic goes to the proxy
	res       sandboxrt.Resources // its limits, fixed at boot

	mu      sync.Mutex // guards the fields below and serialises lifecycle ops
	state   string
	timer   *time.Timer
	timeout time.Duration
	endAt   time.Time
	left    time.Duration // while paused: what was left of the timeout
	metrics metricRing
	lastOOM time.Time // the last OOM kill the runtime reported
}

// Lifecycle says what happens at the timeout and to requests for a paused sandbox.
type Lifecycle struct {
	OnTimeout  string `json:"on_timeout,omitempty"` // "kill" (default) or "pause"
	AutoResume bool   `json:"auto_resume,omitempty"`
}

// CreateRequest is a validated-enough create call; Create checks the rest.
type CreateRequest struct {
	TeamID    string // owner of the sandbox; "" = store.DefaultTeam
	Template  string
	Timeout   *int // seconds; nil = default, 0 = never
	Metadata  map[string]string
	Envs      map[string]string
	Network   network.Policy
	Security  *policy.Security // nil = default policy
	Lifecycle json.RawMessage

	templateEnvs map[string]string // the template's own, under Envs
	Resources    limits.Request    // cpu_count, memory_mb, disk_mb asked for

	// Mounts are live bind mounts (volumes in mode mount or mount-ro)
	// added to the sandbox's runtime spec. Only runtimes for which
	// LiveMounts is true take them; such a sandbox never comes from the
	// warm pool.
	Mounts []sandboxrt.Mount
}

// LiveMounts reports whether the sandbox runtime takes CreateRequest.Mounts
// (gVisor binds host directories through its gofer; a microVM has no
// shared filesystem with the host).
func (m *Manager) LiveMounts() bool { return m.cfg.Runtime.Name() == "gvisor" }

// Info is what the API shows about a sandbox.
type Info struct {
	SandboxID  string            `json:"sandbox_id"`
	TemplateID string            `json:"template_id"`
	Alias      string            `json:"alias,omitempty"`
	State      string            `json:"state"`
	Metadata   map[string]string `json:"metadata"`
	Envs       map[string]string `json:"envs,omitempty"`
	Timeout    int               `json:"timeout"`
	StartedAt  time.Time         `json:"started_at"`
	EndAt      *time.Time        `json:"end_at"`
	KilledAt   *time.Time        `json:"killed_at,omitempty"`
	GuestIP    string            `json:"guest_ip,omitempty"`
	EnvdPort   int               `json:"envd_port,omitempty"`
	Runtime    string            `json:"runtime,omitempty"`
	Network    json.RawMessage   `json:"network,omitempty"`
	Security   json.RawMessage   `json:"security,omitempty"`
	// Resources are the sandbox's limits; OOMKills and LastOOMAt say how
	// often and when it reached its memory limit; EndReason why a killed
	// sandbox ended ("api", "timeout", "oom", "exited", ...).
	Resources *ResourceInfo `json:"resources,omitempty"`
	OOMKills  int           `json:"oom_kills"`
	LastOOMAt *time.Time    `json:"last_oom_at,omitempty"`
	EndReason string        `json:"end_reason,omitempty"`
}

// New returns a manager. Call Recover once before serving.
func New(cfg Config) *Manager {
	if cfg.AuditRetention == 0 {
		cfg.AuditRetention = DefaultAuditRetention
	}
	if cfg.EnvdReady == 0 {
		cfg.EnvdReady = 30 * time.Second
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if lc, err := cfg.Limits.Normalize(); err == nil {
		cfg.Limits = lc
	} else {
		// The server validates its flags; a bad config here is a caller bug.
		panic(fmt.Sprintf("sandbox.New: limits: %v", err))
	}
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	m := &Manager{
		cfg:        cfg,
		client:     &http.Client{Transport: tr},
		instances:  map[string]*instance{},
		bySlot:     map[int]string{},
		secretsSet: map[string]uint64{},
		poolKick:   make(chan struct{}, 1),
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.stopSampling = cancel
	go m.sampleLoop(ctx)
	go m.pruneLoop(ctx, 10*time.Minute)
	if n, ok := cfg.Runtime.(sandboxrt.Notifier); ok {
		n.Notify(m.runtimeEvent)
	}
	m.pool = newPool(m, cfg.WarmPool, cfg.WarmPoolMaxIdle)
	return m
}

// Transport is the HTTP transport used to reach envd; the API's proxy shares it.
func (m *Manager) Transport() http.RoundTripper { return m.client.Transport }

// Recover marks sandboxes that a previous server process left as live as
// killed: their containers and slots were cleaned when the runtime and
// network were set up.
func (m *Manager) Recover(ctx context.Context) error {
	for {
		sbs, _, err := m.cfg.Store.ListSandboxes(ctx, store.SandboxFilter{States: []string{StateRunning, StatePaused}, Limit: 500})
		if err != nil {
			return fmt.Errorf("recover sandboxes: %w", err)
		}
		if len(sbs) == 0 {
			return nil
		}
		for _, sb := range sbs {
			m.cfg.Logf("sandbox %s: left over from a previous run, marking killed", sb.ID)
			now := time.Now().UTC()
			if _, err := m.cfg.Store.UpdateSandbox(ctx, sb.ID, func(s *store.Sandbox) error {
				s.State, s.KilledAt = StateKilled, now
				s.Resources = updateResourceRecord(s.Resources, func(r *resourceRecord) { r.EndReason = "server" })
				return nil
			}); err != nil {
				return fmt.Errorf("recover sandbox %s: %w", sb.ID, err)
			}
			m.audit(ctx, sb.ID, "sandbox.killed", map[string]any{"reason": "server restart"})
		}
	}
}

func newID(prefix string, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return prefix + hex.EncodeToString(b)
}

// Create starts a sandbox and returns once envd in it answers.
func (m *Manager) Create(ctx context.Context, req CreateRequest) (*Info, string, error) {
	return m.create(ctx, req, nil)
}

// create starts a sandbox; with from, one that holds a snapshot's files
// (restore.go): they are in place before its policy, envs and CA, and
// before anyone can reach it.
func (m *Manager) create(ctx context.Context, req CreateRequest, from *fromSnapshot) (_ *Info, _ string, err error) {
	if req.Template == "" {
		req.Template = "base"
	}
	timeout := DefaultTimeout
	if req.Timeout != nil {
		if *req.Timeout < 0 {
			return nil, "", invalid("timeout", "must be >= 0 seconds, got %d", *req.Timeout)
		}
		if *req.Timeout > int(MaxTimeout/time.Second) {
			return nil, "", invalid("timeout", "must be at most %d seconds", int(MaxTimeout/time.Second))
		}
		timeout = time.Duration(*req.Timeout) * time.Second
	}
	for k := range req.Envs {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, "", invalid("envs", "bad variable name %q", k)
		}
	}
	for k, v := range req.Envs {
		if strings.ContainsRune(v, 0) {
			return nil, "", invalid("envs", "value of %q contains a NUL byte", k)
		}
	}
	sec := req.Security
	if sec == nil {
		sec = policy.Default()
	}
	// Content scanning needs the sandbox's web traffic at the proxy.
	req.Network.Intercept = sec.RequiresTLSInterception()
	netPolicy, err := network.ParsePolicy(req.Network)
	if err != nil {
		return nil, "", &InvalidError{Field: "network", Msg: err.Error()}
	}
	var lc Lifecycle
	if len(req.Lifecycle) > 0 && string(req.Lifecycle) != "null" {
		if err := json.Unmarshal(req.Lifecycle, &lc); err != nil {
			return nil, "", invalid("lifecycle", "%v", err)
		}
		switch lc.OnTimeout {
		case "", "kill", "pause":
		default:
			return nil, "", invalid("lifecycle.on_timeout", "%q is not one of kill, pause", lc.OnTimeout)
		}
	}
	rootfs, err := m.cfg.Templates.RootFS(ctx, req.Template)
	if err != nil {
		return nil, "", err
	}
	tc := TemplateConfig{Name: req.Template}
	if tcs, ok := m.cfg.Templates.(TemplateConfigs); ok {
		if tc, err = tcs.Config(ctx, req.Template); err != nil {
			return nil, "", err
		}
		req.templateEnvs = tc.Envs
	}
	res, err := m.cfg.Limits.Resolve(tc.resources(), req.Resources)
	if err != nil {
		return nil, "", err
	}

	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, "", fmt.Errorf("create sandbox: %w", ErrUnavailable)
	}
	start := time.Now()
	var (
		inst *instance
		warm bool
	)
	if len(req.Mounts) > 0 && !m.LiveMounts() {
		return nil, "", fmt.Errorf("create sandbox: live mounts on runtime %s: %w", m.cfg.Runtime.Name(), ErrNotSupported)
	}
	if from.sandboxID() == "" && len(req.Mounts) == 0 { // a restored sandbox boots under its own id
		inst, warm = m.pool.take(req.Template, res)
	}
	if !warm {
		if inst, err = m.bootOn(ctx, m.cfg.Runtime, from.sandboxID(), "sbx-", tc.Name, rootfs, res, req.Mounts...); err != nil {
			return nil, "", err
		}
	}
	defer func() {
		if err != nil {
			if cerr := inst.undo.run(ctx); cerr != nil {
				m.cfg.Logf("sandbox %s: cleanup after failed create: %v", inst.id, cerr)
			}
		}
	}()
	inst.timeout, inst.lifecycle, inst.intercept = timeout, lc, req.Network.Intercept
	if from != nil {
		if err := m.putSnapshot(ctx, inst, from.archive); err != nil {
			return nil, "", fmt.Errorf("restore snapshot %s into sandbox %s: %w", from.snap.ID, inst.id, err)
		}
	}
	rec, err := m.claim(ctx, inst, req, netPolicy, sec, from.prevRecord())
	if err != nil {
		return nil, "", err
	}
	if tc.StartCmd != "" && from == nil {
		if err := m.startCommand(ctx, inst, tc); err != nil {
			m.markKilled(ctx, inst.id, "start command not ready")
			return nil, "", fmt.Errorf("create sandbox %s: %w", inst.id, err)
		}
	}

	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		m.markKilled(ctx, inst.id, "server shutting down")
		return nil, "", fmt.Errorf("create sandbox %s: %w", inst.id, ErrUnavailable)
	}
	m.instances[inst.id] = inst
	m.mu.Unlock()
	inst.mu.Lock()
	m.armTimer(inst)
	inst.mu.Unlock()

	took := time.Since(start)
	if from != nil {
		m.cfg.Logf("sandbox %s: started from snapshot %s in %v (warm=%v, slot %s, %s)", inst.id, from.snap.ID, took.Round(time.Millisecond), warm, inst.slot.NetNS, inst.slot.GuestIP)
		if from.prev != nil {
			return infoFrom(rec), inst.token, nil // the caller audits the restore
		}
	} else {
		m.cfg.Logf("sandbox %s: created from template %s in %v (warm=%v, slot %s, %s)", inst.id, req.Template, took.Round(time.Millisecond), warm, inst.slot.NetNS, inst.slot.GuestIP)
	}
	ev := map[string]any{"template": req.Template, "timeout": rec.Timeout, "duration_ms": took.Milliseconds(), "warm": warm, "resources": resourceInfo(inst.res)}
	if from != nil {
		ev["snapshot_id"] = from.snap.ID
	}
	m.audit(ctx, inst.id, "sandbox.created", ev)
	return infoFrom(rec), inst.token, nil
}

// boot starts a sandbox that belongs to nobody yet: a network slot (which
// drops all traffic until a policy is applied), its run files, the runtime
// container and envd answering. No user code, env or policy is in it.
// id is the sandbox id ("" = a new one; a restore of a killed sandbox
// passes its id). Every resource is on inst.undo; on error they are
// already freed.
func (m *Manager) boot(ctx context.Context, id, template, rootfs string, res sandboxrt.Resources) (_ *instance, err error) {
	return m.bootOn(ctx, m.cfg.Runtime, id, "sbx-", template, rootfs, res)
}

// bootOn is boot on the runtime rt; new ids start with prefix.
// extra are bind mounts added after the standard ones.
func (m *Manager) bootOn(ctx context.Context, rt sandboxrt.Runtime, id, prefix, template, rootfs string, res sandboxrt.Resources, extra ...sandboxrt.Mount) (_ *instance, err error) {
	inst := &instance{id: cmp.Or(id, newID(prefix, 6)), template: template, token: newID("", 24), state: StateRunning, gone: make(chan struct{}), res: res}
	defer func() {
		if err != nil {
			if cerr := inst.undo.run(ctx); cerr != nil {
				m.cfg.Logf("sandbox %s: cleanup after failed boot: %v", inst.id, cerr)
			}
		}
	}()
	if a := m.cfg.Admission; a != nil {
		if err := a.Admit(inst.id, res.MemoryMB); err != nil {
			return nil, fmt.Errorf("create sandbox: %w", err)
		}
		inst.undo.add("admission", func(context.Context) error {
			a.Release(inst.id)
			select { // the warm pool may fill again
			case m.poolKick <- struct{}{}:
			default:
			}
			return nil
		})
	}
	slot, err := m.cfg.Network.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: acquire network slot: %w", inst.id, err)
	}
	inst.slot = slot
	inst.undo.add("network slot", func(ctx context.Context) error { return m.cfg.Network.Release(ctx, slot) })

	runDir := filepath.Join(m.cfg.RunDir, inst.id)
	if err := writeRunFiles(runDir, inst.id, slot); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", inst.id, err)
	}
	inst.undo.add("run dir", func(context.Context) error { return os.RemoveAll(runDir) })

	spec := sandboxrt.Spec{
		ID:        inst.id,
		RootFS:    rootfs,
		NetNSPath: slot.NetNSPath,
		Hostname:  inst.id,
		Init:      []string{"/usr/local/bin/envd"},
		Env:       []string{envdapi.AccessTokenEnv + "=" + inst.token, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Mounts: []sandboxrt.Mount{
			{Source: m.cfg.EnvdPath, Target: "/usr/local/bin/envd", ReadOnly: true},
			{Source: filepath.Join(runDir, "resolv.conf"), Target: "/etc/resolv.conf", ReadOnly: true},
			{Source: filepath.Join(runDir, "hosts"), Target: "/etc/hosts", ReadOnly: true},
			{Source: filepath.Join(runDir, "hostname"), Target: "/etc/hostname", ReadOnly: true},
		},
		Resources: res,
	}
	spec.Mounts = append(spec.Mounts, extra...)
	if err := rt.Start(ctx, spec); err != nil {
		return nil, fmt.Errorf("create sandbox %s: start %s runtime: %w", inst.id, rt.Name(), err)
	}
	inst.spec = spec
	inst.undo.add("runtime", func(ctx context.Context) error { return rt.Destroy(ctx, inst.id) })

	inst.base = &url.URL{Scheme: "http", Host: netip.AddrPortFrom(slot.GuestIP, uint16(cmp.Or(m.cfg.EnvdPort, envdapi.Port))).String()}
	if err := m.waitEnvd(ctx, inst); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", inst.id, err)
	}
	return inst, nil
}

// claim hands a booted sandbox to a user: its network policy, DNS, egress
// and content inspection, its environment and CA (through envd's /init,
// before any user command), and its record in the store: a new one, or
// for a restore of the killed sandbox prev, prev brought back to life.
func (m *Manager) claim(ctx context.Context, inst *instance, req CreateRequest, netPolicy network.Parsed, sec *policy.Security, prev *store.Sandbox) (*store.Sandbox, error) {
	slot := inst.slot
	init := envdapi.InitRequest{Envs: mergeEnvs(req.templateEnvs, req.Envs), Hostname: inst.id}
	if inst.intercept && m.cfg.Content != nil {
		// Content inspection hangs off the egress registration, and its CA
		// goes into /init: one after the other.
		if err := m.claimHost(ctx, inst, req, netPolicy); err != nil {
			return nil, err
		}
		caPEM, err := m.cfg.Content.Attach(slot.GuestIP, inst.id, sec)
		if err != nil {
			return nil, fmt.Errorf("create sandbox %s: content inspection: %w", inst.id, err)
		}
		inst.undo.add("content", func(context.Context) error { m.cfg.Content.Detach(slot.GuestIP); return nil })
		init.CACert = string(caPEM)
		init.Envs = maps.Clone(init.Envs)
		if init.Envs == nil {
			init.Envs = map[string]string{}
		}
		for k, v := range caEnvs {
			if _, set := init.Envs[k]; !set {
				init.Envs[k] = v
			}
		}
		if err := m.envdJSON(ctx, inst, http.MethodPost, "/init", init, nil); err != nil {
			return nil, fmt.Errorf("create sandbox %s: init envd: %w", inst.id, err)
		}
	} else {
		// envd's /init (envs, hostname) and the host-side steps are
		// independent: they run at the same time. The sandbox is handed out
		// only once both are done, so no user code runs before its policy
		// is in place.
		initDone := make(chan error, 1)
		go func() { initDone <- m.envdJSON(ctx, inst, http.MethodPost, "/init", init, nil) }()
		hostErr := m.claimHost(ctx, inst, req, netPolicy)
		if err := <-initDone; err != nil {
			return nil, fmt.Errorf("create sandbox %s: init envd: %w", inst.id, err)
		}
		if hostErr != nil {
			return nil, hostErr
		}
	}
	inst.init = init

	now := time.Now().UTC()
	rec := &store.Sandbox{
		ID: inst.id, TeamID: req.TeamID, TemplateID: req.Template, State: StateRunning,
		Metadata: req.Metadata, Envs: maskEnvs(sec, req.Envs), Timeout: int(inst.timeout / time.Second),
		StartedAt: now, GuestIP: slot.GuestIP.String(), Runtime: m.cfg.Runtime.Name(), Lifecycle: req.Lifecycle,
	}
	rec.Resources, _ = json.Marshal(resourceRecord{ResourceInfo: *resourceInfo(inst.res)})
	if inst.timeout > 0 {
		inst.endAt = now.Add(inst.timeout)
		rec.EndAt = inst.endAt
	}
	var err error
	if rec.Security, err = json.Marshal(sec); err != nil {
		return nil, fmt.Errorf("create sandbox %s: encode policy: %w", inst.id, err)
	}
	if rec.Network, err = json.Marshal(req.Network); err != nil {
		return nil, fmt.Errorf("create sandbox %s: encode network policy: %w", inst.id, err)
	}
	if prev != nil {
		if rec, err = m.revive(ctx, rec); err != nil {
			return nil, err
		}
	} else if err := m.cfg.Store.CreateSandbox(ctx, rec); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", inst.id, err)
	}
	m.mu.Lock()
	m.bySlot[slot.Index] = inst.id
	m.mu.Unlock()
	inst.undo.add("slot owner", func(context.Context) error {
		m.mu.Lock()
		delete(m.bySlot, slot.Index)
		m.mu.Unlock()
		return nil
	})
	m.rememberSecrets(inst.id, secretValues(sec, req.Envs))
	if !sec.Audit.Enabled {
		m.setAuditOff(inst.id)
	}
	inst.undo.add("secrets", func(context.Context) error { m.forgetSecrets(inst.id); return nil })
	return rec, nil
}

// claimHost applies the sandbox's network policy on the host side: the
// firewall, the egress proxy and its DNS server. Each step it took is on
// inst.undo.
func (m *Manager) claimHost(ctx context.Context, inst *instance, req CreateRequest, netPolicy network.Parsed) error {
	slot := inst.slot
	if err := m.cfg.Network.Apply(ctx, slot, req.Network); err != nil {
		return fmt.Errorf("create sandbox %s: apply network policy: %w", inst.id, err)
	}
	if m.cfg.Egress != nil {
		if err := m.cfg.Egress.Register(slot.GuestIP, inst.id, netPolicy); err != nil {
			return fmt.Errorf("create sandbox %s: register with the egress proxy: %w", inst.id, err)
		}
		inst.undo.add("egress", func(context.Context) error { m.cfg.Egress.Unregister(slot.GuestIP); return nil })
	}
	if m.cfg.DNS != nil {
		if err := m.cfg.DNS.Serve(slot.HostIP, inst.id, netPolicy); err != nil {
			return fmt.Errorf("create sandbox %s: %w", inst.id, err)
		}
		inst.undo.add("dns", func(context.Context) error { return m.cfg.DNS.Stop(slot.HostIP) })
	}
	return nil
}

// caEnvs point the usual TLS clients at the system bundle that holds the
// sandbox CA (OpenSSL and Python's ssl, requests, Node). curl and git use
// the system bundle already.
var caEnvs = map[string]string{
	"SSL_CERT_FILE":       envdapi.SystemCABundle,
	"REQUESTS_CA_BUNDLE":  envdapi.SystemCABundle,
	"NODE_EXTRA_CA_CERTS": envdapi.CACertPath,
}

// writeRunFiles writes the files bind-mounted into the sandbox.
func writeRunFiles(dir, id string, slot *network.Slot) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create run dir: %w", err)
	}
	files := map[string]string{
		"resolv.conf": fmt.Sprintf("nameserver %s\noptions timeout:2 attempts:2\n", slot.HostIP),
		"hosts":       fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", slot.GuestIP, id),
		"hostname":    id + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// maskEnvs returns envs with the values of masked names replaced.
func maskEnvs(sec *policy.Security, envs map[string]string) map[string]string {
	if len(envs) == 0 {
		return nil
	}
	out := make(map[string]string, len(envs))
	for k, v := range envs {
		if sec.MaskEnv(k) {
			v = "***"
		}
		out[k] = v
	}
	return out
}

// armTimer (re)schedules the timeout kill. Caller holds inst.mu.
func (m *Manager) armTimer(inst *instance) {
	if inst.timer != nil {
		inst.timer.Stop()
		inst.timer = nil
	}
	if inst.endAt.IsZero() || inst.state == StatePaused {
		return
	}
	id := inst.id
	inst.timer = time.AfterFunc(time.Until(inst.endAt), func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if inst.lifecycle.OnTimeout == "pause" {
			m.cfg.Logf("sandbox %s: timeout reached, pausing (on_timeout: pause)", id)
			if err := m.Pause(ctx, id); err == nil {
				return
			} else {
				m.cfg.Logf("sandbox %s: pause at timeout: %v; killing instead", id, err)
			}
		}
		m.cfg.Logf("sandbox %s: timeout reached, killing", id)
		if _, err := m.kill(ctx, id, "timeout"); err != nil && !errors.Is(err, ErrNotFound) {
			m.cfg.Logf("sandbox %s: kill at timeout: %v", id, err)
		}
	})
}

func (m *Manager) lookup(id string) *instance {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.instances[id]
}

// Get returns the sandbox's info, also for killed sandboxes.
func (m *Manager) Get(ctx context.Context, id string) (*Info, error) {
	rec, err := m.cfg.Store.GetSandbox(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("sandbox %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return infoFrom(rec), nil
}

// ListFilter selects sandboxes.
type ListFilter struct {
	TeamID   string // "" = every team
	States   []string
	Metadata map[string]string
	Limit    int
	Next     string
}

// List returns sandboxes; without a state filter, killed ones are left out.
func (m *Manager) List(ctx context.Context, f ListFilter) ([]*Info, string, error) {
	states := f.States
	if len(states) == 0 {
		states = []string{StateRunning, StatePaused}
	}
	recs, next, err := m.cfg.Store.ListSandboxes(ctx, store.SandboxFilter{TeamID: f.TeamID, States: states, Metadata: f.Metadata, Limit: f.Limit, After: f.Next})
	if err != nil {
		return nil, "", err
	}
	out := make([]*Info, 0, len(recs))
	for _, r := range recs {
		out = append(out, infoFrom(r))
	}
	return out, next, nil
}

// Kill kills a sandbox. It reports false if it was already killed.
func (m *Manager) Kill(ctx context.Context, id string) (bool, error) {
	return m.kill(ctx, id, "api")
}

// KillAsync marks the sandbox killed at once (it stops answering and shows
// as killed) and frees its resources in the background.
func (m *Manager) KillAsync(ctx context.Context, id string) error {
	inst := m.lookup(id)
	if inst == nil {
		_, err := m.Get(ctx, id)
		return err
	}
	if inst.dying.Swap(true) {
		return nil
	}
	m.markKilled(ctx, id, "api (async)")
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if _, err := m.kill(ctx, id, ""); err != nil {
			m.cfg.Logf("sandbox %s: async kill: %v", id, err)
		}
	}()
	return nil
}

func (m *Manager) kill(ctx context.Context, id, reason string) (bool, error) {
	inst := m.lookup(id)
	if inst == nil {
		if _, err := m.cfg.Store.GetSandbox(ctx, id); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return false, fmt.Errorf("sandbox %s: %w", id, ErrNotFound)
			}
			return false, err
		}
		return false, nil
	}
	if reason != "" && inst.dying.Load() {
		return false, nil // an async kill owns it
	}
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return m.killLocked(ctx, inst, reason)
}

// killLocked kills inst; the caller holds inst.mu.
func (m *Manager) killLocked(ctx context.Context, inst *instance, reason string) (bool, error) {
	id := inst.id
	if inst.state == StateKilled {
		return false, nil
	}
	inst.state = StateKilled
	if inst.timer != nil {
		inst.timer.Stop()
	}
	err := inst.undo.run(ctx)
	m.mu.Lock()
	if m.instances[id] == inst {
		delete(m.instances, id)
	}
	m.mu.Unlock()
	if inst.gone != nil {
		close(inst.gone)
	}
	if reason != "" {
		m.markKilled(ctx, id, reason)
	}
	if err != nil {
		m.cfg.Logf("sandbox %s: freeing resources: %v", id, err)
		return true, fmt.Errorf("kill sandbox %s: %w", id, err)
	}
	m.cfg.Logf("sandbox %s: killed (%s)", id, cmp.Or(reason, "async"))
	return true, nil
}

func (m *Manager) markKilled(ctx context.Context, id, reason string) {
	ctx = context.WithoutCancel(ctx)
	now := time.Now().UTC()
	if _, err := m.cfg.Store.UpdateSandbox(ctx, id, func(s *store.Sandbox) error {
		s.State, s.KilledAt = StateKilled, now
		s.Resources = updateResourceRecord(s.Resources, func(r *resourceRecord) { r.EndReason = endReason(reason) })
		return nil
	}); err != nil && !errors.Is(err, store.ErrNotFound) {
		m.cfg.Logf("sandbox %s: record kill: %v", id, err)
	}
	m.audit(ctx, id, "sandbox.killed", map[string]any{"reason": reason})
}

// SetTimeout makes the sandbox expire timeout after now (0 = never).
func (m *Manager) SetTimeout(ctx context.Context, id string, timeout int) error {
	if timeout < 0 {
		return invalid("timeout", "must be >= 0 seconds, got %d", timeout)
	}
	if timeout > int(MaxTimeout/time.Second) {
		return invalid("timeout", "must be at most %d seconds", int(MaxTimeout/time.Second))
	}
	inst, err := m.live(ctx, id, "set the timeout of")
	if err != nil {
		return err
	}
	if inst.dying.Load() {
		return fmt.Errorf("sandbox %s: %w", id, ErrKilled)
	}
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.state == StateKilled {
		return fmt.Errorf("sandbox %s: %w", id, ErrKilled)
	}
	inst.timeout = time.Duration(timeout) * time.Second
	inst.endAt = time.Time{}
	if timeout > 0 {
		inst.endAt = time.Now().UTC().Add(inst.timeout)
	}
	m.armTimer(inst)
	endAt := inst.endAt
	_, err = m.cfg.Store.UpdateSandbox(ctx, id, func(s *store.Sandbox) error {
		s.Timeout, s.EndAt = timeout, endAt
		return nil
	})
	return err
}

// UpdateNetwork replaces a live sandbox's network policy atomically;
// established connections that the new policy denies are cut.
func (m *Manager) UpdateNetwork(ctx context.Context, id string, p network.Policy) (*Info, error) {
	inst, err := m.live(ctx, id, "update the network of")
	if err != nil {
		return nil, err
	}
	if inst.dying.Load() {
		return nil, fmt.Errorf("sandbox %s: %w", id, ErrKilled)
	}
	p.Intercept = inst.intercept
	parsed, err := network.ParsePolicy(p)
	if err != nil {
		return nil, &InvalidError{Field: "network", Msg: err.Error()}
	}
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.state == StateKilled || inst.dying.Load() {
		return nil, fmt.Errorf("sandbox %s: %w", id, ErrKilled)
	}
	if err := m.cfg.Network.Apply(ctx, inst.slot, p); err != nil {
		return nil, fmt.Errorf("update network of sandbox %s: %w", id, err)
	}
	if m.cfg.Egress != nil {
		if err := m.cfg.Egress.Update(inst.slot.GuestIP, parsed); err != nil {
			return nil, fmt.Errorf("update egress policy of sandbox %s: %w", id, err)
		}
	}
	if m.cfg.DNS != nil {
		if err := m.cfg.DNS.Update(inst.slot.HostIP, parsed); err != nil {
			return nil, fmt.Errorf("update dns policy of sandbox %s: %w", id, err)
		}
	}
	raw, _ := json.Marshal(p)
	rec, err := m.cfg.Store.UpdateSandbox(ctx, id, func(s *store.Sandbox) error {
		s.Network = raw
		return nil
	})
	if err != nil {
		return nil, err
	}
	m.audit(ctx, id, "network.updated", p)
	return infoFrom(rec), nil
}

// live returns the instance of a running or paused sandbox, or the right error.
func (m *Manager) live(ctx context.Context, id, op string) (*instance, error) {
	if inst := m.lookup(id); inst != nil {
		return inst, nil
	}
	rec, err := m.cfg.Store.GetSandbox(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("sandbox %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if rec.State == StateKilled {
		return nil, fmt.Errorf("cannot %s sandbox %s: %w", op, id, ErrKilled)
	}
	return nil, fmt.Errorf("sandbox %s: %w", id, ErrUnavailable)
}

// Target is where requests for a sandbox's envd go.
type Target struct {
	BaseURL *url.URL
	Token   string
}

// Envd returns the envd endpoint of a running sandbox: ErrPaused while
// paused, ErrKilled once killed, ErrNotFound for unknown ids.
func (m *Manager) Envd(ctx context.Context, id string) (Target, error) {
	inst, err := m.live(ctx, id, "reach")
	if err != nil {
		return Target{}, err
	}
	if inst.dying.Load() { // being killed: answer now, do not wait for the teardown
		return Target{}, fmt.Errorf("sandbox %s: %w", id, ErrKilled)
	}
	inst.mu.Lock()
	state := inst.state
	inst.mu.Unlock()
	if inst.dying.Load() {
		state = StateKilled
	}
	if state == StatePaused && inst.lifecycle.AutoResume {
		if err := m.Resume(ctx, id); err != nil {
			return Target{}, err
		}
		state = StateRunning
	}
	switch state {
	case StatePaused:
		return Target{}, fmt.Errorf("sandbox %s: %w", id, ErrPaused)
	case StateKilled:
		return Target{}, fmt.Errorf("sandbox %s: %w", id, ErrKilled)
	}
	return Target{BaseURL: inst.base, Token: inst.token}, nil
}

// BySlot returns the id of the sandbox holding network slot index ("" if
// none: a free or warm-pool slot).
func (m *Manager) BySlot(index int) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bySlot[index]
}

// IsRunning reports whether the sandbox is running.
func (m *Manager) IsRunning(ctx context.Context, id string) (bool, error) {
	info, err := m.Get(ctx, id)
	if err != nil {
		return false, err
	}
	return info.State == StateRunning, nil
}

// Shutdown kills every sandbox and returns once their resources are freed
// (or ctx ends), those of async kills under way included; new creates fail
// afterwards.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.stopSampling()
	poolErr := m.pool.close(ctx)
	m.mu.Lock()
	m.closed = true
	ids := make([]string, 0, len(m.instances))
	for id := range m.instances {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	sem := make(chan struct{}, 8)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			inst := m.lookup(id)
			if inst == nil {
				return
			}
			_, err := m.kill(ctx, id, "server shutdown")
			if err == nil {
				// An async kill may own it (kill returned at once): its
				// teardown must end before the runtime and network are
				// closed under it, or its run dir and more are left.
				select {
				case <-inst.gone:
				case <-ctx.Done():
					err = fmt.Errorf("shutdown: sandbox %s is still being killed: %w", id, ctx.Err())
				}
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(append(errs, poolErr)...)
}

// Audit appends an event to a sandbox's audit trail (best effort: failures are logged).
func (m *Manager) Audit(ctx context.Context, id, typ string, data any) { m.audit(ctx, id, typ, data) }

func (m *Manager) audit(ctx context.Context, id, typ string, data any) {
	if m.auditDropped(id, typ) {
		return
	}
	var raw json.RawMessage
	if data != nil {
		b, err := json.Marshal(data)
		if err == nil {
			raw = b
		}
	}
	if err := m.cfg.Store.AppendAudit(context.WithoutCancel(ctx), store.AuditEvent{SandboxID: id, Time: time.Now().UTC(), Type: typ, Data: raw}); err != nil {
		m.cfg.Logf("sandbox %s: audit %s: %v", id, typ, err)
	}
}

func infoFrom(r *store.Sandbox) *Info {
	info := &Info{
		SandboxID: r.ID, TemplateID: r.TemplateID, Alias: r.TemplateID, State: r.State, Metadata: r.Metadata,
		Envs: r.Envs, Timeout: r.Timeout, StartedAt: r.StartedAt, GuestIP: r.GuestIP, EnvdPort: envdapi.Port,
		Runtime: r.Runtime, Network: r.Network,
	}
	if info.Metadata == nil {
		info.Metadata = map[string]string{}
	}
	if !r.EndAt.IsZero() {
		t := r.EndAt
		info.EndAt = &t
	}
	if !r.KilledAt.IsZero() {
		t := r.KilledAt
		info.KilledAt = &t
	}
	if len(r.Resources) > 0 {
		var rr resourceRecord
		if json.Unmarshal(r.Resources, &rr) == nil {
			if ri := rr.ResourceInfo; ri.MemoryMB > 0 { // absent for sandboxes made before limits
				info.Resources = &ri
			}
			info.OOMKills, info.LastOOMAt, info.EndReason = rr.OOMKills, rr.LastOOMAt, rr.EndReason
		}
	}
	return info
}
