// Package server wires the declaw server together: config -> store,
// templates, network, runtime, orchestrator, API. It is the only package
// that imports all of them; only the CLI imports it.
package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/declaw/declaw/internal/api"
	"github.com/declaw/declaw/internal/egress"
	"github.com/declaw/declaw/internal/egress/ca"
	"github.com/declaw/declaw/internal/limits"
	"github.com/declaw/declaw/internal/network"
	"github.com/declaw/declaw/internal/network/dns"
	"github.com/declaw/declaw/internal/policy"
	"github.com/declaw/declaw/internal/sandbox"
	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/sandboxrt/gvisor"
	"github.com/declaw/declaw/internal/sandboxrt/microvm"
	"github.com/declaw/declaw/internal/store"
	"github.com/declaw/declaw/internal/template"
	"github.com/declaw/declaw/internal/template/build"
	"github.com/declaw/declaw/internal/volume"
	"github.com/declaw/declaw/openapi"
)

// Config is the server's configuration (flags and env are read by the CLI).
type Config struct {
	Listen      string         // default 127.0.0.1:8080
	StateDir    string         // default /var/lib/declaw
	Database    string         // store: "" = SQLite STATE/declaw.db, "sqlite:PATH" or a path, or a postgres:// URL
	APIKey      string         // added (hashed) to the store at start; may be empty if keys exist
	SandboxCIDR string         // default 10.200.0.0/16
	NetPrefix   string         // names of netns/veth/table; default "declaw"
	EnvdPath    string         // envd binary; default: "envd" beside the declaw binary
	Runtime     string         // "gvisor" (default) or "microvm"
	Accel       string         // microvm: auto (default), kvm or tcg
	Runsc       string         // runsc binary
	Platform    string         // runsc platform
	PoolSize    int            // network slots kept ready
	WarmPool    map[string]int // booted sandboxes kept ready per template
	// WarmPoolMaxIdle is how long a pooled sandbox may wait for a create
	// before it is replaced by a fresh one (default 30 minutes).
	WarmPoolMaxIdle time.Duration
	DNSUpstream     string // host:port of the resolver sandboxes' queries go to; default: the host's first nameserver
	// UpstreamCAFile holds extra roots (PEM) the egress proxy trusts for
	// upstream TLS (--upstream-ca), beside the system roots.
	UpstreamCAFile string
	// AuditRetention is how long audit events are kept (default 7 days);
	// a sandbox's audit.retention_hours overrides it for its events.
	AuditRetention time.Duration
	// InsecureRegistries are registry hosts template builds pull from over plain HTTP.
	InsecureRegistries []string
	// Limits are the sandboxes' resource defaults and maxima and the host
	// memory admission policy; zero fields mean the documented defaults.
	Limits limits.Config
	Logf   func(format string, args ...any)
}

// Server is a running declaw server.
type Server struct {
	cfg       Config
	httpSrv   *http.Server
	ln        net.Listener
	manager   *sandbox.Manager
	network   *network.Manager
	dns       *dns.Server
	egress    *egress.Proxy
	flows     *flowAuditor
	runtime   sandboxrt.Runtime
	store     store.Store
	templates *template.Manager
	builds    *build.Service
	buildRT   sandboxrt.Runtime
	owner     *owner
}

