package declaw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorded is one request the fake server saw.
type recorded struct {
	Method, Path, Query, Body string
}

// fakeAPI serves canned answers keyed by "METHOD /path" and records the
// requests.
type fakeAPI struct {
	mu     sync.Mutex
	seen   []recorded
	routes map[string]http.HandlerFunc
}

func newFake(t *testing.T, routes map[string]http.HandlerFunc) (*Client, *fakeAPI) {
	t.Helper()
	f := &fakeAPI{routes: routes}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(b)))
		f.mu.Lock()
		f.seen = append(f.seen, recorded{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, string(b)})
		f.mu.Unlock()
		h, ok := f.routes[r.Method+" "+r.URL.Path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"no route","code":"not_found"}`)
			return
		}
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{APIURL: srv.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	return c, f
}

func (f *fakeAPI) last() recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[len(f.seen)-1]
}

func jsonAnswer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func sseAnswer(events ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, e := range events {
			io.WriteString(w, e+"\n\n")
		}
	}
}

func TestErrorSentinels(t *testing.T) {
	tests := []struct {
		status int
		code   string
		want   error
	}{
		{400, "invalid_argument", ErrInvalidArgument},
		{401, "unauthorized", ErrUnauthorized},
		{403, "forbidden", ErrForbidden},
		{404, "sandbox_not_found", ErrNotFound},
		{408, "command_timeout", ErrTimeout},
		{409, "sandbox_paused", ErrConflict},
		{410, "sandbox_killed", ErrSandboxKilled},
		{413, "body_too_large", ErrInvalidArgument},
		{429, "rate_limited", ErrRateLimited},
		{503, "insufficient_memory", ErrUnavailable},
	}
	all := []error{ErrInvalidArgument, ErrUnauthorized, ErrForbidden, ErrNotFound, ErrTimeout, ErrConflict,
		ErrSandboxKilled, ErrRateLimited, ErrUnavailable, ErrNotEnoughSpace}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			c, _ := newFake(t, map[string]http.HandlerFunc{
				"GET /sandboxes/sbx-1": jsonAnswer(tt.status, fmt.Sprintf(`{"message":"m %s","code":%q}`, tt.code, tt.code)),
			})
			_, err := c.GetSandbox(context.Background(), "sbx-1")
			if !errors.Is(err, tt.want) {
				t.Fatalf("GetSandbox error %v: errors.Is(%v) = false", err, tt.want)
			}
			for _, other := range all {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("GetSandbox error %v also matches %v", err, other)
				}
			}
			var apiErr *Error
			if !errors.As(fmt.Errorf("wrapped: %w", err), &apiErr) || apiErr.Code != tt.code || apiErr.Status != tt.status || apiErr.Message != "m "+tt.code {
				t.Errorf("errors.As = %+v, want status %d code %s", apiErr, tt.status, tt.code)
			}
		})
	}
	ce := &CommandError{Message: "command timed out after 1s", Code: "timeout"}
	if !errors.Is(ce, ErrTimeout) {
		t.Error("a timed-out CommandError does not match ErrTimeout")
	}
	if errors.Is(&CommandError{Message: "boom"}, ErrTimeout) {
		t.Error("a plain CommandError matches ErrTimeout")
	}
}

func TestStreamCommandIterator(t *testing.T) {
	c, f := newFake(t, map[string]http.HandlerFunc{
		"POST /sandboxes/sbx-1/commands/stream": sseAnswer(
			`event: start`+"\n"+`data: {"type":"start","pid":7}`,
			`data: {"type":"stdout","data":"a\n"}`,
			`data: {"type":"stderr","data":"b"}`,
			`data: {"type":"exit","exit_code":3}`),
	})
	var got []string
	for ev, err := range c.StreamCommand(context.Background(), "sbx-1", CommandRequest{Cmd: "x", Tag: "t"}) {
		if err != nil {
			t.Fatalf("StreamCommand: %v", err)
		}
		s := ev.Type + ":" + ev.Data
		if ev.Type == "exit" {
			s = fmt.Sprintf("exit:%d", *ev.ExitCode)
		}
		got = append(got, s)
	}
	if want := []string{"start:", "stdout:a\n", "stderr:b", "exit:3"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events = %q, want %q", got, want)
	}
	var body map[string]any
	json.Unmarshal([]byte(f.last().Body), &body)
	if body["cmd"] != "x" || body["stream"] != true || body["tag"] != "t" {
		t.Errorf("stream body = %s", f.last().Body)
	}

	// A timeout error event ends the sequence with an error matching ErrTimeout.
	c, _ = newFake(t, map[string]http.HandlerFunc{
		"POST /sandboxes/sbx-1/commands/stream": sseAnswer(`data: {"type":"stdout","data":"x"}`, `data: {"type":"error","error":"timed out","code":"timeout"}`),
	})
	var lastErr error
	n := 0
	for _, err := range c.StreamCommand(context.Background(), "sbx-1", CommandRequest{Cmd: "x"}) {
		n++
		lastErr = err
	}
	if n != 2 || !errors.Is(lastErr, ErrTimeout) {
		t.Errorf("timed-out stream: %d yields, last error %v; want 2 and ErrTimeout", n, lastErr)
	}

	// Breaking early stops without further yields (no panic from yield after false).
	c, _ = newFake(t, map[string]http.HandlerFunc{
		"POST /sandboxes/sbx-1/commands/stream": sseAnswer(`data: {"type":"start","pid":1}`, `data: {"type":"stdout","data":"x"}`, `data: {"type":"exit","exit_code":0}`),
	})
	for range c.StreamCommand(context.Background(), "sbx-1", CommandRequest{Cmd: "x"}) {
		break
	}
}

func TestBackgroundCommandCalls(t *testing.T) {
	c, f := newFake(t, map[string]http.HandlerFunc{
		"POST /sandboxes/sbx-1/commands":          jsonAnswer(200, `{"pid":42}`),
		"GET /sandboxes/sbx-1/commands/42/wait":   jsonAnswer(200, `{"pid":42,"stdout":"hi\n","stderr":"","exit_code":0}`),
		"POST /sandboxes/sbx-1/commands/42/stdin": jsonAnswer(200, `{}`),
		"DELETE /sandboxes/sbx-1/commands/42":     jsonAnswer(200, `{"killed":true}`),
		"DELETE /sandboxes/sbx-1/commands/43":     jsonAnswer(404, `{"message":"no such process","code":"process_not_found"}`),
		"GET /sandboxes/sbx-1/commands":           jsonAnswer(200, `[{"pid":42,"cmd":"cat","is_pty":false,"envs":{},"tag":"t"}]`),
		"GET /sandboxes/sbx-1/commands/42/stream": sseAnswer(`id: 1`+"\n"+`data: {"type":"stdout","data":"old"}`, `data: {"type":"exit","exit_code":0}`),
	})
	ctx := context.Background()
	pid, err := c.StartCommand(ctx, "sbx-1", CommandRequest{Cmd: "cat", Stdin: true})
	if err != nil || pid != 42 {
		t.Fatalf("StartCommand = %d, %v", pid, err)
	}
	if b := f.last().Body; !strings.Contains(b, `"background":true`) || !strings.Contains(b, `"stdin":true`) {
		t.Errorf("StartCommand body = %s", b)
	}
	if err := c.SendStdin(ctx, "sbx-1", 42, "x\n"); err != nil || f.last().Body != `{"data":"x\n"}` {
		t.Errorf("SendStdin: %v, body %s", err, f.last().Body)
	}
	ps, err := c.ListCommands(ctx, "sbx-1")
	if err != nil || len(ps) != 1 || ps[0].Pid != 42 || ps[0].Tag != "t" {
		t.Errorf("ListCommands = %+v, %v", ps, err)
	}
	var out strings.Builder
	ev, err := c.ConnectCommand(ctx, "sbx-1", 42, func(ev CommandEvent) error { out.WriteString(ev.Data); return nil })
	if err != nil || *ev.ExitCode != 0 || out.String() != "old" {
		t.Errorf("ConnectCommand = %+v, %v, output %q", ev, err, out.String())
	}
	res, err := c.WaitCommand(ctx, "sbx-1", 42)
	if err != nil || res.Stdout != "hi\n" {
		t.Errorf("WaitCommand = %+v, %v", res, err)
	}
	if k, err := c.KillCommand(ctx, "sbx-1", 42); !k || err != nil {
		t.Errorf("KillCommand(42) = %v, %v", k, err)
	}
	if k, err := c.KillCommand(ctx, "sbx-1", 43); k || err != nil {
		t.Errorf("KillCommand(unknown) = %v, %v; want false, nil", k, err)
	}
	if _, err := c.KillCommand(ctx, "sbx-2", 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("KillCommand in an unknown sandbox = %v, want ErrNotFound", err)
	}
}

func TestFileCalls(t *testing.T) {
	c, f := newFake(t, map[string]http.HandlerFunc{
		"GET /sandboxes/sbx-1/files/info":   jsonAnswer(200, `{"name":"a b","path":"/tmp/a b","type":"file","size":3}`),
		"GET /sandboxes/sbx-1/files/exists": jsonAnswer(200, `{"exists":true}`),
		"POST /sandboxes/sbx-1/files/mkdir": jsonAnswer(200, `{"created":true}`),
		"PATCH /sandboxes/sbx-1/files":      jsonAnswer(200, `{"name":"c","path":"/tmp/c","type":"file","size":3}`),
		"DELETE /sandboxes/sbx-1/files":     jsonAnswer(200, `{}`),
		"PUT /sandboxes/sbx-1/files/raw":    jsonAnswer(200, `{"path":"/tmp/a b","size":3}`),
		"GET /sandboxes/sbx-1/files/raw":    func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "abc") },
	})
	ctx := context.Background()
	if _, err := c.Write(ctx, "sbx-1", "/tmp/a b", []byte("abc"), FileOptions{User: "user"}); err != nil {
		t.Fatal(err)
	}
	if r := f.last(); r.Query != "path=/tmp/a%20b&username=user" || r.Body != "abc" {
		t.Errorf("Write sent %+v", r)
	}
	if b, err := c.Read(ctx, "sbx-1", "/tmp/a b"); err != nil || string(b) != "abc" {
		t.Errorf("Read = %q, %v", b, err)
	}
	if e, err := c.Stat(ctx, "sbx-1", "/tmp/a b"); err != nil || e.Size != 3 || e.Type != "file" || f.last().Query != "path=/tmp/a%20b" {
		t.Errorf("Stat = %+v, %v (query %s)", e, err, f.last().Query)
	}
	if ok, err := c.Exists(ctx, "sbx-1", "/tmp/a b"); !ok || err != nil {
		t.Errorf("Exists = %v, %v", ok, err)
	}
	if ok, err := c.MakeDir(ctx, "sbx-1", "/tmp/d"); !ok || err != nil || f.last().Body != `{"path":"/tmp/d"}` {
		t.Errorf("MakeDir = %v, %v, body %s", ok, err, f.last().Body)
	}
	if e, err := c.Rename(ctx, "sbx-1", "/tmp/a b", "/tmp/c"); err != nil || e.Path != "/tmp/c" || f.last().Body != `{"new_path":"/tmp/c","old_path":"/tmp/a b"}` {
		t.Errorf("Rename = %+v, %v, body %s", e, err, f.last().Body)
	}
	if err := c.Remove(ctx, "sbx-1", "/tmp/c"); err != nil || f.last().Method != "DELETE" || f.last().Query != "path=/tmp/c" {
		t.Errorf("Remove: %v, sent %+v", err, f.last())
	}
	if _, err := c.Stat(ctx, "sbx-2", "/x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat on a missing path: %v, want ErrNotFound", err)
	}
}

func TestWatchResumesAfterDrop(t *testing.T) {
	var mu sync.Mutex
	streams := 0
	var queries []string
	deleted := false
	c, _ := newFake(t, map[string]http.HandlerFunc{
		"POST /sandboxes/sbx-1/files/watch": jsonAnswer(200, `{"watcher_id":"w1"}`),
		"GET /sandboxes/sbx-1/files/watch/w1/stream": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			streams++
			n := streams
			queries = append(queries, r.URL.RawQuery)
			mu.Unlock()
			w.Header().Set("Content-Type", "text/event-stream")
			if n == 1 {
				io.WriteString(w, "event: start\ndata: {\"type\":\"start\",\"watcher_id\":\"w1\"}\n\n")
				io.WriteString(w, "id: 1\nevent: create\ndata: {\"type\":\"create\",\"path\":\"/tmp/w/a\",\"name\":\"a\",\"timestamp\":\"2026-12-08T01:02:03.5Z\",\"event_id\":1}\n\n")
				w.(http.Flusher).Flush()
				// drop the connection mid-event
				hj, _, _ := w.(http.Hijacker).Hijack()
				hj.Close()
				return
			}
			// the resumed stream repeats event 1 (skipped) and goes on
			io.WriteString(w, "data: {\"type\":\"create\",\"path\":\"/tmp/w/a\",\"name\":\"a\",\"event_id\":1}\n\n")
			io.WriteString(w, ": keepalive\n\n")
			io.WriteString(w, "data: {\"type\":\"gap\",\"error\":\"overflow\",\"event_id\":2}\n\n")
			io.WriteString(w, "data: {\"type\":\"write\",\"path\":\"/tmp/w/a\",\"name\":\"a\",\"event_id\":3}\n\n")
		},
		"DELETE /sandboxes/sbx-1/files/watch/w1": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			deleted = true
			mu.Unlock()
			w.WriteHeader(204)
		},
	})
	ctx := context.Background()
	w, err := c.WatchDir(ctx, "sbx-1", "/tmp/w", WatchOptions{Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for ev, err := range w.Events() {
		if err != nil {
			t.Fatalf("Events: %v", err)
		}
		got = append(got, fmt.Sprintf("%s %s %d", ev.Type, ev.Name, ev.EventID))
		if ev.EventID == 1 && ev.Timestamp.IsZero() {
			t.Errorf("event 1 has no timestamp")
		}
	}
	if want := []string{"create a 1", "gap  2", "write a 3"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events = %q, want %q", got, want)
	}
	mu.Lock()
	if len(queries) != 2 || queries[0] != "" || queries[1] != "last_event_id=1" {
		t.Errorf("stream queries = %q, want a resume after event 1", queries)
	}
	mu.Unlock()
	if err := w.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if !deleted {
		t.Error("Stop did not delete the watcher")
	}
	mu.Unlock()
}

func TestSandboxExtras(t *testing.T) {
	c, f := newFake(t, map[string]http.HandlerFunc{
		"GET /sandboxes/sbx-1/metrics": jsonAnswer(200, `[{"timestamp":"2026-12-08T00:00:00Z","cpu_usage_percent":12.5,"memory_usage_mb":40,"disk_usage_mb":1}]`),
		"PUT /sandboxes/sbx-1/network": jsonAnswer(200, `{"sandbox_id":"sbx-1","state":"running","network":{"allow_out":["1.1.1.1"]}}`),
		"POST /sandboxes":              jsonAnswer(201, `{"sandbox_id":"sbx-1","state":"running"}`),
		"GET /sandboxes/sbx-1":         jsonAnswer(200, `{"sandbox_id":"sbx-1","state":"paused"}`),
		"POST /sandboxes/sbx-1/resume": jsonAnswer(200, `{}`),
		"POST /sandboxes/kill-many":    jsonAnswer(200, `{"results":{"sbx-1":{"killed":true},"sbx-9":{"error":"not found"}}}`),
	})
	ctx := context.Background()
	ms, err := c.Metrics(ctx, "sbx-1", time.Date(2026, 12, 8, 1, 0, 0, 0, time.FixedZone("x", 3600)), time.Time{})
	if err != nil || len(ms) != 1 || ms[0].CPUUsagePercent != 12.5 || f.last().Query != "start=2026-12-08T00%3A00%3A00Z" {
		t.Errorf("Metrics = %+v, %v (query %s)", ms, err, f.last().Query)
	}
	sb, err := c.UpdateNetwork(ctx, "sbx-1", Network{AllowOut: []string{"1.1.1.1"}, DenyOut: []string{"0.0.0.0/0"}})
	if err != nil || sb.SandboxID != "sbx-1" || f.last().Body != `{"allow_out":["1.1.1.1"],"deny_out":["0.0.0.0/0"]}` {
		t.Errorf("UpdateNetwork = %+v, %v, body %s", sb, err, f.last().Body)
	}
	_, err = c.CreateSandbox(ctx, CreateRequest{Template: "python", Timeout: Ptr(60), AllowInternetAccess: Ptr(false),
		Security: &SecurityPolicy{PII: &PIIConfig{Enabled: true, Types: []string{PIIEmail}, Action: "redact"},
			InjectionDefense: &InjectionDefenseConfig{Enabled: true, Action: "block", Domains: []string{"api.openai.com"}}}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"template":"python","timeout":60,"allow_internet_access":false,"security":{"pii":{"enabled":true,"types":["email"],"action":"redact"},"injection_defense":{"enabled":true,"action":"block","domains":["api.openai.com"]}}}`
	if got := f.last().Body; got != want {
		t.Errorf("create body\n got %s\nwant %s", got, want)
	}
	if _, err := c.Connect(ctx, "sbx-1", Ptr(30)); err != nil {
		t.Fatal(err)
	}
	if r := f.last(); r.Path != "/sandboxes/sbx-1" {
		t.Errorf("Connect to a paused sandbox ended with %+v, want GET after resume", r)
	}
	f.mu.Lock()
	resume := f.seen[len(f.seen)-2]
	f.mu.Unlock()
	if resume.Path != "/sandboxes/sbx-1/resume" || resume.Body != `{"timeout":30}` {
		t.Errorf("Connect resume = %+v", resume)
	}
	res, err := c.KillMany(ctx, []string{"sbx-1", "sbx-9"})
	if err != nil || !res["sbx-1"].Killed || res["sbx-9"].Error == "" {
		t.Errorf("KillMany = %+v, %v", res, err)
	}
}

