package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/declaw/declaw/internal/limits"
	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/server"
	"github.com/declaw/declaw/internal/template"
)

func runServer(e *env, args []string) int {
	fs := flag.NewFlagSet("declaw server", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var cfg server.Config
	fs.StringVar(&cfg.Listen, "listen", e.envOr("DECLAW_LISTEN", "127.0.0.1:8080"), "address of the API (env DECLAW_LISTEN)")
	fs.StringVar(&cfg.StateDir, "state-dir", e.envOr("DECLAW_STATE_DIR", "/var/lib/declaw"), "state directory: database, templates, runtime state (env DECLAW_STATE_DIR)")
	fs.StringVar(&cfg.Database, "database", e.envOr("DECLAW_DATABASE", ""), "store: a SQLite file (default STATE/declaw.db) or postgres://USER@HOST/DB (one server per database; put a password in DECLAW_DATABASE or PGPASSWORD, not on the command line) (env DECLAW_DATABASE)")
	fs.StringVar(&cfg.APIKey, "api-key", e.envOr("DECLAW_API_KEY", ""), "API key accepted by the server, stored hashed (env DECLAW_API_KEY); none: generate one into STATE/api-key")
	fs.StringVar(&cfg.SandboxCIDR, "sandbox-cidr", e.envOr("DECLAW_SANDBOX_CIDR", "10.200.0.0/16"), "IPv4 range the sandbox links are carved from (env DECLAW_SANDBOX_CIDR)")
	fs.StringVar(&cfg.NetPrefix, "net-prefix", e.envOr("DECLAW_NET_PREFIX", "declaw"), "name prefix of the netns, veths and nftables table the server owns")
	fs.StringVar(&cfg.EnvdPath, "envd", e.envOr("DECLAW_ENVD", ""), "envd binary (default: envd beside the declaw binary)")
	fs.StringVar(&cfg.Runtime, "runtime", e.envOr("DECLAW_RUNTIME", "gvisor"), "sandbox runtime: gvisor or microvm (QEMU microvm; KVM where the host has it, else TCG)")
	fs.StringVar(&cfg.Accel, "accel", e.envOr("DECLAW_ACCEL", "auto"), "microvm accelerator: auto, kvm or tcg")
	fs.StringVar(&cfg.Runsc, "runsc", e.envOr("DECLAW_RUNSC", "runsc"), "runsc binary")
	fs.StringVar(&cfg.Platform, "runsc-platform", e.envOr("DECLAW_RUNSC_PLATFORM", "ptrace"), "runsc --platform")
	fs.StringVar(&cfg.DNSUpstream, "dns-upstream", e.envOr("DECLAW_DNS_UPSTREAM", ""), "host:port of the DNS resolver sandbox queries are forwarded to (default: the host's first nameserver)")
	fs.StringVar(&cfg.UpstreamCAFile, "upstream-ca", e.envOr("DECLAW_UPSTREAM_CA", ""), "PEM file of extra roots the egress proxy trusts for upstream TLS (private upstreams, tests)")
	fs.DurationVar(&cfg.AuditRetention, "audit-retention", 7*24*time.Hour, "how long audit events are kept (a sandbox's audit.retention_hours overrides it)")
	poolSize, _ := strconv.Atoi(e.envOr("DECLAW_SLOT_POOL", "4"))
	fs.IntVar(&cfg.PoolSize, "slot-pool", poolSize, "network slots kept ready")
	warmPool := fs.String("warm-pool", e.envOr("DECLAW_WARM_POOL", "base=1,python=1"), "booted sandboxes kept ready per template, e.g. python=4,base=1 (empty: none)")
	maxIdle := 30 * time.Minute
	if v := e.envOr("DECLAW_WARM_POOL_MAX_IDLE", ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			fmt.Fprintf(e.stderr, "declaw server: DECLAW_WARM_POOL_MAX_IDLE=%q: want a positive duration such as 30m\n", v)
			return 2
		}
		maxIdle = d
	}
	fs.DurationVar(&cfg.WarmPoolMaxIdle, "warm-pool-max-idle", maxIdle, "how long a pooled sandbox waits for a create before it is replaced by a fresh one (env DECLAW_WARM_POOL_MAX_IDLE)")
	insecure := fs.String("insecure-registry", e.envOr("DECLAW_INSECURE_REGISTRIES", ""), "comma-separated registry hosts (host[:port]) template builds pull images from over plain HTTP")
	lim, envErr := limitFlags(e, fs)
	if envErr != nil {
		fmt.Fprintf(e.stderr, "declaw server: %v\n", envErr)
		return 2
	}
	buildTemplates := fs.String("build-templates", e.envOr("DECLAW_BUILD_TEMPLATES", ""), "comma-separated built-in templates to build before serving if missing or built by an older recipe (e.g. base,python)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := lim.apply(&cfg.Limits); err != nil {
		fmt.Fprintf(e.stderr, "declaw server: %v\n", err)
		return 2
	}
	if cfg.WarmPoolMaxIdle <= 0 {
		fmt.Fprintf(e.stderr, "declaw server: --warm-pool-max-idle %v: must be positive\n", cfg.WarmPoolMaxIdle)
		return 2
	}
	for _, h := range strings.Split(*insecure, ",") {
		if h = strings.TrimSpace(h); h != "" {
			cfg.InsecureRegistries = append(cfg.InsecureRegistries, h)
		}
	}
	var err error
	if cfg.WarmPool, err = parseWarmPool(*warmPool); err != nil {
		fmt.Fprintf(e.stderr, "declaw server: --warm-pool: %v\n", err)
		return 2
	}
	logger := log.New(e.stderr, "", log.LstdFlags|log.Lmicroseconds)
	cfg.Logf = logger.Printf

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if *buildTemplates != "" {
		tm, err := template.New(template.Config{StateDir: cfg.StateDir, EnvdPath: cfg.EnvdPath, Logf: cfg.Logf})
		if err != nil {
			logger.Printf("declaw server: %v", err)
			return 1
		}
		for _, name := range strings.Split(*buildTemplates, ",") {
			if name = strings.TrimSpace(name); name == "" {
				continue
			}
			if _, err := tm.Ensure(ctx, name); err != nil {
				logger.Printf("declaw server: template %s: %v", name, err)
				return 1
			}
		}
	}

	srv, err := server.Start(ctx, cfg)
	if err != nil {
		logger.Printf("declaw server: %v", err)
		return 1
	}
	<-ctx.Done()
	logger.Printf("shutting down: killing every sandbox")
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Printf("shutdown: %v", err)
		return 1
	}
	fmt.Fprintln(e.stderr, "declaw server stopped")
	return 0
}

