package cli

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// sse answers with a text/event-stream made of events, each "NAME DATA"
// ("" name: no event line), written with eol as line end.
func sse(eol string, events ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		for _, ev := range events {
			name, data, _ := strings.Cut(ev, " ")
			if name != "" {
				io.WriteString(w, "event: "+name+eol)
			}
			for _, line := range strings.Split(data, "\n") {
				io.WriteString(w, "data: "+line+eol)
			}
			io.WriteString(w, eol)
			w.(http.Flusher).Flush()
		}
	}
}

func TestExec(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		handle     http.HandlerFunc
		wantReq    string
		wantStdout string
		wantStderr string
		wantCode   int
	}{
		{
			name: "exit code 3 and both streams",
			args: []string{"sandbox", "exec", "sbx-1", "--", "sh", "-c", "echo hi; echo err >&2; exit 3"},
			handle: sse("\n", `start {"type":"start","pid":42}`,
				`stdout {"type":"stdout","stream":"stdout","data":"hi\n"}`,
				`stderr {"type":"stderr","stream":"stderr","data":"err\n"}`,
				`exit {"type":"exit","exit_code":3}`),
			wantReq:    `POST /sandboxes/sbx-1/commands/stream {"cmd":"sh -c 'echo hi; echo err >&2; exit 3'","timeout":60,"stream":true}`,
			wantStdout: "hi\n",
			wantStderr: "err\n",
			wantCode:   3,
		},
		{
			name: "flags, one-argument script, CRLF and event names only",
			args: []string{"sbx", "exec", "--cwd", "/tmp", "sbx-1", "--user", "user", "--timeout", "0", "-e", "A=1", "--", "echo $A | tr 1 2"},
			handle: sse("\r\n", `start {"pid":1}`, `stdout {"data":"par"}`, `stdout {"data":"tial\n"}`,
				`exit {"exit_code":0}`),
			wantReq:    `POST /sandboxes/sbx-1/commands/stream {"cmd":"echo $A | tr 1 2","user":"user","cwd":"/tmp","envs":{"A":"1"},"timeout":0,"stream":true}`,
			wantStdout: "partial\n",
		},
		{
			name:       "no dash, CR line ends, type field only",
			args:       []string{"sandbox", "exec", "sbx-1", "true"},
			handle:     sse("\r", ` {"type":"start","pid":1}`, ` {"type":"exit","exit_code":0}`),
			wantReq:    `POST /sandboxes/sbx-1/commands/stream {"cmd":"true","timeout":60,"stream":true}`,
			wantStdout: "",
		},
		{
			name:       "killed by a signal",
			args:       []string{"sandbox", "exec", "sbx-1", "--", "sleep", "100"},
			handle:     sse("\n", `exit {"type":"exit","exit_code":137,"error":"signal: killed"}`),
			wantReq:    `POST /sandboxes/sbx-1/commands/stream {"cmd":"sleep 100","timeout":60,"stream":true}`,
			wantStderr: "declaw sandbox exec: signal: killed\n",
			wantCode:   137,
		},
		{
			name:       "timeout",
			args:       []string{"sandbox", "exec", "sbx-1", "--timeout", "1", "--", "sleep", "5"},
			handle:     sse("\n", `start {"type":"start","pid":1}`, `error {"type":"error","error":"command timed out after 1s"}`),
			wantReq:    `POST /sandboxes/sbx-1/commands/stream {"cmd":"sleep 5","timeout":1,"stream":true}`,
			wantStderr: "declaw sandbox exec: command timed out after 1s\n",
			wantCode:   exitTimeout,
		},
		{
			name:       "stream cut before exit",
			args:       []string{"sandbox", "exec", "sbx-1", "--", "yes"},
			handle:     sse("\n", `start {"type":"start","pid":1}`, `stdout {"type":"stdout","data":"y\n"}`),
			wantReq:    `POST /sandboxes/sbx-1/commands/stream {"cmd":"yes","timeout":60,"stream":true}`,
			wantStdout: "y\n",
			wantStderr: "declaw sandbox exec: the stream ended before the process exited\n",
			wantCode:   1,
		},
		{
			name:       "api error before the stream",
			args:       []string{"sandbox", "exec", "sbx-1", "--", "ls"},
			handle:     answer(409, `{"message":"sandbox sbx-1 is paused","code":"sandbox_paused"}`),
			wantReq:    `POST /sandboxes/sbx-1/commands/stream {"cmd":"ls","timeout":60,"stream":true}`,
			wantStderr: "declaw sandbox exec: sandbox sbx-1 is paused (409 sandbox_paused)\n",
			wantCode:   1,
		},
		{
			name: "json events",
			args: []string{"sandbox", "exec", "--json", "sbx-1", "--", "sh", "-c", "echo hi; exit 3"},
			handle: sse("\n", `start {"type":"start","pid":42}`,
				`stdout {"type":"stdout","stream":"stdout","data":"hi\n"}`, `exit {"type":"exit","exit_code":3}`),
			wantReq: `POST /sandboxes/sbx-1/commands/stream {"cmd":"sh -c 'echo hi; exit 3'","timeout":60,"stream":true}`,
			wantStdout: `{"type":"start","pid":42}` + "\n" + `{"type":"stdout","stream":"stdout","data":"hi\n"}` + "\n" +
				`{"type":"exit","exit_code":3}` + "\n",
			wantCode: 3,
		},
		{
			name:       "missing command",
			args:       []string{"sandbox", "exec", "sbx-1", "--"},
			wantStderr: "missing the command",
			wantCode:   2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t, tt.handle)
			stdout, stderr, code := runCLI(t, f, nil, nil, tt.args...)
			if code != tt.wantCode {
				t.Errorf("run(%q) = exit %d, want %d; stderr: %s", tt.args, code, tt.wantCode, stderr)
			}
			if stdout != tt.wantStdout {
				t.Errorf("run(%q) stdout = %q, want %q", tt.args, stdout, tt.wantStdout)
			}
			if tt.wantCode == 2 {
				if !strings.Contains(stderr, tt.wantStderr) {
					t.Errorf("run(%q) stderr = %q, want it to contain %q", tt.args, stderr, tt.wantStderr)
				}
				return
			}
			if stderr != tt.wantStderr {
				t.Errorf("run(%q) stderr = %q, want %q", tt.args, stderr, tt.wantStderr)
			}
			reqs := f.requests()
			if len(reqs) != 1 || reqs[0].String() != tt.wantReq {
				t.Fatalf("run(%q) requests = %q, want [%s]", tt.args, f.requestLines(), tt.wantReq)
			}
			if got := reqs[0].Header.Get("Accept"); got != "text/event-stream" {
				t.Errorf("Accept = %q, want text/event-stream", got)
			}
		})
	}
}

