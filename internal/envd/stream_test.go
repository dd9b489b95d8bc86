package envd

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/envd/process"
	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/testenv"
)

// sseStream is an open SSE response whose events arrive on a channel.
type sseStream struct {
	events chan sseEvent // closed at the end of the stream
	cancel context.CancelFunc
}

// openSSE opens GET path and parses its events in a goroutine. The stream
// is closed by cancel or at the end of the test.
func (c *testClient) openSSE(t *testing.T, path string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	resp, err := http.DefaultClient.Do(c.request(ctx, "GET", path, nil))
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		t.Fatalf("GET %s = %d %q, want an event stream", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &sseStream{events: make(chan sseEvent, 1024), cancel: cancel}
	t.Cleanup(cancel)
	go func() {
		defer close(s.events)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 8<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					select {
					case s.events <- ev:
					case <-ctx.Done():
						return
					}
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, ":"): // a comment (keepalive)
			case strings.HasPrefix(line, "data: "):
				ev.raw = []byte(strings.TrimPrefix(line, "data: "))
				if err := json.Unmarshal(ev.raw, &ev.data); err != nil {
					t.Errorf("GET %s: SSE data %q: %v", path, line, err)
					return
				}
			default:
				t.Errorf("GET %s: unexpected SSE line %q", path, line)
				return
			}
		}
	}()
	return s
}

// next returns the next event; it fails the test after a timeout or at the
// end of the stream.
func (s *sseStream) next(t *testing.T) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("event stream ended unexpectedly")
		}
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no event within 20s")
	}
	panic("unreachable")
}

// outputUntil reads events, decoding output (base64 if b64), until the
// accumulated output contains want. It returns the output and the last
// entry id seen, and fails on any event but output.
func (s *sseStream) outputUntil(t *testing.T, b64 bool, want string) (string, uint64) {
	t.Helper()
	var out strings.Builder
	var last uint64
	for !strings.Contains(out.String(), want) {
		ev := s.next(t)
		switch ev.name {
		case "stdout", "stderr", "data":
			out.WriteString(decodeData(t, ev, b64))
			checkEntryID(t, ev, last)
			last = ev.data.EntryID
		default:
			t.Fatalf("event %s %+v while waiting for output %q (have %q)", ev.name, ev.data, want, out.String())
		}
	}
	return out.String(), last
}

func decodeData(t *testing.T, ev sseEvent, b64 bool) string {
	t.Helper()
	if !b64 {
		return ev.data.Data
	}
	b, err := base64.StdEncoding.DecodeString(ev.data.Data)
	if err != nil {
		t.Fatalf("%s data %q is not base64: %v", ev.name, ev.data.Data, err)
	}
	return string(b)
}

// checkEntryID checks that an output event carries an entry id greater
// than the previous one, also as its SSE id.
func checkEntryID(t *testing.T, ev sseEvent, prev uint64) {
	t.Helper()
	if ev.data.EntryID <= prev {
		t.Errorf("%s event entry_id %d after %d: not increasing", ev.name, ev.data.EntryID, prev)
	}
	if ev.id != fmt.Sprint(ev.data.EntryID) {
		t.Errorf("%s event SSE id %q, want the entry_id %d", ev.name, ev.id, ev.data.EntryID)
	}
}

// collected is what a stream delivered up to its terminal event.
type collected struct {
	stdout, stderr strings.Builder
	names          []string
	last           uint64
	terminal       *sseEvent // exit or error
}

// collect reads events until exit/error (or the end of the stream).
func (s *sseStream) collect(t *testing.T, b64 bool) *collected {
	t.Helper()
	c := &collected{}
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return c
			}
			c.names = append(c.names, ev.name)
			switch ev.name {
			case "stdout", "stderr", "data":
				if ev.data.EntryID != 0 {
					checkEntryID(t, ev, c.last)
					c.last = ev.data.EntryID
				}
				if ev.name == "stderr" {
					c.stderr.WriteString(decodeData(t, ev, b64))
				} else {
					c.stdout.WriteString(decodeData(t, ev, b64))
				}
			case "exit", "error":
				c.terminal = &ev
				return c
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("stream did not end within 60s; events so far %v", c.names)
		}
	}
}

