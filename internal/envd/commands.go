package envd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/declaw/declaw/internal/envd/process"
	"github.com/declaw/declaw/internal/envd/sysuser"
	"github.com/declaw/declaw/internal/envdapi"
)

// maxTimeout caps timeouts given in seconds, so conversion cannot overflow.
const maxTimeout = 10 * 365 * 24 * time.Hour

// parseSeconds converts a timeout in seconds; 0 means none.
func parseSeconds(secs float64) (time.Duration, error) {
	if math.IsNaN(secs) || secs < 0 {
		return 0, badInput("timeout must be a non-negative number of seconds")
	}
	if secs >= maxTimeout.Seconds() {
		return maxTimeout, nil
	}
	d := time.Duration(secs * float64(time.Second))
	if d == 0 && secs > 0 {
		d = 1 // a tiny timeout is not "none"
	}
	return d, nil
}

// lookupUser returns the named user, root if name is empty.
func (s *Server) lookupUser(name string) (*sysuser.User, error) {
	if name == "" {
		name = envdapi.DefaultUser
	}
	return s.cfg.Users.Lookup(name)
}

// spec turns a command request into a process spec.
func (s *Server) spec(req *envdapi.CommandRequest) (process.Spec, error) {
	if req.Cmd == "" {
		return process.Spec{}, badInput("cmd is required")
	}
	u, err := s.lookupUser(req.User)
	if err != nil {
		return process.Spec{}, err
	}
	cwd, err := s.cwdFor(req.Cwd, u.Home)
	if err != nil {
		return process.Spec{}, err
	}
	timeout := envdapi.DefaultCommandTimeout * time.Second
	if req.Timeout != nil {
		if timeout, err = parseSeconds(*req.Timeout); err != nil {
			return process.Spec{}, err
		}
	}
	env, err := process.BuildEnv(u, cwd, s.sandboxEnvs(), req.Envs)
	if err != nil {
		return process.Spec{}, err
	}
	return process.Spec{
		Cmd:     req.Cmd,
		User:    u,
		Dir:     cwd,
		Env:     env,
		Envs:    req.Envs,
		Stdin:   req.Stdin,
		Timeout: timeout,
		Tag:     req.Tag,
	}, nil
}

// start starts the command of the request; hold registers the output hold
// for a client that streams it (see process.Spec.HoldOutput).
func (s *Server) start(w http.ResponseWriter, r *http.Request, hold bool) (*process.Handler, *envdapi.CommandRequest, error) {
	var req envdapi.CommandRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return nil, nil, err
	}
	spec, err := s.spec(&req)
	if err != nil {
		return nil, nil, err
	}
	spec.HoldOutput = hold && !req.Background
	h, err := s.procs.Start(spec)
	if err != nil {
		return nil, nil, err
	}
	return h, &req, nil
}

func commandResult(r process.Result) envdapi.CommandResult {
	return envdapi.CommandResult{
		Pid:      r.Pid,
		Stdout:   string(r.Stdout),
		Stderr:   string(r.Stderr),
		ExitCode: r.ExitCode,
		Error:    r.Error,
	}
}

func timeoutError(code string, r process.Result) envdapi.TimeoutError {
	msg := r.Error
	if code == envdapi.CodeWaitTimeout {
		msg = fmt.Sprintf("process %d still running after the wait timeout", r.Pid)
	}
	return envdapi.TimeoutError{
		Message:  msg,
		Code:     code,
		Pid:      r.Pid,
		Stdout:   string(r.Stdout),
		Stderr:   string(r.Stderr),
		ExitCode: r.ExitCode,
	}
}

// statDir reports whether path is a directory.
func statDir(path string) (bool, error) {
	st, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	return st.IsDir(), nil
}

