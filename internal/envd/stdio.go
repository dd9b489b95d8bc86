package envd

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/declaw/declaw/internal/envd/process"
	"github.com/declaw/declaw/internal/envdapi"
)

// Stdio sessions are processes with an open stdin pipe whose output is
// delivered as base64 with entry ids, so a client can resume a dropped
// stream exactly (see envdapi.StdioEvent). The session id (cmd_id) is the
// pid in decimal.

// errNotStdio is answered (404) when a /stdio route names something that
// is not a stdio session.
var errNotStdio = errors.New("no stdio session with this cmd_id")

// handleStartStdio is POST /stdio.
func (s *Server) handleStartStdio(w http.ResponseWriter, r *http.Request) {
	var req envdapi.StdioRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	timeout := req.Timeout
	if timeout == nil {
		timeout = new(float64) // no timeout unless asked: sessions are long-lived
	}
	spec, err := s.spec(&envdapi.CommandRequest{
		Cmd: req.Cmd, User: req.User, Envs: req.Envs, Cwd: req.Cwd, Stdin: true, Timeout: timeout, Tag: req.Tag,
	})
	if err != nil {
		writeError(w, err)
		return
	}
	spec.Kind = process.KindStdio
	h, err := s.procs.Start(spec)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, envdapi.StdioStarted{CmdID: strconv.Itoa(h.Pid()), Pid: h.Pid()})
}

// handleListStdio is GET /stdio: the running sessions.
func (s *Server) handleListStdio(w http.ResponseWriter, r *http.Request) {
	out := []envdapi.StdioInfo{}
	for _, p := range s.procs.List() {
		if p.Kind == process.KindStdio {
			out = append(out, envdapi.StdioInfo{CmdID: strconv.Itoa(p.Pid), Pid: p.Pid, Cmd: p.Cmd, Tag: p.Tag})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// lookupStdio returns the session named by the {cmd_id} path value.
func (s *Server) lookupStdio(r *http.Request) (*process.Handler, error) {
	id := r.PathValue("cmd_id")
	pid, err := strconv.Atoi(id)
	if err != nil || pid <= 0 || strconv.Itoa(pid) != id {
		return nil, errNotStdio
	}
	h, err := s.procs.Get(pid)
	if err != nil {
		return nil, errNotStdio
	}
	if h.Info().Kind != process.KindStdio {
		return nil, errNotStdio
	}
	return h, nil
}

// decodeBase64 accepts standard base64 with or without padding.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return nil, badInput("data is not valid base64: %v", err)
	}
	return b, nil
}

// handleStdioStdin is POST /stdio/{cmd_id}/stdin with base64 data.
func (s *Server) handleStdioStdin(w http.ResponseWriter, r *http.Request) {
	h, err := s.lookupStdio(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req envdapi.StdioStdinRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	data, err := decodeBase64(req.Data)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := h.WriteStdin(data); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleStdioClose is POST /stdio/{cmd_id}/stdin/close: EOF on stdin.
// Idempotent; any body is ignored.
func (s *Server) handleStdioClose(w http.ResponseWriter, r *http.Request) {
	h, err := s.lookupStdio(r)
	if err != nil {
		writeError(w, err)
		return
	}
	h.CloseStdin()
	w.WriteHeader(http.StatusNoContent)
}

// handleStdioKill is DELETE /stdio/{cmd_id}: kills the process tree.
func (s *Server) handleStdioKill(w http.ResponseWriter, r *http.Request) {
	h, err := s.lookupStdio(r)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, envdapi.KillResult{Killed: h.Kill()})
}

// handleStdioStream is GET /stdio/{cmd_id}/stream[?last_entry_id=N]: all
// retained output after entry N (from the start by default), then live
// output, then "exit". A disconnect does not affect the process.
func (s *Server) handleStdioStream(w http.ResponseWriter, r *http.Request) {
	h, err := s.lookupStdio(r)
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
	emit := func(e process.Entry) bool {
		name := e.Stream.String()
		return sse.eventID(name, e.ID, envdapi.StdioEvent{
			Type: name, Stream: name, Data: base64.StdEncoding.EncodeToString(e.Data), EntryID: e.ID,
		})
	}
	gap := func(after uint64) bool {
		return sse.event("gap", envdapi.StdioEvent{Type: "gap", Code: envdapi.CodeOutputDropped, Error: gapMessage(after)})
	}
	if !followLog(ctx, h.Output(), cursor, nil, emit, gap) || !waitDone(ctx, h) {
		return
	}
	res := h.Result()
	code := res.ExitCode
	if sse.event("exit", envdapi.StdioEvent{Type: "exit", ExitCode: &code, Error: res.Error}) {
		h.MarkWaited()
	}
}
