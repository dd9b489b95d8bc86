package declaw

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Team is a tenant: it owns API keys, sandboxes, snapshots and audit.
type Team struct {
	TeamID    string    `json:"team_id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// APIKey is an API key as the server lists it. Key, the secret, is set
// only in the answer of CreateAPIKey: the server keeps its hash alone.
type APIKey struct {
	KeyID     string     `json:"key_id"`
	TeamID    string     `json:"team_id"`
	Name      string     `json:"name"`
	Admin     bool       `json:"admin"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at"`
	Key       string     `json:"key,omitempty"`
}

// ListTeams returns every team for an admin key, the key's own team
// otherwise (GET /teams).
func (c *Client) ListTeams(ctx context.Context) ([]Team, error) {
	var out struct {
		Teams []Team `json:"teams"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/teams"}, &out); err != nil {
		return nil, err
	}
	if out.Teams == nil {
		out.Teams = []Team{}
	}
	return out.Teams, nil
}

// CreateTeam creates a team (POST /teams; admin keys). A taken name is a
// 409 team_exists.
func (c *Client) CreateTeam(ctx context.Context, name string) (*Team, error) {
	var t Team
	if err := c.call(ctx, request{method: http.MethodPost, path: "/teams", json: map[string]string{"name": name}}, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// GetTeam returns a team by id (GET /teams/{team_id}).
func (c *Client) GetTeam(ctx context.Context, id string) (*Team, error) {
	var t Team
	if err := c.call(ctx, request{method: http.MethodGet, path: "/teams/" + url.PathEscape(id)}, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// ListAPIKeys lists the keys of team, or of every team when team is ""
// (admin keys), revoked ones included, without their secrets.
func (c *Client) ListAPIKeys(ctx context.Context, team string) ([]APIKey, error) {
	r := request{method: http.MethodGet, path: "/api-keys"}
	if team != "" {
		r.path = "/teams/" + url.PathEscape(team) + "/api-keys"
	}
	var out struct {
		Keys []APIKey `json:"api_keys"`
	}
	if err := c.call(ctx, r, &out); err != nil {
		return nil, err
	}
	if out.Keys == nil {
		out.Keys = []APIKey{}
	}
	return out.Keys, nil
}

// CreateAPIKey creates a key of team (admin keys); the answer's Key is the
// secret, shown this once. It is not retried.
func (c *Client) CreateAPIKey(ctx context.Context, team, name string, admin bool) (*APIKey, error) {
	var k APIKey
	body := map[string]any{"name": name, "admin": admin}
	if err := c.call(ctx, request{method: http.MethodPost, path: "/teams/" + url.PathEscape(team) + "/api-keys", json: body}, &k); err != nil {
		return nil, err
	}
	return &k, nil
}

// RevokeAPIKey revokes a key by its id (DELETE /api-keys/{key_id}; admin
// keys): it is refused at once, and requests open with it are cut.
// revoked is false when it was revoked already.
func (c *Client) RevokeAPIKey(ctx context.Context, keyID string) (revoked bool, err error) {
	var out struct {
		Revoked bool `json:"revoked"`
	}
	if err := c.call(ctx, request{method: http.MethodDelete, path: "/api-keys/" + url.PathEscape(keyID)}, &out); err != nil {
		return false, err
	}
	return out.Revoked, nil
}