func TestStdioSession(t *testing.T) {
	var mu sync.Mutex
	var queries []string
	c, f := newFake(t, map[string]http.HandlerFunc{
		"POST /sandboxes/sbx-1/stdio":               jsonAnswer(200, `{"cmd_id":"9","pid":9}`),
		"POST /sandboxes/sbx-1/stdio/9/stdin":       jsonAnswer(200, `{}`),
		"POST /sandboxes/sbx-1/stdio/9/stdin/close": jsonAnswer(200, `{}`),
		"DELETE /sandboxes/sbx-1/stdio/9":           jsonAnswer(200, `{"killed":false}`),
		"GET /sandboxes/sbx-1/stdio/9/stream": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			queries = append(queries, r.URL.RawQuery)
			n := len(queries)
			mu.Unlock()
			if n == 1 {
				io.WriteString(w, "data: {\"type\":\"stdout\",\"data\":\"AP8=\",\"entry_id\":1}\n\n")
				return // ends without exit: resumed after entry 1
			}
			io.WriteString(w, "data: {\"type\":\"stdout\",\"data\":\"AP8=\",\"entry_id\":1}\n\n")
			io.WriteString(w, "data: {\"type\":\"stderr\",\"data\":\"eA\",\"entry_id\":2}\n\n")
			io.WriteString(w, "data: {\"type\":\"exit\",\"exit_code\":4}\n\n")
		},
	})
	ctx := context.Background()
	s, err := c.StartStdio(ctx, "sbx-1", StdioRequest{Cmd: "cat"})
	if err != nil || s.CmdID != "9" {
		t.Fatalf("StartStdio = %+v, %v", s, err)
	}
	if err := s.Write(ctx, []byte{0, 0xff}); err != nil || f.last().Body != `{"data":"AP8="}` {
		t.Errorf("Write: %v, body %s", err, f.last().Body)
	}
	if err := s.CloseStdin(ctx); err != nil {
		t.Error(err)
	}
	var got []string
	for ev, err := range s.Output(ctx) {
		if err != nil {
			t.Fatalf("Output: %v", err)
		}
		got = append(got, fmt.Sprintf("%s %x %d", ev.Type, ev.Data, ev.ExitCode))
	}
	if want := []string{"stdout 00ff 0", "stderr 78 0", "exit  4"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Output = %q, want %q", got, want)
	}
	if fmt.Sprint(queries) != "[ last_entry_id=1]" {
		t.Errorf("stream queries = %q, want a resume after entry 1", queries)
	}
	if k, err := s.Kill(ctx); k || err != nil {
		t.Errorf("Kill = %v, %v", k, err)
	}
}