// Start sets everything up (cleaning leftovers of a crashed run) and starts serving.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	if cfg.StateDir == "" {
		cfg.StateDir = "/var/lib/declaw"
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.Runtime == "" {
		cfg.Runtime = "gvisor"
	}
	if cfg.EnvdPath == "" {
		cfg.EnvdPath, err = DefaultEnvdPath()
		if err != nil {
			return nil, err
		}
	}
	// Runtimes bind-mount it: a relative path would be resolved against
	// whatever directory runsc or QEMU happens to run in.
	if cfg.EnvdPath, err = filepath.Abs(cfg.EnvdPath); err != nil {
		return nil, fmt.Errorf("envd binary: %w", err)
	}
	if st, err := os.Stat(cfg.EnvdPath); err != nil || st.IsDir() {
		return nil, fmt.Errorf("envd binary %s: not found (build it with `make` or pass --envd)", cfg.EnvdPath)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	if cfg.Limits.OverheadMB == 0 {
		cfg.Limits.OverheadMB = runtimeOverheadMB[cfg.Runtime]
	}
	if cfg.Limits, err = cfg.Limits.Normalize(); err != nil {
		return nil, fmt.Errorf("resource limits: %w", err)
	}
	admission, err := limits.NewAdmission(cfg.Limits, 0)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg}
	defer func() {
		if err != nil {
			s.closeParts(context.WithoutCancel(ctx))
		}
	}()
	if s.owner, err = claimOwner(cfg.StateDir, cmp.Or(cfg.NetPrefix, network.DefaultPrefix)); err != nil {
		return nil, err
	}

	if s.store, err = openStore(ctx, cfg.Database, cfg.StateDir, cfg.Logf); err != nil {
		return nil, err
	}
	if err := s.setupKeys(ctx); err != nil {
		return nil, err
	}
	if s.templates, err = template.New(template.Config{StateDir: cfg.StateDir, EnvdPath: cfg.EnvdPath, Logf: cfg.Logf}); err != nil {
		return nil, err
	}

	switch cfg.Runtime {
	case "gvisor":
		d, err := gvisor.New(gvisor.Config{
			Runsc: cfg.Runsc, Platform: cfg.Platform, StateDir: filepath.Join(cfg.StateDir, "gvisor"), Logf: cfg.Logf,
		})
		if err != nil {
			return nil, fmt.Errorf("gvisor runtime: %w", err)
		}
		s.runtime = d
	case "microvm":
		d, err := microvm.New(microvm.Config{StateDir: filepath.Join(cfg.StateDir, "microvm"), Accel: cfg.Accel, Logf: cfg.Logf})
		if err != nil {
			return nil, fmt.Errorf("microvm runtime: %w", err)
		}
		cfg.Logf("microvm runtime: accel %s (%s), kernel %s", d.Accel(), d.AccelReason(), d.Kernel())
		s.runtime = d
	default:
		return nil, fmt.Errorf("unknown runtime %q (available: gvisor, microvm)", cfg.Runtime)
	}
	if err := s.runtime.Cleanup(ctx); err != nil {
		cfg.Logf("runtime: cleaning leftovers: %v", err)
	}
	if s.buildRT, err = newBuildRuntime(cfg); err != nil {
		cfg.Logf("template builds are off: %v", err)
		s.buildRT = nil
	} else if err := s.buildRT.Cleanup(ctx); err != nil {
		cfg.Logf("build runtime: cleaning leftovers: %v", err)
	}

	if cfg.DNSUpstream == "" {
		if cfg.DNSUpstream, err = dns.UpstreamFromResolvConf("/etc/resolv.conf"); err != nil {
			cfg.Logf("dns: no upstream resolver (%v); sandboxes cannot resolve names until --dns-upstream is set", err)
		}
	}
	var audit func(id, typ string, data any)
	s.dns = dns.New(dns.Config{Upstream: cfg.DNSUpstream, Logf: cfg.Logf, OnQuery: func(q dns.Query) {
		typ := "dns.query"
		if !q.Allowed {
			typ = "dns.blocked"
		}
		audit(q.SandboxID, typ, map[string]any{"name": q.Name, "type": q.Type, "rule": q.Rule, "rcode": q.Rcode})
	}})

	ncfg := network.Config{Prefix: cfg.NetPrefix, PoolSize: cfg.PoolSize, DNSPort: 53, Logf: cfg.Logf}
	if cfg.SandboxCIDR != "" {
		if ncfg.CIDR, err = netip.ParsePrefix(cfg.SandboxCIDR); err != nil {
			return nil, fmt.Errorf("--sandbox-cidr %q: %w", cfg.SandboxCIDR, err)
		}
	}
	if s.egress, err = egress.New(egress.Config{
		Listen: "0.0.0.0:0", DNSUpstream: cfg.DNSUpstream, SandboxCIDR: cmp.Or(ncfg.CIDR, netip.MustParsePrefix(network.DefaultCIDR)), Logf: cfg.Logf,
		Events: func(ev egress.Event) {
			typ := "egress.allowed"
			if ev.Decision != "allow" {
				typ = "egress.blocked"
			}
			if ev.SandboxID == "" {
				cfg.Logf("egress: %s connection from %s to %s (host %q) from no known sandbox: %s", ev.Decision, ev.Src, ev.Dst, ev.Host, ev.Reason)
				return
			}
			audit(ev.SandboxID, typ, ev)
		},
		UpstreamCAFile: cfg.UpstreamCAFile,
		HTTPEvents: func(ev egress.HTTPEvent) {
			typ := "http.request"
			if ev.Decision != egress.DecisionAllow {
				typ = "http.blocked"
			}
			// Secrets from the sandbox's env never reach the audit store in clear.
			ev.RequestBody = s.manager.MaskSecrets(ev.SandboxID, ev.RequestBody)
			ev.ResponseBody = s.manager.MaskSecrets(ev.SandboxID, ev.ResponseBody)
			ev.URL = string(s.manager.MaskSecrets(ev.SandboxID, []byte(ev.URL)))
			audit(ev.SandboxID, typ, httpAudit(ev))
		},
	}); err != nil {
		return nil, fmt.Errorf("egress proxy: %w", err)
	}
	proxyAddr, err := s.egress.Start()
	if err != nil {
		return nil, fmt.Errorf("egress proxy: %w", err)
	}
	ncfg.ProxyPort = proxyAddr.Port()
	ncfg.LogGroup = flowLogGroup(cfg.NetPrefix)
	if s.network, err = network.New(ctx, ncfg); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}

	// A crashed run's generated files go before the warm pool (started by
	// sandbox.New) writes the first new ones there.
	os.RemoveAll(filepath.Join(cfg.StateDir, "run"))
	s.manager = sandbox.New(sandbox.Config{
		Store: s.store, Runtime: s.runtime, BuildRuntime: s.buildRT, Network: s.network, Templates: templatesAdapter{s.templates},
		DNS:             s.dns,
		Egress:          s.egress,
		Content:         contentAdapter{s.egress},
		AuditRetention:  cfg.AuditRetention,
		WarmPool:        cfg.WarmPool,
		WarmPoolMaxIdle: cfg.WarmPoolMaxIdle,
		EnvdPath:        cfg.EnvdPath,
		RunDir:          filepath.Join(cfg.StateDir, "run"),
		StateDir:        cfg.StateDir,
		Limits:          cfg.Limits,
		Admission:       admission,
		Logf:            cfg.Logf,
	})
	audit = func(id, typ string, data any) { s.manager.Audit(context.Background(), id, typ, data) }
	if s.flows, err = startFlowAuditor(context.WithoutCancel(ctx), ncfg.LogGroup, cfg.Logf, func(slot int) string { return s.manager.BySlot(slot) }, audit); err != nil {
		return nil, err
	}
	if err := s.manager.Recover(ctx); err != nil {
		return nil, err
	}
	if err := s.startBuilds(); err != nil {
		return nil, err
	}

	volStore, err := volume.NewLocalStore(filepath.Join(cfg.StateDir, "volumes"))
	if err != nil {
		return nil, err
	}
	handler := api.New(api.Config{
		Sandboxes: s.manager, Store: s.store, OpenAPI: openapi.Spec, Logf: cfg.Logf,
		Volumes:   volume.NewManager(volume.Config{Store: volStore}),
		Templates: s.templates, Builds: s.builds,
		Health: func() map[string]any {
			h := map[string]any{"runtime": s.runtime.Name(), "warm_pool": s.manager.PoolSizes()}
			committed, capacity := s.manager.Capacity()
			h["memory"] = map[string]int64{"committed_mb": committed, "capacity_mb": capacity}
			if a, ok := s.runtime.(interface{ Accel() string }); ok {
				h["accel"] = a.Accel()
			}
			return h
		},
	})
	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	s.httpSrv = &http.Server{Handler: handler, ReadHeaderTimeout: 15 * time.Second, IdleTimeout: 120 * time.Second}
	go func() {
		if err := s.httpSrv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logf("http: %v", err)
		}
	}()
	_, capacity := admission.Usage()
	d := cfg.Limits.Defaults
	cfg.Logf("declaw server listening on http://%s (runtime %s, state %s); sandboxes get %v vCPUs, %d MiB memory, %d MiB disk, %d pids by default; %d MiB of host memory may be committed to them",
		s.ln.Addr(), s.runtime.Name(), cfg.StateDir, d.CPUs, d.MemoryMB, d.DiskMB, d.Pids, capacity)
	return s, nil
}

