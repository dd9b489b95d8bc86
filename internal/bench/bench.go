// Package bench measures a declaw server on the current host: create to
// first command from a warm pool and cold, concurrent creates, the
// commands.run round trip, file transfer and idle memory per sandbox, each
// beside a baseline measured in the same run (raw `runsc run`, a native
// process spawn). `declaw bench` is its command line; it drives a remote
// server through sdk/go/declaw or a private one it starts (Local).
//
// Every figure comes from the run that prints it. Only failed creates,
// commands and cleanups are errors; timings never are.
package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/declaw/declaw/internal/meminfo"
	"github.com/declaw/declaw/internal/sandbox"
	"github.com/declaw/declaw/sdk/go/declaw"
)

// Target is a declaw server to measure.
type Target struct {
	Client *declaw.Client
	// WarmPool is how many warm sandboxes of the template the server keeps
	// (-1: unknown; Run then reads it from /health).
	WarmPool int
	// Close shuts a private server down and reports what it left behind;
	// nil for a remote server.
	Close func(ctx context.Context) (Cleanup, error)
}

// Config configures Run. Zero counts take the defaults (Quick: smaller).
type Config struct {
	// Open returns the server to measure, keeping warmPool warm sandboxes
	// of the template. Run opens one server with warmPool 0 for the cold
	// phase and one with WarmPool for the rest, closing each after use; a
	// remote Open returns the same server both times, and Run then drains
	// its pool before each cold create.
	Open     func(ctx context.Context, warmPool int) (*Target, error)
	Local    bool
	Template string // default python
	WarmPool int    // default 2
	Runs     int    // latency samples per figure; default 20 (quick 5)
	Quick    bool

	Concurrency []int // default 20, 50, 100 (quick 5, 10)
	Density     []int // default 50, 200 (quick 10)
	FileSizes   []int64

	// Baseline: runsc binary and platform, and the template rootfs (on this host).
	Runsc    string
	Platform string
	RootFS   string
	// ColdBaseline, when set, replaces the raw runsc baseline of cold
	// creates (another runtime's floor, e.g. QEMU + kernel booting a
	// trivial init for the microvm runtime): runs samples and their label.
	ColdBaseline func(ctx context.Context, runs int) ([]time.Duration, string, error)

	Logf func(format string, args ...any) // progress; default none
}

