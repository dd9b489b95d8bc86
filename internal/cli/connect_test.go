package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/declaw/declaw/sdk/go/declaw"
)

// fakePty serves the PTY endpoints for sandbox sbx-1, pid 7: the stream
// sends greeting, then waits for typed input for which exitOn returns
// true, then exits with code. Everything typed is sent to typed.
type fakePty struct {
	greeting string
	exitOn   func(typed string) bool
	code     int
	noExit   bool        // end the stream without an exit event
	typed    chan string // consumed by the stream
	seen     chan string // a copy for the test
	resized  chan string
}

func newFakePty(greeting string, code int, exitOn func(string) bool) *fakePty {
	return &fakePty{greeting: greeting, code: code, exitOn: exitOn, typed: make(chan string, 100), seen: make(chan string, 100), resized: make(chan string, 100)}
}

func (p *fakePty) handler() http.HandlerFunc {
	return routes(map[string]http.HandlerFunc{
		"POST /sandboxes/sbx-1/pty": answer(200, `{"pid":7}`),
		"GET /sandboxes/sbx-1/pty/7/stream": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(200)
			fmt.Fprintf(w, "event: data\ndata: {\"type\":\"data\",\"data\":%q}\n\n", base64.StdEncoding.EncodeToString([]byte(p.greeting)))
			w.(http.Flusher).Flush()
			var all strings.Builder
			for !p.exitOn(all.String()) {
				select {
				case s := <-p.typed:
					all.WriteString(s)
					// echo, as a terminal would
					fmt.Fprintf(w, ": keepalive\n\ndata: {\"type\":\"data\",\"data\":%q}\n\n", base64.StdEncoding.EncodeToString([]byte(s)))
					w.(http.Flusher).Flush()
				case <-r.Context().Done():
					return
				case <-time.After(10 * time.Second):
					return
				}
			}
			if !p.noExit {
				fmt.Fprintf(w, "event: exit\ndata: {\"type\":\"exit\",\"exit_code\":%d}\n\n", p.code)
			}
		},
		"POST /sandboxes/sbx-1/pty/7/stdin": func(w http.ResponseWriter, r *http.Request) {
			var req struct{ Data string }
			json.NewDecoder(r.Body).Decode(&req)
			p.typed <- req.Data
			p.seen <- req.Data
			w.WriteHeader(204)
		},
		"PATCH /sandboxes/sbx-1/pty/7": func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			p.resized <- string(b)
			w.WriteHeader(204)
		},
		"DELETE /sandboxes/sbx-1/pty/7": answer(200, `{"killed":true}`),
	})
}

