package envd

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/envd/process"
	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/testenv"
)

func (c *testClient) startStdio(t *testing.T, req envdapi.StdioRequest) string {
	t.Helper()
	var st envdapi.StdioStarted
	c.mustDo(http.StatusOK, "POST", "/stdio", req, &st)
	if st.CmdID == "" || st.CmdID != strconv.Itoa(st.Pid) {
		t.Fatalf("POST /stdio = %+v, want cmd_id = pid", st)
	}
	return st.CmdID
}

func (c *testClient) stdioStdin(t *testing.T, id string, data []byte) {
	t.Helper()
	c.mustDo(http.StatusNoContent, "POST", "/stdio/"+id+"/stdin",
		envdapi.StdioStdinRequest{Data: base64.StdEncoding.EncodeToString(data)}, nil)
}

func TestStdioRoundTrip(t *testing.T) {
	c := rootServer(t)
	id := c.startStdio(t, envdapi.StdioRequest{Cmd: `cat; echo "eof seen $X" >&2; exit 7`, Envs: map[string]string{"X": "x1"}})

	var list []envdapi.StdioInfo
	c.mustDo(http.StatusOK, "GET", "/stdio", nil, &list)
	if len(list) != 1 || list[0].CmdID != id {
		t.Errorf("GET /stdio = %+v, want the session %s", list, id)
	}

	s := c.openSSE(t, "/stdio/"+id+"/stream")
	binary := []byte("bin\x00\xff\xfe\n")
	c.stdioStdin(t, id, binary)
	c.stdioStdin(t, id, []byte("second\n"))
	got, _ := s.outputUntil(t, true, "second\n")
	if want := string(binary) + "second\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	// Unpadded base64 is accepted too.
	c.mustDo(http.StatusNoContent, "POST", "/stdio/"+id+"/stdin", envdapi.StdioStdinRequest{Data: "YWI"}, nil)
	// Close stdin: cat sees EOF and the session exits.
	c.mustDo(http.StatusNoContent, "POST", "/stdio/"+id+"/stdin/close", map[string]any{}, nil)
	c.mustDo(http.StatusNoContent, "POST", "/stdio/"+id+"/stdin/close", nil, nil) // idempotent
	rest := s.collect(t, true)
	if rest.stdout.String() != "ab" || rest.stderr.String() != "eof seen x1\n" {
		t.Errorf("after close: stdout %q stderr %q, want %q and %q", rest.stdout.String(), rest.stderr.String(), "ab", "eof seen x1\n")
	}
	if code := rest.exitCode(t); code != 7 {
		t.Errorf("exit_code = %d, want 7", code)
	}
	if status, raw := c.do("POST", "/stdio/"+id+"/stdin", envdapi.StdioStdinRequest{Data: "eA=="}, nil); status != http.StatusConflict {
		t.Errorf("stdin after close = %d %s, want 409", status, raw)
	}

	// A finished session can still be streamed: everything, then exit.
	again := c.openSSE(t, "/stdio/"+id+"/stream").collect(t, true)
	if again.stdout.String() != string(binary)+"second\nab" || again.exitCode(t) != 7 {
		t.Errorf("replay after exit: stdout %q exit %+v", again.stdout.String(), again.terminal)
	}
}

