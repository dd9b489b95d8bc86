// Package rttest is the conformance suite every sandboxrt driver passes.
//
// The suite starts sandboxes whose PID 1 is a small Python HTTP agent
// (AgentScript) instead of envd, so it needs no other Declaw component: the
// agent serves files (GET), writes files (PUT), reports its environment,
// allocates memory and spawns processes on request. The driver's test
// supplies a Harness: how to make a runtime, a root filesystem with
// python3, a network namespace, and how to dial into a sandbox.
package rttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/sandboxrt"
)

// AgentPort is the TCP port the agent listens on (all addresses) inside the sandbox.
const AgentPort = 8000

// AgentScript is PID 1 of the suite's sandboxes, run with "python3 -c".
//
//	GET  /any/path        the file (SimpleHTTPRequestHandler, relative to /)
//	PUT  /any/path        write the body to that path
//	GET  /_info           {"env": {...}, "hostname": ..., "uid": ..., "pid": ...}
//	POST /_alloc/<MB>     touch MB MiB of memory, 200 if it worked
//	POST /_spawn/<N>      start N sleeping children, reply with how many started
const AgentScript = `
import http.server, json, os, socket, subprocess, sys
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, code, body):
        b = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def do_GET(self):
        if self.path == "/_info":
            return self.reply(200, json.dumps({"env": dict(os.environ), "hostname": socket.gethostname(), "uid": os.getuid(), "pid": os.getpid()}))
        return super().do_GET()
    def do_PUT(self):
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n)
        try:
            with open(self.path, "wb") as f:
                f.write(data)
        except OSError as e:
            return self.reply(500, str(e))
        self.reply(201, "ok")
    def do_POST(self):
        if self.path.startswith("/_alloc/"):
            mb = int(self.path[len("/_alloc/"):])
            try:
                b = bytearray(mb << 20)
                for i in range(0, len(b), 4096):
                    b[i] = 1
            except MemoryError:
                return self.reply(507, "MemoryError")
            del b
            return self.reply(200, "ok")
        if self.path.startswith("/_spawn/"):
            n = int(self.path[len("/_spawn/"):])
            procs = []
            err = ""
            for i in range(n):
                try:
                    procs.append(subprocess.Popen(["sleep", "60"]))
                except OSError as e:
                    err = str(e)
                    break
            started = len(procs)
            for p in procs:
                p.kill()
                p.wait()
            return self.reply(200, json.dumps({"started": started, "error": err}))
        self.reply(404, "no")
os.chdir("/")
http.server.ThreadingHTTPServer(("", 8000), H).serve_forever()
`

// Harness adapts the suite to one driver.
type Harness struct {
	// New returns a runtime keeping its state in stateDir. Two runtimes
	// over the same stateDir own the same sandboxes (a restarted server).
	New func(t *testing.T, stateDir string) sandboxrt.Runtime
	// RootFS is a template root filesystem with python3 and sleep.
	RootFS string
	// NetNS returns a fresh network namespace path for one sandbox,
	// removed when the test ends.
	NetNS func(t *testing.T) string
	// Dial connects to TCP port on the sandbox started from spec.
	Dial func(ctx context.Context, spec sandboxrt.Spec, port int) (net.Conn, error)
	// Leaks reports what a destroyed sandbox left behind (processes, cgroups,
	// files); nil when it cannot tell. Called after Destroy and Cleanup.
	Leaks func(stateDir, id string) []string
}

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	t.Run("ServeEnvHostname", func(t *testing.T) { testServe(t, h) })
	t.Run("OverlayIsEphemeral", func(t *testing.T) { testOverlay(t, h) })
	t.Run("StateStatsDestroy", func(t *testing.T) { testStateStats(t, h) })
	t.Run("PauseResume", func(t *testing.T) { testPause(t, h) })
	t.Run("FailedStartLeavesNothing", func(t *testing.T) { testFailedStart(t, h) })
	t.Run("MissingMountTarget", func(t *testing.T) { testMissingMountTarget(t, h) })
	t.Run("CleanupAfterCrash", func(t *testing.T) { testCleanupAfterCrash(t, h) })
}

// UniqueID returns a sandbox id made of prefix and a random suffix.
func UniqueID(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(prefix) + "-" + hex.EncodeToString(b[:])
}

// Spec returns a spec running the agent in a fresh netns.
func (h Harness) Spec(t *testing.T, prefix string) sandboxrt.Spec {
	t.Helper()
	return sandboxrt.Spec{
		ID:        UniqueID(prefix),
		RootFS:    h.RootFS,
		NetNSPath: h.NetNS(t),
		Hostname:  "sbx-test",
		Init:      []string{"/usr/bin/python3", "-c", AgentScript},
		Env:       []string{"RTTEST=1", "PATH=/usr/local/bin:/usr/bin:/bin"},
	}
}

