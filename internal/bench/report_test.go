package bench

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// sampleReport is a fixed report with every section filled.
func sampleReport() *Report {
	raw := Summary{N: 5, Min: 185, P50: 247, P95: 317, P99: 317, Max: 317}
	return &Report{
		Machine: Machine{NProc: 2, MemTotalMiB: 24064, Kernel: "6.1.0", RunscVersion: "0.0~20221219.0", GoVersion: "go1.26",
			LoadAvgStart: [3]float64{0.5, 0.25, 0.125}, LoadAvgEnd: [3]float64{2, 1, 0.5}},
		Setup: Setup{Server: "http://127.0.0.1:1", Local: true, Template: "python", Runs: 5, Quick: true, WarmPool: 2,
			ColdMode: "server keeps no warm sandbox of the template; every create boots one"},
		CreateWarm: Compare(Summary{N: 5, Min: 45.4, P50: 52.9, P95: 65.4, P99: 65.4, Max: 65.4}, "raw runsc run /bin/true", raw),
		CreateCold: Compare(Summary{N: 5, Min: 311, P50: 438, P95: 575, P99: 575, Max: 575}, "raw runsc run /bin/true", raw),
		Exec:       Compare(Summary{N: 50, Min: 1.2, P50: 2.5, P95: 4, P99: 6, Max: 9}, "native /bin/bash -c true", Summary{N: 50, Min: 1, P50: 2, P95: 3, P99: 4, Max: 5}),
		ShellStart: Compare(Summary{N: 5, Min: 1.1, P50: 1.3, P95: 1.6, P99: 1.6, Max: 1.6}, "same chain on the host", Summary{N: 5, Min: 0.9, P50: 1, P95: 1.2, P99: 1.2, Max: 1.2}),
		Concurrent: []Concurrent{{N: 5, OK: 5, SuccessRate: 1, WallMS: 477, Latency: Summary{N: 5, P50: 344, P95: 477}}},
		Files: []FileIO{{SizeBytes: 1 << 10, Write: IO{Latency: Summary{N: 5, P50: 3.25, P95: 12.9}, MBPerSec: 0.31}, Read: IO{Latency: Summary{N: 5, P50: 2.97, P95: 5.54}, MBPerSec: 0.34}},
			{SizeBytes: 10 << 20, Write: IO{Latency: Summary{N: 5, P50: 63, P95: 76.6}, MBPerSec: 167}, Read: IO{Latency: Summary{N: 5, P50: 23.7, P95: 54.3}, MBPerSec: 442}}},
		IdleMemory: []Density{{Sandboxes: 10, MemAvailableDeltaMiB: 198, PerSandboxMiB: 19.8, CgroupSumMiB: 141, CgroupPerSandboxMiB: 14.1, CgroupReadable: 10, IdleCPUSumPct: 0.21, IdleCPUPerSandboxPct: 0.021, IdleCPUReadable: 10, CreateOK: true, CreateMS: 73.5}},
		Cleanup:    []Cleanup{{Server: "local server A", OK: true}, {Server: "local server B", Leftover: []string{"netns db1-s0"}}},
		DurationS:  17.6,
		Notes:      []string{"a note"},
		Errors:     []string{"create: boom"},
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, sampleReport()); err != nil {
		t.Fatalf("WriteTable: %v", err)
	}
	golden := filepath.Join("testdata", "report.golden")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("WriteTable output differs from %s (run with -update if intended):\n got:\n%s\nwant:\n%s", golden, b.Bytes(), want)
	}
}

func TestWriteTableEmptyReport(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, &Report{}); err != nil {
		t.Fatalf("WriteTable(empty): %v", err)
	}
	if !bytes.Contains(b.Bytes(), []byte("LATENCY (ms)")) {
		t.Errorf("WriteTable(empty) = %q, want the headers", b.String())
	}
}

// TestReportJSONKeys pins the JSON field names CI and docs/bench.md rely on.
func TestReportJSONKeys(t *testing.T) {
	b, err := json.Marshal(sampleReport())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"cleanup", "concurrent", "create_cold", "create_warm", "duration_s", "errors", "exec", "files", "idle_memory", "machine", "notes", "setup", "shell_start"}
	if !slices.Equal(keys, want) {
		t.Errorf("report JSON keys = %v, want %v", keys, want)
	}
	cw := m["create_warm"].(map[string]any)
	for _, k := range []string{"latency", "baseline", "baseline_name", "ratio"} {
		if _, ok := cw[k]; !ok {
			t.Errorf("create_warm has no %q: %v", k, cw)
		}
	}
	lat := cw["latency"].(map[string]any)
	for _, k := range []string{"n", "min_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"} {
		if _, ok := lat[k]; !ok {
			t.Errorf("create_warm.latency has no %q: %v", k, lat)
		}
	}
}