func TestTemplateCalls(t *testing.T) {
	tpl := `{"template_id":"tpl-1","alias":"my-app","aliases":["my-app"],"builtin":false,"status":"ready","created_at":"2026-12-08T00:00:00Z","size_bytes":1048576,"start_cmd":"srv","ready_check":{"port":8000},"in_use":2,"extra":"kept"}`
	var gotForm string
	c, f := newFake(t, map[string]http.HandlerFunc{
		"GET /templates":        jsonAnswer(200, `{"templates":[`+tpl+`]}`),
		"GET /templates/my-app": jsonAnswer(200, tpl),
		"POST /templates/build": func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
				if err := r.ParseMultipartForm(1 << 20); err != nil {
					t.Errorf("multipart: %v", err)
				}
				gotForm = r.FormValue("request")
			}
			jsonAnswer(200, `{"build_id":"b1","status":"completed","template_id":"tpl-1","alias":"my-app","logs":[]}`)(w, r)
		},
	})
	ctx := context.Background()
	ts, err := c.Templates(ctx)
	if err != nil || len(ts) != 1 || ts[0].Alias != "my-app" || ts[0].InUse != 2 || ts[0].ReadyCheck.Port != 8000 {
		t.Fatalf("Templates = %+v, %v", ts, err)
	}
	if b, _ := json.Marshal(ts[0]); !strings.Contains(string(b), `"extra":"kept"`) {
		t.Errorf("a listed template marshals as %s, want the server's object", b)
	}
	one, err := c.Template(ctx, "my-app")
	if err != nil || one.TemplateID != "tpl-1" || one.SizeBytes != 1<<20 {
		t.Fatalf("Template = %+v, %v", one, err)
	}
	req := TemplateBuildRequest{Alias: "my-app", Template: TemplateSpec{BaseImage: "python", RunCmds: []string{"pip install flask"},
		Copies: []TemplateCopy{{Src: "app.py", Dst: "/app/app.py"}}, StartCmd: "flask run", ReadyCheck: &ReadyCheck{Port: 5000}}}
	st, err := c.BuildTemplate(ctx, req, nil)
	if err != nil || st.Status != "completed" {
		t.Fatalf("BuildTemplate = %+v, %v", st, err)
	}
	want := `{"template":{"base_image":"python","run_cmds":["pip install flask"],"copies":[{"src":"app.py","dst":"/app/app.py"}],"start_cmd":"flask run","ready_check":{"port":5000}},"alias":"my-app"}`
	if got := f.last().Body; got != want {
		t.Errorf("build body\n got %s\nwant %s", got, want)
	}
	if _, err := c.BuildTemplate(ctx, req, strings.NewReader("tar bytes")); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(gotForm) != want {
		t.Errorf("multipart request part = %s, want %s", gotForm, want)
	}
}

