package envd

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/envd/process"
	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/testenv"
)

// waitLogged waits until the retained output of pid's stream st contains want.
func (c *testClient) waitLogged(t *testing.T, pid int, st process.Stream, want string) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, func() error {
		h, err := c.srv.procs.Get(pid)
		if err != nil {
			return err
		}
		if got := h.Output().Bytes(st); !bytes.Contains(got, []byte(want)) {
			return fmt.Errorf("%s output %q does not contain %q yet", st, got, want)
		}
		return nil
	})
}

func TestPtyScrollback(t *testing.T) {
	c := rootServer(t)
	var started envdapi.BackgroundStarted
	// Prints before anyone subscribes, then echoes what it reads.
	c.mustDo(http.StatusOK, "POST", "/pty", envdapi.PtyRequest{
		Size: envdapi.PtySize{Cols: 80, Rows: 24},
		Cmd:  `echo early-marker; head -c 100000 /dev/zero | tr '\0' a; echo; echo late-marker; stty -echo; while read l; do echo "got-$l"; done`,
	}, &started)
	pid := started.Pid
	c.waitLogged(t, pid, process.PtyStream, "late-marker")

	// The first subscriber gets everything from the start.
	first := c.watchPty(t, pid)
	first.waitFor(t, "late-marker")
	first.mu.Lock()
	out := first.out.String()
	first.mu.Unlock()
	if !strings.HasPrefix(out, "early-marker") || strings.Count(out, "a") < 100000 {
		t.Errorf("first subscriber got %d bytes starting %q, want all output from early-marker", len(out), out[:min(len(out), 20)])
	}

	// A later one (another client connecting to the running PTY) gets a
	// bounded scrollback: the recent output, not the start.
	second := c.openSSE(t, fmt.Sprintf("/pty/%d/stream", pid))
	got, last := second.outputUntil(t, true, "late-marker")
	if len(got) > envdapi.PtyScrollback || strings.Contains(got, "early-marker") || !strings.Contains(got, "aaaa") {
		t.Errorf("second subscriber's scrollback: %d bytes (early-marker %v), want <= %d recent bytes",
			len(got), strings.Contains(got, "early-marker"), envdapi.PtyScrollback)
	}
	// Both follow live output.
	c.mustDo(http.StatusNoContent, "POST", fmt.Sprintf("/pty/%d/stdin", pid), envdapi.StdinRequest{Data: "one\n"}, nil)
	first.waitFor(t, "got-one")
	if live, _ := second.outputUntil(t, true, "got-one"); strings.Contains(live, "late-marker") {
		t.Errorf("second subscriber got old output again: %q", live)
	}
	second.cancel()

	// Resume after a known entry: only what came later.
	c.mustDo(http.StatusNoContent, "POST", fmt.Sprintf("/pty/%d/stdin", pid), envdapi.StdinRequest{Data: "two\n"}, nil)
	first.waitFor(t, "got-two")
	resumed := c.openSSE(t, fmt.Sprintf("/pty/%d/stream?last_entry_id=%d", pid, last))
	if got, _ := resumed.outputUntil(t, true, "got-two"); !strings.Contains(got, "got-one") || strings.Contains(got, "late-marker") {
		t.Errorf("resume after entry %d = %q, want got-one and got-two only", last, got)
	}

	// A third subscriber after a resize still works, and all see the exit.
	c.mustDo(http.StatusNoContent, "PATCH", fmt.Sprintf("/pty/%d", pid), envdapi.PtyResizeRequest{Size: envdapi.PtySize{Cols: 100, Rows: 30}}, nil)
	third := c.watchPty(t, pid)
	third.waitFor(t, "got-two")
	var kr envdapi.KillResult
	c.mustDo(http.StatusOK, "DELETE", fmt.Sprintf("/pty/%d", pid), nil, &kr)
	for _, w := range []*ptyWatcher{first, third} {
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			t.Fatal("pty stream did not end after kill")
		}
		if w.exit == nil || w.exit.ExitCode == nil || *w.exit.ExitCode != 128+9 {
			t.Errorf("exit event %+v, want exit_code 137", w.exit)
		}
	}
}