// handleRun is POST /commands: a foreground command answers with its
// result (408 with the output so far if it timed out; killed if the client
// goes away), a background one with its pid.
func (s *Server) handleRun(w http.ResponseWriter, r *http.Request) {
	h, req, err := s.start(w, r, false)
	if err != nil {
		writeError(w, err)
		return
	}
	if req.Background {
		writeJSON(w, http.StatusOK, envdapi.BackgroundStarted{Pid: h.Pid()})
		return
	}
	select {
	case <-h.Done():
	case <-r.Context().Done():
		h.Kill()
		return
	}
	res := h.Result()
	h.Release()
	if res.TimedOut {
		writeJSON(w, http.StatusRequestTimeout, timeoutError(envdapi.CodeCommandTimeout, res))
		return
	}
	writeJSON(w, http.StatusOK, commandResult(res))
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	out := []envdapi.ProcessInfo{}
	for _, p := range s.procs.List() {
		envs := p.Envs
		if envs == nil {
			envs = map[string]string{}
		}
		out = append(out, envdapi.ProcessInfo{Pid: p.Pid, Cmd: p.Cmd, IsPty: p.IsPty, Envs: envs, Tag: p.Tag, Cwd: p.Cwd, User: p.User, Kind: p.Kind})
	}
	writeJSON(w, http.StatusOK, out)
}

// handler returns the process named by the {pid} path value.
func (s *Server) lookupProcess(r *http.Request) (*process.Handler, error) {
	pid, err := strconv.Atoi(r.PathValue("pid"))
	if err != nil {
		return nil, badInput("invalid pid %q", r.PathValue("pid"))
	}
	return s.procs.Get(pid)
}

func (s *Server) handleKill(w http.ResponseWriter, r *http.Request) {
	h, err := s.lookupProcess(r)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, envdapi.KillResult{Killed: h.Kill()})
}

func (s *Server) handleStdin(w http.ResponseWriter, r *http.Request) {
	h, err := s.lookupProcess(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req envdapi.StdinRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := h.WriteStdin([]byte(req.Data)); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleWait is GET /commands/{pid}/wait[?timeout=seconds]. It answers the
// result once the process finished; if the timeout expires first, 408
// with the output so far (the process keeps running).
func (s *Server) handleWait(w http.ResponseWriter, r *http.Request) {
	h, err := s.lookupProcess(r)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	if q := r.URL.Query().Get("timeout"); q != "" {
		secs, err := strconv.ParseFloat(q, 64)
		if err != nil {
			writeError(w, badInput("invalid timeout %q", q))
			return
		}
		d, err := parseSeconds(secs)
		if err != nil {
			writeError(w, err)
			return
		}
		if d > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
	}
	select {
	case <-h.Done():
	case <-ctx.Done():
		if r.Context().Err() == nil {
			writeJSON(w, http.StatusRequestTimeout, timeoutError(envdapi.CodeWaitTimeout, h.Result()))
		}
		return
	}
	h.MarkWaited()
	writeJSON(w, http.StatusOK, commandResult(h.Result()))
}

// handleRunStream is POST /commands/stream: the command's output as SSE
// (start, stdout/stderr chunks, then exit or error). The process is killed
// if the client goes away.
//
// This stream owns the process and holds it back like a pipe: it
// delivers all of the output, and while the client reads slower than the
// process writes, the process blocks on its full stdout/stderr pipe
// instead of output being dropped (see process.Hold). A client that stops
// reading stalls only its own command, with bounded memory; the command
// timeout and kills still end it. Followers (GET /commands/{pid}/stream)
// never hold the process back: they get "gap" events instead.
func (s *Server) handleRunStream(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, errors.New("streaming unsupported by the connection"))
		return
	}
	h, _, err := s.start(w, r, true)
	if err != nil {
		writeError(w, err)
		return
	}
	defer h.OutputHold().Release()
	sse := newSSEWriter(w, flusher)
	if !s.streamOutput(r.Context(), sse, h) {
		h.Kill()
		return
	}
	res := h.Result()
	h.Release()
	if res.TimedOut {
		sse.event("error", envdapi.StreamEvent{Type: "error", Error: res.Error})
		return
	}
	code := res.ExitCode
	sse.event("exit", envdapi.StreamEvent{Type: "exit", ExitCode: &code, Error: res.Error})
}