func TestPagingIterators(t *testing.T) {
	c, f := newFake(t, map[string]http.HandlerFunc{
		"GET /sandboxes": func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("next_token") == "" {
				jsonAnswer(200, `{"sandboxes":[{"sandbox_id":"a"},{"sandbox_id":"b"}],"next_token":"t2"}`)(w, r)
				return
			}
			jsonAnswer(200, `{"sandboxes":[{"sandbox_id":"c"}],"next_token":null}`)(w, r)
		},
		"GET /sandboxes/sbx-1/audit": func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("cursor") == "" {
				jsonAnswer(200, `{"events":[{"id":1,"type":"sandbox.created"}],"next_cursor":"1"}`)(w, r)
				return
			}
			jsonAnswer(200, `{"events":[{"id":2,"type":"command.started"}],"next_cursor":""}`)(w, r)
		},
	})
	ctx := context.Background()
	var ids []string
	for sb, err := range c.AllSandboxes(ctx, ListQuery{Limit: 2}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sb.SandboxID)
	}
	if fmt.Sprint(ids) != "[a b c]" || f.last().Query != "limit=2&next_token=t2" {
		t.Errorf("AllSandboxes = %v (last query %s), want a b c over two pages", ids, f.last().Query)
	}
	var types []string
	for ev, err := range c.AllAuditEvents(ctx, "sbx-1", AuditQuery{}) {
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, ev.Type)
	}
	if fmt.Sprint(types) != "[sandbox.created command.started]" {
		t.Errorf("AllAuditEvents = %v", types)
	}
}