// Addr is the address the API listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Shutdown stops serving, kills every sandbox and frees everything.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	if s.httpSrv != nil {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := s.httpSrv.Shutdown(sctx); err != nil {
			s.httpSrv.Close()
		}
		cancel()
	}
	if err := s.closeParts(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Server) closeParts(ctx context.Context) error {
	var errs []error
	if s.builds != nil {
		s.builds.Shutdown()
	}
	if s.manager != nil {
		if err := s.manager.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.runtime != nil {
		if err := s.runtime.Cleanup(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.buildRT != nil {
		if err := s.buildRT.Cleanup(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.egress != nil {
		if err := s.egress.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.dns != nil {
		if err := s.dns.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.flows != nil {
		if err := s.flows.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.network != nil {
		if err := s.network.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.owner.release() // last: everything the server owned is gone
	return errors.Join(errs...)
}

// setupKeys stores the configured key; with none configured and none stored
// it generates one and writes it to <state>/api-key (0600).
func (s *Server) setupKeys(ctx context.Context) error {
	if s.cfg.APIKey != "" {
		hash := api.HashKey(s.cfg.APIKey)
		if err := s.store.AddAPIKey(ctx, hash, "configured"); err != nil {
			return err
		}
		// A key revoked through the API stays revoked: say so, or the
		// operator sees only 401s.
		if ok, err := s.store.HasAPIKey(ctx, hash); err != nil || !ok {
			if err != nil {
				return err
			}
			s.cfg.Logf("the configured API key (--api-key, DECLAW_API_KEY) was revoked: it is refused; configure another one")
		}
		return nil
	}
	n, err := s.store.CountAPIKeys(ctx)
	if err != nil || n > 0 {
		return err
	}
	b := make([]byte, 20)
	rand.Read(b)
	key := "dcl_" + hex.EncodeToString(b)
	path := filepath.Join(s.cfg.StateDir, "api-key")
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return fmt.Errorf("write generated API key: %w", err)
	}
	s.cfg.Logf("no API key configured: generated one, stored in %s", path)
	return s.store.AddAPIKey(ctx, api.HashKey(key), "generated")
}

// DefaultEnvdPath finds the envd binary: beside the declaw binary, then the install locations.
func DefaultEnvdPath() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locate envd: %w", err)
	}
	for _, p := range []string{filepath.Join(filepath.Dir(exe), "envd"), "/usr/local/lib/declaw/envd", "/usr/local/bin/envd"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", errors.New("envd binary not found beside the declaw binary; pass --envd PATH")
}

// runtimeOverheadMB is host memory a sandbox uses outside its memory limit,
// committed with it (limits.Config.OverheadMB), per runtime. gvisor: the
// foreground "runsc run" process, which stays outside the sandbox's cgroup
// (~15 MiB RSS measured, rounded up). microvm: QEMU's own memory and
// TCG's code cache beside the guest's RAM.
var runtimeOverheadMB = map[string]int64{"gvisor": 24, "microvm": 96}

// templatesAdapter gives the orchestrator template root filesystems.
type templatesAdapter struct{ m *template.Manager }

func (a templatesAdapter) RootFS(ctx context.Context, name string) (string, error) {
	if !template.IsBuiltin(name) {
		if t, err := a.m.Resolve(name); err == nil {
			name = t.Name // a custom template's id
		}
	}
	t, err := a.m.Ensure(ctx, name)
	if errors.Is(err, template.ErrUnknownTemplate) {
		return "", fmt.Errorf("template %q: %w", name, sandbox.ErrTemplateUnknown)
	}
	if err != nil {
		return "", fmt.Errorf("template %q: %w", name, err)
	}
	return t.RootFS, nil
}

// contentAdapter gives the orchestrator content inspection on the egress
// proxy: a CA of its own per sandbox, whose certificate goes into the sandbox.
type contentAdapter struct{ p *egress.Proxy }

func (a contentAdapter) Attach(guestIP netip.Addr, sandboxID string, sec *policy.Security) ([]byte, error) {
	// The CA outlives the longest sandbox (its leaves are minted on demand).
	c, err := ca.NewWithOptions(sandboxID, ca.Options{Validity: sandbox.MaxTimeout + 24*time.Hour})
	if err != nil {
		return nil, fmt.Errorf("mint the CA of %s: %w", sandboxID, err)
	}
	if err := a.p.SetContent(guestIP, &egress.Content{Security: sec, CA: c}); err != nil {
		return nil, err
	}
	return c.CertPEM(), nil
}

func (a contentAdapter) Detach(guestIP netip.Addr) { a.p.SetContent(guestIP, nil) }

// httpAudit is the audit record of one intercepted exchange: the API's
// snake_case names, bodies as text.
func httpAudit(ev egress.HTTPEvent) map[string]any {
	out := map[string]any{
		"method": ev.Method, "url": ev.URL, "host": ev.Host, "status_code": ev.Status, "direction": ev.Direction,
		"decision": ev.Decision, "stage": ev.Stage, "reason": ev.Reason, "tls": ev.TLS, "proto": ev.Proto,
		"request_bytes": ev.RequestBytes, "response_bytes": ev.ResponseBytes, "duration_ms": ev.Duration.Milliseconds(),
		"src": ev.Src.String(), "dst": ev.Dst.String(),
	}
	if len(ev.PII) > 0 {
		n := 0
		for _, c := range ev.PII {
			n += c
		}
		out["pii"] = ev.PII
		out["pii_action"] = ev.PIIAction
		out["pii_redactions"] = n
	}
	if ev.Rehydrated > 0 {
		out["rehydrated"] = ev.Rehydrated
	}
	if ev.Injection != nil {
		out["injection"] = ev.Injection
		if ev.Stage == "injection" && ev.Decision != egress.DecisionAllow {
			out["injection_blocks"] = 1
		}
	}
	if len(ev.Transformations) > 0 {
		out["transformations_applied"] = len(ev.Transformations)
		out["transformations"] = ev.Transformations
	}
	if len(ev.Verdicts) > 0 {
		out["verdicts"] = ev.Verdicts
	}
	if len(ev.Notes) > 0 {
		out["notes"] = ev.Notes
	}
	if ev.RequestBody != nil {
		out["request_body"] = string(ev.RequestBody)
	}
	if ev.ResponseBody != nil {
		out["response_body"] = string(ev.ResponseBody)
	}
	if ev.BodiesTruncated {
		out["bodies_truncated"] = true
	}
	return out
}