func (c *Config) defaults() {
	if c.Template == "" {
		c.Template = "python"
	}
	if c.WarmPool <= 0 {
		c.WarmPool = 2
	}
	if c.Runs <= 0 {
		c.Runs = 20
		if c.Quick {
			c.Runs = 5
		}
	}
	if c.Concurrency == nil {
		c.Concurrency = []int{20, 50, 100}
		if c.Quick {
			c.Concurrency = []int{5, 10}
		}
	}
	if c.Density == nil {
		c.Density = []int{50, 200}
		if c.Quick {
			c.Density = []int{10}
		}
	}
	if c.FileSizes == nil {
		c.FileSizes = []int64{1 << 10, 10 << 20}
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// sandboxTimeout keeps the bench's sandboxes alive through a whole run;
// every one is killed explicitly.
const sandboxTimeout = 3600

// Run measures everything and returns the report. It returns an error
// only when it could not measure at all; failed creates and commands are
// recorded in Report.Errors.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	began := time.Now()
	r := &Report{Errors: []string{}}
	r.Machine = ReadMachine(ctx, cfg.Runsc)
	r.Setup = Setup{Local: cfg.Local, Template: cfg.Template, Runs: cfg.Runs, Quick: cfg.Quick}
	b := &runner{cfg: cfg, r: r}

	// Phase 1: cold creates (a server with no warm sandbox), exec, files.
	cold, err := cfg.Open(ctx, 0)
	if err != nil {
		return nil, err
	}
	r.Setup.Server = cold.Client.Base()
	b.t = cold
	if err := b.phaseCold(ctx); err != nil {
		b.closeTarget(ctx, cold)
		return nil, err
	}
	b.closeTarget(ctx, cold)

	// Phase 2: warm creates, concurrency and density on a server with a pool.
	warm, err := cfg.Open(ctx, cfg.WarmPool)
	if err != nil {
		return nil, err
	}
	r.Setup.Server = warm.Client.Base()
	b.t = warm
	err = b.phaseWarm(ctx)
	b.closeTarget(ctx, warm)
	if err != nil {
		return nil, err
	}
	r.Machine.LoadAvgEnd = LoadAvg()
	r.DurationS = time.Since(began).Round(100 * time.Millisecond).Seconds()
	return r, nil
}

// runner is one Run's state.
type runner struct {
	cfg Config
	r   *Report
	t   *Target
	mu  sync.Mutex // guards r.Errors
}

func (b *runner) errorf(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.r.Errors = append(b.r.Errors, fmt.Sprintf(format, args...))
}

func (b *runner) closeTarget(ctx context.Context, t *Target) {
	if t.Close == nil {
		return
	}
	c, err := t.Close(context.WithoutCancel(ctx))
	if err != nil {
		b.errorf("shut down %s: %v", t.Client.Base(), err)
	}
	b.r.Cleanup = append(b.r.Cleanup, c)
	if !c.OK {
		b.errorf("%s left behind: %v", c.Server, c.Leftover)
	}
}

func (b *runner) phaseCold(ctx context.Context) error {
	cfg := b.cfg
	// The baseline first, then the figure, both on an otherwise idle host.
	label := "raw runsc run /bin/true"
	rootfs := cfg.RootFS
	var raw []time.Duration
	var err error
	switch {
	case cfg.ColdBaseline != nil:
		cfg.Logf("baseline: cold baseline x%d", cfg.Runs)
		raw, label, err = cfg.ColdBaseline(ctx, cfg.Runs)
	case rootfs == "":
		err = errors.New("no template rootfs on this host")
	case os.Geteuid() != 0:
		err = errors.New("needs root (a network namespace)")
	default:
		cfg.Logf("baseline: raw runsc run /bin/true x%d", cfg.Runs)
		raw, err = RawRunsc(ctx, RawRunscConfig{Runsc: cfg.Runsc, Platform: cfg.Platform, RootFS: rootfs, Runs: cfg.Runs})
	}
	if err != nil {
		b.r.Notes = append(b.r.Notes, fmt.Sprintf("%s baseline not measured: %v", label, err))
	}
	rawSum := Summarize(raw)

	pool, err := b.poolSize(ctx)
	if err != nil {
		return err
	}
	if pool == 0 {
		b.r.Setup.ColdMode = "server keeps no warm sandbox of the template; every create boots one"
	} else {
		b.r.Setup.ColdMode = fmt.Sprintf("pool of %d drained before each create (refill boots run meanwhile)", pool)
	}
	cfg.Logf("cold create + run(true) x%d", cfg.Runs)
	var lat []time.Duration
	for range cfg.Runs {
		var held []string
		if pool > 0 {
			held = b.drain(ctx)
		}
		d, _, ok := b.createAndRun(ctx, true)
		b.killAll(ctx, held)
		if ok {
			lat = append(lat, d)
		}
	}
	b.r.CreateCold = Compare(Summarize(lat), label, rawSum)
	b.measureTemplates(ctx, b.r.CreateCold.Latency)

	// Exec and files on one sandbox of this server.
	sb, err := b.t.Client.CreateSandbox(ctx, b.createReq())
	if err != nil {
		b.errorf("create: %v", err)
		return nil
	}
	defer b.killAll(ctx, []string{sb.SandboxID})
	b.measureExec(ctx, sb.SandboxID)
	b.measureShellStart(ctx, sb.SandboxID)
	b.measureFiles(ctx, sb.SandboxID)
	return nil
}

func (b *runner) phaseWarm(ctx context.Context) error {
	cfg := b.cfg
	pool, err := b.poolSize(ctx)
	if err != nil {
		return err
	}
	if b.t.WarmPool >= 0 {
		pool = b.t.WarmPool
	}
	b.r.Setup.WarmPool = pool
	if pool == 0 {
		b.r.Notes = append(b.r.Notes, "the server keeps no warm sandbox of the template: warm figures are cold creates")
	}
	raw := b.r.CreateCold.Baseline
	cfg.Logf("warm create + run(true) x%d (pool of %d)", cfg.Runs, pool)
	var lat []time.Duration
	for range cfg.Runs {
		if err := b.waitPool(ctx, pool); err != nil {
			return err
		}
		d, id, ok := b.createAndRun(ctx, false)
		if ok {
			lat = append(lat, d)
			b.killAll(ctx, []string{id})
		}
	}
	b.r.CreateWarm = Compare(Summarize(lat), b.r.CreateCold.BaselineName, raw)

	for _, n := range cfg.Concurrency {
		if err := b.waitPool(ctx, pool); err != nil {
			return err
		}
		cfg.Logf("%d concurrent creates", n)
		b.r.Concurrent = append(b.r.Concurrent, b.concurrent(ctx, n))
	}
	if err := b.waitPool(ctx, pool); err != nil {
		return err
	}
	return b.measureDensity(ctx, pool)
}

func (b *runner) createReq() declaw.CreateRequest {
	timeout := sandboxTimeout
	return declaw.CreateRequest{Template: b.cfg.Template, Timeout: &timeout, Metadata: map[string]string{"declaw-bench": "1"}}
}

// createAndRun times create + commands.run("true"). With kill it kills
// the sandbox (untimed) and returns no id.
func (b *runner) createAndRun(ctx context.Context, kill bool) (time.Duration, string, bool) {
	start := time.Now()
	sb, err := b.t.Client.CreateSandbox(ctx, b.createReq())
	if err != nil {
		b.errorf("create: %v", err)
		return 0, "", false
	}
	res, err := b.t.Client.RunCommand(ctx, sb.SandboxID, declaw.CommandRequest{Cmd: "true"})
	d := time.Since(start)
	if err == nil && res.ExitCode != 0 {
		err = fmt.Errorf("exit code %d: %s", res.ExitCode, res.Stderr)
	}
	if err != nil {
		b.errorf("first command in %s: %v", sb.SandboxID, err)
		b.killAll(ctx, []string{sb.SandboxID})
		return 0, "", false
	}
	if kill {
		b.killAll(ctx, []string{sb.SandboxID})
		return d, "", true
	}
	return d, sb.SandboxID, true
}

// killAll kills ids, 8 at a time, recording failures.
func (b *runner) killAll(ctx context.Context, ids []string) {
	ctx = context.WithoutCancel(ctx)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := b.t.Client.KillSandbox(ctx, id); err != nil && !declaw.IsNotFound(err) {
				b.errorf("kill %s: %v", id, err)
			}
		}()
	}
	wg.Wait()
}

