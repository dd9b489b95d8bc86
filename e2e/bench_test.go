package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// Benchmarks report latency percentiles as custom metrics; compare each to
// its baseline from the same run:
//
//	go test ./e2e -run '^$' -bench . -benchtime 20x
//
// BenchmarkCreateToFirstCommand (declaw create + first command) vs
// BenchmarkRawRunscRun (runsc run of the same template, same flags, no
// API/network/envd), and BenchmarkCommandRunTrue (commands.run("true")
// through the API) vs BenchmarkNativeSpawn (fork+exec of /bin/true on the host).

type latencies []time.Duration

func (l latencies) report(b *testing.B, prefix string) {
	if len(l) == 0 {
		return
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	pct := func(p float64) float64 {
		i := int(p * float64(len(l)-1))
		return float64(l[i].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), prefix+"p50-ms")
	b.ReportMetric(pct(0.95), prefix+"p95-ms")
	b.ReportMetric(pct(0.99), prefix+"p99-ms")
}

func BenchmarkCreateToFirstCommand(b *testing.B) {
	s := startServer(b)
	var lat latencies
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		var out struct {
			SandboxID string `json:"sandbox_id"`
		}
		s.must(201, "POST", "/sandboxes", map[string]any{"template": "python"}, &out)
		res := s.run(out.SandboxID, "true")
		lat = append(lat, time.Since(start))
		if res.ExitCode != 0 {
			b.Fatalf("first command: %+v", res)
		}
		b.StopTimer()
		s.must(200, "DELETE", "/sandboxes/"+out.SandboxID, nil, nil)
		b.StartTimer()
	}
	b.StopTimer()
	lat.report(b, "")
}

func BenchmarkRawRunscRun(b *testing.B) {
	n := startServer(b).net // only for the namespace and a built template
	rootfs := filepath.Join(templatesDir(), "python", "rootfs")
	if _, err := os.Stat(rootfs); err != nil {
		b.Fatalf("python template not built: %v", err)
	}
	dir := b.TempDir()
	bundle := filepath.Join(dir, "bundle")
	os.MkdirAll(bundle, 0o755)
	spec := fmt.Sprintf(`{"ociVersion":"1.0.2","process":{"args":["/bin/true"],"cwd":"/","env":["PATH=/usr/bin:/bin"],"user":{"uid":0,"gid":0}},
"root":{"path":%q,"readonly":true},"hostname":"bench",
"mounts":[{"destination":"/proc","type":"proc","source":"proc"},{"destination":"/dev","type":"tmpfs","source":"tmpfs"},{"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","noexec","nodev","ro"]}],
"linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"}]}}`, rootfs)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(spec), 0o644); err != nil {
		b.Fatal(err)
	}
	var lat latencies
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("bench-%s-%d", randHex(3), i)
		start := time.Now()
		cmd := n.Host.Command(context.Background(), "runsc", "--root", filepath.Join(dir, "runsc"), "--platform=ptrace", "--network=host", "--overlay2=all:memory",
			"run", "--bundle", bundle, id)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("runsc run: %v\n%s", err, out)
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		n.Host.Command(context.Background(), "runsc", "--root", filepath.Join(dir, "runsc"), "delete", "--force", id).Run()
		b.StartTimer()
	}
	b.StopTimer()
	lat.report(b, "")
}

func BenchmarkCommandRunTrue(b *testing.B) {
	s := startServer(b)
	id := s.create(nil)
	s.run(id, "true")
	var lat latencies
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		s.run(id, "true")
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	lat.report(b, "")
}

func BenchmarkNativeSpawn(b *testing.B) {
	var lat latencies
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := exec.Command("/bin/bash", "-c", "true").Run(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	lat.report(b, "")
}
