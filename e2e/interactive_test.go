package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sseEvent is one server-sent event.
type sseEvent struct {
	Name string
	Data map[string]any
}

// sse opens an SSE stream through the API and returns its events on a
// channel (closed when the stream ends or the test's context is done).
func (s *server) sse(ctx context.Context, path string) <-chan sseEvent {
	s.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.base+path, nil)
	req.Header.Set("X-API-Key", s.key)
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		s.t.Fatalf("GET %s: %s", path, resp.Status)
	}
	ch := make(chan sseEvent, 1024)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event:"):
				ev.Name = strings.TrimSpace(line[6:])
			case strings.HasPrefix(line, "data:"):
				json.Unmarshal([]byte(strings.TrimSpace(line[5:])), &ev.Data)
			case line == "":
				if ev.Name != "" || ev.Data != nil {
					ch <- ev
				}
				ev = sseEvent{}
			}
		}
	}()
	return ch
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func unb64(t *testing.T, v any) string {
	s, _ := v.(string)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("bad base64 %q: %v", s, err)
	}
	return string(b)
}

func TestStdioSession(t *testing.T) {
	s := startServer(t)
	id := s.create(nil)
	base := "/sandboxes/" + id
	var started struct {
		CmdID string `json:"cmd_id"`
	}
	s.must(200, "POST", base+"/stdio", map[string]any{"cmd": "python3 -u -c 'import sys\nfor l in sys.stdin: print(\"echo:\" + l.strip(), flush=True)\nprint(\"eof\")'"}, &started)
	if started.CmdID == "" {
		t.Fatal("no cmd_id")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stream := s.sse(ctx, base+"/stdio/"+started.CmdID+"/stream")
	s.must(204, "POST", base+"/stdio/"+started.CmdID+"/stdin", map[string]any{"data": b64("one\n")}, nil)
	var out string
	lastID := -1.0
	for ev := range stream {
		if ev.Name == "stdout" {
			out += unb64(t, ev.Data["data"])
			lastID = ev.Data["entry_id"].(float64)
		}
		if strings.Contains(out, "echo:one") {
			break
		}
	}
	cancel() // disconnect; output produced meanwhile must not be lost
	s.must(204, "POST", base+"/stdio/"+started.CmdID+"/stdin", map[string]any{"data": b64("two\n")}, nil)
	s.must(204, "POST", base+"/stdio/"+started.CmdID+"/stdin/close", nil, nil)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel2()
	resumed := ""
	exit := -1
	for ev := range s.sse(ctx2, fmt.Sprintf("%s/stdio/%s/stream?last_entry_id=%d", base, started.CmdID, int(lastID))) {
		switch ev.Name {
		case "stdout":
			resumed += unb64(t, ev.Data["data"])
		case "exit":
			exit = int(ev.Data["exit_code"].(float64))
		}
	}
	if resumed != "echo:two\neof\n" || exit != 0 {
		t.Fatalf("resumed stream = %q (exit %d), want the output after entry %d exactly once", resumed, exit, int(lastID))
	}
}

func TestWatchDir(t *testing.T) {
	s := startServer(t)
	id := s.create(nil)
	base := "/sandboxes/" + id
	s.run(id, "mkdir -p /tmp/w")
	var w struct {
		WatcherID string `json:"watcher_id"`
	}
	s.must(200, "POST", base+"/files/watch", map[string]any{"path": "/tmp/w", "recursive": true}, &w)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	events := s.sse(ctx, base+"/files/watch/"+w.WatcherID+"/stream")
	s.run(id, "echo a > /tmp/w/a.txt; mkdir /tmp/w/sub; sleep 0.3; echo b > /tmp/w/sub/b.txt; mv /tmp/w/a.txt /tmp/w/c.txt; chmod 600 /tmp/w/c.txt; rm /tmp/w/sub/b.txt")
	seen := map[string]bool{}
	for ev := range events {
		if p, ok := ev.Data["path"].(string); ok {
			seen[ev.Name+" "+p] = true
		}
		if seen["remove /tmp/w/sub/b.txt"] {
			break
		}
	}
	for _, want := range []string{"create /tmp/w/a.txt", "write /tmp/w/a.txt", "create /tmp/w/sub", "create /tmp/w/sub/b.txt", "rename /tmp/w/a.txt", "chmod /tmp/w/c.txt", "remove /tmp/w/sub/b.txt"} {
		if !seen[want] {
			t.Errorf("missing watch event %q; saw %v", want, seen)
		}
	}
	if code, _ := s.do("DELETE", base+"/files/watch/"+w.WatcherID, nil); code/100 != 2 {
		t.Errorf("delete watcher: %d", code)
	}
}

func TestPtyAndReconnect(t *testing.T) {
	s := startServer(t)
	id := s.create(nil)
	base := "/sandboxes/" + id
	var p struct {
		Pid int `json:"pid"`
	}
	s.must(200, "POST", base+"/pty", map[string]any{"size": map[string]int{"cols": 100, "rows": 30}, "cmd": "stty size; read x; stty size; echo got:$x"}, &p)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := s.sse(ctx, fmt.Sprintf("%s/pty/%d/stream", base, p.Pid))
	out := ""
	waitFor := func(ch <-chan sseEvent, want string) {
		t.Helper()
		for ev := range ch {
			if ev.Name == "data" {
				out += unb64(t, ev.Data["data"])
			}
			if strings.Contains(out, want) {
				return
			}
		}
		t.Fatalf("pty output %q never contained %q", out, want)
	}
	waitFor(first, "30 100")
	s.must(204, "PATCH", fmt.Sprintf("%s/pty/%d", base, p.Pid), map[string]any{"size": map[string]int{"cols": 120, "rows": 40}}, nil)
	second := s.sse(ctx, fmt.Sprintf("%s/pty/%d/stream", base, p.Pid)) // another subscriber
	s.must(204, "POST", fmt.Sprintf("%s/pty/%d/stdin", base, p.Pid), map[string]any{"data": "hello\n"}, nil)
	waitFor(first, "got:hello")
	if !strings.Contains(out, "40 120") {
		t.Errorf("resize not seen by the pty: %q", out)
	}
	out = ""
	waitFor(second, "got:hello")

	// A background process followed from another client by pid.
	var bg struct {
		Pid int `json:"pid"`
	}
	s.must(200, "POST", base+"/commands", map[string]any{"background": true, "cmd": "for i in 1 2 3; do echo n$i; sleep 0.3; done"}, &bg)
	got := ""
	exit := -1
	for ev := range s.sse(ctx, fmt.Sprintf("%s/commands/%d/stream", base, bg.Pid)) {
		switch ev.Name {
		case "stdout":
			got += ev.Data["data"].(string)
		case "exit":
			exit = int(ev.Data["exit_code"].(float64))
		}
	}
	if got != "n1\nn2\nn3\n" || exit != 0 {
		t.Fatalf("reconnected stream = %q exit %d", got, exit)
	}
}

func TestAuditFollowAndActivity(t *testing.T) {
	s := startServer(t)
	id := s.create(map[string]any{"envs": map[string]string{"SERVICE_TOKEN": "tok-very-secret-123"}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	follow := s.sse(ctx, "/sandboxes/"+id+"/audit?follow=true")
	s.run(id, "echo $SERVICE_TOKEN > /dev/null; echo tok-very-secret-123 | wc -c")
	s.must(200, "POST", "/sandboxes/"+id+"/files", map[string]any{"path": "/tmp/a.txt", "data": "x"}, nil)
	s.must(200, "GET", "/sandboxes/"+id+"/files?path=/tmp/a.txt", nil, nil)
	want := map[string]bool{"sandbox.created": false, "command.run": false, "file.write": false, "file.read": false}
	for ev := range follow {
		typ, _ := ev.Data["type"].(string)
		if _, ok := want[typ]; ok {
			want[typ] = true
		}
		if typ == "command.run" {
			b, _ := json.Marshal(ev.Data)
			if strings.Contains(string(b), "tok-very-secret-123") {
				t.Errorf("a masked env value reached the audit store: %s", b)
			}
		}
		done := true
		for _, v := range want {
			done = done && v
		}
		if done {
			return
		}
	}
	t.Fatalf("follow stream ended without every event: %v", want)
}