// TestExecStreamsLive checks that output reaches the local stdout before
// the remote command ends.
func TestExecStreamsLive(t *testing.T) {
	release := make(chan struct{})
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: stdout\ndata: {\"type\":\"stdout\",\"data\":\"first\\n\"}\n\n")
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprintf(w, "event: exit\ndata: {\"type\":\"exit\",\"exit_code\":0}\n\n")
	})
	out := &notifyWriter{want: "first\n", seen: make(chan struct{})}
	done := make(chan int)
	go func() {
		e := &env{stdin: strings.NewReader(""), stdout: out, stderr: io.Discard,
			getenv: func(k string) string { return map[string]string{"DECLAW_DOMAIN": f.domain()}[k] }}
		done <- run(e, []string{"sandbox", "exec", "sbx-1", "--", "x"})
	}()
	<-out.seen // blocks forever (test timeout) if output were buffered until the exit
	close(release)
	if code := <-done; code != 0 {
		t.Fatalf("exit %d", code)
	}
}

type notifyWriter struct {
	buf  strings.Builder
	want string
	seen chan struct{}
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if w.buf.String() == w.want {
		close(w.seen)
	}
	return len(p), nil
}

func TestShellJoin(t *testing.T) {
	tests := []struct {
		argv []string
		want string
	}{
		{[]string{"echo hi; exit 3"}, "echo hi; exit 3"},
		{[]string{"sh", "-c", "echo hi; exit 3"}, "sh -c 'echo hi; exit 3'"},
		{[]string{"echo", "it's", "$HOME", ""}, `echo 'it'\''s' '$HOME' ''`},
		{[]string{"ls", "-la", "/tmp/a_b-c.d", "k=v,w@x:1%"}, "ls -la /tmp/a_b-c.d k=v,w@x:1%"},
	}
	for _, tt := range tests {
		if got := shellJoin(tt.argv); got != tt.want {
			t.Errorf("shellJoin(%q) = %q, want %q", tt.argv, got, tt.want)
		}
	}
}

func TestExitCode(t *testing.T) {
	for in, want := range map[int]int{0: 0, 3: 3, 137: 137, 255: 255, 256: 255, -1: 1} {
		if got := exitCode(in); got != want {
			t.Errorf("exitCode(%d) = %d, want %d", in, got, want)
		}
	}
}
