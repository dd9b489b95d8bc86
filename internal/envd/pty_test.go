package envd

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
)

// ptyWatcher collects the decoded output of one GET /pty/{pid}/stream.
type ptyWatcher struct {
	mu   sync.Mutex
	out  strings.Builder
	exit *envdapi.PtyEvent
	done chan struct{}
}

func (c *testClient) watchPty(t *testing.T, pid int) *ptyWatcher {
	t.Helper()
	resp, err := http.DefaultClient.Do(c.request(t.Context(), "GET", fmt.Sprintf("/pty/%d/stream", pid), nil))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("pty stream = %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	w := &ptyWatcher{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer resp.Body.Close()
		readSSE(t, resp.Body, func(ev sseEvent) bool {
			w.mu.Lock()
			defer w.mu.Unlock()
			switch ev.name {
			case "data":
				b, err := base64.StdEncoding.DecodeString(ev.data.Data)
				if err != nil {
					t.Errorf("pty data %q is not base64: %v", ev.data.Data, err)
				}
				w.out.Write(b)
			case "exit":
				w.exit = &envdapi.PtyEvent{Type: ev.data.Type, ExitCode: ev.data.ExitCode, Error: ev.data.Error}
				return false
			default:
				t.Errorf("unexpected pty event %q", ev.name)
			}
			return true
		})
	}()
	return w
}

func (w *ptyWatcher) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.mu.Lock()
		got := w.out.String()
		w.mu.Unlock()
		if strings.Contains(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pty output %q does not contain %q", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPty(t *testing.T) {
	c := rootServer(t)
	var started envdapi.BackgroundStarted
	c.mustDo(http.StatusOK, "POST", "/pty", envdapi.PtyRequest{Size: envdapi.PtySize{Cols: 80, Rows: 24}, Envs: map[string]string{"PS1": "$ "}}, &started)
	pid := started.Pid
	w1 := c.watchPty(t, pid)
	w2 := c.watchPty(t, pid)
	stdin := func(s string) {
		t.Helper()
		c.mustDo(http.StatusNoContent, "POST", fmt.Sprintf("/pty/%d/stdin", pid), envdapi.StdinRequest{Data: s}, nil)
	}
	stdin("echo marker-$((6*7)) $TERM; tty\n")
	w1.waitFor(t, "marker-42 xterm-256color")
	w1.waitFor(t, "/dev/pts/")
	w2.waitFor(t, "marker-42")

	c.mustDo(http.StatusNoContent, "PATCH", fmt.Sprintf("/pty/%d", pid), envdapi.PtyResizeRequest{Size: envdapi.PtySize{Cols: 120, Rows: 40}}, nil)
	if status, raw := c.do("PATCH", fmt.Sprintf("/pty/%d", pid), envdapi.PtyResizeRequest{}, nil); status != 400 {
		t.Errorf("resize to 0x0 = %d %s, want 400", status, raw)
	}
	stdin("stty size\n")
	w1.waitFor(t, "40 120")

	var list []envdapi.ProcessInfo
	c.mustDo(http.StatusOK, "GET", "/commands", nil, &list)
	if len(list) != 1 || list[0].Pid != pid || !list[0].IsPty {
		t.Errorf("GET /commands = %+v, want the pty %d", list, pid)
	}

	stdin("exit 5\n")
	for _, w := range []*ptyWatcher{w1, w2} {
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			t.Fatal("pty stream did not end after exit")
		}
		if w.exit == nil || w.exit.ExitCode == nil || *w.exit.ExitCode != 5 {
			t.Errorf("pty exit event %+v, want exit_code 5", w.exit)
		}
	}

	// A second pty, killed.
	c.mustDo(http.StatusOK, "POST", "/pty", envdapi.PtyRequest{Size: envdapi.PtySize{Cols: 80, Rows: 24}, Cmd: "sleep 300"}, &started)
	var kr envdapi.KillResult
	c.mustDo(http.StatusOK, "DELETE", fmt.Sprintf("/pty/%d", started.Pid), nil, &kr)
	if !kr.Killed {
		t.Error("DELETE /pty: killed = false")
	}
	waitDead(t, started.Pid)

	plain := c.background(envdapi.CommandRequest{Cmd: "sleep 300", Stdin: true})
	errs := []struct {
		name, method, path string
		body               any
		want               int
	}{
		{"zero size", "POST", "/pty", envdapi.PtyRequest{}, 400},
		{"unknown user", "POST", "/pty", envdapi.PtyRequest{Size: envdapi.PtySize{Cols: 1, Rows: 1}, User: "no-such-user"}, 400},
		{"stdin to non-pty", "POST", fmt.Sprintf("/pty/%d/stdin", plain), envdapi.StdinRequest{Data: "x"}, 404},
		{"resize non-pty", "PATCH", fmt.Sprintf("/pty/%d", plain), envdapi.PtyResizeRequest{Size: envdapi.PtySize{Cols: 1, Rows: 1}}, 404},
		{"stream unknown", "GET", "/pty/999999999/stream", nil, 404},
		{"resize exited", "PATCH", fmt.Sprintf("/pty/%d", pid), envdapi.PtyResizeRequest{Size: envdapi.PtySize{Cols: 1, Rows: 1}}, 409},
	}
	for _, tt := range errs {
		if status, raw := c.do(tt.method, tt.path, tt.body, nil); status != tt.want {
			t.Errorf("%s: %s %s = %d %s, want %d", tt.name, tt.method, tt.path, status, raw, tt.want)
		}
	}
}