// Runtime returns a runtime over a fresh state dir whose Cleanup runs when the test ends.
func (h Harness) Runtime(t *testing.T) (sandboxrt.Runtime, string) {
	t.Helper()
	dir := t.TempDir()
	rt := h.New(t, dir)
	t.Cleanup(func() {
		if err := rt.Cleanup(context.Background()); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	})
	return rt, dir
}

// Start starts spec on rt and registers its Destroy.
func (h Harness) Start(t *testing.T, rt sandboxrt.Runtime, spec sandboxrt.Spec) {
	t.Helper()
	if err := rt.Start(t.Context(), spec); err != nil {
		t.Fatalf("Start(%s): %v", spec.ID, err)
	}
	t.Cleanup(func() {
		if err := rt.Destroy(context.Background(), spec.ID); err != nil {
			t.Errorf("Destroy(%s): %v", spec.ID, err)
		}
	})
}

// Client returns an HTTP client to the agent of spec.
func (h Harness) Client(spec sandboxrt.Spec, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return h.Dial(ctx, spec, AgentPort)
			},
		},
	}
}

// WaitAgent waits until the agent answers, up to 20 s.
func (h Harness) WaitAgent(t *testing.T, spec sandboxrt.Spec) {
	t.Helper()
	c := h.Client(spec, time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := c.Get("http://agent/_info")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent of %s did not answer: %v", spec.ID, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Do sends one request to the agent and returns status and body.
func (h Harness) Do(spec sandboxrt.Spec, method, path string, body []byte, timeout time.Duration) (int, []byte, error) {
	req, err := http.NewRequest(method, "http://agent"+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	resp, err := h.Client(spec, timeout).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (h Harness) checkLeaks(t *testing.T, stateDir, id string) {
	t.Helper()
	if h.Leaks == nil {
		return
	}
	if l := h.Leaks(stateDir, id); len(l) > 0 {
		t.Errorf("sandbox %s left behind: %s", id, strings.Join(l, "; "))
	}
}

func testServe(t *testing.T, h Harness) {
	rt, _ := h.Runtime(t)
	spec := h.Spec(t, "serve")
	mountSrc := filepath.Join(t.TempDir(), "mounted.txt")
	if err := os.WriteFile(mountSrc, []byte("from the host"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec.Mounts = []sandboxrt.Mount{{Source: mountSrc, Target: "/etc/issue", ReadOnly: true}}
	before := treeFingerprint(t, h.RootFS)
	h.Start(t, rt, spec)
	h.WaitAgent(t, spec)
	t.Cleanup(func() {
		// Registered after Start's Destroy, so it runs first; destroy here to compare after.
		_ = rt.Destroy(context.Background(), spec.ID)
		if after := treeFingerprint(t, h.RootFS); after != before {
			t.Errorf("template %s changed while a sandbox ran on it", h.RootFS)
		}
	})

	code, body, err := h.Do(spec, "GET", "/_info", nil, 5*time.Second)
	if err != nil || code != 200 {
		t.Fatalf("GET /_info = %d, %v", code, err)
	}
	var info struct {
		Env      map[string]string `json:"env"`
		Hostname string            `json:"hostname"`
		UID      int               `json:"uid"`
		PID      int               `json:"pid"`
	}
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatalf("parse /_info %q: %v", body, err)
	}
	if info.Env["RTTEST"] != "1" || info.Hostname != "sbx-test" || info.UID != 0 || info.PID != 1 {
		t.Errorf("/_info = %+v; want RTTEST=1 env, hostname sbx-test, uid 0, pid 1", info)
	}
	for k := range info.Env {
		if strings.HasPrefix(k, "GO") || k == "SSH_AUTH_SOCK" || k == "USER" {
			t.Errorf("host environment leaked into PID 1: %s", k)
		}
	}
	code, body, err = h.Do(spec, "GET", "/etc/issue", nil, 5*time.Second)
	if err != nil || code != 200 || string(body) != "from the host" {
		t.Errorf("GET bind-mounted file = %d %q %v; want the host file's content", code, body, err)
	}
}

// treeFingerprint hashes the names, kinds, sizes and modification times
// of everything under root.
func treeFingerprint(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v %d %d\n", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatalf("walk template %s: %v", root, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func testMissingMountTarget(t *testing.T, h Harness) {
	rt, dir := h.Runtime(t)
	spec := h.Spec(t, "mnt")
	src := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := "/opt/rttest-missing-" + spec.ID + "/f"
	spec.Mounts = []sandboxrt.Mount{{Source: src, Target: target}}
	before := treeFingerprint(t, h.RootFS)
	if err := rt.Start(t.Context(), spec); err != nil {
		t.Logf("Start with a missing mount target: %v", err)
	} else {
		h.WaitAgent(t, spec)
		code, body, err := h.Do(spec, "GET", target, nil, 5*time.Second)
		if err != nil || code != 200 || string(body) != "x" {
			t.Errorf("GET %s = %d %q %v; want the mounted file", target, code, body, err)
		}
		if err := rt.Destroy(t.Context(), spec.ID); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	}
	if after := treeFingerprint(t, h.RootFS); after != before {
		t.Errorf("a bind mount to a missing target changed the template %s", h.RootFS)
		_ = os.RemoveAll(filepath.Join(h.RootFS, filepath.Dir(target)))
	}
	h.checkLeaks(t, dir, spec.ID)
}

func testOverlay(t *testing.T, h Harness) {
	rt, _ := h.Runtime(t)
	spec := h.Spec(t, "overlay")
	if err := rt.Start(t.Context(), spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = rt.Destroy(context.Background(), spec.ID) })
	h.WaitAgent(t, spec)

	marker := "/root/rttest-" + spec.ID
	if code, body, err := h.Do(spec, "PUT", marker, []byte("written inside"), 5*time.Second); err != nil || code != 201 {
		t.Fatalf("PUT %s = %d %q %v", marker, code, body, err)
	}
	if code, body, err := h.Do(spec, "GET", marker, nil, 5*time.Second); err != nil || code != 200 || string(body) != "written inside" {
		t.Fatalf("GET %s = %d %q %v; want the written content", marker, code, body, err)
	}
	// Also overwrite a file that exists in the template.
	if code, _, err := h.Do(spec, "PUT", "/etc/debian_version", []byte("changed"), 5*time.Second); err != nil || code != 201 {
		t.Fatalf("PUT /etc/debian_version = %d %v", code, err)
	}
	if _, err := os.Stat(filepath.Join(h.RootFS, marker)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sandbox write reached the template: stat %s: %v", marker, err)
	}
	if b, _ := os.ReadFile(filepath.Join(h.RootFS, "etc/debian_version")); string(b) == "changed" {
		t.Errorf("sandbox overwrote the template's /etc/debian_version")
	}

	if err := rt.Destroy(t.Context(), spec.ID); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	h.Start(t, rt, spec)
	h.WaitAgent(t, spec)
	if code, _, err := h.Do(spec, "GET", marker, nil, 5*time.Second); err != nil || code != 404 {
		t.Errorf("after restart GET %s = %d %v; want 404 (overlay gone)", marker, code, err)
	}
	if code, body, _ := h.Do(spec, "GET", "/etc/debian_version", nil, 5*time.Second); code != 200 || string(body) == "changed" {
		t.Errorf("after restart /etc/debian_version = %d %q; want the template's", code, body)
	}
}

func testStateStats(t *testing.T, h Harness) {
	rt, dir := h.Runtime(t)
	spec := h.Spec(t, "state")
	if _, err := rt.State(t.Context(), spec.ID); !errors.Is(err, sandboxrt.ErrNotFound) {
		t.Errorf("State(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := rt.Stats(t.Context(), spec.ID); !errors.Is(err, sandboxrt.ErrNotFound) {
		t.Errorf("Stats(unknown) = %v, want ErrNotFound", err)
	}
	if err := rt.Destroy(t.Context(), spec.ID); err != nil {
		t.Errorf("Destroy(unknown) = %v, want nil", err)
	}
	h.Start(t, rt, spec)
	if err := rt.Start(t.Context(), spec); err == nil {
		t.Errorf("second Start of %s succeeded, want an error", spec.ID)
	}
	h.WaitAgent(t, spec)
	if st, err := rt.State(t.Context(), spec.ID); err != nil || st != sandboxrt.StateRunning {
		t.Errorf("State = %q, %v; want running", st, err)
	}
	// Burn a little CPU in the sandbox so the counters move.
	if code, _, err := h.Do(spec, "POST", "/_alloc/16", nil, 10*time.Second); err != nil || code != 200 {
		t.Errorf("alloc 16 MB = %d, %v", code, err)
	}
	s, err := rt.Stats(t.Context(), spec.ID)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if s.CPUUsageNanos == 0 || s.MemoryBytes < 1<<20 || time.Since(s.Time) > time.Minute {
		t.Errorf("Stats = %+v; want CPU > 0, memory > 1 MiB, a recent time", s)
	}
	if err := rt.Destroy(t.Context(), spec.ID); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := rt.Destroy(t.Context(), spec.ID); err != nil {
		t.Errorf("second Destroy = %v, want nil", err)
	}
	if _, err := rt.State(t.Context(), spec.ID); !errors.Is(err, sandboxrt.ErrNotFound) {
		t.Errorf("State after Destroy = %v, want ErrNotFound", err)
	}
	h.checkLeaks(t, dir, spec.ID)
	if _, _, err := h.Do(spec, "GET", "/_info", nil, time.Second); err == nil {
		t.Errorf("agent still answers after Destroy")
	}
}

func testPause(t *testing.T, h Harness) {
	rt, _ := h.Runtime(t)
	p, ok := rt.(sandboxrt.Pauser)
	if !ok {
		t.Skipf("%s does not implement Pauser", rt.Name())
	}
	spec := h.Spec(t, "pause")
	h.Start(t, rt, spec)
	h.WaitAgent(t, spec)
	if err := p.Pause(t.Context(), spec.ID); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if st, err := rt.State(t.Context(), spec.ID); err != nil || st != sandboxrt.StatePaused {
		t.Errorf("State after Pause = %q, %v; want paused", st, err)
	}
	if code, _, err := h.Do(spec, "GET", "/_info", nil, 700*time.Millisecond); err == nil {
		t.Errorf("paused agent answered %d, want a timeout", code)
	}
	if err := p.Resume(t.Context(), spec.ID); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if st, err := rt.State(t.Context(), spec.ID); err != nil || st != sandboxrt.StateRunning {
		t.Errorf("State after Resume = %q, %v; want running", st, err)
	}
	if code, _, err := h.Do(spec, "GET", "/_info", nil, 5*time.Second); err != nil || code != 200 {
		t.Errorf("GET after Resume = %d, %v", code, err)
	}
	if err := p.Pause(t.Context(), UniqueID("nope")); !errors.Is(err, sandboxrt.ErrNotFound) {
		t.Errorf("Pause(unknown) = %v, want ErrNotFound", err)
	}
}

func testFailedStart(t *testing.T, h Harness) {
	rt, dir := h.Runtime(t)
	spec := h.Spec(t, "fail")
	spec.Init = []string{"/nonexistent/init"}
	if err := rt.Start(t.Context(), spec); err == nil {
		_ = rt.Destroy(context.Background(), spec.ID)
		t.Fatalf("Start with a missing init succeeded")
	} else {
		t.Logf("Start with a missing init: %v", err)
	}
	if _, err := rt.State(t.Context(), spec.ID); !errors.Is(err, sandboxrt.ErrNotFound) {
		t.Errorf("State after failed Start = %v, want ErrNotFound", err)
	}
	h.checkLeaks(t, dir, spec.ID)

	bad := h.Spec(t, "fail")
	bad.RootFS = filepath.Join(t.TempDir(), "missing")
	if err := rt.Start(t.Context(), bad); err == nil {
		_ = rt.Destroy(context.Background(), bad.ID)
		t.Errorf("Start with a missing rootfs succeeded")
	}
	h.checkLeaks(t, dir, bad.ID)
}

func testCleanupAfterCrash(t *testing.T, h Harness) {
	dir := t.TempDir()
	crashed := h.New(t, dir)
	spec := h.Spec(t, "crash")
	if err := crashed.Start(t.Context(), spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	h.WaitAgent(t, spec)
	// crashed is never used again, without Destroy or Cleanup, as if the server died.

	fresh := h.New(t, dir)
	if st, err := fresh.State(t.Context(), spec.ID); err != nil || st != sandboxrt.StateRunning {
		t.Errorf("new runtime: State(%s) = %q, %v; want running (found from state dir)", spec.ID, st, err)
	}
	if err := fresh.Cleanup(t.Context()); err != nil {
		t.Errorf("Cleanup: %v", err)
	}
	if _, err := fresh.State(t.Context(), spec.ID); !errors.Is(err, sandboxrt.ErrNotFound) {
		t.Errorf("State after Cleanup = %v, want ErrNotFound", err)
	}
	if _, _, err := h.Do(spec, "GET", "/_info", nil, time.Second); err == nil {
		t.Errorf("agent still answers after Cleanup")
	}
	h.checkLeaks(t, dir, spec.ID)
}
