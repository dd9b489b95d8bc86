package api

import (
	"net/http"
	"strings"
	"testing"

	"github.com/declaw/declaw/internal/limits"
	"github.com/declaw/declaw/internal/sandboxrt"
)

// TestCreateResources: a create's cpu_count, memory_mb and disk_mb reach
// the runtime and get_info; values past the maxima are a 400 naming the
// field; nothing is booted for a refused create.
func TestCreateResources(t *testing.T) {
	h := newHarness(t)
	resp, b := h.do(t, "POST", "/sandboxes", `{"template":"base","cpu_count":1,"memory_mb":1024,"disk_mb":4096}`)
	if resp.StatusCode != 201 {
		t.Fatalf("POST /sandboxes with resources = %d %s, want 201", resp.StatusCode, b)
	}
	got := decode[createResp](t, "POST /sandboxes", b)
	spec, _ := h.rt.Spec(got.SandboxID)
	if want := (sandboxrt.Resources{CPUs: 1, MemoryMB: 1024, DiskMB: 4096, Pids: limits.DefaultPids}); spec.Resources != want {
		t.Errorf("runtime got resources %+v, want %+v", spec.Resources, want)
	}
	resp, b = h.do(t, "GET", "/sandboxes/"+got.SandboxID, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"resources":{"vcpus":1,"memory_mb":1024,"disk_mb":4096,"pids":1024}`) || !strings.Contains(string(b), `"oom_kills":0`) {
		t.Errorf("GET /sandboxes/%s = %d %s, want its resources and oom_kills 0", got.SandboxID, resp.StatusCode, b)
	}
	// Without resources: the server defaults.
	resp, b = h.do(t, "POST", "/sandboxes", `{}`)
	got = decode[createResp](t, "POST /sandboxes {}", b)
	spec, _ = h.rt.Spec(got.SandboxID)
	if want := (sandboxrt.Resources{CPUs: 2, MemoryMB: 512, DiskMB: 2048, Pids: 1024}); resp.StatusCode != 201 || spec.Resources != want {
		t.Errorf("POST /sandboxes {} = %d, resources %+v; want 201 and the defaults %+v", resp.StatusCode, spec.Resources, want)
	}
	before := len(h.rt.IDs())
	for _, tt := range []struct{ body, code, field string }{
		{`{"memory_mb":999999}`, "limit_exceeded", "memory_mb"},
		{`{"cpu_count":64}`, "limit_exceeded", "cpu_count"},
		{`{"disk_mb":10000000}`, "limit_exceeded", "disk_mb"},
		{`{"memory_mb":0}`, "invalid_argument", "memory_mb"},
		{`{"memory_mb":-512}`, "invalid_argument", "memory_mb"},
		{`{"cpu_count":0}`, "invalid_argument", "cpu_count"},
		{`{"memory_mb":512.5}`, "invalid_json", ""},
		{`{"memory_mb":"lots"}`, "invalid_json", ""},
	} {
		resp, b := h.do(t, "POST", "/sandboxes", tt.body)
		wantError(t, "POST /sandboxes "+tt.body, resp, b, 400, tt.code)
		if !strings.Contains(string(b), tt.field) {
			t.Errorf("POST /sandboxes %s: message %s does not name %q", tt.body, b, tt.field)
		}
	}
	if n := len(h.rt.IDs()); n != before {
		t.Errorf("refused creates booted sandboxes: %d -> %d", before, n)
	}
}

// TestCreateNoCapacity: past the host memory the server may commit, a
// create is a 503 insufficient_capacity with Retry-After; killing a
// sandbox makes room again.
func TestCreateNoCapacity(t *testing.T) {
	// 128 MiB sandboxes into 400 MiB of capacity: three fit.
	h := newHarnessWith(t, func(c *limitsSetup) {
		c.cfg = limits.Config{Defaults: sandboxrt.Resources{MemoryMB: 128}}
		c.hostMB, c.reserveMB = 1424, 1024
	})
	var ids []string
	for i := range 3 {
		resp, b := h.do(t, "POST", "/sandboxes", `{}`)
		if resp.StatusCode != 201 {
			t.Fatalf("create %d = %d %s, want 201", i, resp.StatusCode, b)
		}
		ids = append(ids, decode[createResp](t, "POST /sandboxes", b).SandboxID)
	}
	resp, b := h.do(t, "POST", "/sandboxes", `{}`)
	wantError(t, "4th POST /sandboxes", resp, b, http.StatusServiceUnavailable, "insufficient_capacity")
	if resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), "384 of 400 MiB are committed") {
		t.Errorf("503 = %s (Retry-After %q), want the numbers and a Retry-After", b, resp.Header.Get("Retry-After"))
	}
	resp, b = h.do(t, "DELETE", "/sandboxes/"+ids[0], nil)
	if resp.StatusCode >= 300 {
		t.Fatalf("DELETE = %d %s", resp.StatusCode, b)
	}
	if resp, b := h.do(t, "POST", "/sandboxes", `{}`); resp.StatusCode != 201 {
		t.Errorf("create after a kill = %d %s, want 201", resp.StatusCode, b)
	}
	if committed, capacity := h.m.Capacity(); committed != 384 || capacity != 400 {
		t.Errorf("Capacity() = %d, %d; want 384, 400", committed, capacity)
	}
}