func (b *runner) health(ctx context.Context) (*declaw.Health, error) {
	return b.t.Client.Health(ctx)
}

// poolSize is the number of warm sandboxes of the template /health shows now.
func (b *runner) poolSize(ctx context.Context) (int, error) {
	h, err := b.health(ctx)
	if err != nil {
		return 0, fmt.Errorf("server health: %w", err)
	}
	return h.WarmPool[b.cfg.Template], nil
}

// waitPool waits until /health shows want warm sandboxes of the template.
func (b *runner) waitPool(ctx context.Context, want int) error {
	if want <= 0 {
		return nil
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		n, err := b.poolSize(ctx)
		if err != nil {
			return err
		}
		if n >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("warm pool of %s: %d of %d ready after 3 minutes", b.cfg.Template, n, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// drain creates (and returns, for the caller to kill) sandboxes until the
// server's pool of the template is empty.
func (b *runner) drain(ctx context.Context) []string {
	var held []string
	for range 64 {
		n, err := b.poolSize(ctx)
		if err != nil || n == 0 {
			break
		}
		sb, err := b.t.Client.CreateSandbox(ctx, b.createReq())
		if err != nil {
			b.errorf("create (draining the pool): %v", err)
			break
		}
		held = append(held, sb.SandboxID)
	}
	return held
}

func (b *runner) measureExec(ctx context.Context, id string) {
	runs := 10 * b.cfg.Runs
	b.cfg.Logf("baseline: native /bin/bash -c true x%d; commands.run(\"true\") x%d", runs, runs)
	native, err := NativeSpawn(ctx, runs)
	if err != nil {
		b.errorf("%v", err)
	}
	for range 3 { // warm the connection and envd
		b.t.Client.RunCommand(ctx, id, declaw.CommandRequest{Cmd: "true"})
	}
	var lat []time.Duration
	for range runs {
		start := time.Now()
		res, err := b.t.Client.RunCommand(ctx, id, declaw.CommandRequest{Cmd: "true"})
		d := time.Since(start)
		if err == nil && res.ExitCode != 0 {
			err = fmt.Errorf("exit code %d", res.ExitCode)
		}
		if err != nil {
			b.errorf("commands.run(true) in %s: %v", id, err)
			continue
		}
		lat = append(lat, d)
	}
	b.r.Exec = Compare(Summarize(lat), "native /bin/bash -c true", Summarize(native))
}

// shellChainLen is how many shell starts one ShellChain run times.
const shellChainLen = 20

// measureShellStart times the start of the command shell inside the
// sandbox (a chain of execs, no fork, no envd) against the same chain on
// the host: the part of the exec round trip that is the sandbox's own
// process start, which no change to declaw can remove.
func (b *runner) measureShellStart(ctx context.Context, id string) {
	runs := b.cfg.Runs
	b.cfg.Logf("shell start: chain of %d execs x%d, inside and native", shellChainLen, runs)
	native, err := NativeShellStart(ctx, runs, shellChainLen)
	if err != nil {
		b.errorf("%v", err)
	}
	// The shell commands run on: bash-static where the template has it.
	cmd := `S=/bin/bash; if [ -x /bin/bash-static ]; then S=/bin/bash-static; fi; export S; ` + ShellChain("$S", shellChainLen)
	var lat []time.Duration
	for range runs {
		res, err := b.t.Client.RunCommand(ctx, id, declaw.CommandRequest{Cmd: cmd})
		if err == nil && res.ExitCode != 0 {
			err = fmt.Errorf("exit code %d: %s", res.ExitCode, res.Stderr)
		}
		var d time.Duration
		if err == nil {
			d, err = ShellStarts(res.Stdout, shellChainLen)
		}
		if err != nil {
			b.errorf("shell start chain in %s: %v", id, err)
			continue
		}
		lat = append(lat, d)
	}
	b.r.ShellStart = Compare(Summarize(lat), "same chain on the host", Summarize(native))
}

func (b *runner) measureFiles(ctx context.Context, id string) {
	for _, size := range b.cfg.FileSizes {
		b.cfg.Logf("files: write/read %d bytes x%d", size, b.cfg.Runs)
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i*7 + i>>8)
		}
		sum := sha256.Sum256(data)
		path := filepath.Join("/tmp", fmt.Sprintf("declaw-bench-%d", size))
		var wlat, rlat []time.Duration
		for range b.cfg.Runs {
			start := time.Now()
			res, err := b.t.Client.WriteFile(ctx, id, path, "", bytes.NewReader(data), size)
			d := time.Since(start)
			if err == nil && res.Size != size {
				err = fmt.Errorf("wrote %d bytes, want %d", res.Size, size)
			}
			if err != nil {
				b.errorf("write %s (%d bytes) in %s: %v", path, size, id, err)
				continue
			}
			wlat = append(wlat, d)

			start = time.Now()
			rc, err := b.t.Client.ReadFile(ctx, id, path, "")
			if err != nil {
				b.errorf("read %s in %s: %v", path, id, err)
				continue
			}
			h := sha256.New()
			n, err := io.Copy(h, rc)
			rc.Close()
			d = time.Since(start)
			if err == nil && (n != size || !bytes.Equal(h.Sum(nil), sum[:])) {
				err = fmt.Errorf("read back %d bytes that differ from the %d written", n, size)
			}
			if err != nil {
				b.errorf("read %s in %s: %v", path, id, err)
				continue
			}
			rlat = append(rlat, d)
		}
		w, r := Summarize(wlat), Summarize(rlat)
		b.r.Files = append(b.r.Files, FileIO{
			SizeBytes: size,
			Write:     IO{Latency: w, MBPerSec: MBPerSec(size, time.Duration(w.P50*float64(time.Millisecond)))},
			Read:      IO{Latency: r, MBPerSec: MBPerSec(size, time.Duration(r.P50*float64(time.Millisecond)))},
		})
	}
}

// concurrent starts n creates at once, then kills what was created.
func (b *runner) concurrent(ctx context.Context, n int) Concurrent {
	var (
		mu   sync.Mutex
		lat  []time.Duration
		ids  []string
		wg   sync.WaitGroup
		gate = make(chan struct{})
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			start := time.Now()
			sb, err := b.t.Client.CreateSandbox(ctx, b.createReq())
			d := time.Since(start)
			if err != nil {
				b.errorf("create (%d concurrent): %v", n, err)
				return
			}
			mu.Lock()
			lat = append(lat, d)
			ids = append(ids, sb.SandboxID)
			mu.Unlock()
		}()
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	wall := time.Since(start)
	b.killAll(ctx, ids)
	return Concurrent{N: n, OK: len(lat), SuccessRate: float64(len(lat)) / float64(n), WallMS: ms(wall), Latency: Summarize(lat)}
}

// metricsInterval is how often the server samples a sandbox's metrics: a
// sample covers the interval before it.
const metricsInterval = sandbox.MetricsInterval

// measureDensity grows the number of idle sandboxes through cfg.Density,
// measuring the host memory they take and checking create still works.
func (b *runner) measureDensity(ctx context.Context, pool int) error {
	var alive []string
	defer func() { b.killAll(ctx, alive) }()
	before, err := settledMemAvailable(ctx)
	if err != nil {
		b.r.Notes = append(b.r.Notes, fmt.Sprintf("host memory not readable: %v", err))
	}
	for _, n := range b.cfg.Density {
		b.cfg.Logf("idle memory: growing to %d sandboxes", n)
		more := n - len(alive)
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 4)
		for range more {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				sb, err := b.t.Client.CreateSandbox(ctx, b.createReq())
				if err != nil {
					b.errorf("create (growing to %d sandboxes): %v", n, err)
					return
				}
				mu.Lock()
				alive = append(alive, sb.SandboxID)
				mu.Unlock()
			}()
		}
		wg.Wait()
		// The pool refills to the same size as before the first create, so
		// the delta is the N sandboxes' alone.
		if err := b.waitPool(ctx, pool); err != nil {
			return err
		}
		d := Density{Sandboxes: len(alive)}
		idleFrom := time.Now()
		if after, err := settledMemAvailable(ctx); err == nil && before > 0 {
			d.MemAvailableDeltaMiB = round2(float64(before-after) / (1 << 20))
			d.PerSandboxMiB = round2(d.MemAvailableDeltaMiB / float64(len(alive)))
		}
		// Wait for every sandbox to have a metric sample that covers only
		// idle time: the first one at or after idleFrom + metricsInterval.
		b.cfg.Logf("idle CPU: waiting for metric samples of the %d idle sandboxes", len(alive))
		if err := sleepCtx(ctx, time.Until(idleFrom.Add(2*metricsInterval+time.Second))); err != nil {
			return err
		}
		u := b.idleUsage(ctx, alive, idleFrom.Add(metricsInterval))
		d.CgroupSumMiB, d.CgroupReadable = round2(u.memMiB), u.memReadable
		if d.CgroupReadable > 0 {
			d.CgroupPerSandboxMiB = round2(d.CgroupSumMiB / float64(d.CgroupReadable))
		}
		d.IdleCPUSumPct, d.IdleCPUReadable = round3(u.cpuPct), u.cpuReadable
		if d.IdleCPUReadable > 0 {
			d.IdleCPUPerSandboxPct = round3(u.cpuPct / float64(u.cpuReadable))
		}
		dur, _, ok := b.createAndRun(ctx, true)
		d.CreateOK, d.CreateMS = ok, ms(dur)
		b.r.IdleMemory = append(b.r.IdleMemory, d)
		if err := b.waitPool(ctx, pool); err != nil {
			return err
		}
	}
	return nil
}