func TestStdioResume(t *testing.T) {
	c := rootServer(t)
	id := c.startStdio(t, envdapi.StdioRequest{Cmd: `while read l; do echo "got-$l"; echo "err-$l" >&2; done; exit 3`})
	s := c.openSSE(t, "/stdio/"+id+"/stream")
	c.stdioStdin(t, id, []byte("1\n2\n"))
	var seen strings.Builder
	var last uint64
	for !strings.Contains(seen.String(), "got-2") || !strings.Contains(seen.String(), "err-2") {
		ev := s.next(t)
		checkEntryID(t, ev, last)
		last = ev.data.EntryID
		seen.WriteString(ev.name + ":" + decodeData(t, ev, true))
	}
	s.cancel() // the client drops
	// Output while nobody is connected is kept.
	c.stdioStdin(t, id, []byte("3\n4\n"))
	testenv.WaitFor(t, 10*time.Second, func() error {
		h, err := c.srv.procs.Get(mustAtoi(t, id))
		if err != nil {
			return err
		}
		out, errOut := string(h.Output().Bytes(process.Stdout)), string(h.Output().Bytes(process.Stderr))
		if !strings.Contains(out, "got-4") || !strings.Contains(errOut, "err-4") {
			return fmt.Errorf("output so far %q %q", out, errOut)
		}
		return nil
	})
	c.mustDo(http.StatusNoContent, "POST", "/stdio/"+id+"/stdin/close", nil, nil)

	resumed := c.openSSE(t, fmt.Sprintf("/stdio/%s/stream?last_entry_id=%d", id, last)).collect(t, true)
	if code := resumed.exitCode(t); code != 3 {
		t.Errorf("exit_code = %d, want 3", code)
	}
	if got := resumed.stdout.String(); got != "got-3\ngot-4\n" {
		t.Errorf("resumed stdout = %q, want exactly the lines after entry %d", got, last)
	}
	if got := resumed.stderr.String(); got != "err-3\nerr-4\n" {
		t.Errorf("resumed stderr = %q, want exactly the lines after entry %d", got, last)
	}
	for _, n := range resumed.names {
		if n == "gap" {
			t.Errorf("resume within the cap reported a gap: %v", resumed.names)
		}
	}
	// The Last-Event-ID header works like ?last_entry_id.
	req := c.request(t.Context(), "GET", "/stdio/"+id+"/stream", nil)
	req.Header.Set("Last-Event-ID", strconv.FormatUint(resumed.last, 10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var names []string
	readSSE(t, resp.Body, func(ev sseEvent) bool { names = append(names, ev.name); return true })
	if strings.Join(names, ",") != "exit" {
		t.Errorf("resume after the last entry: events %v, want only exit", names)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestStdioCapGap(t *testing.T) {
	testenv.RequireRoot(t)
	const limit = 4096
	c := newTestServer(t, process.Config{OutputLimit: limit})
	// 100 KiB of numbered lines, more than the cap, before anyone reads;
	// then wait for stdin so the session stays up.
	id := c.startStdio(t, envdapi.StdioRequest{Cmd: `seq 1 20000; echo tail-marker; read x; echo after-$x`})
	testenv.WaitFor(t, 10*time.Second, func() error {
		h, err := c.srv.procs.Get(mustAtoi(t, id))
		if err != nil {
			return err
		}
		if !strings.Contains(string(h.Output().Bytes(process.Stdout)), "tail-marker") {
			return fmt.Errorf("tail-marker not yet logged")
		}
		return nil
	})
	s := c.openSSE(t, "/stdio/"+id+"/stream")
	first := s.next(t)
	if first.name != "gap" || first.data.Type != "gap" || first.data.Code != envdapi.CodeOutputDropped || first.data.Error == "" {
		t.Fatalf("first event of a stream from before dropped output = %s %+v, want a gap event", first.name, first.data)
	}
	got, last := s.outputUntil(t, true, "tail-marker\n")
	if len(got) > limit || !strings.HasSuffix(got, "19999\n20000\ntail-marker\n") {
		t.Errorf("after the gap: %d bytes ending %q, want <= %d ending with the last lines", len(got), got[max(0, len(got)-40):], limit)
	}
	s.cancel()
	// Resuming after retained output: no gap.
	c.stdioStdin(t, id, []byte("z\n"))
	r := c.openSSE(t, fmt.Sprintf("/stdio/%s/stream?last_entry_id=%d", id, last)).collect(t, true)
	if strings.Join(r.names, ",") != "stdout,exit" || r.stdout.String() != "after-z\n" {
		t.Errorf("resume after entry %d: events %v stdout %q, want stdout after-z then exit", last, r.names, r.stdout.String())
	}
	// Resuming from the very start again reports the gap again.
	r = c.openSSE(t, "/stdio/"+id+"/stream?last_entry_id=1").collect(t, true)
	if len(r.names) == 0 || r.names[0] != "gap" {
		t.Errorf("resume from entry 1: events %v, want a gap first", r.names)
	}
}

func TestStdioKillAndErrors(t *testing.T) {
	c := rootServer(t)
	id := c.startStdio(t, envdapi.StdioRequest{Cmd: "sleep 300 & sleep 300; wait"})
	pid := mustAtoi(t, id)
	s := c.openSSE(t, "/stdio/"+id+"/stream")
	var kr envdapi.KillResult
	c.mustDo(http.StatusOK, "DELETE", "/stdio/"+id, nil, &kr)
	if !kr.Killed {
		t.Error("DELETE /stdio: killed = false")
	}
	res := s.collect(t, true)
	if code := res.exitCode(t); code != 128+9 || res.terminal.data.Error != "killed" {
		t.Errorf("exit after kill = %d %q, want 137 killed", code, res.terminal.data.Error)
	}
	waitDead(t, pid)
	c.mustDo(http.StatusOK, "DELETE", "/stdio/"+id, nil, &kr)
	if kr.Killed {
		t.Error("second DELETE: killed = true")
	}

	timed := c.startStdio(t, envdapi.StdioRequest{Cmd: "sleep 300", Timeout: seconds(0.2)})
	if res := c.openSSE(t, "/stdio/"+timed+"/stream").collect(t, true); !strings.Contains(res.terminal.data.Error, "timed out") {
		t.Errorf("session with a timeout ended with %+v, want a timed out exit", res.terminal)
	}

	plain := c.background(envdapi.CommandRequest{Cmd: "sleep 300", Stdin: true})
	errs := []struct {
		name, method, path string
		body               any
		want               int
		code               string
	}{
		{"no cmd", "POST", "/stdio", envdapi.StdioRequest{}, 400, "bad_request"},
		{"bad user", "POST", "/stdio", envdapi.StdioRequest{Cmd: "true", User: "no-such-user"}, 400, "unknown_user"},
		{"bad base64", "POST", "/stdio/" + id + "/stdin", envdapi.StdioStdinRequest{Data: "!!!"}, 400, "bad_request"},
		{"stdin after exit", "POST", "/stdio/" + id + "/stdin", envdapi.StdioStdinRequest{Data: "eA=="}, 409, "stdin_unavailable"},
		{"unknown id", "GET", "/stdio/999999999/stream", nil, 404, "process_not_found"},
		{"non-numeric id", "DELETE", "/stdio/abc", nil, 404, "process_not_found"},
		{"leading zero", "DELETE", "/stdio/0" + id, nil, 404, "process_not_found"},
		{"not a stdio session", "POST", fmt.Sprintf("/stdio/%d/stdin/close", plain), nil, 404, "process_not_found"},
		{"bad last_entry_id", "GET", "/stdio/" + id + "/stream?last_entry_id=-1", nil, 400, "bad_request"},
	}
	for _, tt := range errs {
		status, raw := c.do(tt.method, tt.path, tt.body, nil)
		if status != tt.want || errorCode(t, raw) != tt.code {
			t.Errorf("%s: %s %s = %d %s, want %d %s", tt.name, tt.method, tt.path, status, raw, tt.want, tt.code)
		}
	}
}

// A stream nobody reads must not hold up the process.
func TestStdioSlowReader(t *testing.T) {
	testenv.RequireRoot(t)
	c := newTestServer(t, process.Config{OutputLimit: 1 << 20})
	id := c.startStdio(t, envdapi.StdioRequest{Cmd: "yes 0123456789abcdef | head -c 52428800; echo done >&2"})
	resp, err := http.DefaultClient.Do(c.request(t.Context(), "GET", "/stdio/"+id+"/stream", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // never read
	var res envdapi.CommandResult
	c.mustDo(http.StatusOK, "GET", "/commands/"+id+"/wait?timeout=60", nil, &res)
	if res.ExitCode != 0 || res.Stderr != "done\n" {
		t.Errorf("wait = exit %d stderr %q, want 0 done", res.ExitCode, res.Stderr)
	}
}