func (c *collected) exitCode(t *testing.T) int {
	t.Helper()
	if c.terminal == nil || c.terminal.name != "exit" || c.terminal.data.ExitCode == nil {
		t.Fatalf("stream ended with %+v, want an exit event with exit_code (events %v)", c.terminal, c.names)
	}
	return *c.terminal.data.ExitCode
}

// seqOutput returns the output of `seq 1 n`.
func seqOutput(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "%d\n", i)
	}
	return b.String()
}

// TestRunStreamSlowReaderGetsAll: POST /commands/stream owns its process
// and holds it back like a pipe: a client that reads much slower than the
// command writes (it starts reading only after a pause, then reads in
// small steps) still receives every byte, with no gap, through a 64 KiB
// per-stream window.
func TestRunStreamSlowReaderGetsAll(t *testing.T) {
	const limit = 64 << 10
	const lines = 1_500_000 // ~11 MB of stdout, ~170 times the window
	c := newTestServer(t, process.Config{OutputLimit: limit})
	resp, err := http.DefaultClient.Do(c.request(t.Context(), "POST", "/commands/stream",
		strings.NewReader(fmt.Sprintf(`{"cmd":"seq 1 %d; echo done >&2"}`, lines))))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(time.Second) // nobody reads: without the hold, output would be dropped
	var out, errOut strings.Builder
	var gaps, events int
	exit := -1
	readSSE(t, resp.Body, func(ev sseEvent) bool {
		events++
		if events%500 == 0 {
			time.Sleep(5 * time.Millisecond) // a slow reader
		}
		switch ev.name {
		case "stdout":
			out.WriteString(ev.data.Data)
		case "stderr":
			errOut.WriteString(ev.data.Data)
		case "gap":
			gaps++
		case "exit":
			exit = *ev.data.ExitCode
			return false
		}
		return true
	})
	if exit != 0 || gaps != 0 || errOut.String() != "done\n" {
		t.Errorf("slow reader: exit %d, %d gap events, stderr %q; want exit 0, no gap, done", exit, gaps, errOut.String())
	}
	if want := seqOutput(lines); out.String() != want {
		t.Errorf("slow reader got %d bytes of stdout, want all %d byte for byte", out.Len(), len(want))
	}
}

