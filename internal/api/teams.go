package api

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/declaw/declaw/internal/store"
	"github.com/declaw/declaw/internal/tenancy"
)

// Teams and API keys. Every key belongs to a team and reaches that team's
// resources only; an admin key also manages teams and keys (of every
// team). The shapes follow the Declaw SDK's: GET/POST /teams with
// {"team_id","name","created_at"} (its vault client uses them).

// teamJSON is a team on the wire.
type teamJSON struct {
	TeamID    string    `json:"team_id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

func teamOut(t *store.Team) teamJSON {
	return teamJSON{TeamID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt}
}

// keyJSON is an API key on the wire. Key, the secret itself, is only in the
// answer of its create: the server keeps its SHA-256 alone.
type keyJSON struct {
	KeyID     string     `json:"key_id"`
	TeamID    string     `json:"team_id"`
	Name      string     `json:"name"`
	Admin     bool       `json:"admin"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at"`
	Key       string     `json:"key,omitempty"`
}

func keyOut(k *store.APIKey) keyJSON {
	out := keyJSON{KeyID: k.ID, TeamID: tenancy.Owner(k.TeamID), Name: k.Name, Admin: k.Admin, CreatedAt: k.CreatedAt}
	if !k.RevokedAt.IsZero() {
		t := k.RevokedAt
		out.RevokedAt = &t
	}
	return out
}

var teamName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func teamNotFound(id string) error {
	return &Error{Status: http.StatusNotFound, Code: "team_not_found", Message: fmt.Sprintf("team %s: not found", id)}
}

// listTeams serves GET /teams: every team for an admin key, the key's own
// team otherwise.
func (s *Server) listTeams(w http.ResponseWriter, r *http.Request) {
	teams, err := s.cfg.Store.ListTeams(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := []teamJSON{}
	admin := tenancy.RequireAdmin(r.Context()) == nil
	for _, t := range teams {
		if admin || tenancy.Visible(r.Context(), t.ID) {
			out = append(out, teamOut(t))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"teams": out})
}

// createTeam serves POST /teams {"name"} (admin keys).
func (s *Server) createTeam(w http.ResponseWriter, r *http.Request) {
	if err := tenancy.RequireAdmin(r.Context()); err != nil {
		s.writeError(w, r, err)
		return
	}
	var body struct {
		Name string `json:"name"`
	}
	if err := decodeJSON(w, r, &body, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if !teamName.MatchString(body.Name) {
		s.writeError(w, r, badRequest("invalid_argument", "name must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"))
		return
	}
	b := make([]byte, 8)
	rand.Read(b)
	t := &store.Team{ID: "team_" + hex.EncodeToString(b), Name: body.Name}
	if err := s.cfg.Store.CreateTeam(r.Context(), t); err != nil {
		if errors.Is(err, store.ErrExists) {
			err = &Error{Status: http.StatusConflict, Code: "team_exists", Message: fmt.Sprintf("a team named %q exists", body.Name)}
		}
		s.writeError(w, r, err)
		return
	}
	s.logf("api: team %s (%s) created by key %s", t.ID, t.Name, tenancy.CallerFrom(r.Context()).KeyID)
	writeJSON(w, http.StatusCreated, teamOut(t))
}

// getTeam serves GET /teams/{team_id}: any team for an admin key, the
// key's own team otherwise (others are not found).
func (s *Server) getTeam(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("team_id")
	if tenancy.RequireAdmin(r.Context()) != nil && !tenancy.Visible(r.Context(), id) {
		s.writeError(w, r, teamNotFound(id))
		return
	}
	t, err := s.cfg.Store.GetTeam(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		err = teamNotFound(id)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, teamOut(t))
}

// listTeamKeys serves GET /teams/{team_id}/api-keys (admin keys).
func (s *Server) listTeamKeys(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("team_id")
	if err := tenancy.RequireAdmin(r.Context()); err != nil {
		s.writeError(w, r, err)
		return
	}
	if _, err := s.cfg.Store.GetTeam(r.Context(), id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = teamNotFound(id)
		}
		s.writeError(w, r, err)
		return
	}
	s.writeKeys(w, r, id)
}

// listKeys serves GET /api-keys[?team_id=] (admin keys): every team's keys.
func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	if err := tenancy.RequireAdmin(r.Context()); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeKeys(w, r, r.URL.Query().Get("team_id"))
}

func (s *Server) writeKeys(w http.ResponseWriter, r *http.Request, team string) {
	keys, err := s.cfg.Store.ListAPIKeys(r.Context(), team)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]keyJSON, 0, len(keys))
	for _, k := range keys {
		out = append(out, keyOut(k))
	}
	writeJSON(w, http.StatusOK, map[string]any{"api_keys": out})
}

// createKey serves POST /teams/{team_id}/api-keys {"name", "admin"} (admin
// keys): a new key of the team, shown once in the answer's "key".
func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	if err := tenancy.RequireAdmin(r.Context()); err != nil {
		s.writeError(w, r, err)
		return
	}
	var body struct {
		Name  string `json:"name"`
		Admin bool   `json:"admin"`
	}
	if err := decodeJSON(w, r, &body, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(body.Name) > 200 || !utf8.ValidString(body.Name) || strings.ContainsFunc(body.Name, unicode.IsControl) {
		s.writeError(w, r, badRequest("invalid_argument", "name must be at most 200 printable characters"))
		return
	}
	team := r.PathValue("team_id")
	key := tenancy.NewKey()
	hash := tenancy.HashKey(key)
	rec := &store.APIKey{ID: store.KeyID(hash), Hash: hash, TeamID: team, Name: body.Name, Admin: body.Admin}
	if err := s.cfg.Store.CreateAPIKey(r.Context(), rec); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = teamNotFound(team)
		}
		s.writeError(w, r, err)
		return
	}
	s.logf("api: API key %s (team %s, admin %v) created by key %s", rec.ID, team, rec.Admin, tenancy.CallerFrom(r.Context()).KeyID)
	out := keyOut(rec)
	out.Key = key
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, out)
}

// revokeKey serves DELETE /api-keys/{key_id} (admin keys). The key is
// refused from then on, and every request open with it (streams included)
// is cut at once. The last valid admin key cannot be revoked.
func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	if err := tenancy.RequireAdmin(r.Context()); err != nil {
		s.writeError(w, r, err)
		return
	}
	id := r.PathValue("key_id")
	s.revokeMu.Lock()
	defer s.revokeMu.Unlock()
	keys, err := s.cfg.Store.ListAPIKeys(r.Context(), "")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var target *store.APIKey
	admins := 0
	for _, k := range keys {
		if k.ID == id {
			target = k
		}
		if k.Admin && k.RevokedAt.IsZero() {
			admins++
		}
	}
	switch {
	case target == nil:
		s.writeError(w, r, &Error{Status: http.StatusNotFound, Code: "key_not_found", Message: fmt.Sprintf("API key %s: not found", id)})
		return
	case !target.RevokedAt.IsZero():
		writeJSON(w, http.StatusOK, map[string]any{"key_id": id, "revoked": false})
		return
	case target.Admin && admins <= 1:
		s.writeError(w, r, &Error{Status: http.StatusConflict, Code: "last_admin_key",
			Message: fmt.Sprintf("API key %s is the last valid admin key: create another admin key first", id)})
		return
	}
	by := tenancy.CallerFrom(r.Context()).KeyID
	ok, err := s.keys.Revoke(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.logf("api: API key %s (team %s) revoked by key %s", id, target.TeamID, by)
	writeJSON(w, http.StatusOK, map[string]any{"key_id": id, "revoked": ok})
}
