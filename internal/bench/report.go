package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// Report holds every figure of one bench run. Each latency is printed
// beside the baseline measured in the same run.
type Report struct {
	Machine Machine `json:"machine"`
	Setup   Setup   `json:"setup"`

	CreateWarm Compared `json:"create_warm"` // create + commands.run("true"), warm pool, vs raw runsc
	CreateCold Compared `json:"create_cold"` // the same with no warm sandbox, vs raw runsc
	Exec       Compared `json:"exec"`        // commands.run("true") round trip vs native spawn
	// ShellStart is one start of the command shell inside the sandbox (an
	// exec chain timed in the sandbox) vs the same on the host: the floor
	// under Exec that the sandbox's process start sets.
	ShellStart Compared `json:"shell_start"`

	Concurrent []Concurrent `json:"concurrent"`
	Files      []FileIO     `json:"files"`
	IdleMemory []Density    `json:"idle_memory"`

	// Templates are the custom template figures (nil: not measured).
	Templates *TemplateBench `json:"templates,omitempty"`

	// Cleanup is the check of a --local server after its shutdown (nil for a remote server).
	Cleanup []Cleanup `json:"cleanup,omitempty"`

	DurationS float64  `json:"duration_s"`
	Notes     []string `json:"notes,omitempty"`
	// Errors are failed creates and commands (and failed cleanups); any
	// error makes `declaw bench` exit 1. Timings never do.
	Errors []string `json:"errors"`
}

// Setup is how the run was configured.
type Setup struct {
	Server   string `json:"server"` // API base URL
	Local    bool   `json:"local"`
	Template string `json:"template"`
	Runs     int    `json:"runs"`
	Quick    bool   `json:"quick"`
	WarmPool int    `json:"warm_pool"` // warm sandboxes of Template the server keeps
	ColdMode string `json:"cold_mode"` // how cold creates were obtained
}

// Compared is a latency beside its baseline.
type Compared struct {
	Latency      Summary `json:"latency"`
	BaselineName string  `json:"baseline_name"`
	Baseline     Summary `json:"baseline"`
	Ratio        Ratios  `json:"ratio"` // Latency / Baseline per percentile
}

// Ratios are per-percentile ratios (0: no figure).
type Ratios struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// Compare pairs latency with its baseline and computes the ratios.
func Compare(latency Summary, baselineName string, baseline Summary) Compared {
	return Compared{
		Latency: latency, BaselineName: baselineName, Baseline: baseline,
		Ratio: Ratios{
			P50: round3(Ratio(latency.P50, baseline.P50)),
			P95: round3(Ratio(latency.P95, baseline.P95)),
			P99: round3(Ratio(latency.P99, baseline.P99)),
		},
	}
}

// Concurrent is one round of N creates started at once.
type Concurrent struct {
	N           int     `json:"n"`
	OK          int     `json:"ok"`
	SuccessRate float64 `json:"success_rate"`
	WallMS      float64 `json:"wall_ms"` // first start to last answer
	Latency     Summary `json:"latency"` // of the successful creates
}

// FileIO is the write and read of one file size.
type FileIO struct {
	SizeBytes int64 `json:"size_bytes"`
	Write     IO    `json:"write"`
	Read      IO    `json:"read"`
}

// IO is the latency of one file operation and its throughput at the median.
type IO struct {
	Latency  Summary `json:"latency"`
	MBPerSec float64 `json:"mb_per_s"` // SizeBytes / p50, in 10^6 bytes per second
}

// Density is the idle footprint with N sandboxes alive.
type Density struct {
	Sandboxes int `json:"sandboxes"`
	// MemAvailableDeltaMiB is the drop of the host's MemAvailable from
	// before the first of them was created to when all N were idle.
	MemAvailableDeltaMiB float64 `json:"mem_available_delta_mib"`
	PerSandboxMiB        float64 `json:"per_sandbox_mib"`
	// CgroupSumMiB is the sum of memory_usage_mb of the sandboxes' own
	// metrics (their cgroups); CgroupReadable is how many answered.
	CgroupSumMiB        float64 `json:"cgroup_sum_mib"`
	CgroupPerSandboxMiB float64 `json:"cgroup_per_sandbox_mib"`
	CgroupReadable      int     `json:"cgroup_readable"`
	// IdleCPUSumPct is the CPU the N idle sandboxes used together, in
	// percent of one CPU: the mean cpu_usage_percent of each one's metric
	// samples taken wholly after all N were idle, summed; per sandbox it is
	// divided by IdleCPUReadable, how many had such samples.
	IdleCPUSumPct        float64 `json:"idle_cpu_sum_pct"`
	IdleCPUPerSandboxPct float64 `json:"idle_cpu_per_sandbox_pct"`
	IdleCPUReadable      int     `json:"idle_cpu_readable"`
	// CreateOK and CreateMS are one more create + commands.run("true")
	// with the N sandboxes alive.
	CreateOK bool    `json:"create_ok"`
	CreateMS float64 `json:"create_ms"`
}

// Cleanup is what was left behind by a --local server after its shutdown.
type Cleanup struct {
	Server   string   `json:"server"`
	OK       bool     `json:"ok"`
	Leftover []string `json:"leftover,omitempty"`
}