// parseWarmPool parses "python=4,base=1".
func parseWarmPool(v string) (map[string]int, error) {
	out := map[string]int{}
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		name, num, ok := strings.Cut(part, "=")
		n, err := strconv.Atoi(num)
		if !ok || name == "" || err != nil || n < 0 || n > 1000 {
			return nil, fmt.Errorf("%q is not TEMPLATE=COUNT", part)
		}
		out[name] = n
	}
	return out, nil
}

// limitValues are the resource flags as parsed, applied to a limits.Config.
type limitValues struct {
	cpus, maxCPUs, overcommit                 float64
	mem, disk, pids, maxMem, maxDisk, reserve int64
}

// limitFlags registers the sandbox resource flags, each with its DECLAW_*
// environment variable as default; a bad variable is an error naming it.
func limitFlags(e *env, fs *flag.FlagSet) (*limitValues, error) {
	v := &limitValues{}
	var errs []error
	f64 := func(p *float64, name, envName string, def float64, usage string) {
		d := def
		if s := e.envOr(envName, ""); s != "" {
			n, err := strconv.ParseFloat(s, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: want a number", envName, s))
			}
			d = n
		}
		fs.Float64Var(p, name, d, usage+" (env "+envName+")")
	}
	i64 := func(p *int64, name, envName string, def int64, usage string) {
		d := def
		if s := e.envOr(envName, ""); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: want a whole number", envName, s))
			}
			d = n
		}
		fs.Int64Var(p, name, d, usage+" (env "+envName+")")
	}
	f64(&v.cpus, "cpu-count", "DECLAW_CPU_COUNT", limits.DefaultCPUs, "vCPUs a sandbox gets unless its template or create says otherwise")
	i64(&v.mem, "memory-mb", "DECLAW_MEMORY_MB", limits.DefaultMemoryMB, "memory (MiB) a sandbox gets by default; all of it, the runtime's own share included")
	i64(&v.disk, "disk-mb", "DECLAW_DISK_MB", limits.DefaultDiskMB, "writable root filesystem (MiB) a sandbox gets by default; past it writes fail with ENOSPC")
	i64(&v.pids, "pids", "DECLAW_PIDS", limits.DefaultPids, "processes and threads a sandbox may have")
	f64(&v.maxCPUs, "max-cpu-count", "DECLAW_MAX_CPU_COUNT", limits.DefaultMaxCPUs, "most vCPUs a create or template may ask for")
	i64(&v.maxMem, "max-memory-mb", "DECLAW_MAX_MEMORY_MB", limits.DefaultMaxMemoryMB, "most memory (MiB) a create or template may ask for")
	i64(&v.maxDisk, "max-disk-mb", "DECLAW_MAX_DISK_MB", limits.DefaultMaxDiskMB, "most disk (MiB) a create or template may ask for")
	i64(&v.reserve, "memory-reserve-mb", "DECLAW_MEMORY_RESERVE_MB", 0, "host memory (MiB) never committed to sandboxes; 0: 10% of the host, at least 1024")
	f64(&v.overcommit, "memory-overcommit", "DECLAW_MEMORY_OVERCOMMIT", 1, "sandboxes' memory limits may add up to (host memory - reserve) times this; above 1 the host may swap or OOM")
	return v, errors.Join(errs...)
}

func (v *limitValues) apply(c *limits.Config) error {
	c.Defaults = sandboxrt.Resources{CPUs: v.cpus, MemoryMB: v.mem, DiskMB: v.disk, Pids: v.pids}
	c.Max = sandboxrt.Resources{CPUs: v.maxCPUs, MemoryMB: v.maxMem, DiskMB: v.maxDisk, Pids: max(limits.DefaultMaxPids, v.pids)}
	c.ReserveMB, c.Overcommit = v.reserve, v.overcommit
	for name, n := range map[string]float64{"--cpu-count": v.cpus, "--memory-mb": float64(v.mem), "--disk-mb": float64(v.disk), "--pids": float64(v.pids),
		"--max-cpu-count": v.maxCPUs, "--max-memory-mb": float64(v.maxMem), "--max-disk-mb": float64(v.maxDisk), "--memory-overcommit": v.overcommit} {
		if n <= 0 {
			return fmt.Errorf("%s %v: must be positive", name, n)
		}
	}
	if _, err := c.Normalize(); err != nil {
		return fmt.Errorf("resource limits: %w", err)
	}
	return nil
}
