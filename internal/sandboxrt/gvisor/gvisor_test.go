package gvisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/sandboxrt/rttest"
	"github.com/declaw/declaw/internal/template"
	"github.com/declaw/declaw/internal/testenv"
)

func TestBuildSpec(t *testing.T) {
	spec := sandboxrt.Spec{
		ID:       "sbx-1",
		RootFS:   "/tmpl/rootfs",
		Hostname: "h",
		Init:     []string{"/usr/local/bin/envd", "-port", "49983"},
		Env:      []string{"A=1"},
		Mounts: []sandboxrt.Mount{
			{Source: "/host/envd", Target: "/usr/local/bin/envd", ReadOnly: true},
			{Source: "/host/resolv", Target: "/etc/resolv.conf/"},
		},
	}
	got, err := buildSpec(spec, sandboxrt.Resources{CPUs: 1.5, MemoryMB: 512, Pids: 100}, "/declaw/sbx-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range got.Linux.Namespaces {
		if ns.Type == "network" {
			t.Errorf("spec lists a network namespace; runsc would give the sandbox an empty netns")
		}
	}
	if got.Root.Readonly || got.Root.Path != "/tmpl/rootfs" {
		t.Errorf("root = %+v, want the template, writable (under --overlay)", got.Root)
	}
	if !slices.Equal(got.Process.Args, spec.Init) || got.Process.User.UID != 0 {
		t.Errorf("process = %+v, want init argv as root", got.Process)
	}
	if !slices.Contains(got.Process.Env, "A=1") || !slices.Contains(got.Process.Env, defaultPath) {
		t.Errorf("env = %q, want A=1 plus a default PATH", got.Process.Env)
	}
	caps := got.Process.Capabilities
	if caps == nil || !slices.Contains(caps.Bounding, "CAP_CHOWN") || slices.Contains(caps.Bounding, "CAP_SYS_ADMIN") {
		t.Errorf("capabilities = %+v, want the default set without SYS_ADMIN", caps)
	}
	r := got.Linux.Resources
	if r == nil || r.Memory.Limit != 512<<20 || r.CPU.Quota != 150000 || r.CPU.Period != 100000 || r.Pids.Limit != hostPidsLimit(100) ||
		!slices.Contains(got.Process.Rlimits, ociRlimit{Type: "RLIMIT_NPROC", Hard: 100, Soft: 100}) {
		t.Errorf("resources = %+v", r)
	}
	if got.Linux.CgroupsPath != "/declaw/sbx-1" {
		t.Errorf("cgroupsPath = %q", got.Linux.CgroupsPath)
	}
	var binds []ociMount
	for _, m := range got.Mounts {
		if m.Type == "bind" {
			binds = append(binds, m)
		}
	}
	want := []ociMount{
		{Destination: "/usr/local/bin/envd", Type: "bind", Source: "/host/envd", Options: []string{"rbind", "ro"}},
		{Destination: "/etc/resolv.conf", Type: "bind", Source: "/host/resolv", Options: []string{"rbind"}},
	}
	if fmt.Sprint(binds) != fmt.Sprint(want) {
		t.Errorf("bind mounts = %+v, want %+v", binds, want)
	}

	// PATH given by the caller is kept; no limits means no resources section.
	spec.Env = []string{"PATH=/bin"}
	got, err = buildSpec(spec, sandboxrt.Resources{}, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Process.Env, []string{"PATH=/bin"}) || got.Linux.Resources != nil {
		t.Errorf("env = %q resources = %+v; want caller's PATH only, no resources", got.Process.Env, got.Linux.Resources)
	}

	for _, bad := range []sandboxrt.Spec{
		{ID: "x"},
		{ID: "x", Init: []string{"/i"}, Mounts: []sandboxrt.Mount{{Source: "/a", Target: "rel"}}},
	} {
		if _, err := buildSpec(bad, sandboxrt.Resources{}, ""); err == nil {
			t.Errorf("buildSpec(%+v) succeeded, want an error", bad)
		}
	}
}

