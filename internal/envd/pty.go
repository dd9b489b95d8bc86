package envd

import (
	"encoding/base64"
	"errors"
	"maps"
	"net/http"
	"time"

	"github.com/declaw/declaw/internal/envd/filesystem"
	"github.com/declaw/declaw/internal/envd/process"
	"github.com/declaw/declaw/internal/envdapi"
)

// errNotPty is answered (404) when a /pty route names a process without a pty.
var errNotPty = errors.New("no pty process with this pid")

// handleStartPty is POST /pty: a process on a new pseudo-terminal.
func (s *Server) handleStartPty(w http.ResponseWriter, r *http.Request) {
	var req envdapi.PtyRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Size.Cols == 0 || req.Size.Rows == 0 {
		writeError(w, badInput("size.cols and size.rows must be positive"))
		return
	}
	u, err := s.lookupUser(req.User)
	if err != nil {
		writeError(w, err)
		return
	}
	cwd, err := s.cwdFor(req.Cwd, u.Home)
	if err != nil {
		writeError(w, err)
		return
	}
	timeout := envdapi.DefaultPtyTimeout * time.Second
	if req.Timeout != nil {
		if timeout, err = parseSeconds(*req.Timeout); err != nil {
			writeError(w, err)
			return
		}
	}
	sandbox := map[string]string{"TERM": "xterm-256color"}
	maps.Copy(sandbox, s.sandboxEnvs())
	env, err := process.BuildEnv(u, cwd, sandbox, req.Envs)
	if err != nil {
		writeError(w, err)
		return
	}
	h, err := s.procs.Start(process.Spec{
		Cmd:     req.Cmd,
		User:    u,
		Dir:     cwd,
		Env:     env,
		Envs:    req.Envs,
		Pty:     &process.Size{Cols: req.Size.Cols, Rows: req.Size.Rows},
		Timeout: timeout,
		Tag:     req.Tag,
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, envdapi.BackgroundStarted{Pid: h.Pid()})
}

// lookupPty returns the pty process named by the {pid} path value.
func (s *Server) lookupPty(r *http.Request) (*process.Handler, error) {
	h, err := s.lookupProcess(r)
	if err != nil {
		return nil, err
	}
	if !h.Info().IsPty {
		return nil, errNotPty
	}
	return h, nil
}

// handlePtyStream is GET /pty/{pid}/stream[?last_entry_id=N]: the
// terminal output as base64 "data" events, then "exit". The first
// subscriber of a PTY gets all its output from the start, so nothing the
// process wrote before the client connected is lost; later ones get the
// last envdapi.PtyScrollback bytes first; ?last_entry_id=N resumes after
// entry N. Any number may follow one PTY; a disconnect does not end it.
func (s *Server) handlePtyStream(w http.ResponseWriter, r *http.Request) {
	h, err := s.lookupPty(r)
	if err != nil {
		writeError(w, err)
		return
	}
	cursor, resume, err := resumeCursor(r)
	if err != nil {
		writeError(w, err)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, errors.New("streaming unsupported by the connection"))
		return
	}
	if !resume && !h.FirstSubscriber() {
		cursor = h.Output().TailCursor(process.PtyStream, envdapi.PtyScrollback)
	}
	sse := newSSEWriter(w, flusher)
	sse.header()
	ctx := r.Context()
	emit := func(e process.Entry) bool {
		return sse.eventID("data", e.ID, envdapi.PtyEvent{Type: "data", Data: base64.StdEncoding.EncodeToString(e.Data), EntryID: e.ID})
	}
	gap := func(after uint64) bool {
		return sse.event("gap", envdapi.PtyEvent{Type: "gap", Code: envdapi.CodeOutputDropped, Error: gapMessage(after)})
	}
	if !followLog(ctx, h.Output(), cursor, nil, emit, gap) || !waitDone(ctx, h) {
		return // the process keeps running
	}
	res := h.Result()
	code := res.ExitCode
	sse.event("exit", envdapi.PtyEvent{Type: "exit", ExitCode: &code, Error: res.Error})
}

func (s *Server) handlePtyStdin(w http.ResponseWriter, r *http.Request) {
	h, err := s.lookupPty(r)
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

func (s *Server) handlePtyResize(w http.ResponseWriter, r *http.Request) {
	h, err := s.lookupPty(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req envdapi.PtyResizeRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := h.Resize(process.Size{Cols: req.Size.Cols, Rows: req.Size.Rows}); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handlePtyKill(w http.ResponseWriter, r *http.Request) {
	h, err := s.lookupPty(r)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, envdapi.KillResult{Killed: h.Kill()})
}

// cwdFor resolves a requested working directory: the user's home (or /
// if it has none) by default, relative paths against the home.
func (s *Server) cwdFor(cwd, home string) (string, error) {
	if cwd != "" {
		return filesystem.Resolve(cwd, home)
	}
	if st, err := statDir(home); err == nil && st {
		return home, nil
	}
	return "/", nil
}
