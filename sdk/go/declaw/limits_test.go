package declaw

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestCreateResources: cpu_count, memory_mb and disk_mb are sent only when
// set, and the sandbox's limits and OOM record are decoded.
func TestCreateResources(t *testing.T) {
	var bodies []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &m)
		bodies = append(bodies, m)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(201)
		io.WriteString(w, `{"sandbox_id":"sbx-1","state":"killed","end_reason":"oom","oom_kills":1,"last_oom_at":"2026-12-08T01:45:34Z",`+
			`"resources":{"vcpus":0.5,"memory_mb":256,"disk_mb":4096,"pids":1024}}`)
	}))
	defer srv.Close()
	c, err := New(Config{APIURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	cpus, mem, disk := 0.5, int64(256), int64(4096)
	sb, err := c.CreateSandbox(context.Background(), CreateRequest{Template: "base", CPUCount: &cpus, MemoryMB: &mem, DiskMB: &disk})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSandbox(context.Background(), CreateRequest{Template: "base"}); err != nil {
		t.Fatal(err)
	}
	if b := bodies[0]; b["cpu_count"] != 0.5 || b["memory_mb"] != 256.0 || b["disk_mb"] != 4096.0 {
		t.Errorf("create body = %v, want cpu_count 0.5, memory_mb 256, disk_mb 4096", b)
	}
	if _, ok := bodies[1]["memory_mb"]; ok {
		t.Errorf("create without resources sent %v", bodies[1])
	}
	if sb.Resources == nil || *sb.Resources != (Resources{VCPUs: 0.5, MemoryMB: 256, DiskMB: 4096, Pids: 1024}) ||
		sb.OOMKills != 1 || sb.LastOOMAt == nil || sb.EndReason != "oom" {
		t.Errorf("decoded sandbox = %+v", sb)
	}
}
