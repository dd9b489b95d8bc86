package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/declaw/declaw/internal/template"
	"github.com/declaw/declaw/internal/template/build"
	"github.com/declaw/declaw/internal/tenancy"
)

// templateView is a template as GET /templates shows it.
type templateView struct {
	TemplateID string               `json:"template_id"`
	Alias      string               `json:"alias"`
	Aliases    []string             `json:"aliases"`
	Builtin    bool                 `json:"builtin"`
	Status     string               `json:"status"`
	CreatedAt  time.Time            `json:"created_at"`
	BuildID    string               `json:"build_id,omitempty"`
	BuildTime  string               `json:"build_time,omitempty"`
	SizeBytes  int64                `json:"size_bytes"`
	Base       string               `json:"base,omitempty"`
	Source     string               `json:"source,omitempty"`
	StartCmd   string               `json:"start_cmd,omitempty"`
	ReadyCheck *template.ReadyCheck `json:"ready_check,omitempty"`
	Envs       map[string]string    `json:"envs,omitempty"`
	Workdir    string               `json:"workdir,omitempty"`
	User       string               `json:"user,omitempty"`
	CPUCount   int                  `json:"cpu_count,omitempty"`
	MemoryMB   int                  `json:"memory_mb,omitempty"`
	DiskMB     int                  `json:"disk_mb,omitempty"`
	InUse      int                  `json:"in_use"`
}

func (s *Server) viewTemplate(t template.Template) templateView {
	v := templateView{
		TemplateID: t.ID, Alias: t.Name, Aliases: []string{t.Name}, Builtin: template.IsBuiltin(t.Name), Status: "ready",
		CreatedAt: t.BuiltAt, BuildTime: t.BuildTime, SizeBytes: t.SizeBytes,
		InUse: s.cfg.Sandboxes.TemplateUsers(t.Name),
	}
	if v.TemplateID == "" {
		v.TemplateID = t.Name
	}
	if c := t.Custom; c != nil {
		v.BuildID, v.Base, v.Source, v.CPUCount, v.MemoryMB, v.DiskMB = c.BuildID, c.Base, c.Source, c.CPUCount, c.MemoryMB, c.DiskMB
	}
	if r := t.Runtime; r != nil {
		v.StartCmd, v.ReadyCheck, v.Envs, v.Workdir, v.User = r.StartCmd, r.Ready, r.Envs, r.Workdir, r.User
	}
	return v
}

func (s *Server) templatesOff(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.Templates == nil || s.cfg.Builds == nil {
		s.writeError(w, r, &Error{Status: http.StatusNotImplemented, Code: "not_supported", Message: "template builds are not available on this server"})
		return true
	}
	return false
}