// TestPtyEarlyOutputNotLost is the SDK's pattern: create, then subscribe
// at once; a command that prints and exits immediately must be seen.
func TestPtyEarlyOutputNotLost(t *testing.T) {
	c := rootServer(t)
	for i := range 5 {
		var started envdapi.BackgroundStarted
		c.mustDo(http.StatusOK, "POST", "/pty", envdapi.PtyRequest{Size: envdapi.PtySize{Cols: 80, Rows: 24}, Cmd: "echo quick-" + strconv.Itoa(i)}, &started)
		time.Sleep(50 * time.Millisecond) // the process has likely exited before the subscription
		w := c.watchPty(t, started.Pid)
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			t.Fatal("pty stream did not end")
		}
		if !strings.Contains(w.out.String(), "quick-"+strconv.Itoa(i)) || w.exit == nil || *w.exit.ExitCode != 0 {
			t.Errorf("run %d: output %q exit %+v, want quick-%d and exit 0", i, w.out.String(), w.exit, i)
		}
	}
}

func TestCommandReconnect(t *testing.T) {
	c := rootServer(t)
	pid := c.background(envdapi.CommandRequest{
		Cmd:     `echo started; while read l; do echo "got-$l"; [ "$l" = end ] && exit 3; done`,
		Stdin:   true,
		Timeout: seconds(0),
	})
	stdin := func(s string) {
		t.Helper()
		c.mustDo(http.StatusNoContent, "POST", fmt.Sprintf("/commands/%d/stdin", pid), envdapi.StdinRequest{Data: s}, nil)
	}
	// Client A follows, then drops.
	a := c.openSSE(t, fmt.Sprintf("/commands/%d/stream", pid))
	if ev := a.next(t); ev.name != "start" || ev.data.Pid != pid {
		t.Fatalf("first event %s %+v, want start with pid %d", ev.name, ev.data, pid)
	}
	stdin("1\n")
	got, last := a.outputUntil(t, false, "got-1\n")
	if got != "started\ngot-1\n" {
		t.Errorf("client A got %q", got)
	}
	a.cancel()
	stdin("2\n")
	c.waitLogged(t, pid, process.Stdout, "got-2")
	if !alive(pid) {
		t.Fatal("the process died when its stream client disconnected")
	}

	// Client B connects by pid and gets everything from the start.
	b := c.openSSE(t, fmt.Sprintf("/commands/%d/stream", pid))
	b.next(t) // start
	if got, _ := b.outputUntil(t, false, "got-2\n"); got != "started\ngot-1\ngot-2\n" {
		t.Errorf("client B replay = %q", got)
	}
	// Client A resumes after what it saw.
	a2 := c.openSSE(t, fmt.Sprintf("/commands/%d/stream?last_entry_id=%d", pid, last))
	a2.next(t) // start
	stdin("end\n")
	res := a2.collect(t, false)
	if res.stdout.String() != "got-2\ngot-end\n" || res.exitCode(t) != 3 {
		t.Errorf("resumed client A: stdout %q, exit %+v; want got-2, got-end, exit 3", res.stdout.String(), res.terminal)
	}
	if res := b.collect(t, false); res.exitCode(t) != 3 || res.stdout.String() != "got-end\n" {
		t.Errorf("client B: stdout %q, exit %+v", res.stdout.String(), res.terminal)
	}

	// The result is still there for wait.
	var wr envdapi.CommandResult
	c.mustDo(http.StatusOK, "GET", fmt.Sprintf("/commands/%d/wait", pid), nil, &wr)
	if wr.ExitCode != 3 || wr.Stdout != "started\ngot-1\ngot-2\ngot-end\n" {
		t.Errorf("wait = %+v", wr)
	}
	if status, raw := c.do("GET", "/commands/999999999/stream", nil, nil); status != 404 {
		t.Errorf("stream of an unknown pid = %d %s, want 404", status, raw)
	}
	if status, raw := c.do("GET", fmt.Sprintf("/commands/%d/stream?last_entry_id=x", pid), nil, nil); status != 400 {
		t.Errorf("bad last_entry_id = %d %s, want 400", status, raw)
	}
}

