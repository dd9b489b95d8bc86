package bench_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/declaw/declaw/internal/bench"
	"github.com/declaw/declaw/internal/cli"
	"github.com/declaw/declaw/internal/testenv"
)

// TestBenchLocalQuick runs `declaw bench --local --quick --json` in this
// process (private servers, real runsc, real netns) and checks that every
// figure is there and sane. It takes about half a minute.
func TestBenchLocalQuick(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := os.Stat("/var/lib/declaw/templates/python/rootfs"); err != nil {
		if testenv.E2E() {
			t.Fatalf("python template not built: %v", err)
		}
		t.Skipf("python template not built: %v", err)
	}
	_, envd := testenv.BuildBinaries(t)

	out := filepath.Join(t.TempDir(), "stdout")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = f // cli.Run writes to os.Stdout
	code := cli.Run([]string{"bench", "--local", "--quick", "--json", "--envd", envd})
	os.Stdout = stdout
	f.Close()
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Fatalf("declaw bench --local --quick --json exited %d; stdout:\n%s", code, raw)
	}
	var r bench.Report
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("decode the JSON report: %v\n%s", err, raw)
	}
	t.Logf("report: %s", raw)

	if len(r.Errors) != 0 {
		t.Errorf("errors: %v", r.Errors)
	}
	m := r.Machine
	if m.NProc <= 0 || m.MemTotalMiB <= 0 || m.Kernel == "" || m.RunscVersion == "" {
		t.Errorf("machine facts incomplete: %+v", m)
	}
	if !r.Setup.Local || !r.Setup.Quick || r.Setup.Template != "python" || r.Setup.WarmPool <= 0 || r.Setup.ColdMode == "" {
		t.Errorf("setup = %+v", r.Setup)
	}
	runs := r.Setup.Runs
	checkSummary := func(name string, s bench.Summary, n int) {
		t.Helper()
		if s.N != n || s.Min <= 0 || s.P50 < s.Min || s.P95 < s.P50 || s.P99 < s.P95 || s.Max < s.P99 {
			t.Errorf("%s = %+v, want %d ordered positive samples", name, s, n)
		}
	}
	for _, c := range []struct {
		name string
		c    bench.Compared
		n    int
	}{
		{"create_warm", r.CreateWarm, runs},
		{"create_cold", r.CreateCold, runs},
		{"exec", r.Exec, 10 * runs},
		{"shell_start", r.ShellStart, runs},
	} {
		checkSummary(c.name+".latency", c.c.Latency, c.n)
		checkSummary(c.name+".baseline", c.c.Baseline, c.n)
		if c.c.Ratio.P50 <= 0 || c.c.Ratio.P95 <= 0 || c.c.Ratio.P99 <= 0 || c.c.BaselineName == "" {
			t.Errorf("%s ratio = %+v (baseline %q), want positive", c.name, c.c.Ratio, c.c.BaselineName)
		}
	}
	if len(r.Concurrent) != 2 {
		t.Errorf("concurrent rounds = %d, want 2 (5 and 10)", len(r.Concurrent))
	}
	for _, c := range r.Concurrent {
		if c.OK != c.N || c.SuccessRate != 1.0 || c.WallMS <= 0 {
			t.Errorf("%d concurrent creates: %+v, want all to succeed", c.N, c)
		}
		checkSummary("concurrent latency", c.Latency, c.N)
	}
	if len(r.Files) != 2 {
		t.Errorf("file sizes = %d, want 2", len(r.Files))
	}
	for _, f := range r.Files {
		checkSummary("write", f.Write.Latency, runs)
		checkSummary("read", f.Read.Latency, runs)
		if f.Write.MBPerSec <= 0 || f.Read.MBPerSec <= 0 {
			t.Errorf("%d-byte file: throughput %v/%v MB/s, want > 0", f.SizeBytes, f.Write.MBPerSec, f.Read.MBPerSec)
		}
	}
	if len(r.IdleMemory) != 1 {
		t.Fatalf("idle memory rows = %d, want 1", len(r.IdleMemory))
	}
	d := r.IdleMemory[0]
	if d.Sandboxes != 10 || d.MemAvailableDeltaMiB <= 0 || d.PerSandboxMiB <= 0 || !d.CreateOK || d.CreateMS <= 0 {
		t.Errorf("idle memory = %+v, want 10 sandboxes, a positive footprint and a working create", d)
	}
	if d.CgroupReadable > 0 && d.CgroupPerSandboxMiB <= 0 {
		t.Errorf("idle memory cgroup figures = %+v", d)
	}
	// Every sandbox had a metric sample covering only idle time.
	if d.IdleCPUReadable != d.Sandboxes || d.IdleCPUSumPct < 0 || d.IdleCPUPerSandboxPct < 0 {
		t.Errorf("idle CPU figures = %+v, want one per sandbox", d)
	}
	if len(r.Cleanup) != 2 {
		t.Errorf("cleanup checks = %d, want 2 (cold and warm servers)", len(r.Cleanup))
	}
	for _, c := range r.Cleanup {
		if !c.OK {
			t.Errorf("%s left behind: %s", c.Server, strings.Join(c.Leftover, ", "))
		}
	}
}