// buildTemplate is POST /templates/build: a JSON body, or multipart/form-data
// with the JSON in a part "request" and the build context (a tar, gzip or
// not) in a part "context".
func (s *Server) buildTemplate(w http.ResponseWriter, r *http.Request) {
	if s.templatesOff(w, r) {
		return
	}
	var req build.Request
	var contextTar io.Reader
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "multipart/form-data" {
		mr, err := (&http.Request{Header: http.Header{"Content-Type": {r.Header.Get("Content-Type")}}, Body: http.MaxBytesReader(w, r.Body, build.MaxContext+MaxJSONBody)}).MultipartReader()
		if err != nil || params["boundary"] == "" {
			s.writeError(w, r, badRequest("invalid_multipart", "malformed multipart body"))
			return
		}
		gotReq := false
		for {
			part, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				s.writeError(w, r, badRequest("invalid_multipart", "malformed multipart body: "+err.Error()))
				return
			}
			switch part.FormName() {
			case "request":
				b, err := io.ReadAll(io.LimitReader(part, MaxJSONBody+1))
				if err != nil || len(b) > MaxJSONBody {
					s.writeError(w, r, &Error{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large", Message: "the request part is larger than the limit"})
					return
				}
				if err := json.Unmarshal(b, &req); err != nil {
					s.writeError(w, r, badRequest("invalid_json", "malformed JSON in the request part: "+err.Error()))
					return
				}
				gotReq = true
			case "context":
				if !gotReq {
					s.writeError(w, r, badRequest("invalid_multipart", `the "request" part must come before the "context" part`))
					return
				}
				// Start reads the context before answering.
				contextTar = part
				st, err := s.startBuild(w, r, req, contextTar)
				if err == nil {
					s.answerBuild(w, r, req, st)
				}
				return
			}
		}
		if !gotReq {
			s.writeError(w, r, badRequest("invalid_multipart", `no "request" part`))
			return
		}
	} else if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	st, err := s.startBuild(w, r, req, nil)
	if err == nil {
		s.answerBuild(w, r, req, st)
	}
}

func (s *Server) startBuild(w http.ResponseWriter, r *http.Request, req build.Request, contextTar io.Reader) (*build.Status, error) {
	if len(req.Template.Dockerfile) > build.MaxDockerfile {
		err := &Error{Status: http.StatusRequestEntityTooLarge, Code: "dockerfile_too_large",
			Message: fmt.Sprintf("the Dockerfile is %d bytes, more than the limit of %d", len(req.Template.Dockerfile), build.MaxDockerfile)}
		s.writeError(w, r, err)
		return nil, err
	}
	req.Team = tenancy.Owner(tenancy.TeamOf(r.Context()))
	st, err := s.cfg.Builds.Start(r.Context(), req, contextTar)
	if err != nil {
		s.writeError(w, r, err)
		return nil, err
	}
	return st, nil
}

func (s *Server) answerBuild(w http.ResponseWriter, r *http.Request, req build.Request, st *build.Status) {
	if req.Background {
		writeJSON(w, http.StatusAccepted, st)
		return
	}
	done, err := s.cfg.Builds.Wait(r.Context(), st.BuildID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, done)
}

// getBuild is GET /templates/builds/{build_id}[?offset=N]; with Accept:
// text/event-stream (or ?follow=true) it streams the log as SSE.
func (s *Server) getBuild(w http.ResponseWriter, r *http.Request) {
	if s.templatesOff(w, r) {
		return
	}
	offset, _ := strconv.Atoi(r.URL.Query().Get("offset"))
	if strings.Contains(r.Header.Get("Accept"), "text/event-stream") || queryBool(r, "follow") {
		s.streamBuild(w, r, offset)
		return
	}
	st, err := s.cfg.Builds.Get(r.PathValue("build_id"), offset)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// streamBuild sends "log" events {offset, line} as they come, then one
// "status" event with the final status (without logs).
func (s *Server) streamBuild(w http.ResponseWriter, r *http.Request, offset int) {
	id := r.PathValue("build_id")
	if _, err := s.cfg.Builds.Get(id, 1<<30); err != nil {
		s.writeError(w, r, err)
		return
	}
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	send := func(event string, id int, v any) error {
		b, _ := json.Marshal(v)
		if id >= 0 {
			fmt.Fprintf(w, "id: %d\n", id)
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return err
		}
		if fl != nil {
			fl.Flush()
		}
		return nil
	}
	st, err := s.cfg.Builds.Follow(r.Context(), id, offset, func(off int, line string) error {
		return send("log", off, map[string]any{"offset": off, "line": line})
	})
	if err != nil {
		return
	}
	send("status", -1, st)
}

func (s *Server) cancelBuild(w http.ResponseWriter, r *http.Request) {
	if s.templatesOff(w, r) {
		return
	}
	st, err := s.cfg.Builds.Cancel(r.PathValue("build_id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	st.Logs = nil
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) {
	if s.templatesOff(w, r) {
		return
	}
	ts, err := s.cfg.Templates.List()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]templateView, 0, len(ts))
	for _, t := range ts {
		if !templateVisible(r.Context(), t) {
			continue // another team's
		}
		out = append(out, s.viewTemplate(t))
	}
	writeJSON(w, http.StatusOK, map[string]any{"templates": out})
}

func (s *Server) getTemplate(w http.ResponseWriter, r *http.Request) {
	if s.templatesOff(w, r) {
		return
	}
	t, err := s.cfg.Templates.Resolve(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.viewTemplate(t))
}

// deleteTemplate is DELETE /templates/{id}[?force=true]: 409 while live
// sandboxes use it, unless forced (they are killed first).
func (s *Server) deleteTemplate(w http.ResponseWriter, r *http.Request) {
	if s.templatesOff(w, r) {
		return
	}
	t, err := s.cfg.Templates.Resolve(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if build.TemplateTeam(t) == "" { // built-in, or installed by the operator: every team's
		s.writeError(w, r, &Error{Status: http.StatusForbidden, Code: "builtin_template", Message: "built-in and operator-installed templates cannot be deleted through the API"})
		return
	}
	if n := s.cfg.Sandboxes.TemplateUsers(t.Name); n > 0 {
		if !queryBool(r, "force") {
			s.writeError(w, r, &Error{Status: http.StatusConflict, Code: "template_in_use",
				Message: fmt.Sprintf("template %s is used by %d running sandbox(es); kill them or pass force=true", t.Name, n)})
			return
		}
		s.cfg.Sandboxes.KillTemplateUsers(r.Context(), t.Name)
	}
	if err := s.cfg.Templates.Delete(t.Name); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