// A multi-byte character split across reads is never split across events,
// and resuming between its halves loses nothing.
func TestCommandReconnectUTF8(t *testing.T) {
	c := rootServer(t)
	pid := c.background(envdapi.CommandRequest{Cmd: `printf 'a\303'; read x; printf '\251b\n'`, Stdin: true})
	c.waitLogged(t, pid, process.Stdout, "a\xc3")
	a := c.openSSE(t, fmt.Sprintf("/commands/%d/stream", pid))
	a.next(t) // start
	got, last := a.outputUntil(t, false, "a")
	if got != "a" {
		t.Fatalf("first chunk %q, want %q (the incomplete character held back)", got, "a")
	}
	a.cancel()
	c.mustDo(http.StatusNoContent, "POST", fmt.Sprintf("/commands/%d/stdin", pid), envdapi.StdinRequest{Data: "\n"}, nil)
	res := c.openSSE(t, fmt.Sprintf("/commands/%d/stream?last_entry_id=%d", pid, last)).collect(t, false)
	if res.stdout.String() != "\u00e9b\n" {
		t.Errorf("resumed after the first half of é: %q, want %q", res.stdout.String(), "\u00e9b\n")
	}
}

func TestCommandsList(t *testing.T) {
	c := rootServer(t)
	pid := c.background(envdapi.CommandRequest{Cmd: "sleep 300", Envs: map[string]string{"A": "1"}, Tag: "t1"})
	sid := c.startStdio(t, envdapi.StdioRequest{Cmd: "sleep 300"})
	var list []envdapi.ProcessInfo
	c.mustDo(http.StatusOK, "GET", "/commands", nil, &list)
	kinds := map[int]envdapi.ProcessInfo{}
	for _, p := range list {
		kinds[p.Pid] = p
	}
	if p := kinds[pid]; p.Cmd != "sleep 300" || p.Tag != "t1" || p.Envs["A"] != "1" || p.IsPty || p.Kind != "command" || p.User != "root" {
		t.Errorf("GET /commands entry for the background command = %+v", p)
	}
	if p := kinds[mustAtoi(t, sid)]; p.Kind != "stdio" {
		t.Errorf("GET /commands entry for the stdio session = %+v", p)
	}
	var kr envdapi.KillResult
	c.mustDo(http.StatusOK, "DELETE", fmt.Sprintf("/commands/%d", pid), nil, &kr)
	if !kr.Killed {
		t.Error("kill: killed = false")
	}
}

// rss returns the process's resident set size and its peak, in bytes.
func rss(t *testing.T) (cur, peak int64) {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("parse %s %q: %v", k, v, err)
		}
		if k == "VmRSS" {
			cur = kb << 10
		} else {
			peak = kb << 10
		}
	}
	return cur, peak
}

// TestHundredMBUnread: a process writing 100 MB that nobody reads (one
// client even holds a stream open without reading) neither blocks nor
// makes envd's memory grow beyond its output cap (16 MiB per stream).
func TestHundredMBUnread(t *testing.T) {
	c := rootServer(t)   // the default cap
	debug.FreeOSMemory() // what earlier tests left behind
	// Reset the peak RSS (VmHWM) so the growth during this test is measured.
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Fatalf("reset peak RSS: %v", err)
	}
	before, _ := rss(t)
	start := time.Now()
	pid := c.background(envdapi.CommandRequest{Cmd: "yes 0123456789abcdef | head -c 104857600; echo tail-marker", Timeout: seconds(120)})
	resp, err := http.DefaultClient.Do(c.request(t.Context(), "GET", fmt.Sprintf("/commands/%d/stream", pid), nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // never read
	// Wait in-process: the answer of /wait (16 MiB of JSON, decoded by
	// this same process) would dwarf what is measured.
	h, err := c.srv.procs.Get(pid)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.Done():
	case <-time.After(120 * time.Second):
		t.Fatal("the process did not finish within 120s: output nobody reads blocks it")
	}
	elapsed := time.Since(start)
	_, peak := rss(t)
	h = nil
	var res envdapi.CommandResult
	c.mustDo(http.StatusOK, "GET", fmt.Sprintf("/commands/%d/wait?timeout=120", pid), nil, &res)
	if res.ExitCode != 0 || !strings.HasSuffix(res.Stdout, "tail-marker\n") || len(res.Stdout) > 16<<20 {
		t.Errorf("wait: exit %d, %d bytes of stdout, want 0 and <= 16 MiB ending in tail-marker", res.ExitCode, len(res.Stdout))
	}
	res = envdapi.CommandResult{}
	growth := peak - before
	t.Logf("100 MB unread in %v: RSS %d MiB before, peak %d MiB (growth %d MiB)", elapsed.Round(time.Millisecond), before>>20, peak>>20, growth>>20)
	if growth > 64<<20 {
		t.Errorf("envd's peak RSS grew by %d MiB for 100 MB of unread output, want < 64 MiB", growth>>20)
	}
}
