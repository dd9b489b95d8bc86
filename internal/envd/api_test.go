package envd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/envd/process"
	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/testenv"
)

const testToken = "test-token-42"

type testClient struct {
	t         *testing.T
	base      string
	srv       *Server
	mu        sync.Mutex
	hostnames []string
}

// newTestServer serves a Server on a loopback httptest server.
func newTestServer(t *testing.T, pcfg process.Config) *testClient {
	t.Helper()
	return newTestServerConfig(t, Config{Process: pcfg})
}

// newTestServerConfig is newTestServer with a Config; the token, hostname
// and logging are set here.
func newTestServerConfig(t *testing.T, cfg Config) *testClient {
	t.Helper()
	c := &testClient{t: t}
	cfg.AccessToken = testToken
	cfg.Logf = t.Logf
	cfg.SetHostname = func(name string) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.hostnames = append(c.hostnames, name)
		return nil
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.Close()
		ts.Close()
	})
	c.base, c.srv = ts.URL, srv
	return c
}

// rootServer is newTestServer for tests that run commands or write files
// as root (the default user).
func rootServer(t *testing.T) *testClient {
	t.Helper()
	testenv.RequireRoot(t)
	return newTestServer(t, process.Config{})
}

func (c *testClient) request(ctx context.Context, method, path string, body io.Reader) *http.Request {
	c.t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set(envdapi.AccessTokenHeader, testToken)
	return req
}

// do sends a JSON body (nil: none; []byte: raw) and decodes a 2xx answer
// into out. It returns the status and the raw answer.
func (c *testClient) do(method, path string, body any, out any) (int, []byte) {
	c.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	case string:
		r = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	resp, err := http.DefaultClient.Do(c.request(c.t.Context(), method, path, r))
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, raw
}

// mustDo is do that fails unless the status is want.
func (c *testClient) mustDo(want int, method, path string, body, out any) []byte {
	c.t.Helper()
	status, raw := c.do(method, path, body, out)
	if status != want {
		c.t.Fatalf("%s %s = %d %s, want %d", method, path, status, raw, want)
	}
	return raw
}

func (c *testClient) run(req envdapi.CommandRequest) envdapi.CommandResult {
	c.t.Helper()
	var res envdapi.CommandResult
	c.mustDo(http.StatusOK, "POST", "/commands", req, &res)
	return res
}

func (c *testClient) background(req envdapi.CommandRequest) int {
	c.t.Helper()
	req.Background = true
	var res envdapi.BackgroundStarted
	c.mustDo(http.StatusOK, "POST", "/commands", req, &res)
	if res.Pid <= 0 {
		c.t.Fatalf("background start: pid %d", res.Pid)
	}
	return res.Pid
}

func errorCode(t *testing.T, raw []byte) string {
	t.Helper()
	var e envdapi.Error
	if err := json.Unmarshal(raw, &e); err != nil || e.Message == "" {
		t.Errorf("error body %q is not an envdapi.Error: %v", raw, err)
	}
	return e.Code
}

func seconds(s float64) *float64 { return &s }

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func waitDead(t *testing.T, pid int) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, func() error {
		if alive(pid) {
			return fmt.Errorf("pid %d still alive", pid)
		}
		return nil
	})
}

func TestAuth(t *testing.T) {
	c := newTestServer(t, process.Config{})
	tests := []struct {
		name   string
		method string
		path   string
		token  *string
		want   int
	}{
		{"health without token", "GET", "/health", nil, http.StatusOK},
		{"list without token", "GET", "/commands", nil, http.StatusUnauthorized},
		{"wrong token", "GET", "/commands", ptr("nope"), http.StatusUnauthorized},
		{"token prefix", "GET", "/commands", ptr(testToken[:5]), http.StatusUnauthorized},
		{"files without token", "GET", "/files?path=/etc/hostname", nil, http.StatusUnauthorized},
		{"right token", "GET", "/commands", ptr(testToken), http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, c.base+tt.path, nil)
			if tt.token != nil {
				req.Header.Set(envdapi.AccessTokenHeader, *tt.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%s %s = %d %s, want %d", tt.method, tt.path, resp.StatusCode, body, tt.want)
			}
			if tt.want == http.StatusUnauthorized && errorCode(t, body) != "unauthorized" {
				t.Errorf("401 body = %s", body)
			}
		})
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New without token and without Insecure succeeded")
	}
}

func ptr[T any](v T) *T { return &v }