func TestWriteFiles(t *testing.T) {
	c, f := newFake(t, map[string]http.HandlerFunc{
		"POST /sandboxes/sbx-1/files/batch": func(w http.ResponseWriter, r *http.Request) {
			var req struct {
				Files []struct{ Path, Data string } `json:"files"`
			}
			json.NewDecoder(r.Body).Decode(&req)
			var res []string
			for _, f := range req.Files {
				res = append(res, fmt.Sprintf(`{"path":%q,"size":%d}`, f.Path, len(f.Data)))
			}
			jsonAnswer(200, "["+strings.Join(res, ",")+"]")(w, r)
		},
		"PUT /sandboxes/sbx-1/files/raw": func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			jsonAnswer(200, fmt.Sprintf(`{"path":%q,"size":%d}`, r.URL.Query().Get("path"), len(b)))(w, r)
		},
	})
	res, err := c.WriteFiles(context.Background(), "sbx-1", []FileData{
		{"/a", []byte("aa")}, {"/b", []byte("b")}, {"/bin", []byte{0xff, 0xfe, 0}}, {"/c", []byte("ccc")},
	}, FileOptions{User: "user"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res {
		got = append(got, fmt.Sprintf("%s:%d", r.Path, r.Size))
	}
	if fmt.Sprint(got) != "[/a:2 /b:1 /bin:3 /c:3]" {
		t.Errorf("WriteFiles = %v", got)
	}
	f.mu.Lock()
	var calls []string
	for _, r := range f.seen {
		calls = append(calls, r.Method+" "+r.Path)
	}
	first := f.seen[0].Body
	f.mu.Unlock()
	want := "[POST /sandboxes/sbx-1/files/batch PUT /sandboxes/sbx-1/files/raw POST /sandboxes/sbx-1/files/batch]"
	if fmt.Sprint(calls) != want {
		t.Errorf("calls = %v, want %s (write order kept)", calls, want)
	}
	if first != `{"files":[{"path":"/a","data":"aa"},{"path":"/b","data":"b"}],"username":"user"}` {
		t.Errorf("first batch body = %s", first)
	}
}
