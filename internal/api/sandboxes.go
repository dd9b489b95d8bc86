package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/declaw/declaw/internal/limits"
	"github.com/declaw/declaw/internal/network"
	"github.com/declaw/declaw/internal/policy"
	"github.com/declaw/declaw/internal/sandbox"
	"github.com/declaw/declaw/internal/store"
	"github.com/declaw/declaw/internal/tenancy"
)

// createBody is POST /sandboxes.
type createBody struct {
	Template            string            `json:"template"`
	TemplateID          string            `json:"template_id"`
	Timeout             *float64          `json:"timeout"`
	Metadata            map[string]string `json:"metadata"`
	Envs                map[string]string `json:"envs"`
	Secure              *bool             `json:"secure"`
	AllowInternetAccess *bool             `json:"allow_internet_access"`
	Network             *policy.Network   `json:"network"`
	Security            json.RawMessage   `json:"security"`
	Lifecycle           json.RawMessage   `json:"lifecycle"`
	// Resources within the server's maxima; absent: the template's, else the server's defaults.
	CPUCount *float64 `json:"cpu_count"`
	MemoryMB *int64   `json:"memory_mb"`
	DiskMB   *int64   `json:"disk_mb"`
}

// createResponse is the answer of POST /sandboxes.
type createResponse struct {
	*sandbox.Info
	EnvdAccessToken string `json:"envd_access_token"`
	SandboxDomain   string `json:"sandbox_domain"`
}

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) {
	raw, err := readBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if key != "" {
		if len(key) > 200 {
			s.writeError(w, r, badRequest("invalid_argument", "Idempotency-Key is longer than 200 characters"))
			return
		}
		// Keys are per team: another team's key never replays this create.
		// The default team's are stored as they are (as before teams),
		// other teams' behind "TEAM\n"; a header value holds no newline, so
		// no team can name another's record.
		if team := tenancy.TeamOf(r.Context()); team != store.DefaultTeam {
			key = team + "\n" + key
		}
		sum := sha256.Sum256(raw)
		rec, err := s.cfg.Store.BeginIdempotent(r.Context(), store.Idempotency{Key: key, BodyHash: hex.EncodeToString(sum[:])})
		if errors.Is(err, store.ErrExists) {
			switch {
			case rec.BodyHash != hex.EncodeToString(sum[:]):
				s.writeError(w, r, &Error{Status: http.StatusUnprocessableEntity, Code: "idempotency_key_reused", Message: "Idempotency-Key was used with a different request body"})
			case rec.Response == nil:
				w.Header().Set("Retry-After", "1")
				s.writeError(w, r, &Error{Status: http.StatusConflict, Code: "idempotency_in_progress", Message: "a create with this Idempotency-Key is in progress"})
			default:
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Idempotent-Replayed", "true")
				w.WriteHeader(http.StatusCreated)
				w.Write(rec.Response)
			}
			return
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	resp, err := s.doCreate(r, raw)
	// The outcome is recorded even if the client went away meanwhile, so
	// its retry gets the sandbox instead of "in progress" forever.
	finishCtx := context.WithoutCancel(r.Context())
	if err != nil {
		if key != "" {
			s.cfg.Store.FinishIdempotent(finishCtx, key, "", nil)
		}
		s.writeError(w, r, err)
		return
	}
	b, _ := json.Marshal(resp)
	if key != "" {
		if err := s.cfg.Store.FinishIdempotent(finishCtx, key, resp.SandboxID, b); err != nil {
			s.logf("api: record idempotent create %s: %v", resp.SandboxID, err)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	w.Write(append(b, '\n'))
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	var raw json.RawMessage
	if err := decodeJSON(w, r, &raw, true); err != nil {
		return nil, err
	}
	if len(raw) == 0 {
		raw = json.RawMessage("{}")
	}
	return raw, nil
}

func (s *Server) doCreate(r *http.Request, raw []byte) (*createResponse, error) {
	var body createBody
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, err
	}
	req := sandbox.CreateRequest{TeamID: tenancy.TeamOf(r.Context()), Template: body.Template, Metadata: body.Metadata, Envs: body.Envs, Lifecycle: body.Lifecycle,
		Resources: limits.Request{CPUs: body.CPUCount, MemoryMB: body.MemoryMB, DiskMB: body.DiskMB}}
	if req.Template == "" {
		req.Template = body.TemplateID
	}
	if err := s.visibleTemplate(r.Context(), req.Template); err != nil {
		return nil, err // another team's template: as if unknown
	}
	if body.Timeout != nil {
		if *body.Timeout != float64(int(*body.Timeout)) && *body.Timeout > 0 {
			*body.Timeout = float64(int(*body.Timeout) + 1)
		}
		t := int(*body.Timeout)
		if *body.Timeout < 0 {
			t = -1
		}
		req.Timeout = &t
	}
	sec, err := policy.Parse(body.Security)
	if err != nil {
		return nil, err
	}
	req.Security = sec
	netp := body.Network
	if netp == nil && sec.Network != nil {
		netp = sec.Network
	}
	switch {
	case netp != nil:
		req.Network = network.Policy{AllowOut: netp.AllowOut, DenyOut: netp.DenyOut}
	case body.AllowInternetAccess != nil && !*body.AllowInternetAccess:
		req.Network = network.Policy{DenyOut: []string{"0.0.0.0/0"}}
	}
	atts, err := s.parseAttachments(r.Context(), raw) // volumes.go
	if err != nil {
		return nil, err
	}
	// A create runs to its end even if the client goes away (a first use of
	// a template builds it, which may outlast a client's timeout): its retry
	// with the same Idempotency-Key then gets the finished sandbox.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 15*time.Minute)
	defer cancel()
	mounts, mounted, err := s.liveMounts(ctx, atts) // volumes.go
	if err != nil {
		return nil, err
	}
	req.Mounts = mounts
	info, token, err := s.cfg.Sandboxes.Create(ctx, req)
	if err != nil {
		mounted("")
		return nil, err
	}
	mounted(info.SandboxID)
	if err := s.attachVolumes(ctx, info.SandboxID, atts); err != nil {
		return nil, err
	}
	return &createResponse{Info: info, EnvdAccessToken: token, SandboxDomain: r.Host}, nil
}

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) {
	info, err := s.cfg.Sandboxes.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// listSandboxes serves GET /sandboxes?state=running&metadata=k%3Dv&limit=&next_token=.
func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := sandbox.ListFilter{TeamID: tenancy.TeamOf(r.Context()), Next: q.Get("next_token")}
	for _, v := range q["state"] {
		for _, st := range strings.Split(v, ",") {
			st = strings.TrimSpace(st)
			switch st {
			case "":
			case "live":
				f.States = append(f.States, sandbox.StateRunning)
			case sandbox.StateRunning, sandbox.StatePaused, sandbox.StateKilled:
				f.States = append(f.States, st)
			default:
				s.writeError(w, r, badRequest("invalid_argument", fmt.Sprintf("state %q is not one of running, paused, killed", st)))
				return
			}
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			s.writeError(w, r, badRequest("invalid_argument", "limit must be an integer in [1, 1000]"))
			return
		}
		f.Limit = n
	}
	f.Metadata = map[string]string{}
	for _, v := range q["metadata"] {
		// E2B style: metadata=url-encoded "k1=v1&k2=v2"; also "k=v".
		mv, err := url.ParseQuery(v)
		if err != nil {
			s.writeError(w, r, badRequest("invalid_argument", "metadata filter must look like key=value&key2=value2"))
			return
		}
		for k := range mv {
			f.Metadata[k] = mv.Get(k)
		}
	}
	for k, v := range q {
		if strings.HasPrefix(k, "metadata.") && len(v) > 0 {
			f.Metadata[strings.TrimPrefix(k, "metadata.")] = v[0]
		}
	}
	infos, next, err := s.cfg.Sandboxes.List(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := map[string]any{"sandboxes": infos, "next_token": nil}
	if next != "" {
		out["next_token"] = next
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) killSandbox(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if queryBool(r, "async") {
		if err := s.cfg.Sandboxes.KillAsync(r.Context(), id); err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]bool{"queued": true})
		return
	}
	killed, err := s.cfg.Sandboxes.Kill(r.Context(), id)
	if err != nil && !killed {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"killed": killed})
}

func (s *Server) killMany(w http.ResponseWriter, r *http.Request) {
	var body struct {
		SandboxIDs []string `json:"sandbox_ids"`
	}
	if err := decodeJSON(w, r, &body, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(body.SandboxIDs) > 1000 {
		s.writeError(w, r, badRequest("invalid_argument", "at most 1000 sandbox_ids per call"))
		return
	}
	async := queryBool(r, "async")
	results := map[string]map[string]any{}
	for _, id := range body.SandboxIDs {
		if err := s.visibleSandbox(r.Context(), id); err != nil {
			results[id] = map[string]any{"error": toAPIError(err).Message}
			continue
		}
		if async {
			if err := s.cfg.Sandboxes.KillAsync(r.Context(), id); err != nil {
				results[id] = map[string]any{"error": toAPIError(err).Message}
				continue
			}
			results[id] = map[string]any{"queued": true}
			continue
		}
		killed, err := s.cfg.Sandboxes.Kill(r.Context(), id)
		if err != nil && !killed {
			results[id] = map[string]any{"error": toAPIError(err).Message}
			continue
		}
		results[id] = map[string]any{"killed": killed}
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": results})
}

func (s *Server) sandboxStatus(w http.ResponseWriter, r *http.Request) {
	info, err := s.cfg.Sandboxes.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"is_running": info.State == sandbox.StateRunning, "state": info.State})
}

func (s *Server) setTimeout(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Timeout *float64 `json:"timeout"`
	}
	if err := decodeJSON(w, r, &body, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if body.Timeout == nil {
		s.writeError(w, r, badRequest("invalid_argument", "timeout (seconds) is required"))
		return
	}
	t := int(*body.Timeout)
	if *body.Timeout < 0 {
		t = -1
	}
	id := r.PathValue("id")
	if err := s.cfg.Sandboxes.SetTimeout(r.Context(), id, t); err != nil {
		s.writeError(w, r, err)
		return
	}
	info, err := s.cfg.Sandboxes.Get(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// listAudit serves GET /sandboxes/{id}/audit?type=&since=&until=&limit=&cursor=.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := s.cfg.Sandboxes.Get(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	aq := store.AuditQuery{SandboxID: id}
	for _, v := range q["type"] {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				aq.Types = append(aq.Types, t)
			}
		}
	}
	var err error
	if aq.Since, err = parseTime(q.Get("since")); err != nil {
		s.writeError(w, r, badRequest("invalid_argument", "since: "+err.Error()))
		return
	}
	if aq.Until, err = parseTime(q.Get("until")); err != nil {
		s.writeError(w, r, badRequest("invalid_argument", "until: "+err.Error()))
		return
	}
	if v := q.Get("limit"); v != "" {
		if aq.Limit, err = strconv.Atoi(v); err != nil || aq.Limit < 1 || aq.Limit > 1000 {
			s.writeError(w, r, badRequest("invalid_argument", "limit must be an integer in [1, 1000]"))
			return
		}
	}
	if v := q.Get("cursor"); v != "" {
		if aq.AfterID, err = strconv.ParseInt(v, 10, 64); err != nil {
			s.writeError(w, r, badRequest("invalid_argument", "cursor is not valid"))
			return
		}
	}
	if queryBool(r, "follow") {
		s.followAudit(w, r, aq)
		return
	}
	evs, err := s.cfg.Store.ListAudit(r.Context(), aq)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if evs == nil {
		evs = []store.AuditEvent{}
	}
	out := map[string]any{"events": evs, "next_cursor": nil}
	if aq.Limit > 0 && len(evs) == aq.Limit || aq.Limit == 0 && len(evs) == 100 {
		out["next_cursor"] = strconv.FormatInt(evs[len(evs)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, out)
}

func parseTime(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	secs, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 nor unix seconds", v)
	}
	return time.Unix(0, int64(secs*1e9)), nil
}

// updateNetwork serves PUT /sandboxes/{id}/network with a NetworkPolicy
// body ({"allow_out": [...], "deny_out": [...]}) that replaces the policy.
func (s *Server) updateNetwork(w http.ResponseWriter, r *http.Request) {
	var body policy.Network
	if err := decodeJSON(w, r, &body, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	info, err := s.cfg.Sandboxes.UpdateNetwork(r.Context(), r.PathValue("id"), network.Policy{AllowOut: body.AllowOut, DenyOut: body.DenyOut})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) pauseSandbox(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Sandboxes.Pause(r.Context(), r.PathValue("id")); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

// resumeSandbox serves POST /sandboxes/{id}/resume; an optional body
// {"timeout": seconds} resets the timeout as it resumes.
func (s *Server) resumeSandbox(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Timeout *float64 `json:"timeout"`
	}
	if err := decodeJSON(w, r, &body, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	if err := s.cfg.Sandboxes.Resume(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	if body.Timeout != nil {
		t := int(*body.Timeout)
		if *body.Timeout < 0 {
			t = -1
		}
		if err := s.cfg.Sandboxes.SetTimeout(r.Context(), id, t); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

// sandboxMetrics serves GET /sandboxes/{id}/metrics[?start=&end=].
func (s *Server) sandboxMetrics(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	start, err := parseTime(q.Get("start"))
	if err != nil {
		s.writeError(w, r, badRequest("invalid_argument", "start: "+err.Error()))
		return
	}
	end, err := parseTime(q.Get("end"))
	if err != nil {
		s.writeError(w, r, badRequest("invalid_argument", "end: "+err.Error()))
		return
	}
	ms, err := s.cfg.Sandboxes.Metrics(r.Context(), r.PathValue("id"), start, end)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ms)
}

// createSnapshot serves POST /sandboxes/{id}/snapshot[{"memory": true}].
func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Memory bool `json:"memory"`
	}
	if err := decodeJSON(w, r, &body, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	sn, err := s.cfg.Sandboxes.Snapshot(r.Context(), r.PathValue("id"), body.Memory)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, sn)
}

func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request) {
	list, err := s.cfg.Sandboxes.Snapshots(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"snapshots": list})
}

func (s *Server) deleteSnapshot(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := s.cfg.Sandboxes.Get(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	ok, err := s.cfg.Sandboxes.DeleteSnapshot(r.Context(), id, r.PathValue("sid"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"deleted": ok})
}

// restoreSandbox serves POST /sandboxes/{id}/restore[?snapshot_id=][&fork=true]:
// the sandbox itself goes back to the snapshot, under the same id (200
// {sandbox_id, node_id, snapshot_id}); with fork=true a NEW sandbox is
// started from the snapshot instead (201, its id in sandbox_id).
func (s *Server) restoreSandbox(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fork := false
	if v := q.Get("fork"); v != "" {
		var err error
		if fork, err = strconv.ParseBool(v); err != nil {
			s.writeError(w, r, badRequest("invalid_argument", "fork must be true or false"))
			return
		}
	}
	// A restore is not abandoned half-way when the client goes away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 15*time.Minute)
	defer cancel()
	restore, status := s.cfg.Sandboxes.Restore, http.StatusOK
	if fork {
		restore, status = s.cfg.Sandboxes.Fork, http.StatusCreated
	}
	info, token, sn, err := restore(ctx, r.PathValue("id"), q.Get("snapshot_id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, status, map[string]any{
		"sandbox_id": info.SandboxID, "snapshot_id": sn.ID, "node_id": "local",
		"envd_access_token": token, "sandbox": info,
	})
}

// followAudit streams a sandbox's audit events as SSE (`event: audit`,
// `id:` = the event id, data = the event), the stored ones first, then new
// ones as they are recorded, until the client goes away. A client resumes
// with ?cursor=<last id> (or the Last-Event-ID header).
func (s *Server) followAudit(w http.ResponseWriter, r *http.Request, q store.AuditQuery) {
	if v := r.Header.Get("Last-Event-ID"); v != "" && q.AfterID == 0 {
		q.AfterID, _ = strconv.ParseInt(v, 10, 64)
	}
	q.Limit = 500
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if fl != nil {
		fl.Flush()
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	idle := 0
	for {
		evs, err := s.cfg.Store.ListAudit(r.Context(), q)
		if err != nil {
			return
		}
		for _, e := range evs {
			b, _ := json.Marshal(e)
			fmt.Fprintf(w, "id: %d\nevent: audit\ndata: %s\n\n", e.ID, b)
			q.AfterID = e.ID
		}
		if len(evs) > 0 {
			idle = 0
		} else if idle++; idle%30 == 0 {
			fmt.Fprint(w, ": keepalive\n\n")
		}
		if fl != nil {
			fl.Flush()
		}
		if len(evs) == q.Limit {
			continue
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}