func TestRequestErrors(t *testing.T) {
	c := newTestServer(t, process.Config{})
	huge := append([]byte(`{"cmd":"`), bytes.Repeat([]byte("a"), envdapi.MaxJSONBody)...)
	huge = append(huge, `"}`...)
	tests := []struct {
		name, method, path string
		body               any
		want               int
		code               string
	}{
		{"malformed JSON", "POST", "/commands", "{not json", 400, "bad_request"},
		{"empty body", "POST", "/commands", nil, 400, "bad_request"},
		{"oversized JSON", "POST", "/commands", huge, 413, "body_too_large"},
		{"oversized write", "POST", "/files", huge, 413, "body_too_large"},
		{"wrong JSON type", "POST", "/commands", `{"cmd": 5}`, 400, "bad_request"},
		{"empty cmd", "POST", "/commands", envdapi.CommandRequest{}, 400, "bad_request"},
		{"unknown user", "POST", "/commands", envdapi.CommandRequest{Cmd: "true", User: "no-such-user"}, 400, "unknown_user"},
		{"negative timeout", "POST", "/commands", `{"cmd":"true","timeout":-1}`, 400, "bad_request"},
		{"bad env name", "POST", "/commands", envdapi.CommandRequest{Cmd: "true", Envs: map[string]string{"A=B": "x"}}, 400, "bad_request"},
		{"missing cwd", "POST", "/commands", envdapi.CommandRequest{Cmd: "true", Cwd: "/no/such/dir"}, 400, "bad_request"},
		{"unknown pid kill", "DELETE", "/commands/999999999", nil, 404, "process_not_found"},
		{"unknown pid wait", "GET", "/commands/999999999/wait", nil, 404, "process_not_found"},
		{"unknown pid stdin", "POST", "/commands/999999999/stdin", `{"data":"x"}`, 404, "process_not_found"},
		{"invalid pid", "DELETE", "/commands/abc", nil, 400, "bad_request"},
		{"bad init env", "POST", "/init", `{"envs":{"":"x"}}`, 400, "bad_request"},
		{"empty path", "GET", "/files?path=", nil, 400, "bad_request"},
		{"file unknown user", "GET", "/files?path=/etc/hostname&username=no-such-user", nil, 400, "unknown_user"},
		{"bad depth", "GET", "/files/list?path=/&depth=x", nil, 400, "bad_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, raw := c.do(tt.method, tt.path, tt.body, nil)
			if status != tt.want {
				t.Fatalf("%s %s = %d %.200s, want %d", tt.method, tt.path, status, raw, tt.want)
			}
			if code := errorCode(t, raw); code != tt.code {
				t.Errorf("%s %s code = %q, want %q", tt.method, tt.path, code, tt.code)
			}
		})
	}
}

func TestRunForeground(t *testing.T) {
	c := rootServer(t)
	cwd := t.TempDir()
	tests := []struct {
		name           string
		req            envdapi.CommandRequest
		stdout, stderr string
		exitCode       int
	}{
		{"echo", envdapi.CommandRequest{Cmd: "echo hello"}, "hello\n", "", 0},
		{"non-zero exit is data", envdapi.CommandRequest{Cmd: "echo partial; exit 7"}, "partial\n", "", 7},
		{"stderr", envdapi.CommandRequest{Cmd: "echo bad >&2; false"}, "", "bad\n", 1},
		{"default cwd is home", envdapi.CommandRequest{Cmd: "pwd"}, "/root\n", "", 0},
		{"cwd", envdapi.CommandRequest{Cmd: "pwd; echo $PWD", Cwd: cwd}, cwd + "\n" + cwd + "\n", "", 0},
		{"default env", envdapi.CommandRequest{Cmd: `echo "$HOME|$PATH|$LANG|$USER|$LOGNAME|$SHELL"`},
			"/root|" + process.DefaultPath + "|C.UTF-8|root|root|/bin/bash\n", "", 0},
		{"env not inherited from envd", envdapi.CommandRequest{Cmd: `echo "[${GOPATH-}${GOROOT-}${ENVD_TEST_LEAK-}]"`}, "[]\n", "", 0},
		{"stdin is empty", envdapi.CommandRequest{Cmd: "cat; echo end"}, "end\n", "", 0},
		{"timeout 0 means none", envdapi.CommandRequest{Cmd: "sleep 0.1; echo ok", Timeout: seconds(0)}, "ok\n", "", 0},
	}
	t.Setenv("ENVD_TEST_LEAK", "leaked")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := c.run(tt.req)
			if res.Stdout != tt.stdout || res.Stderr != tt.stderr || res.ExitCode != tt.exitCode || res.Pid <= 0 {
				t.Errorf("run %q = %+v, want stdout %q stderr %q exit %d", tt.req.Cmd, res, tt.stdout, tt.stderr, tt.exitCode)
			}
		})
	}
}

func TestEnvPrecedence(t *testing.T) {
	c := rootServer(t)
	c.mustDo(http.StatusNoContent, "POST", "/init", envdapi.InitRequest{
		Envs:     map[string]string{"A": "init", "B": "init", "LANG": "en_US.UTF-8"},
		Hostname: "sbx-test",
	}, nil)
	res := c.run(envdapi.CommandRequest{
		Cmd:  `echo "$A $B $C $LANG $PATH"`,
		Envs: map[string]string{"B": "req", "C": "req", "PATH": "/opt/x:/usr/bin:/bin"},
	})
	if want := "init req req en_US.UTF-8 /opt/x:/usr/bin:/bin\n"; res.Stdout != want {
		t.Errorf("env layering: stdout %q, want %q", res.Stdout, want)
	}
	// A second /init replaces the sandbox envs.
	c.mustDo(http.StatusNoContent, "POST", "/init", envdapi.InitRequest{Envs: map[string]string{"B": "again"}}, nil)
	res = c.run(envdapi.CommandRequest{Cmd: `echo "[$A] $B $LANG"`})
	if want := "[] again C.UTF-8\n"; res.Stdout != want {
		t.Errorf("after re-init: stdout %q, want %q", res.Stdout, want)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.hostnames) != 1 || c.hostnames[0] != "sbx-test" {
		t.Errorf("hostnames set = %q, want [sbx-test]", c.hostnames)
	}
}

func TestUserSwitch(t *testing.T) {
	c := rootServer(t)
	res := c.run(envdapi.CommandRequest{Cmd: `id -u; id -g; echo "$HOME $USER"; pwd`, User: "nobody"})
	if want := "65534\n65534\n/nonexistent nobody\n/\n"; res.Stdout != want {
		t.Errorf("as nobody: stdout %q stderr %q, want %q", res.Stdout, res.Stderr, want)
	}
	// nobody cannot write where root can.
	dir := t.TempDir()
	res = c.run(envdapi.CommandRequest{Cmd: "touch " + dir + "/x", User: "nobody"})
	if res.ExitCode == 0 {
		t.Errorf("nobody wrote into a root-owned 0700 directory: %+v", res)
	}
	// Files created for a user belong to it.
	os.Chmod(dir, 0o755)
	var wr envdapi.WriteResult
	c.mustDo(http.StatusOK, "POST", "/files", envdapi.WriteRequest{Path: dir + "/sub/f", Data: "x", Username: "nobody"}, &wr)
	for _, p := range []string{dir + "/sub", dir + "/sub/f"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 65534 || sys.Gid != 65534 {
			t.Errorf("%s owned by %d:%d, want 65534:65534", p, sys.Uid, sys.Gid)
		}
	}
	var info envdapi.EntryInfo
	c.mustDo(http.StatusOK, "GET", "/files/info?path="+url.QueryEscape(dir+"/sub/f"), nil, &info)
	if info.Owner != "nobody" {
		t.Errorf("info owner = %q, want nobody", info.Owner)
	}
}

func TestTimeoutKillsTree(t *testing.T) {
	c := rootServer(t)
	// The backgrounded sleep is put in its own process group (set -m) and
	// holds no pipe, so only killing the whole tree ends it.
	status, raw := c.do("POST", "/commands", envdapi.CommandRequest{
		Cmd:     "echo before; echo oops >&2; set -m; sleep 300 >/dev/null 2>&1 & echo $!; sleep 300",
		Timeout: seconds(0.5),
	}, nil)
	if status != http.StatusRequestTimeout {
		t.Fatalf("status %d %s, want 408", status, raw)
	}
	var te envdapi.TimeoutError
	if err := json.Unmarshal(raw, &te); err != nil {
		t.Fatal(err)
	}
	if te.Code != envdapi.CodeCommandTimeout || te.Stderr != "oops\n" || !strings.HasPrefix(te.Stdout, "before\n") || te.Message == "" {
		t.Errorf("408 body = %+v", te)
	}
	child, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(te.Stdout, "before\n")))
	if err != nil {
		t.Fatalf("stdout %q: want the background pid", te.Stdout)
	}
	waitDead(t, child)
	waitDead(t, te.Pid)
}

func TestForegroundDisconnectKills(t *testing.T) {
	c := rootServer(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		body := fmt.Sprintf(`{"cmd":"echo $$ > %s; exec sleep 300"}`, pidFile)
		resp, err := http.DefaultClient.Do(c.request(ctx, "POST", "/commands", strings.NewReader(body)))
		if err == nil {
			resp.Body.Close()
		}
	}()
	var pid int
	testenv.WaitFor(t, 10*time.Second, func() error {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return err
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err
	})
	if !alive(pid) {
		t.Fatalf("pid %d not running before disconnect", pid)
	}
	cancel()
	<-done
	waitDead(t, pid)
}

func TestBackground(t *testing.T) {
	c := rootServer(t)
	pid := c.background(envdapi.CommandRequest{
		Cmd:   `read a; read b; echo "$a-$b"; echo fin >&2`,
		Stdin: true,
		Tag:   "reader",
		Envs:  map[string]string{"K": "V"},
	})
	var list []envdapi.ProcessInfo
	c.mustDo(http.StatusOK, "GET", "/commands", nil, &list)
	found := false
	for _, p := range list {
		if p.Pid == pid {
			found = true
			if p.Tag != "reader" || p.Envs["K"] != "V" || p.IsPty || p.Cwd != "/root" {
				t.Errorf("listed %+v", p)
			}
		}
	}
	if !found {
		t.Errorf("GET /commands = %+v, missing pid %d", list, pid)
	}

	// A wait that times out answers 408 with the output so far.
	status, raw := c.do("GET", fmt.Sprintf("/commands/%d/wait?timeout=0.2", pid), nil, nil)
	if status != http.StatusRequestTimeout || errorCode(t, raw) != envdapi.CodeWaitTimeout {
		t.Errorf("wait with timeout on a running process = %d %s, want 408 %s", status, raw, envdapi.CodeWaitTimeout)
	}

	c.mustDo(http.StatusNoContent, "POST", fmt.Sprintf("/commands/%d/stdin", pid), envdapi.StdinRequest{Data: "one\n"}, nil)
	c.mustDo(http.StatusNoContent, "POST", fmt.Sprintf("/commands/%d/stdin", pid), envdapi.StdinRequest{Data: "two\n"}, nil)
	var res envdapi.CommandResult
	c.mustDo(http.StatusOK, "GET", fmt.Sprintf("/commands/%d/wait", pid), nil, &res)
	if res.Stdout != "one-two\n" || res.Stderr != "fin\n" || res.ExitCode != 0 || res.Pid != pid {
		t.Errorf("wait = %+v", res)
	}
	// Waiting again still works for a while.
	var again envdapi.CommandResult
	c.mustDo(http.StatusOK, "GET", fmt.Sprintf("/commands/%d/wait", pid), nil, &again)
	if again != res {
		t.Errorf("second wait = %+v, want %+v", again, res)
	}
	status, raw = c.do("POST", fmt.Sprintf("/commands/%d/stdin", pid), envdapi.StdinRequest{Data: "x"}, nil)
	if status != http.StatusConflict {
		t.Errorf("stdin after exit = %d %s, want 409", status, raw)
	}

	// No stdin pipe: 409.
	sleeper := c.background(envdapi.CommandRequest{Cmd: "sleep 300"})
	status, raw = c.do("POST", fmt.Sprintf("/commands/%d/stdin", sleeper), envdapi.StdinRequest{Data: "x"}, nil)
	if status != http.StatusConflict || errorCode(t, raw) != "stdin_unavailable" {
		t.Errorf("stdin without pipe = %d %s, want 409", status, raw)
	}

	// Kill, then wait sees the kill.
	var kr envdapi.KillResult
	c.mustDo(http.StatusOK, "DELETE", fmt.Sprintf("/commands/%d", sleeper), nil, &kr)
	if !kr.Killed {
		t.Error("kill of a running process: killed = false")
	}
	c.mustDo(http.StatusOK, "GET", fmt.Sprintf("/commands/%d/wait", sleeper), nil, &res)
	if res.ExitCode != 128+9 || res.Error == "" {
		t.Errorf("wait after kill = %+v, want exit 137 and an error", res)
	}
	waitDead(t, sleeper)
	c.mustDo(http.StatusOK, "DELETE", fmt.Sprintf("/commands/%d", sleeper), nil, &kr)
	if kr.Killed {
		t.Error("second kill: killed = true")
	}
	c.mustDo(http.StatusOK, "GET", "/commands", nil, &list)
	for _, p := range list {
		if p.Pid == pid || p.Pid == sleeper {
			t.Errorf("finished pid %d still listed", p.Pid)
		}
	}
}

func TestBackgroundTimeout(t *testing.T) {
	c := rootServer(t)
	pid := c.background(envdapi.CommandRequest{Cmd: "sleep 300", Timeout: seconds(0.3)})
	var res envdapi.CommandResult
	c.mustDo(http.StatusOK, "GET", fmt.Sprintf("/commands/%d/wait", pid), nil, &res)
	if !strings.Contains(res.Error, "timed out") || res.ExitCode != 137 {
		t.Errorf("wait of a timed out background command = %+v", res)
	}
}

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	name string
	id   string // the SSE id, "" if none
	data envdapi.StreamEvent
	raw  []byte // the JSON data as sent
}

func readSSE(t *testing.T, r io.Reader, each func(sseEvent) bool) {
	t.Helper()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.name != "" && !each(ev) {
				return
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.data); err != nil {
				t.Fatalf("SSE data %q: %v", line, err)
			}
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
}

func TestStream(t *testing.T) {
	c := rootServer(t)
	body := `{"cmd":"for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.05; done; printf 'h\u00e9llo'; exit 3","stream":true}`
	resp, err := http.DefaultClient.Do(c.request(t.Context(), "POST", "/commands/stream", strings.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("stream answered %d %q", resp.StatusCode, ct)
	}
	var names []string
	var stdout, stderr strings.Builder
	var exit *int
	readSSE(t, resp.Body, func(ev sseEvent) bool {
		names = append(names, ev.name)
		switch ev.name {
		case "start":
			if ev.data.Type != "start" || ev.data.Pid <= 0 {
				t.Errorf("start event %+v", ev.data)
			}
		case "stdout", "stderr":
			if ev.data.Type != ev.name || ev.data.Stream != ev.name {
				t.Errorf("%s event %+v: type and stream must both be %q", ev.name, ev.data, ev.name)
			}
			if ev.name == "stdout" {
				stdout.WriteString(ev.data.Data)
			} else {
				stderr.WriteString(ev.data.Data)
			}
		case "exit":
			exit = ev.data.ExitCode
		default:
			t.Errorf("unexpected event %q %+v", ev.name, ev.data)
		}
		return true
	})
	if len(names) < 3 || names[0] != "start" || names[len(names)-1] != "exit" {
		t.Errorf("events %v: want start ... exit", names)
	}
	if stdout.String() != "out1\nout2\nout3\nhéllo" || stderr.String() != "err1\nerr2\nerr3\n" {
		t.Errorf("streamed stdout %q stderr %q", stdout.String(), stderr.String())
	}
	if exit == nil || *exit != 3 {
		t.Errorf("exit event code %v, want 3", exit)
	}
}

func TestStreamTimeoutAndDisconnect(t *testing.T) {
	c := rootServer(t)
	resp, err := http.DefaultClient.Do(c.request(t.Context(), "POST", "/commands/stream",
		strings.NewReader(`{"cmd":"echo hi; sleep 300","timeout":0.3}`)))
	if err != nil {
		t.Fatal(err)
	}
	var last sseEvent
	readSSE(t, resp.Body, func(ev sseEvent) bool { last = ev; return true })
	resp.Body.Close()
	if last.name != "error" || last.data.Type != "error" || !strings.Contains(last.data.Error, "timed out") {
		t.Errorf("last event of a timed out stream = %+v, want error", last)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	resp, err = http.DefaultClient.Do(c.request(ctx, "POST", "/commands/stream", strings.NewReader(`{"cmd":"sleep 300"}`)))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	readSSE(t, resp.Body, func(ev sseEvent) bool { pid = ev.data.Pid; return false })
	if pid <= 0 || !alive(pid) {
		t.Fatalf("stream start pid %d not running", pid)
	}
	cancel()
	resp.Body.Close()
	waitDead(t, pid)
}

func TestLargeOutputNobodyReads(t *testing.T) {
	testenv.RequireRoot(t)
	const limit = 1 << 20
	c := newTestServer(t, process.Config{OutputLimit: limit})
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	pid := c.background(envdapi.CommandRequest{Cmd: "yes 0123456789abcdef | head -c 52428800; echo tail-marker"})
	var res envdapi.CommandResult
	c.mustDo(http.StatusOK, "GET", fmt.Sprintf("/commands/%d/wait?timeout=60", pid), nil, &res)
	if res.ExitCode != 0 || len(res.Stdout) > limit || !strings.HasSuffix(res.Stdout, "tail-marker\n") {
		t.Errorf("wait: exit %d, %d bytes of stdout ending %q, want 0, <= %d ending in tail-marker",
			res.ExitCode, len(res.Stdout), res.Stdout[max(0, len(res.Stdout)-20):], limit)
	}
	res = envdapi.CommandResult{}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grow := int64(after.HeapInuse) - int64(before.HeapInuse); grow > 24<<20 {
		t.Errorf("heap grew by %d MiB for 50 MiB of unread output with a 1 MiB limit", grow>>20)
	}
}

func allBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func TestFilesRoundTrip(t *testing.T) {
	c := rootServer(t)
	dir := t.TempDir()
	q := func(p string) string { return url.QueryEscape(filepath.Join(dir, p)) }

	// Text.
	var wr envdapi.WriteResult
	text := "héllo\nwörld\n"
	c.mustDo(http.StatusOK, "POST", "/files", envdapi.WriteRequest{Path: filepath.Join(dir, "a/b/t.txt"), Data: text}, &wr)
	if wr.Path != filepath.Join(dir, "a/b/t.txt") || wr.Size != int64(len(text)) {
		t.Errorf("write result %+v", wr)
	}
	if got := c.mustDo(http.StatusOK, "GET", "/files?path="+q("a/b/t.txt"), nil, nil); string(got) != text {
		t.Errorf("read text = %q, want %q", got, text)
	}

	// Binary, all byte values.
	bin := allBytes(256 * 3)
	c.mustDo(http.StatusOK, "PUT", "/files/raw?path="+q("bin"), bin, &wr)
	if wr.Size != int64(len(bin)) {
		t.Errorf("raw write size %d, want %d", wr.Size, len(bin))
	}
	for _, path := range []string{"/files/raw?path=" + q("bin"), "/files?path=" + q("bin")} {
		resp, err := http.DefaultClient.Do(c.request(t.Context(), "GET", path, nil))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(got, bin) || resp.ContentLength != int64(len(bin)) || resp.Header.Get("Content-Type") != "application/octet-stream" {
			t.Errorf("GET %s: %d bytes, Content-Length %d, type %q: not byte-exact", path, len(got), resp.ContentLength, resp.Header.Get("Content-Type"))
		}
	}

	// Relative paths resolve against the user's home.
	status, _ := c.do("GET", "/files/exists?path=.", nil, nil)
	var ex envdapi.ExistsResult
	c.mustDo(http.StatusOK, "GET", "/files/exists?path=.", nil, &ex)
	if status != 200 || !ex.Exists {
		t.Errorf("exists(.) = %v", ex)
	}

	// Batch.
	var batch []envdapi.WriteResult
	c.mustDo(http.StatusOK, "POST", "/files/batch", envdapi.BatchWriteRequest{Files: []envdapi.WriteRequest{
		{Path: filepath.Join(dir, "b1"), Data: "1"},
		{Path: filepath.Join(dir, "sub/b2"), Data: "22"},
	}}, &batch)
	if len(batch) != 2 || batch[1].Size != 2 {
		t.Errorf("batch = %+v", batch)
	}
	if got := c.mustDo(http.StatusOK, "GET", "/files?path="+q("sub/b2"), nil, nil); string(got) != "22" {
		t.Errorf("batch file content %q", got)
	}
}

// patternReader yields n bytes of a fixed pattern, optionally failing at the end.
type patternReader struct {
	n, off int64
	fail   bool
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		if r.fail {
			return 0, errors.New("upload aborted")
		}
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n-r.off)]
	for i := range p {
		p[i] = byte((r.off + int64(i)) * 7 >> 3)
	}
	r.off += int64(len(p))
	return len(p), nil
}

func TestLargeRawFile(t *testing.T) {
	c := rootServer(t)
	dir := t.TempDir()
	path := "/files/raw?path=" + url.QueryEscape(filepath.Join(dir, "big"))
	const size = 64 << 20
	want := sha256.New()
	io.Copy(want, &patternReader{n: size})

	req := c.request(t.Context(), "PUT", path, &patternReader{n: size})
	req.ContentLength = size
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var wr envdapi.WriteResult
	json.NewDecoder(resp.Body).Decode(&wr)
	resp.Body.Close()
	if resp.StatusCode != 200 || wr.Size != size {
		t.Fatalf("upload = %d %+v", resp.StatusCode, wr)
	}
	resp, err = http.DefaultClient.Do(c.request(t.Context(), "GET", path, nil))
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, _ := io.Copy(got, resp.Body)
	resp.Body.Close()
	if n != size || resp.ContentLength != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Errorf("download: %d bytes (Content-Length %d), hash match %v", n, resp.ContentLength, bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}

	// An aborted upload leaves the existing file intact and no temp file.
	req = c.request(t.Context(), "PUT", path, &patternReader{n: 1 << 20, fail: true})
	req.ContentLength = 2 << 20
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	testenv.WaitFor(t, 5*time.Second, func() error {
		ents, _ := os.ReadDir(dir)
		if len(ents) != 1 {
			return fmt.Errorf("%d entries in the directory after an aborted upload", len(ents))
		}
		return nil
	})
	st, err := os.Stat(filepath.Join(dir, "big"))
	if err != nil || st.Size() != size {
		t.Errorf("after aborted upload: size %v, %v, want %d", st.Size(), err, size)
	}

	// Above the limit: 413 from the Content-Length alone.
	req = c.request(t.Context(), "PUT", path, io.LimitReader(&patternReader{n: envdapi.MaxRawUpload + 1}, envdapi.MaxRawUpload+1))
	req.ContentLength = envdapi.MaxRawUpload + 1
	if resp, err := http.DefaultClient.Do(req); err == nil {
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("oversized upload = %d, want 413", resp.StatusCode)
		}
		resp.Body.Close()
	}
}

func TestFilesOps(t *testing.T) {
	c := rootServer(t)
	dir := t.TempDir()
	q := func(p string) string { return url.QueryEscape(filepath.Join(dir, p)) }
	for _, p := range []string{"d1/d2/f3", "d1/f2", "f1"} {
		c.mustDo(http.StatusOK, "POST", "/files", envdapi.WriteRequest{Path: filepath.Join(dir, p), Data: p}, nil)
	}

	names := func(ents []envdapi.EntryInfo) string {
		var s []string
		for _, e := range ents {
			rel, _ := filepath.Rel(dir, e.Path)
			s = append(s, rel+":"+e.Type)
		}
		return strings.Join(s, " ")
	}
	var ents []envdapi.EntryInfo
	c.mustDo(http.StatusOK, "GET", "/files/list?path="+q(""), nil, &ents)
	if got, want := names(ents), "d1:dir f1:file"; got != want {
		t.Errorf("list depth 1 = %s, want %s", got, want)
	}
	c.mustDo(http.StatusOK, "GET", "/files/list?depth=3&path="+q(""), nil, &ents)
	if got, want := names(ents), "d1:dir d1/d2:dir d1/d2/f3:file d1/f2:file f1:file"; got != want {
		t.Errorf("list depth 3 = %s, want %s", got, want)
	}

	var info envdapi.EntryInfo
	c.mustDo(http.StatusOK, "GET", "/files/info?path="+q("d1/f2"), nil, &info)
	if info.Name != "f2" || info.Type != "file" || info.Size != 5 || info.Owner != "root" || info.Permissions != "-rw-r--r--" {
		t.Errorf("info = %+v", info)
	}
	if _, err := time.Parse(time.RFC3339, info.ModifiedTime); err != nil {
		t.Errorf("modified_time %q: %v", info.ModifiedTime, err)
	}

	var ex envdapi.ExistsResult
	c.mustDo(http.StatusOK, "GET", "/files/exists?path="+q("f1"), nil, &ex)
	if !ex.Exists {
		t.Error("exists(f1) = false")
	}
	c.mustDo(http.StatusOK, "GET", "/files/exists?path="+q("nope"), nil, &ex)
	if ex.Exists {
		t.Error("exists(nope) = true")
	}

	c.mustDo(http.StatusOK, "PATCH", "/files", envdapi.RenameRequest{OldPath: filepath.Join(dir, "f1"), NewPath: filepath.Join(dir, "moved/f1")}, &info)
	if info.Path != filepath.Join(dir, "moved/f1") || info.Size != 2 {
		t.Errorf("rename = %+v", info)
	}

	var mk envdapi.MkdirResult
	c.mustDo(http.StatusOK, "POST", "/files/mkdir", envdapi.MkdirRequest{Path: filepath.Join(dir, "m/n")}, &mk)
	if !mk.Created {
		t.Error("mkdir new: created = false")
	}
	c.mustDo(http.StatusOK, "POST", "/files/mkdir?path="+q("m/n"), nil, &mk)
	if mk.Created {
		t.Error("mkdir existing (query form): created = true")
	}

	c.mustDo(http.StatusNoContent, "DELETE", "/files?path="+q("d1"), nil, nil)
	if _, err := os.Stat(filepath.Join(dir, "d1")); !os.IsNotExist(err) {
		t.Errorf("d1 after delete: %v", err)
	}

	errs := []struct {
		name, method, path string
		body               any
		want               int
		code               string
	}{
		{"read missing", "GET", "/files?path=" + q("nope"), nil, 404, "not_found"},
		{"read raw missing", "GET", "/files/raw?path=" + q("nope"), nil, 404, "not_found"},
		{"read directory", "GET", "/files?path=" + q("m"), nil, 400, "is_directory"},
		{"list missing", "GET", "/files/list?path=" + q("nope"), nil, 404, "not_found"},
		{"list file", "GET", "/files/list?path=" + q("moved/f1"), nil, 400, "not_directory"},
		{"info missing", "GET", "/files/info?path=" + q("nope"), nil, 404, "not_found"},
		{"delete missing", "DELETE", "/files?path=" + q("d1"), nil, 404, "not_found"},
		{"rename missing", "PATCH", "/files", envdapi.RenameRequest{OldPath: filepath.Join(dir, "nope"), NewPath: filepath.Join(dir, "x")}, 404, "not_found"},
		{"mkdir over file", "POST", "/files/mkdir", envdapi.MkdirRequest{Path: filepath.Join(dir, "moved/f1")}, 409, "already_exists"},
		{"write over directory", "POST", "/files", envdapi.WriteRequest{Path: filepath.Join(dir, "m"), Data: "x"}, 400, "is_directory"},
		{"raw write over directory", "PUT", "/files/raw?path=" + q("m"), []byte("x"), 400, "is_directory"},
		{"malformed rename", "PATCH", "/files", "{", 400, "bad_request"},
		{"malformed mkdir", "POST", "/files/mkdir", "[1,", 400, "bad_request"},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			status, raw := c.do(tt.method, tt.path, tt.body, nil)
			if status != tt.want || errorCode(t, raw) != tt.code {
				t.Errorf("%s %s = %d %s, want %d %s", tt.method, tt.path, status, raw, tt.want, tt.code)
			}
		})
	}
}

// TestStreamStalledReaderBlocksItsCommand: a client that stops reading
// POST /commands/stream holds its command back like a pipe: the command
// blocks (envd retains no more than its window meanwhile) while other
// commands run, and once the client reads on it gets all the output.
func TestStreamStalledReaderBlocksItsCommand(t *testing.T) {
	const limit = 1 << 20
	const total = 52428800
	c := newTestServer(t, process.Config{OutputLimit: limit})
	resp, err := http.DefaultClient.Do(c.request(t.Context(), "POST", "/commands/stream",
		strings.NewReader(fmt.Sprintf(`{"cmd":"yes 0123456789abcdef | head -c %d; echo done >&2"}`, total))))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	var start envdapi.StreamEvent
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the start event: %v", err)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			if err := json.Unmarshal([]byte(data), &start); err != nil {
				t.Fatal(err)
			}
		}
		if line == "\n" {
			break // the end of the first (start) event; the rest stays unread
		}
	}
	pid := start.Pid
	if start.Type != "start" || pid == 0 {
		t.Fatalf("first event %+v, want start with a pid", start)
	}
	// Nobody reads the stream for now: the command blocks.
	var still envdapi.TimeoutError
	if code, b := c.do("GET", fmt.Sprintf("/commands/%d/wait?timeout=2", pid), nil, &still); code != http.StatusRequestTimeout {
		t.Fatalf("wait for a command whose client stalls = %d %.200s, want 408 (still running)", code, b)
	}
	if n := len(still.Stdout); n > limit+64<<10 {
		t.Errorf("envd retained %d bytes of a stalled stream, want at most the %d window", n, limit)
	}
	if res := c.run(envdapi.CommandRequest{Cmd: "echo ok"}); res.Stdout != "ok\n" {
		t.Errorf("another command while a stream stalls = %+v", res)
	}
	// The client reads on and gets everything.
	var out, errOut int
	gaps, exit := 0, -1
	readSSE(t, r, func(ev sseEvent) bool {
		switch ev.name {
		case "stdout":
			out += len(ev.data.Data)
		case "stderr":
			errOut += len(ev.data.Data)
		case "gap":
			gaps++
		case "exit":
			exit = *ev.data.ExitCode
			return false
		}
		return true
	})
	if exit != 0 || gaps != 0 || errOut != len("done\n") {
		t.Errorf("stream after the stall: exit %d, %d gaps, %d bytes of stderr; want 0, none, done", exit, gaps, errOut)
	}
	if out != total {
		t.Errorf("stalled client got %d bytes of stdout after reading on, want all %d", out, total)
	}
}

func TestWarmupEndpoint(t *testing.T) {
	c := newTestServer(t, process.Config{})
	if code, b := c.do("POST", "/warmup", nil, nil); code != http.StatusNoContent {
		t.Fatalf("POST /warmup = %d %s, want 204", code, b)
	}
}
