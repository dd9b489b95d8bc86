package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/declaw/declaw/internal/bench"
	"github.com/declaw/declaw/internal/limits"
	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/sandboxrt/microvm"
	"github.com/declaw/declaw/internal/server"
)

// benchMemoryMB is the memory limit of the bench's sandboxes (--local).
const benchMemoryMB = 128

const benchUsage = `Usage: declaw bench [--json] [--quick] [--local] [--template python] [--runs N]

Measures create-to-first-command (warm pool and cold), concurrent creates,
the commands.run("true") round trip and the shell start under it, file
write/read and idle memory per sandbox on this host, each beside a baseline
measured in the same run (raw runsc run, a native process spawn, the same
shell start on the host). See docs/bench.md.

It drives the server named by DECLAW_DOMAIN / DECLAW_API_KEY (or
--domain, --api-url, --api-key), or with --local private servers it
starts in this process (needs root). It exits 1 only when a create,
command or cleanup fails, never on timing.

`

func runBench(e *env, globals, args []string) int {
	c := e.newClientCmd("declaw bench", globals)
	quick := c.fs.Bool("quick", false, "short run for CI: small counts, under 2 minutes")
	local := c.fs.Bool("local", false, "start private servers in this process instead of using DECLAW_DOMAIN (needs root)")
	tmpl := c.fs.String("template", "python", "template to create sandboxes from")
	runs := c.fs.Int("runs", 0, "latency samples per figure (default 20, --quick 5)")
	warm := c.fs.Int("warm-pool", 2, "--local: warm sandboxes the private server keeps")
	templates := c.fs.String("templates", "/var/lib/declaw/templates", "built templates directory (--local state, and the raw runsc baseline's rootfs)")
	envd := c.fs.String("envd", e.envOr("DECLAW_ENVD", ""), "--local: envd binary (default: envd beside the declaw binary)")
	runsc := c.fs.String("runsc", e.envOr("DECLAW_RUNSC", "runsc"), "runsc binary (the local server's and the baseline's)")
	platform := c.fs.String("runsc-platform", e.envOr("DECLAW_RUNSC_PLATFORM", "ptrace"), "runsc --platform (the local server's and the baseline's)")
	verbose := c.fs.Bool("v", false, "log progress (and the local server's log) to stderr")
	rt := c.fs.String("runtime", "gvisor", "--local: runtime of the private servers (gvisor, or microvm: cold creates are then compared to the QEMU+kernel boot floor)")
	c.fs.Usage = func() {
		fmt.Fprint(e.stderr, benchUsage)
		c.fs.PrintDefaults()
	}
	if _, _, _, ok := c.parse(args, 0, 0); !ok {
		return 2
	}
	if *runs < 0 || *warm < 0 {
		c.usagef("--runs and --warm-pool must not be negative")
		return 2
	}
	logf := func(string, ...any) {}
	if *verbose {
		logf = log.New(e.stderr, "bench: ", log.Lmicroseconds).Printf
	}
	ctx, stop := signalContext()
	defer stop()

	cfg := bench.Config{
		Local: *local, Template: *tmpl, WarmPool: *warm, Runs: *runs, Quick: *quick,
		Runsc: *runsc, Platform: *platform, Logf: logf,
	}
	if rootfs := filepath.Join(*templates, *tmpl, "rootfs"); dirExists(rootfs) {
		cfg.RootFS = rootfs
	}
	if *local {
		open, err := bench.LocalOpener(bench.LocalConfig{
			Templates: *templates, Template: *tmpl, EnvdPath: *envd, Logf: logf,
			Start: func(ctx context.Context, sc bench.ServerConfig) (string, func(context.Context) error, error) {
				srv, err := server.Start(ctx, server.Config{
					Listen: sc.Listen, StateDir: sc.StateDir, APIKey: sc.APIKey, SandboxCIDR: sc.SandboxCIDR,
					NetPrefix: sc.NetPrefix, EnvdPath: sc.EnvdPath, Runsc: *runsc, Platform: *platform,
					PoolSize: 4, WarmPool: sc.WarmPool, DNSUpstream: sc.DNSUpstream, Logf: sc.Logf, Runtime: *rt,
					// The bench runs trivial commands; at the default 512 MiB its
					// 100 concurrent creates would be more memory than admission
					// lets most hosts commit (docs/bench.md).
					Limits: limits.Config{Defaults: sandboxrt.Resources{MemoryMB: benchMemoryMB}},
				})
				if err != nil {
					return "", nil, err
				}
				return srv.Addr(), func(ctx context.Context) error {
					ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
					defer cancel()
					return srv.Shutdown(ctx)
				}, nil
			},
		})
		if err != nil {
			fmt.Fprintf(e.stderr, "declaw bench: %v\n", err)
			return 1
		}
		cfg.Open = open
		if *rt == "microvm" {
			cfg.ColdBaseline = func(ctx context.Context, runs int) ([]time.Duration, string, error) {
				d, err := microvm.New(microvm.Config{StateDir: filepath.Join(os.TempDir(), "declaw-bench-microvm"), Logf: logf})
				if err != nil {
					return nil, "", err
				}
				label := "QEMU+kernel floor (" + d.Accel() + ")"
				var out []time.Duration
				for range runs {
					t, err := d.BootFloor(ctx)
					if err != nil {
						return out, label, err
					}
					out = append(out, t)
				}
				return out, label, nil
			}
		}
	} else {
		client, err := c.client()
		if err != nil {
			return c.fail(err)
		}
		t := &bench.Target{Client: client, WarmPool: -1}
		cfg.Open = func(context.Context, int) (*bench.Target, error) { return t, nil }
	}

	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(e.stderr, "declaw bench: %v\n", err)
		return 1
	}
	if c.opts.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(e.stderr, "declaw bench: encode JSON: %v\n", err)
			return 1
		}
	} else {
		bench.WriteTable(e.stdout, rep)
	}
	if len(rep.Errors) > 0 {
		fmt.Fprintf(e.stderr, "declaw bench: %d error(s); first: %s\n", len(rep.Errors), rep.Errors[0])
		return 1
	}
	return 0
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