func TestStateFileID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"sbx-1_sandbox:sbx-1.state", "sbx-1", true},
		{"sbx-1_sandbox:sbx-1.lock", "sbx-1", true},
		{"a_sandbox:b.state", "", false},
		{"sbx-1.json", "", false},
		{"../x_sandbox:../x.state", "", false},
	}
	for _, tt := range tests {
		id, ok := stateFileID(tt.name)
		if id != tt.id || ok != tt.ok {
			t.Errorf("stateFileID(%q) = %q, %v; want %q, %v", tt.name, id, ok, tt.id, tt.ok)
		}
	}
}

func TestMergeResources(t *testing.T) {
	got := mergeResources(sandboxrt.Resources{MemoryMB: 256}, sandboxrt.Resources{CPUs: 1, MemoryMB: 1024, Pids: 50})
	if want := (sandboxrt.Resources{CPUs: 1, MemoryMB: 256, Pids: 50}); got != want {
		t.Errorf("mergeResources = %+v, want %+v", got, want)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{Runsc: "/nonexistent/runsc", StateDir: t.TempDir()}); err == nil {
		t.Errorf("New with a missing runsc succeeded")
	}
}

func TestStartRejectsBadSpecs(t *testing.T) {
	if _, err := exec.LookPath("runsc"); err != nil {
		t.Skip("runsc not installed")
	}
	d, err := New(Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	good := sandboxrt.Spec{ID: "ok-1", RootFS: t.TempDir(), NetNSPath: "/proc/self/ns/net", Init: []string{"/bin/true"}}
	for name, mod := range map[string]func(*sandboxrt.Spec){
		"bad id":     func(s *sandboxrt.Spec) { s.ID = "../x" },
		"no netns":   func(s *sandboxrt.Spec) { s.NetNSPath = "" },
		"no rootfs":  func(s *sandboxrt.Spec) { s.RootFS = "/nonexistent" },
		"no init":    func(s *sandboxrt.Spec) { s.Init = nil },
		"bad netns":  func(s *sandboxrt.Spec) { s.NetNSPath = "/nonexistent/ns" },
		"bad target": func(s *sandboxrt.Spec) { s.Mounts = []sandboxrt.Mount{{Source: "/a", Target: "b"}} },
	} {
		s := good
		mod(&s)
		if err := d.Start(t.Context(), s); err == nil {
			t.Errorf("%s: Start succeeded, want an error", name)
		}
	}
	if ents, _ := os.ReadDir(d.bundles); len(ents) != 0 {
		t.Errorf("rejected starts left %d bundles", len(ents))
	}
}

// --- root tests ---

func requireRoot(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "runsc")
}