// WriteTable writes r as readable tables.
func WriteTable(w io.Writer, r *Report) error {
	m := r.Machine
	mode := "remote"
	if r.Setup.Local {
		mode = "local"
	}
	fmt.Fprintf(w, "declaw bench: template %s, %s server %s, %d runs%s\n", r.Setup.Template, mode, r.Setup.Server, r.Setup.Runs, map[bool]string{true: " (quick)"}[r.Setup.Quick])
	fmt.Fprintf(w, "machine: %d CPUs, %.1f GiB RAM, Linux %s, runsc %s, %s\n", m.NProc, m.MemTotalMiB/1024, m.Kernel, m.RunscVersion, m.GoVersion)
	fmt.Fprintf(w, "load average (1/5/15 min): %.2f %.2f %.2f at start, %.2f %.2f %.2f at end\n",
		m.LoadAvgStart[0], m.LoadAvgStart[1], m.LoadAvgStart[2], m.LoadAvgEnd[0], m.LoadAvgEnd[1], m.LoadAvgEnd[2])
	fmt.Fprintf(w, "warm pool: %d; cold: %s\n\n", r.Setup.WarmPool, r.Setup.ColdMode)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\tN\tMIN\tP50\tP95\tP99\tMAX\t\n", nameWidth, "LATENCY (ms)")
	for _, c := range []struct {
		name string
		c    Compared
	}{
		{"create + run(true), warm pool", r.CreateWarm},
		{"create + run(true), cold", r.CreateCold},
		{"commands.run(\"true\")", r.Exec},
		{"shell start inside (exec chain)", r.ShellStart},
	} {
		row(tw, c.name, c.c.Latency)
		row(tw, "  baseline: "+c.c.BaselineName, c.c.Baseline)
		fmt.Fprintf(tw, "%-*s\t\t\t%s\t%s\t%s\t\t\n", nameWidth, "  ratio", ratio(c.c.Ratio.P50), ratio(c.c.Ratio.P95), ratio(c.c.Ratio.P99))
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\tOK\tSUCCESS\tWALL ms\tP50 ms\tP95 ms\t\n", nameWidth, "CONCURRENT CREATES")
	for _, c := range r.Concurrent {
		fmt.Fprintf(tw, "%-*s\t%d/%d\t%.2f\t%s\t%s\t%s\t\n", nameWidth, fmt.Sprintf("%d at once", c.N), c.OK, c.N, c.SuccessRate, num(c.WallMS), num(c.Latency.P50), num(c.Latency.P95))
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\tN\tP50 ms\tP95 ms\tMB/s at p50\t\n", nameWidth, "FILES")
	for _, f := range r.Files {
		for _, op := range []struct {
			name string
			io   IO
		}{{"write", f.Write}, {"read", f.Read}} {
			fmt.Fprintf(tw, "%-*s\t%d\t%s\t%s\t%s\t\n", nameWidth, size(f.SizeBytes)+" "+op.name, op.io.Latency.N, num(op.io.Latency.P50), num(op.io.Latency.P95), num(op.io.MBPerSec))
		}
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\tHOST DELTA MiB\tPER SANDBOX MiB\tCGROUP SUM MiB\tCGROUP PER SANDBOX MiB\tIDLE CPU %% (PER SANDBOX)\tCREATE AT N\t\n", nameWidth, "IDLE MEMORY AND CPU")
	for _, d := range r.IdleMemory {
		create := "FAILED"
		if d.CreateOK {
			create = num(d.CreateMS) + " ms"
		}
		fmt.Fprintf(tw, "%-*s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", nameWidth, fmt.Sprintf("%d alive", d.Sandboxes), num(d.MemAvailableDeltaMiB), num(d.PerSandboxMiB),
			num(d.CgroupSumMiB), num(d.CgroupPerSandboxMiB), idleCPU(d), create)
	}
	tw.Flush()

	if t := r.Templates; t != nil {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "%-*s\tN\tMIN\tP50\tP95\tP99\tMAX\t\n", nameWidth, "CUSTOM TEMPLATE (ms)")
		row(tw, fmt.Sprintf("cold build, %d steps", t.Steps), t.ColdBuild)
		row(tw, "cached rebuild", t.CachedRebuild)
		fmt.Fprintf(tw, "%-*s\t\t\t%s\t\t\t\t\n", nameWidth, "  ratio cached / cold (goal < 0.10)", ratio(t.RebuildRatio))
		row(tw, "create + run(true) from it, cold", t.CreateCustom.Latency)
		row(tw, "  baseline: "+t.CreateCustom.BaselineName, t.CreateCustom.Baseline)
		fmt.Fprintf(tw, "%-*s\t\t\t%s\t%s\t%s\t\t\n", nameWidth, "  ratio", ratio(t.CreateCustom.Ratio.P50), ratio(t.CreateCustom.Ratio.P95), ratio(t.CreateCustom.Ratio.P99))
		tw.Flush()
	}

	for _, c := range r.Cleanup {
		if c.OK {
			fmt.Fprintf(w, "\ncleanup of %s: nothing left behind", c.Server)
		} else {
			fmt.Fprintf(w, "\ncleanup of %s: LEFT BEHIND %s", c.Server, strings.Join(c.Leftover, ", "))
		}
	}
	fmt.Fprintf(w, "\nduration: %.1f s\n", r.DurationS)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "ERROR: %s\n", e)
	}
	return nil
}

// nameWidth pads the first column: tabwriter aligns every cell right, and
// names read better left-aligned.
const nameWidth = 40

func row(tw io.Writer, name string, s Summary) {
	fmt.Fprintf(tw, "%-*s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", nameWidth, name, s.N, num(s.Min), num(s.P50), num(s.P95), num(s.P99), num(s.Max))
}

// num formats a figure with 3 significant-ish digits; "-" for none.
func num(v float64) string {
	switch {
	case v <= 0:
		return "-"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func ratio(v float64) string {
	if v <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v)
}

func size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// idleCPU formats the idle CPU of a density row: all N together, and per sandbox.
func idleCPU(d Density) string {
	if d.IdleCPUReadable == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f (%.3f)", d.IdleCPUSumPct, d.IdleCPUPerSandboxPct)
}
