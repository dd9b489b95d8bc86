package declaw

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

func TestTeamsAndKeys(t *testing.T) {
	var got []string // method path body
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.EscapedPath()+" "+string(b))
		w.Header().Set("Content-Type", "application/json")
		switch r.Method + " " + r.URL.Path {
		case "GET /teams":
			w.Write([]byte(`{"teams":[{"team_id":"default","name":"default","created_at":"2026-12-08T02:00:00Z"}]}`))
		case "POST /teams":
			w.WriteHeader(201)
			w.Write([]byte(`{"team_id":"team_1","name":"acme","created_at":"2026-12-08T02:00:00Z"}`))
		case "GET /teams/team_1":
			w.Write([]byte(`{"team_id":"team_1","name":"acme","created_at":"2026-12-08T02:00:00Z"}`))
		case "POST /teams/team_1/api-keys":
			w.WriteHeader(201)
			w.Write([]byte(`{"key_id":"key_1","team_id":"team_1","name":"ci","admin":true,"created_at":"2026-12-08T02:00:00Z","revoked_at":null,"key":"dcl_x"}`))
		case "GET /api-keys", "GET /teams/team_1/api-keys":
			w.Write([]byte(`{"api_keys":[{"key_id":"key_1","team_id":"team_1","name":"ci","admin":false,"created_at":"2026-12-08T02:00:00Z","revoked_at":"2026-12-08T03:00:00Z"}]}`))
		case "DELETE /api-keys/key_1":
			w.Write([]byte(`{"key_id":"key_1","revoked":true}`))
		default:
			w.WriteHeader(403)
			w.Write([]byte(`{"message":"this call needs an admin API key","code":"forbidden"}`))
		}
	}))
	defer srv.Close()
	c, err := New(Config{APIURL: srv.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if teams, err := c.ListTeams(ctx); err != nil || len(teams) != 1 || teams[0].TeamID != "default" {
		t.Errorf("ListTeams = %+v, %v", teams, err)
	}
	if tm, err := c.CreateTeam(ctx, "acme"); err != nil || tm.TeamID != "team_1" || tm.CreatedAt.IsZero() {
		t.Errorf("CreateTeam = %+v, %v", tm, err)
	}
	if tm, err := c.GetTeam(ctx, "team_1"); err != nil || tm.Name != "acme" {
		t.Errorf("GetTeam = %+v, %v", tm, err)
	}
	if k, err := c.CreateAPIKey(ctx, "team_1", "ci", true); err != nil || k.Key != "dcl_x" || !k.Admin || k.RevokedAt != nil {
		t.Errorf("CreateAPIKey = %+v, %v", k, err)
	}
	for _, team := range []string{"", "team_1"} {
		keys, err := c.ListAPIKeys(ctx, team)
		if err != nil || len(keys) != 1 || keys[0].Key != "" || keys[0].RevokedAt == nil {
			t.Errorf("ListAPIKeys(%q) = %+v, %v; want one revoked key without its secret", team, keys, err)
		}
	}
	if ok, err := c.RevokeAPIKey(ctx, "key_1"); !ok || err != nil {
		t.Errorf("RevokeAPIKey = %v, %v", ok, err)
	}
	_, err = c.RevokeAPIKey(ctx, "key_2")
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Status != 403 || apiErr.Code != "forbidden" {
		t.Errorf("RevokeAPIKey(key_2) = %v, want the 403 forbidden as *Error", err)
	}
	want := []string{
		"GET /teams ", `POST /teams {"name":"acme"}`, "GET /teams/team_1 ",
		`POST /teams/team_1/api-keys {"admin":true,"name":"ci"}`,
		"GET /api-keys ", "GET /teams/team_1/api-keys ", "DELETE /api-keys/key_1 ", "DELETE /api-keys/key_2 ",
	}
	if !slices.Equal(got, want) {
		t.Errorf("requests:\n%q\nwant:\n%q", got, want)
	}
}