func TestConnectPiped(t *testing.T) {
	p := newFakePty("root@sbx:~# ", 5, func(s string) bool { return strings.HasSuffix(s, "\x04") })
	f := newFakeAPI(t, p.handler())
	stdout, stderr, code := runCLI(t, f, strings.NewReader("exit 5\n"), nil, "sandbox", "connect", "sbx-1", "--user", "user")
	if code != 5 {
		t.Errorf("connect = exit %d, want 5 (the remote exit code); stderr: %s", code, stderr)
	}
	if want := "root@sbx:~# exit 5\n\x04"; stdout != want {
		t.Errorf("connect stdout = %q, want %q", stdout, want)
	}
	want := []string{
		`POST /sandboxes/sbx-1/pty {"size":{"cols":80,"rows":24},"user":"user","timeout":0}`,
		`GET /sandboxes/sbx-1/pty/7/stream`,
		`POST /sandboxes/sbx-1/pty/7/stdin {"data":"exit 5\n"}`,
		`POST /sandboxes/sbx-1/pty/7/stdin {"data":"\u0004"}`,
	}
	if got := f.requestLines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("connect requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestConnectErrors(t *testing.T) {
	t.Run("create refused", func(t *testing.T) {
		f := newFakeAPI(t, answer(409, `{"message":"sandbox sbx-1 is paused","code":"sandbox_paused"}`))
		_, stderr, code := runCLI(t, f, nil, nil, "sandbox", "connect", "sbx-1")
		if code != 1 || stderr != "declaw sandbox connect: sandbox sbx-1 is paused (409 sandbox_paused)\n" {
			t.Errorf("connect = exit %d, stderr %q; want 1 and the server's message", code, stderr)
		}
	})
	t.Run("stream lost", func(t *testing.T) {
		p := newFakePty("$ ", 0, func(s string) bool { return strings.Contains(s, "x") })
		p.noExit = true
		f := newFakeAPI(t, p.handler())
		pr, pw := io.Pipe()
		defer pw.Close()
		go io.WriteString(pw, "x")
		_, stderr, code := runCLI(t, f, pr, nil, "sandbox", "connect", "sbx-1")
		if code != 1 || !strings.Contains(stderr, "the stream ended before the process exited") {
			t.Errorf("connect = exit %d, stderr %q; want 1 and a lost-stream error", code, stderr)
		}
		// The session kills what it leaves behind.
		reqs := f.requestLines()
		if last := reqs[len(reqs)-1]; last != "DELETE /sandboxes/sbx-1/pty/7" {
			t.Errorf("last request = %q, want the PTY killed; all: %q", last, reqs)
		}
	})
}

// chunkReader returns one chunk per Read, then blocks until closed.
type chunkReader struct {
	chunks [][]byte
	done   chan struct{}
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		<-r.done
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks = r.chunks[1:]
	return n, nil
}

func TestPtySessionResizeAndUTF8(t *testing.T) {
	p := newFakePty("", 0, func(s string) bool { return strings.HasSuffix(s, "exit\r") })
	f := newFakeAPI(t, p.handler())
	cl, err := declaw.New(declaw.Config{Domain: f.domain()})
	if err != nil {
		t.Fatal(err)
	}
	// "é" (c3 a9) and "€" (e2 82 ac) split across reads must arrive whole.
	in := &chunkReader{chunks: [][]byte{[]byte("caf\xc3"), []byte("\xa9 \xe2"), []byte("\x82"), []byte("\xac\r")}, done: make(chan struct{})}
	defer close(in.done)
	resize := make(chan declaw.PtySize, 1)
	var out bytes.Buffer
	s := &ptySession{cl: cl, id: "sbx-1", req: declaw.PtyRequest{Size: declaw.PtySize{Cols: 80, Rows: 24}}, in: in, out: &out, resize: resize}
	done := make(chan error, 1)
	var code int
	go func() {
		var err error
		code, err = s.run(context.Background())
		done <- err
	}()

	var typed strings.Builder
	for !strings.HasSuffix(typed.String(), "\r") {
		select {
		case s := <-p.seen:
			if !isValidUTF8(s) {
				t.Errorf("typed %q: not valid UTF-8", s)
			}
			typed.WriteString(s)
		case <-time.After(5 * time.Second):
			t.Fatalf("typed so far %q", typed.String())
		}
	}
	if typed.String() != "café €\r" {
		t.Errorf("typed = %q, want %q", typed.String(), "café €\r")
	}
	resize <- declaw.PtySize{Cols: 132, Rows: 43}
	select {
	case got := <-p.resized:
		if got != `{"size":{"cols":132,"rows":43}}` {
			t.Errorf("resize body = %s", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no resize request")
	}
	p.typed <- "exit\r" // as if typed: ends the fake session
	select {
	case err := <-done:
		if err != nil || code != 0 {
			t.Fatalf("run = %d, %v", code, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("session did not end after the exit event")
	}
	if !strings.Contains(out.String(), "café €\r") {
		t.Errorf("output %q lacks the echo", out.String())
	}
}

func isValidUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func TestSplitUTF8(t *testing.T) {
	tests := []struct{ in, complete, rest string }{
		{"", "", ""},
		{"abc", "abc", ""},
		{"ab\xc3", "ab", "\xc3"},
		{"ab\xc3\xa9", "ab\xc3\xa9", ""},
		{"\xe2\x82", "", "\xe2\x82"},
		{"x\xf0\x9f\x98", "x", "\xf0\x9f\x98"},
		{"x\xff", "x\xff", ""},   // invalid, not incomplete: sent as is
		{"\x1b[A", "\x1b[A", ""}, // an arrow key
	}
	for _, tt := range tests {
		c, r := splitUTF8([]byte(tt.in))
		if string(c) != tt.complete || string(r) != tt.rest {
			t.Errorf("splitUTF8(%q) = %q, %q; want %q, %q", tt.in, c, r, tt.complete, tt.rest)
		}
	}
}

// TestConnectTerminal runs connect on a real pseudo-terminal: the PTY is
// created with the terminal's size, the terminal is raw during the session
// and restored after it, and SIGWINCH sends the new size.
func TestConnectTerminal(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { ptmx.Close(); tty.Close() })
	if err := pty.Setsize(ptmx, &pty.Winsize{Cols: 111, Rows: 33}); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, ptmx) // nothing is echoed locally, but never block the terminal

	p := newFakePty("hi", 9, func(s string) bool { return strings.Contains(s, "bye\r") })
	f := newFakeAPI(t, p.handler())
	var stdout, stderr bytes.Buffer
	e := &env{stdin: tty, stdout: &stdout, stderr: &stderr,
		getenv: func(k string) string { return map[string]string{"DECLAW_DOMAIN": f.domain()}[k] }}
	done := make(chan int, 1)
	go func() { done <- run(e, []string{"sandbox", "connect", "sbx-1"}) }()

	io.WriteString(ptmx, "x")
	waitTyped := func(want string) {
		t.Helper()
		select {
		case got := <-p.seen:
			if got != want {
				t.Fatalf("typed %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q was not typed", want)
		}
	}
	waitTyped("x")
	st, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if st.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG) != 0 {
		t.Errorf("terminal not in raw mode during the session: lflag %#x", st.Lflag)
	}

	if err := pty.Setsize(ptmx, &pty.Winsize{Cols: 150, Rows: 50}); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGWINCH) // the terminal is not ours: signal as the kernel would
	select {
	case got := <-p.resized:
		if got != `{"size":{"cols":150,"rows":50}}` {
			t.Errorf("resize = %s", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no resize after SIGWINCH")
	}

	io.WriteString(ptmx, "bye\r")
	waitTyped("bye\r")
	select {
	case code := <-done:
		if code != 9 {
			t.Errorf("connect = exit %d, want 9; stderr %s", code, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("connect did not return after the exit event")
	}
	if reqs := f.requestLines(); reqs[0] != `POST /sandboxes/sbx-1/pty {"size":{"cols":111,"rows":33},"timeout":0}` {
		t.Errorf("create = %s, want the terminal's size", reqs[0])
	}
	st, err = unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if st.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG) != unix.ECHO|unix.ICANON|unix.ISIG {
		t.Errorf("terminal not restored after the session: lflag %#x", st.Lflag)
	}
	if !strings.HasPrefix(stdout.String(), "hix") {
		t.Errorf("stdout = %q, want the remote output", stdout.String())
	}
}