// testRootFS returns a root filesystem with python3: $DECLAW_TEST_ROOTFS,
// else the dev machine's prebuilt one, else the "python" template built
// once per machine under /var/tmp/declaw-test.
func testRootFS(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("DECLAW_TEST_ROOTFS"); p != "" {
		return p
	}
	const dev = "/var/tmp/declaw-dev/rootfs-python"
	if _, err := os.Stat(filepath.Join(dev, "usr/bin/python3")); err == nil {
		return dev
	}
	m, err := template.New(template.Config{StateDir: "/var/tmp/declaw-test", Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	tm, err := m.Ensure(ctx, "python")
	if err != nil {
		t.Fatalf("build test rootfs: %v", err)
	}
	return tm.RootFS
}

// newNetNS creates a throwaway netns with loopback up and returns its path.
func newNetNS(t testing.TB) string {
	t.Helper()
	name := rttest.UniqueID("dclw-t")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v: %s", name, err, out)
	}
	return "/var/run/netns/" + name
}

// dialInNetNS dials addr from inside the netns at nsPath; the socket stays
// in that namespace after the thread returns to its own.
func dialInNetNS(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer orig.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		// Create the socket here; connect may continue on any thread.
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func cgroupParentFor(stateDir string) string {
	h := sha256.Sum256([]byte(stateDir))
	return "declaw-test-" + hex.EncodeToString(h[:4])
}

func newTestDriver(t testing.TB, stateDir string) *Driver {
	t.Helper()
	// As the server runs it: every sandbox with a disk of its own.
	d, err := New(Config{
		StateDir:     stateDir,
		CgroupParent: cgroupParentFor(stateDir),
		Defaults:     sandboxrt.Resources{DiskMB: 256},
		Logf:         t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// leaks lists what sandbox id left under stateDir, in cgroups and as processes.
func leaks(stateDir, id string) []string {
	var out []string
	root := filepath.Join(stateDir, "runsc")
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, filepath.Join(stateDir, "bundles", id)+"/") {
				out = append(out, "mount: "+line)
			}
		}
	}
	for _, p := range []string{
		filepath.Join(stateDir, "bundles", id),
		filepath.Join(root, id+"_sandbox:"+id+".state"),
	} {
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	for _, dir := range cgroupDirs("/" + cgroupParentFor(stateDir) + "/" + id) {
		if _, err := os.Stat(dir); err == nil {
			out = append(out, dir)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		// runsc run and the sandbox name the id; the gofer only its bundle.
		bundle := filepath.Join(stateDir, "bundles", id)
		ours := slices.ContainsFunc(args, func(a string) bool { return a == id || strings.HasSuffix(a, bundle) })
		if slices.Contains(args, "--root="+root) && ours {
			out = append(out, "process "+filepath.Base(filepath.Dir(p))+": "+strings.Join(args, " "))
		}
	}
	return out
}

func harness(t *testing.T) rttest.Harness {
	return rttest.Harness{
		New:    func(t *testing.T, dir string) sandboxrt.Runtime { return newTestDriver(t, dir) },
		RootFS: testRootFS(t),
		NetNS:  func(t *testing.T) string { return newNetNS(t) },
		Dial: func(ctx context.Context, spec sandboxrt.Spec, port int) (net.Conn, error) {
			return dialInNetNS(ctx, spec.NetNSPath, "127.0.0.1:"+strconv.Itoa(port))
		},
		Leaks: leaks,
	}
}

func TestConformance(t *testing.T) {
	requireRoot(t)
	rttest.Run(t, harness(t))
}

func TestResourceLimits(t *testing.T) {
	requireRoot(t)
	h := harness(t)
	rt, dir := h.Runtime(t)
	d := rt.(*Driver)
	spec := h.Spec(t, "limits")
	spec.Resources = sandboxrt.Resources{CPUs: 0.5, MemoryMB: 200, Pids: 80, DiskMB: 64}
	var evMu sync.Mutex
	var events []sandboxrt.Event
	d.Notify(func(ev sandboxrt.Event) {
		evMu.Lock()
		events = append(events, ev)
		evMu.Unlock()
	})
	h.Start(t, rt, spec)
	h.WaitAgent(t, spec)

	// The root filesystem takes 64 MiB of writes, then ENOSPC; the sandbox lives on.
	code, body, err := h.Do(spec, "PUT", "/tmp/big", make([]byte, 80<<20), 60*time.Second)
	if err != nil || code != 500 || !strings.Contains(string(body), "No space left on device") {
		t.Errorf("writing 80 MiB to /tmp on a 64 MiB disk = %d %q %v; want 500 No space left on device", code, body, err)
	}
	if code, body, err := h.Do(spec, "PUT", "/tmp/big", make([]byte, 1<<20), 30*time.Second); err != nil || code != 201 {
		t.Errorf("rewriting it with 1 MiB after ENOSPC = %d %q %v; want 201", code, body, err)
	}
	if st, err := rt.Stats(t.Context(), spec.ID); err != nil || st.DiskLimitBytes < 60<<20 || st.DiskLimitBytes > 64<<20 || st.MemoryLimitBytes != 200<<20 {
		t.Errorf("Stats = %+v, %v; want a disk limit of about 64 MiB and a memory limit of 200 MiB", st, err)
	}

	cg := d.cgroupsPath(spec.ID)
	for file, want := range map[string]string{
		"memory/" + cg + "/memory.limit_in_bytes": strconv.Itoa(200 << 20),
		"pids/" + cg + "/pids.max":                strconv.FormatInt(hostPidsLimit(80), 10),
		"cpu/" + cg + "/cpu.cfs_quota_us":         "50000",
	} {
		b, err := os.ReadFile(filepath.Join(cgroupMount, file))
		if got := strings.TrimSpace(string(b)); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", file, got, err, want)
		}
	}

	// The pids limit stops a fork loop with EAGAIN, and the sandbox lives on.
	code, body, err = h.Do(spec, "POST", "/_spawn/300", nil, 60*time.Second)
	t.Logf("spawn 300 under pids=80: %d %s %v", code, body, err)
	var r struct {
		Started int    `json:"started"`
		Error   string `json:"error"`
	}
	if err != nil || code != 200 || json.Unmarshal(body, &r) != nil {
		t.Fatalf("spawn 300 = %d %q %v; want a reply", code, body, err)
	}
	if r.Started >= 80 || r.Started < 10 || !strings.Contains(r.Error, "Resource temporarily unavailable") {
		t.Errorf("spawn 300 under pids=80 started %d (%s); want fewer than 80, stopped by EAGAIN", r.Started, r.Error)
	}

	// Memory within the limit works, far above it does not.
	if code, _, err := h.Do(spec, "POST", "/_alloc/32", nil, 30*time.Second); err != nil || code != 200 {
		t.Errorf("alloc 32 MiB under a 200 MiB limit = %d, %v", code, err)
	}
	code, body, err = h.Do(spec, "POST", "/_alloc/600", nil, 60*time.Second)
	t.Logf("alloc 600 MiB under a 200 MiB limit: %d %q %v", code, body, err)
	if err == nil && code == 200 {
		t.Errorf("allocating 600 MiB under a 200 MiB limit succeeded")
	}
	if err != nil {
		// The sandbox was OOM-killed as a whole: it must report stopped.
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := rt.State(t.Context(), spec.ID)
			if err == nil && st == sandboxrt.StateStopped {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("after the OOM kill State = %q, %v; want stopped", st, err)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if b, err := os.ReadFile(filepath.Join(cgroupMount, "memory", cg, "memory.max_usage_in_bytes")); err == nil {
		// The kernel may charge a page or a batch past the limit before it OOM-kills.
		if n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); n > 200<<20+1<<20 {
			t.Errorf("memory.max_usage_in_bytes = %d, above the limit", n)
		}
	}
	if err != nil {
		// The OOM was reported, then the exit, in that order.
		deadline := time.Now().Add(10 * time.Second)
		var kinds []sandboxrt.EventKind
		for time.Now().Before(deadline) {
			evMu.Lock()
			kinds = kinds[:0]
			for _, ev := range events {
				if ev.ID == spec.ID {
					kinds = append(kinds, ev.Kind)
				}
			}
			evMu.Unlock()
			if slices.Contains(kinds, sandboxrt.EventExit) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(kinds) < 2 || kinds[0] != sandboxrt.EventOOM || kinds[len(kinds)-1] != sandboxrt.EventExit {
			t.Errorf("events after the OOM kill = %v; want oom ... exit", kinds)
		}
	}
	if err := rt.Destroy(t.Context(), spec.ID); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if l := leaks(dir, spec.ID); len(l) > 0 {
		t.Errorf("leaks after Destroy: %q", l)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), spec.ID) {
		t.Errorf("a mount of %s is left after Destroy", spec.ID)
	}
	evMu.Lock()
	n := len(events)
	evMu.Unlock()
	if err := rt.Destroy(t.Context(), spec.ID); err != nil {
		t.Fatal(err)
	}
	// Destroy's own kill is no event.
	spec2 := h.Spec(t, "limits2")
	h.Start(t, rt, spec2)
	if err := rt.Destroy(t.Context(), spec2.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	evMu.Lock()
	defer evMu.Unlock()
	for _, ev := range events[n:] {
		if ev.ID == spec2.ID {
			t.Errorf("Destroy of %s reported %+v", spec2.ID, ev)
		}
	}
}

// TestCleanupVanishedNetNS: the server died and the slot's netns was
// removed too; a new driver still finds and destroys the container.
func TestCleanupVanishedNetNS(t *testing.T) {
	requireRoot(t)
	h := harness(t)
	dir := t.TempDir()
	d1 := newTestDriver(t, dir)
	name := rttest.UniqueID("dclw-v")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	nsPath := "/var/run/netns/" + name
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	spec := sandboxrt.Spec{ID: rttest.UniqueID("vanish"), RootFS: h.RootFS, NetNSPath: nsPath, Init: []string{"/bin/sleep", "infinity"}}
	if err := d1.Start(t.Context(), spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = d1.Destroy(context.Background(), spec.ID) })
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	d2 := newTestDriver(t, dir)
	if st, err := d2.State(t.Context(), spec.ID); err != nil || st != sandboxrt.StateRunning {
		t.Errorf("State with the netns path gone = %q, %v; want running (reached via /proc/PID/ns/net)", st, err)
	}
	if err := d2.Cleanup(t.Context()); err != nil {
		t.Errorf("Cleanup: %v", err)
	}
	if l := leaks(dir, spec.ID); len(l) > 0 {
		t.Errorf("leaks after Cleanup: %q", l)
	}
	for _, cg := range cgroupDirs("/" + cgroupParentFor(dir)) {
		if _, err := os.Stat(cg); err == nil {
			t.Errorf("parent cgroup %s left after Cleanup", cg)
		}
	}
}

// BenchmarkStartDestroy: start and destroy of a sandbox with its own disk
// (as the server runs it) beside the same with runsc's in-memory overlay
// (the cost of the disk: image copy, loop device, two mounts).
func BenchmarkStartDestroy(b *testing.B) {
	requireRoot(b)
	root := testRootFS(b)
	ns := newNetNS(b)
	for _, c := range []struct {
		name   string
		diskMB int64
	}{{"disk", 2048}, {"memory-overlay", 0}} {
		b.Run(c.name, func(b *testing.B) {
			d := newTestDriver(b, b.TempDir())
			d.cfg.Logf = func(string, ...any) {}
			d.cfg.Defaults.DiskMB = c.diskMB
			b.Cleanup(func() { _ = d.Cleanup(context.Background()) })
			var startTotal, destroyTotal time.Duration
			for i := 0; b.Loop(); i++ {
				spec := sandboxrt.Spec{ID: fmt.Sprintf("bench-%d", i), RootFS: root, NetNSPath: ns, Init: []string{"/bin/sleep", "infinity"}}
				t0 := time.Now()
				if err := d.Start(context.Background(), spec); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := d.Destroy(context.Background(), spec.ID); err != nil {
					b.Fatal(err)
				}
				startTotal += t1.Sub(t0)
				destroyTotal += time.Since(t1)
			}
			b.ReportMetric(float64(startTotal.Milliseconds())/float64(b.N), "start-ms/op")
			b.ReportMetric(float64(destroyTotal.Milliseconds())/float64(b.N), "destroy-ms/op")
		})
	}
}

// BenchmarkRawRunscRun is the baseline: a plain "runsc run" of /bin/true
// in the same kind of netns with the same flags, start to exit and delete.
func BenchmarkRawRunscRun(b *testing.B) {
	requireRoot(b)
	rootfs := testRootFS(b)
	ns := newNetNS(b)
	d := newTestDriver(b, b.TempDir())
	b.Cleanup(func() { _ = d.Cleanup(context.Background()) })
	bundle := b.TempDir()
	spec, err := buildSpec(sandboxrt.Spec{ID: "raw", RootFS: rootfs, Init: []string{"/bin/true"}}, sandboxrt.Resources{}, "")
	if err != nil {
		b.Fatal(err)
	}
	if err := sandboxrt.WriteJSON(filepath.Join(bundle, "config.json"), spec); err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		cmd := exec.Command(d.runscPath, append(d.globalFlags(), "run", "--bundle="+bundle, fmt.Sprintf("raw-%d", i))...)
		if err := startInNetNS(ns, cmd); err != nil {
			b.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			b.Fatalf("runsc run: %v", err)
		}
	}
}

func TestProcHelpers(t *testing.T) {
	if got := parentPid(os.Getpid()); got != os.Getppid() {
		t.Errorf("parentPid(self) = %d, want %d", got, os.Getppid())
	}
	if processGone(os.Getpid()) {
		t.Errorf("processGone(self) = true")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip("no true(1)")
	}
	if !processGone(cmd.Process.Pid) {
		t.Errorf("processGone(reaped child %d) = false", cmd.Process.Pid)
	}
}
