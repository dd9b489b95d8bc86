package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestPauseResumeAndMetrics(t *testing.T) {
	s := startServer(t)
	id := s.create(map[string]any{"timeout": 60})
	base := "/sandboxes/" + id
	s.must(200, "POST", base+"/files", map[string]any{"path": "/tmp/before.txt", "data": "kept"}, nil)
	// A counter that prints its progress to a file.
	s.must(200, "POST", base+"/commands", map[string]any{"background": true, "timeout": 0,
		"cmd": `i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.2; done`}, nil)
	time.Sleep(1500 * time.Millisecond)
	read := func() int {
		b := s.must(200, "GET", base+"/files?path=/tmp/counter", nil, nil)
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("counter %q: %v", b, err)
		}
		return n
	}
	before := read()
	if before < 2 {
		t.Fatalf("counter did not run: %d", before)
	}
	var pre info
	s.must(200, "GET", base, nil, &pre)

	s.must(200, "POST", base+"/pause", nil, nil)
	var got info
	s.must(200, "GET", base, nil, &got)
	if got.State != "paused" {
		t.Fatalf("state after pause = %q", got.State)
	}
	if code, b := s.do("POST", base+"/commands", map[string]any{"cmd": "true"}); code != 409 {
		t.Fatalf("command on a paused sandbox: %d %s, want 409", code, b)
	}
	var list struct {
		Sandboxes []info `json:"sandboxes"`
	}
	s.must(200, "GET", "/sandboxes?state=paused", nil, &list)
	if len(list.Sandboxes) != 1 || list.Sandboxes[0].SandboxID != id {
		t.Fatalf("list state=paused = %s", fmtJSON(list))
	}
	time.Sleep(3 * time.Second) // paused time does not count against the timeout
	s.must(200, "POST", base+"/resume", nil, nil)
	s.must(200, "GET", base, nil, &got)
	if got.State != "running" || got.EndAt == nil || pre.EndAt == nil || got.EndAt.Sub(*pre.EndAt) < 2*time.Second {
		t.Fatalf("after resume: state %q end_at %v (before pause %v): the pause should have pushed end_at back", got.State, got.EndAt, pre.EndAt)
	}
	after := read()
	if after < before || after > before+3 {
		t.Fatalf("counter jumped from %d to %d across the pause: it should continue where it stopped", before, after)
	}
	time.Sleep(1 * time.Second)
	if later := read(); later <= after {
		t.Fatalf("counter stopped after resume: %d -> %d", after, later)
	}
	if b := s.must(200, "GET", base+"/files?path=/tmp/before.txt", nil, nil); string(b) != "kept" {
		t.Fatalf("file written before the pause: %q", b)
	}

	var samples []struct {
		Timestamp     time.Time `json:"timestamp"`
		CPU           float64   `json:"cpu_usage_percent"`
		MemoryUsageMB float64   `json:"memory_usage_mb"`
	}
	s.run(id, "python3 -c 'x=bytearray(64<<20); import time; time.sleep(0.1)'")
	s.must(200, "GET", base+"/metrics", nil, &samples)
	s.must(200, "GET", base+"/metrics", nil, &samples)
	if len(samples) < 2 || samples[len(samples)-1].MemoryUsageMB <= 0 {
		t.Fatalf("metrics = %+v", samples)
	}
}

func TestOnTimeoutPause(t *testing.T) {
	s := startServer(t)
	id := s.create(map[string]any{"timeout": 2, "lifecycle": map[string]any{"on_timeout": "pause", "auto_resume": true}})
	s.must(200, "POST", "/sandboxes/"+id+"/files", map[string]any{"path": "/tmp/x", "data": "y"}, nil)
	waitState(t, s, id, "paused", 30*time.Second)
	// auto_resume: a request resumes it.
	if res := s.run(id, "cat /tmp/x"); res.Stdout != "y" {
		t.Fatalf("after auto-resume: %+v", res)
	}
	var got info
	s.must(200, "GET", "/sandboxes/"+id, nil, &got)
	if got.State != "running" || got.EndAt == nil || time.Until(*got.EndAt) < time.Second {
		t.Fatalf("after auto-resume: state %q, end_at %v: want running with a fresh timeout", got.State, got.EndAt)
	}
}