// streamOutput sends the start event and the output of h until the process
// is done. It reports false if the client went away.
func (s *Server) streamOutput(ctx context.Context, sse *sseWriter, h *process.Handler) bool {
	sse.header()
	if !sse.event("start", envdapi.StreamEvent{Type: "start", Pid: h.Pid()}) {
		return false
	}
	// With the output hold (see handleRunStream) nothing is dropped
	// before it was sent. Once the hold was released (the command was
	// killed or timed out), output the log's cap dropped is reported with
	// a "gap" event, never skipped silently.
	var carry [2]utf8Carry
	emit := func(e process.Entry) bool {
		name := e.Stream.String()
		text := carry[e.Stream].split(e.Data)
		if text == "" {
			return true
		}
		return sse.eventID(name, e.ID, envdapi.StreamEvent{Type: name, Stream: name, Data: text, EntryID: e.ID})
	}
	gap := func(after uint64) bool {
		carry = [2]utf8Carry{}
		return sse.event("gap", envdapi.StreamEvent{Type: "gap", Code: envdapi.CodeOutputDropped, Error: gapMessage(after)})
	}
	if !followLog(ctx, h.Output(), 0, h.OutputHold(), emit, gap) {
		return false
	}
	for st, c := range carry {
		if rest := c.flush(); rest != "" {
			name := process.Stream(st).String()
			if !sse.event(name, envdapi.StreamEvent{Type: name, Stream: name, Data: rest}) {
				return false
			}
		}
	}
	select {
	case <-h.Done():
		return true
	case <-ctx.Done():
		return false
	}
}

// handleCommandStream is GET /commands/{pid}/stream[?last_entry_id=N]:
// follow a process started by anyone, e.g. a background command from
// another client. The events are those of POST /commands/stream, with
// entry ids: the retained output from the start (or after entry N), then
// live output, then "exit" or "error". Unlike POST /commands/stream, a
// disconnect leaves the process running and its result available.
func (s *Server) handleCommandStream(w http.ResponseWriter, r *http.Request) {
	h, err := s.lookupProcess(r)
	if err != nil {
		writeError(w, err)
		return
	}
	cursor, _, err := resumeCursor(r)
	if err != nil {
		writeError(w, err)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, errors.New("streaming unsupported by the connection"))
		return
	}
	sse := newSSEWriter(w, flusher)
	sse.header()
	ctx := r.Context()
	if !sse.event("start", envdapi.StreamEvent{Type: "start", Pid: h.Pid()}) {
		return
	}
	log := h.Output()
	// Bytes of an incomplete UTF-8 sequence at the end of entry N were held
	// back, not sent (see utf8Carry): a stream resumed after N starts with
	// them pending again, so nothing is lost or repeated.
	var carry [3]utf8Carry
	for st := range carry {
		if cursor > 0 {
			carry[st].split(log.TailBytes(process.Stream(st), cursor, utf8.UTFMax-1))
		}
	}
	name := func(st process.Stream) string {
		if st == process.PtyStream {
			return "stdout" // the terminal's output
		}
		return st.String()
	}
	emit := func(e process.Entry) bool {
		text := carry[e.Stream].split(e.Data)
		if text == "" {
			return true
		}
		n := name(e.Stream)
		return sse.eventID(n, e.ID, envdapi.StreamEvent{Type: n, Stream: n, Data: text, EntryID: e.ID})
	}
	gap := func(after uint64) bool {
		carry = [3]utf8Carry{} // what was held back belongs to dropped output
		return sse.event("gap", envdapi.StreamEvent{Type: "gap", Code: envdapi.CodeOutputDropped, Error: gapMessage(after)})
	}
	if !followLog(ctx, log, cursor, nil, emit, gap) {
		return
	}
	for st := range carry {
		if rest := carry[st].flush(); rest != "" {
			n := name(process.Stream(st))
			if !sse.event(n, envdapi.StreamEvent{Type: n, Stream: n, Data: rest}) {
				return
			}
		}
	}
	if !waitDone(ctx, h) {
		return
	}
	res := h.Result()
	if res.TimedOut {
		sse.event("error", envdapi.StreamEvent{Type: "error", Error: res.Error})
		return
	}
	code := res.ExitCode
	sse.event("exit", envdapi.StreamEvent{Type: "exit", ExitCode: &code, Error: res.Error})
}