// usage is what the metrics of a set of sandboxes say.
type usage struct {
	memMiB      float64 // sum of the latest memory_usage_mb
	memReadable int
	cpuPct      float64 // sum of the mean cpu_usage_percent of the samples since a time
	cpuReadable int
}

// idleUsage reads ids' metrics: the latest memory of each, and the mean
// CPU of each one's samples taken at or after since.
func (b *runner) idleUsage(ctx context.Context, ids []string, since time.Time) usage {
	var mu sync.Mutex
	var u usage
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ms, err := b.t.Client.Metrics(ctx, id, time.Time{}, time.Time{})
			if err != nil || len(ms) == 0 {
				return
			}
			var cpu float64
			var n int
			for _, m := range ms {
				if !m.Timestamp.Before(since) {
					cpu += m.CPUUsagePercent
					n++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if last := ms[len(ms)-1]; last.MemoryUsageMB > 0 {
				u.memMiB += last.MemoryUsageMB
				u.memReadable++
			}
			if n > 0 {
				u.cpuPct += cpu / float64(n)
				u.cpuReadable++
			}
		}()
	}
	wg.Wait()
	return u
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// settledMemAvailable waits a moment for the host to settle, then returns
// the median of three MemAvailable readings.
func settledMemAvailable(ctx context.Context) (int64, error) {
	var v [3]int64
	for i := range v {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		m, err := meminfo.Available()
		if err != nil {
			return 0, err
		}
		v[i] = m
	}
	return median3(v[0], v[1], v[2]), nil
}

func median3(a, b, c int64) int64 {
	return max(min(a, b), min(max(a, b), c))
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }
