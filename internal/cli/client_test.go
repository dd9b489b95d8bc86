package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeAPI is an httptest server standing in for the declaw API: it records
// every request and answers with the test's handler.
type fakeAPI struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	reqs   []fakeReq
	handle http.HandlerFunc
}

type fakeReq struct {
	Method, URI string
	Header      http.Header
	Body        []byte
	Chunked     bool
	Length      int64
}

// String is "METHOD URI BODY" with a JSON body compacted.
func (r fakeReq) String() string {
	body := string(r.Body)
	var b bytes.Buffer
	if json.Compact(&b, r.Body) == nil {
		body = b.String()
	}
	if body == "" {
		return r.Method + " " + r.URI
	}
	return r.Method + " " + r.URI + " " + body
}

func newFakeAPI(t *testing.T, handle http.HandlerFunc) *fakeAPI {
	t.Helper()
	f := &fakeAPI{t: t, handle: handle}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, fakeReq{Method: r.Method, URI: r.URL.RequestURI(), Header: r.Header.Clone(), Body: body,
			Chunked: len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked", Length: r.ContentLength})
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		if f.handle == nil {
			http.Error(w, "no handler", 500)
			return
		}
		f.handle(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) requests() []fakeReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeReq(nil), f.reqs...)
}

func (f *fakeAPI) requestLines() []string {
	var out []string
	for _, r := range f.requests() {
		out = append(out, r.String())
	}
	return out
}

func (f *fakeAPI) domain() string { return strings.TrimPrefix(f.srv.URL, "http://") }

// runCLI runs the CLI against f with stdin and returns stdout, stderr and the exit code.
func runCLI(t *testing.T, f *fakeAPI, stdin io.Reader, extraEnv map[string]string, args ...string) (string, string, int) {
	t.Helper()
	envs := map[string]string{"DECLAW_API_KEY": "k-test"}
	if f != nil {
		envs["DECLAW_DOMAIN"] = f.domain()
	}
	for k, v := range extraEnv {
		envs[k] = v
	}
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var stdout, stderr bytes.Buffer
	e := &env{stdin: stdin, stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return envs[k] }}
	code := run(e, args)
	return stdout.String(), stderr.String(), code
}

// answer returns a handler answering status with body (JSON unless it starts otherwise).
func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(body, "{") || strings.HasPrefix(body, "[") {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// routes dispatches on "METHOD /path" (no query).
func routes(m map[string]http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h, ok := m[r.Method+" "+r.URL.Path]; ok {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(404)
		io.WriteString(w, `{"message":"no such endpoint: `+r.Method+" "+r.URL.Path+`","code":"not_found"}`)
	}
}

const sbx1 = `{"sandbox_id":"sbx-1","template_id":"python","state":"running","metadata":{"owner":"me","team":"a"},` +
	`"envs":{"A":"1","MY_API_KEY":"***"},"timeout":300,"started_at":"2026-11-27T04:00:00Z","end_at":"2026-11-27T04:05:00Z",` +
	`"guest_ip":"10.11.0.2","runtime":"gvisor","network":{"deny_out":["0.0.0.0/0"]},"extra_field":42}`

const sbx2 = `{"sandbox_id":"sbx-2","template_id":"base","state":"paused","metadata":{},"timeout":0,"started_at":"2026-11-27T04:01:00Z","end_at":null}`

func TestSandboxCommands(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(`{"pii": {"enabled": true}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	notFound := answer(404, `{"message":"sandbox sbx-x: sandbox not found","code":"sandbox_not_found"}`)
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		stdin      string
		handle     http.HandlerFunc
		wantReqs   []string
		wantStdout string
		wantStderr string // substring
		wantCode   int
	}{
		{
			name:       "create defaults",
			args:       []string{"sandbox", "create"},
			handle:     answer(201, `{"sandbox_id":"sbx-1","envd_access_token":"tok"}`),
			wantReqs:   []string{`POST /sandboxes {"template":"base","timeout":300}`},
			wantStdout: "sbx-1\n",
		},
		{
			name: "create all flags",
			args: []string{"sbx", "create", "-t", "python", "--timeout", "0", "-e", "A=1", "-e", "FROM_HOST", "--env", "B=x=y",
				"--metadata", "owner=me", "--metadata", "team=a", "--no-internet", "--allow-out", "pypi.org,*.pythonhosted.org",
				"--deny-out", "10.0.0.0/8", "--security-file", policy},
			env:    map[string]string{"FROM_HOST": "host-value"},
			handle: answer(201, sbx1),
			wantReqs: []string{`POST /sandboxes {"template":"python","timeout":0,"metadata":{"owner":"me","team":"a"},` +
				`"envs":{"A":"1","B":"x=y","FROM_HOST":"host-value"},"network":{"allow_out":["pypi.org","*.pythonhosted.org"],` +
				`"deny_out":["10.0.0.0/8","0.0.0.0/0"]},"security":{"pii":{"enabled":true}}}`},
			wantStdout: "sbx-1\n",
		},
		{
			name:       "create json keeps every field",
			args:       []string{"sandbox", "create", "--json", "--template", "python"},
			handle:     answer(201, `{"sandbox_id": "sbx-1", "envd_access_token": "tok", "sandbox_domain": "d"}`),
			wantReqs:   []string{`POST /sandboxes {"template":"python","timeout":300}`},
			wantStdout: `{"sandbox_id":"sbx-1","envd_access_token":"tok","sandbox_domain":"d"}` + "\n",
		},
		{
			name:       "create security from stdin",
			args:       []string{"sandbox", "create", "--security-file", "-"},
			stdin:      `{"policy_json": "{}"}`,
			handle:     answer(201, `{"sandbox_id":"sbx-1"}`),
			wantReqs:   []string{`POST /sandboxes {"template":"base","timeout":300,"security":{"policy_json":"{}"}}`},
			wantStdout: "sbx-1\n",
		},
		{
			name:       "create resources",
			args:       []string{"sandbox", "create", "--memory-mb", "1024", "--cpu-count", "0.5", "--disk-mb", "4096"},
			handle:     answer(201, `{"sandbox_id":"sbx-1"}`),
			wantReqs:   []string{`POST /sandboxes {"template":"base","timeout":300,"cpu_count":0.5,"memory_mb":1024,"disk_mb":4096}`},
			wantStdout: "sbx-1\n",
		},
		{
			name:       "create past the server's maximum",
			args:       []string{"sandbox", "create", "--memory-mb", "999999"},
			handle:     answer(400, `{"message":"memory_mb: 999999 is over this server's maximum 8192","code":"limit_exceeded"}`),
			wantReqs:   []string{`POST /sandboxes {"template":"base","timeout":300,"memory_mb":999999}`},
			wantStderr: "over this server's maximum 8192 (400 limit_exceeded)",
			wantCode:   1,
		},
		{
			name:       "create no capacity",
			args:       []string{"sandbox", "create"},
			handle:     answer(503, `{"message":"not enough host memory for another sandbox","code":"insufficient_capacity"}`),
			wantReqs:   []string{`POST /sandboxes {"template":"base","timeout":300}`},
			wantStderr: "(503 insufficient_capacity)",
			wantCode:   1,
		},
		{
			name:       "create api error",
			args:       []string{"sandbox", "create", "-t", "nope"},
			handle:     answer(404, `{"message":"template \"nope\" not found","code":"template_not_found"}`),
			wantReqs:   []string{`POST /sandboxes {"template":"nope","timeout":300}`},
			wantStderr: "declaw sandbox create: template \"nope\" not found (404 template_not_found)\n",
			wantCode:   1,
		},
		{
			name:       "create bad security file",
			args:       []string{"sandbox", "create", "--security-file", "-"},
			stdin:      `[1]`,
			wantStderr: "not a JSON object",
			wantCode:   1,
		},
		{
			name:   "list filters",
			args:   []string{"sandbox", "list", "--state", "running,paused", "--metadata", "team=a b", "--metadata", "owner=me", "--limit", "5"},
			handle: answer(200, `{"sandboxes":[`+sbx1+`,`+sbx2+`],"next_token":null}`),
			wantReqs: []string{
				`GET /sandboxes?metadata=owner%3Dme%26team%3Da%2520b&state=running&state=paused&limit=5`,
			},
			wantStdout: "SANDBOX ID  TEMPLATE  STATE    STARTED               ENDS                  METADATA\n" +
				"sbx-1       python    running  2026-11-27T04:00:00Z  2026-11-27T04:05:00Z  owner=me,team=a\n" +
				"sbx-2       base      paused   2026-11-27T04:01:00Z  never                 -\n",
		},
		{
			name: "list follows pages",
			args: []string{"sbx", "ls", "--json"},
			handle: func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Query().Get("next_token") == "" {
					answer(200, `{"sandboxes":[`+sbx2+`],"next_token":"t1"}`)(w, r)
				} else {
					answer(200, `{"sandboxes":[{"sandbox_id":"sbx-3"}],"next_token":null}`)(w, r)
				}
			},
			wantReqs:   []string{`GET /sandboxes`, `GET /sandboxes?next_token=t1`},
			wantStdout: `[` + sbx2 + `,{"sandbox_id":"sbx-3"}]` + "\n",
		},
		{
			name:       "list empty json",
			args:       []string{"sandbox", "list", "--json"},
			handle:     answer(200, `{"sandboxes":[],"next_token":null}`),
			wantReqs:   []string{`GET /sandboxes`},
			wantStdout: "[]\n",
		},
		{
			name:       "list bad state",
			args:       []string{"sandbox", "list", "--state", "dead"},
			handle:     answer(400, `{"message":"state \"dead\" is not one of running, paused, killed","code":"invalid_argument"}`),
			wantReqs:   []string{`GET /sandboxes?state=dead`},
			wantStderr: `state "dead" is not one of running, paused, killed (400 invalid_argument)`,
			wantCode:   1,
		},
		{
			name:     "info",
			args:     []string{"sandbox", "info", "sbx-1"},
			handle:   answer(200, sbx1),
			wantReqs: []string{`GET /sandboxes/sbx-1`},
			wantStdout: "sandbox_id  sbx-1\ntemplate    python\nstate       running\nstarted_at  2026-11-27T04:00:00Z\n" +
				"end_at      2026-11-27T04:05:00Z\ntimeout     300s\nmetadata    owner=me,team=a\nenvs        A=1,MY_API_KEY=***\n" +
				"network     {\"deny_out\":[\"0.0.0.0/0\"]}\nguest_ip    10.11.0.2\nruntime     gvisor\n",
		},
		{
			name:       "info json, flags after the id",
			args:       []string{"sandbox", "info", "sbx-1", "--json"},
			handle:     answer(200, sbx1),
			wantReqs:   []string{`GET /sandboxes/sbx-1`},
			wantStdout: sbx1 + "\n",
		},
		{
			name:       "global flags before the group",
			args:       []string{"--json", "--api-key", "other", "sandbox", "info", "sbx-1"},
			handle:     answer(200, sbx2),
			wantReqs:   []string{`GET /sandboxes/sbx-1`},
			wantStdout: sbx2 + "\n",
		},
		{
			name:       "client flags between the group and the verb",
			args:       []string{"--domain", "127.0.0.1:1", "sandbox", "--json", "--domain", "DOMAIN", "info", "sbx-1"},
			handle:     answer(200, sbx2),
			wantReqs:   []string{`GET /sandboxes/sbx-1`},
			wantStdout: sbx2 + "\n",
		},
		{
			name:       "info not found",
			args:       []string{"sandbox", "info", "sbx-x"},
			handle:     notFound,
			wantReqs:   []string{`GET /sandboxes/sbx-x`},
			wantStderr: "declaw sandbox info: sandbox sbx-x: sandbox not found (404 sandbox_not_found)\n",
			wantCode:   1,
		},
		{
			name:       "info escapes the id",
			args:       []string{"sandbox", "info", "a/b c"},
			handle:     notFound,
			wantReqs:   []string{`GET /sandboxes/a%2Fb%20c`},
			wantStderr: "sandbox not found",
			wantCode:   1,
		},
		{
			name:       "info usage",
			args:       []string{"sandbox", "info"},
			wantStderr: "declaw sandbox info: want 1 argument",
			wantCode:   2,
		},
		{
			name: "kill several, one missing",
			args: []string{"sandbox", "kill", "sbx-1", "sbx-x", "sbx-2"},
			handle: routes(map[string]http.HandlerFunc{
				"DELETE /sandboxes/sbx-1": answer(200, `{"killed":true}`),
				"DELETE /sandboxes/sbx-x": notFound,
				"DELETE /sandboxes/sbx-2": answer(200, `{"killed":false}`),
			}),
			wantReqs:   []string{`DELETE /sandboxes/sbx-1`, `DELETE /sandboxes/sbx-x`, `DELETE /sandboxes/sbx-2`},
			wantStdout: "killed sbx-1\nsbx-2 was already killed\n",
			wantStderr: "declaw sandbox kill: sandbox sbx-x: sandbox not found (404 sandbox_not_found)\n",
			wantCode:   1,
		},
		{
			name: "kill json",
			args: []string{"sandbox", "kill", "--json", "sbx-1", "sbx-x"},
			handle: routes(map[string]http.HandlerFunc{
				"DELETE /sandboxes/sbx-1": answer(200, `{"killed":true}`),
				"DELETE /sandboxes/sbx-x": notFound,
			}),
			wantReqs: []string{`DELETE /sandboxes/sbx-1`, `DELETE /sandboxes/sbx-x`},
			wantStdout: `[{"sandbox_id":"sbx-1","killed":true},{"sandbox_id":"sbx-x","error":"sandbox sbx-x: sandbox not found",` +
				`"code":"sandbox_not_found"}]` + "\n",
			wantStderr: "sandbox not found",
			wantCode:   1,
		},
		{
			name:       "status",
			args:       []string{"sandbox", "status", "sbx-1"},
			handle:     answer(200, `{"is_running":false,"state":"paused"}`),
			wantReqs:   []string{`GET /sandboxes/sbx-1/status`},
			wantStdout: "paused\n",
		},
		{
			name:       "status json",
			args:       []string{"sandbox", "status", "--json", "sbx-1"},
			handle:     answer(200, `{"is_running":true,"state":"running"}`),
			wantReqs:   []string{`GET /sandboxes/sbx-1/status`},
			wantStdout: `{"is_running":true,"state":"running"}` + "\n",
		},
		{
			name:       "set-timeout",
			args:       []string{"sandbox", "set-timeout", "sbx-1", "600"},
			handle:     answer(200, sbx1),
			wantReqs:   []string{`PATCH /sandboxes/sbx-1/timeout {"timeout":600}`},
			wantStdout: "sbx-1: killed at 2026-11-27T04:05:00Z\n",
		},
		{
			name:       "set-timeout never",
			args:       []string{"sandbox", "set-timeout", "sbx-2", "0"},
			handle:     answer(200, sbx2),
			wantReqs:   []string{`PATCH /sandboxes/sbx-2/timeout {"timeout":0}`},
			wantStdout: "sbx-2: no timeout\n",
		},
		{
			name:       "set-timeout killed",
			args:       []string{"sandbox", "set-timeout", "sbx-1", "60"},
			handle:     answer(410, `{"message":"sandbox sbx-1 was killed","code":"sandbox_killed"}`),
			wantReqs:   []string{`PATCH /sandboxes/sbx-1/timeout {"timeout":60}`},
			wantStderr: "sandbox sbx-1 was killed (410 sandbox_killed)",
			wantCode:   1,
		},
		{
			name:       "set-timeout bad seconds",
			args:       []string{"sandbox", "set-timeout", "sbx-1", "soon"},
			wantStderr: `SECONDS must be a non-negative integer, got "soon"`,
			wantCode:   2,
		},
		{
			name:       "pause not served",
			args:       []string{"sandbox", "pause", "sbx-1"},
			handle:     routes(nil),
			wantReqs:   []string{`POST /sandboxes/sbx-1/pause {}`},
			wantStderr: "declaw sandbox pause: no such endpoint: POST /sandboxes/sbx-1/pause (404 not_found)\n",
			wantCode:   1,
		},
		{
			name:       "pause",
			args:       []string{"sandbox", "pause", "sbx-1"},
			handle:     answer(200, `{}`),
			wantReqs:   []string{`POST /sandboxes/sbx-1/pause {}`},
			wantStdout: "paused sbx-1\n",
		},
		{
			name:       "pause json names the sandbox",
			args:       []string{"sandbox", "pause", "sbx-1", "--json"},
			handle:     answer(200, `{"state": "paused"}`),
			wantReqs:   []string{`POST /sandboxes/sbx-1/pause {}`},
			wantStdout: `{"sandbox_id":"sbx-1","state":"paused"}` + "\n",
		},
		{
			name:       "pause refused",
			args:       []string{"sandbox", "pause", "sbx-1"},
			handle:     answer(409, `{"message":"sandbox sbx-1 is already paused","code":"sandbox_paused"}`),
			wantReqs:   []string{`POST /sandboxes/sbx-1/pause {}`},
			wantStderr: "declaw sandbox pause: sandbox sbx-1 is already paused (409 sandbox_paused)\n",
			wantCode:   1,
		},
		{
			name:       "resume with timeout, json",
			args:       []string{"sandbox", "resume", "sbx-1", "--timeout", "30", "--json"},
			handle:     answer(200, sbx1),
			wantReqs:   []string{`POST /sandboxes/sbx-1/resume {"timeout":30}`},
			wantStdout: sbx1 + "\n",
		},
		{
			name:       "resume empty answer, json",
			args:       []string{"sandbox", "resume", "sbx-1", "--json"},
			handle:     answer(204, ``),
			wantReqs:   []string{`POST /sandboxes/sbx-1/resume {}`},
			wantStdout: `{"sandbox_id":"sbx-1"}` + "\n",
		},
		{
			name:       "plain-text error",
			args:       []string{"sandbox", "resume", "sbx-1"},
			handle:     answer(404, "404 page not found\n"),
			wantReqs:   []string{`POST /sandboxes/sbx-1/resume {}`},
			wantStderr: "declaw sandbox resume: 404 page not found\n",
			wantCode:   1,
		},
		{
			name:       "unknown verb",
			args:       []string{"sandbox", "explode"},
			wantStderr: `declaw sandbox: unknown command "explode"`,
			wantCode:   2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t, tt.handle)
			for i, a := range tt.args {
				if a == "DOMAIN" {
					tt.args[i] = f.domain()
				}
			}
			stdout, stderr, code := runCLI(t, f, strings.NewReader(tt.stdin), tt.env, tt.args...)
			if code != tt.wantCode {
				t.Errorf("run(%q) = exit %d, want %d; stderr: %s", tt.args, code, tt.wantCode, stderr)
			}
			if stdout != tt.wantStdout {
				t.Errorf("run(%q) stdout:\n%s\nwant:\n%s", tt.args, stdout, tt.wantStdout)
			}
			if tt.wantStderr == "" && stderr != "" || !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("run(%q) stderr = %q, want it to contain %q", tt.args, stderr, tt.wantStderr)
			}
			got := f.requestLines()
			if strings.Join(got, "\n") != strings.Join(tt.wantReqs, "\n") {
				t.Errorf("run(%q) requests:\n%s\nwant:\n%s", tt.args, strings.Join(got, "\n"), strings.Join(tt.wantReqs, "\n"))
			}
		})
	}
}

func TestClientHeaders(t *testing.T) {
	f := newFakeAPI(t, answer(201, `{"sandbox_id":"sbx-1"}`))
	for i := 0; i < 2; i++ {
		if _, stderr, code := runCLI(t, f, nil, nil, "sandbox", "create"); code != 0 {
			t.Fatalf("create: exit %d: %s", code, stderr)
		}
	}
	reqs := f.requests()
	for _, r := range reqs {
		if got := r.Header.Get("Authorization"); got != "Bearer k-test" {
			t.Errorf("Authorization = %q, want Bearer k-test", got)
		}
		if got := r.Header.Get("X-API-Key"); got != "k-test" {
			t.Errorf("X-API-Key = %q, want k-test", got)
		}
		if got := r.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type = %q", got)
		}
		if got := r.Header.Get("User-Agent"); !strings.HasPrefix(got, "declaw-cli/") {
			t.Errorf("User-Agent = %q", got)
		}
		if len(r.Header.Get("Idempotency-Key")) != 36 {
			t.Errorf("Idempotency-Key = %q, want a UUID", r.Header.Get("Idempotency-Key"))
		}
	}
	if reqs[0].Header.Get("Idempotency-Key") == reqs[1].Header.Get("Idempotency-Key") {
		t.Errorf("two creates sent the same Idempotency-Key")
	}

	// --api-key wins over DECLAW_API_KEY; no key sends no auth header.
	f = newFakeAPI(t, answer(200, sbx1))
	runCLI(t, f, nil, map[string]string{"DECLAW_API_KEY": ""}, "sandbox", "info", "sbx-1")
	runCLI(t, f, nil, nil, "sandbox", "info", "sbx-1", "--api-key", "flag-key")
	reqs = f.requests()
	if h := reqs[0].Header; h.Get("Authorization") != "" || h.Get("X-API-Key") != "" {
		t.Errorf("without a key: auth headers %v", h)
	}
	if got := reqs[1].Header.Get("X-API-Key"); got != "flag-key" {
		t.Errorf("--api-key: X-API-Key = %q", got)
	}
}

func TestClientEndpointConfig(t *testing.T) {
	f := newFakeAPI(t, answer(200, sbx1))
	tests := []struct {
		name string
		env  map[string]string
		args []string
		ok   bool
	}{
		{"DECLAW_DOMAIN", nil, nil, true},
		{"DECLAW_API_URL wins over DECLAW_DOMAIN", map[string]string{"DECLAW_API_URL": f.srv.URL, "DECLAW_DOMAIN": "127.0.0.1:1"}, nil, true},
		{"--domain wins over DECLAW_API_URL", map[string]string{"DECLAW_API_URL": "http://127.0.0.1:1"}, []string{"--domain", f.domain()}, true},
		{"--api-url", map[string]string{"DECLAW_DOMAIN": "127.0.0.1:1"}, []string{"--api-url", f.srv.URL + "/"}, true},
		{"wrong domain", map[string]string{"DECLAW_DOMAIN": "127.0.0.1:1"}, nil, false},
		{"bad api url", nil, []string{"--api-url", "ftp://x"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"sandbox", "info", "sbx-1"}, tt.args...)
			_, stderr, code := runCLI(t, f, nil, tt.env, args...)
			if (code == 0) != tt.ok {
				t.Errorf("exit %d (stderr %q), want success %v", code, stderr, tt.ok)
			}
		})
	}
}

func TestLeadingClientFlags(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{[]string{"sandbox", "list"}, 0},
		{[]string{"--json", "sandbox"}, 1},
		{[]string{"--api-key", "k", "--domain=x:1", "-json", "audit"}, 4},
		{[]string{"--help"}, 0},
		{[]string{"--api-key"}, 1},
		{[]string{"--version"}, 0},
	}
	for _, tt := range tests {
		if got := leadingClientFlags(tt.args); got != tt.want {
			t.Errorf("leadingClientFlags(%q) = %d, want %d", tt.args, got, tt.want)
		}
	}
}