// TestRunStreamStalledReaderTimeout: a client that never reads blocks
// only its own command, and the command timeout still ends it.
func TestRunStreamStalledReaderTimeout(t *testing.T) {
	c := newTestServer(t, process.Config{OutputLimit: 16 << 10})
	resp, err := http.DefaultClient.Do(c.request(t.Context(), "POST", "/commands/stream",
		strings.NewReader(`{"cmd":"yes","timeout":1}`)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(3 * time.Second) // the command times out while nobody reads
	// Meanwhile other commands run as usual.
	if r := c.run(envdapi.CommandRequest{Cmd: "echo ok"}); r.Stdout != "ok\n" {
		t.Errorf("another command while a stream stalls = %+v", r)
	}
	var last sseEvent
	readSSE(t, resp.Body, func(ev sseEvent) bool {
		last = ev
		return ev.name != "exit" && ev.name != "error"
	})
	if last.name != "error" || !strings.Contains(last.data.Error, "timed out") {
		t.Errorf("stalled stream ended with %s %+v, want a timeout error", last.name, last.data)
	}
}

// TestRunStreamDisconnectReleases: a holding client that disconnects
// while its command is blocked on it ends the command (POST
// /commands/stream kills on disconnect), blocked writer or not.
func TestRunStreamDisconnectReleases(t *testing.T) {
	c := newTestServer(t, process.Config{OutputLimit: 16 << 10})
	pidFile := t.TempDir() + "/pid"
	ctx, cancel := context.WithCancel(t.Context())
	resp, err := http.DefaultClient.Do(c.request(ctx, "POST", "/commands/stream",
		strings.NewReader(fmt.Sprintf(`{"cmd":"echo $$ > %s; exec yes","timeout":0}`, pidFile))))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var pid int
	testenv.WaitFor(t, 10*time.Second, func() error {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return err
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err
	})
	time.Sleep(500 * time.Millisecond) // yes fills the window and blocks
	if !alive(pid) {
		t.Fatalf("pid %d not running before disconnect", pid)
	}
	cancel()
	waitDead(t, pid)
}

// TestFollowSlowReaderGetsGap: a follower (GET /commands/{pid}/stream)
// never holds the process back: output it was too slow for is dropped and
// reported with a "gap" event instead of skipped silently.
func TestFollowSlowReaderGetsGap(t *testing.T) {
	const limit = 64 << 10
	c := newTestServer(t, process.Config{OutputLimit: limit})
	pid := c.background(envdapi.CommandRequest{Cmd: "sleep 0.5; head -c 8388608 /dev/zero | tr '\\0' a; echo; echo done"})
	resp, err := http.DefaultClient.Do(c.request(t.Context(), "GET", fmt.Sprintf("/commands/%d/stream", pid), nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(3 * time.Second) // the command ends while nobody reads
	var out strings.Builder
	var gaps int
	exit := -1
	readSSE(t, resp.Body, func(ev sseEvent) bool {
		switch ev.name {
		case "stdout":
			out.WriteString(ev.data.Data)
		case "gap":
			if ev.data.Code != envdapi.CodeOutputDropped {
				t.Errorf("gap event %+v, want code %s", ev.data, envdapi.CodeOutputDropped)
			}
			gaps++
		case "exit":
			exit = *ev.data.ExitCode
			return false
		}
		return true
	})
	if exit != 0 || gaps == 0 || out.Len() >= 8<<20 || !strings.HasSuffix(out.String(), "done\n") {
		t.Errorf("slow follower: exit %d, %d gap events, %d bytes ending %q; want exit 0, a gap, less than 8 MiB ending in done",
			exit, gaps, out.Len(), out.String()[max(0, out.Len()-10):])
	}
}

// TestFollowerDoesNotHold: a follower of a command that is streamed by
// its owner never holds the command back, even if it never reads: the
// owner still gets every byte and the command ends.
func TestFollowerDoesNotHold(t *testing.T) {
	const lines = 2_500_000 // ~19 MB: more than the socket buffers of a follower that never reads
	c := newTestServer(t, process.Config{OutputLimit: 64 << 10})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second) // fail, not hang, if the follower held it
	defer cancel()
	resp, err := http.DefaultClient.Do(c.request(ctx, "POST", "/commands/stream",
		strings.NewReader(fmt.Sprintf(`{"cmd":"sleep 0.5; seq 1 %d"}`, lines))))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out strings.Builder
	exit, gaps := -1, 0
	readSSE(t, resp.Body, func(ev sseEvent) bool {
		switch ev.name {
		case "start":
			// A follower that never reads its body.
			f, err := http.DefaultClient.Do(c.request(t.Context(), "GET", fmt.Sprintf("/commands/%d/stream", ev.data.Pid), nil))
			if err != nil || f.StatusCode != http.StatusOK {
				t.Fatalf("follow: %v %v", f, err)
			}
			t.Cleanup(func() { f.Body.Close() })
		case "stdout":
			out.WriteString(ev.data.Data)
		case "gap":
			gaps++
		case "exit":
			exit = *ev.data.ExitCode
			return false
		}
		return true
	})
	if exit != 0 || gaps != 0 || out.String() != seqOutput(lines) {
		t.Errorf("owner with a stalled follower: exit %d, %d gaps, %d bytes; want 0, none, all %d", exit, gaps, out.Len(), len(seqOutput(lines)))
	}
}
