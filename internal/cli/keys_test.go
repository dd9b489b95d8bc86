package cli

import (
	"net/http"
	"strings"
	"testing"
)

func TestKeysAndTeamsCommands(t *testing.T) {
	const teams = `{"teams":[{"team_id":"default","name":"default","created_at":"2026-11-27T05:00:00Z"},` +
		`{"team_id":"team_1","name":"acme","created_at":"2026-11-27T06:00:00Z"}]}`
	const key = `{"key_id":"key_ab","team_id":"team_1","name":"ci","admin":false,"created_at":"2026-11-27T07:00:00Z","revoked_at":null,"key":"dcl_secret"}`
	const keys = `{"api_keys":[{"key_id":"key_ab","team_id":"team_1","name":"ci","admin":false,"created_at":"2026-11-27T07:00:00Z","revoked_at":"2026-11-27T08:00:00Z"}]}`
	tests := []struct {
		name       string
		args       []string
		handle     http.HandlerFunc
		wantReqs   []string
		wantStdout string
		wantStderr string
		wantCode   int
	}{
		{
			name:       "create by team name prints the key alone",
			args:       []string{"keys", "create", "--team", "acme", "--name", "ci"},
			handle:     routes(map[string]http.HandlerFunc{"GET /teams": answer(200, teams), "POST /teams/team_1/api-keys": answer(201, key)}),
			wantReqs:   []string{`GET /teams`, `POST /teams/team_1/api-keys {"admin":false,"name":"ci"}`},
			wantStdout: "dcl_secret\n",
			wantStderr: "created API key key_ab of team team_1: store it now, it is not shown again",
		},
		{
			name:       "create by team id, admin",
			args:       []string{"keys", "create", "--admin", "--team=default"},
			handle:     routes(map[string]http.HandlerFunc{"GET /teams": answer(200, teams), "POST /teams/default/api-keys": answer(201, key)}),
			wantReqs:   []string{`GET /teams`, `POST /teams/default/api-keys {"admin":true,"name":""}`},
			wantStdout: "dcl_secret\n",
			wantStderr: "created API key",
		},
		{
			name:       "create needs a team",
			args:       []string{"keys", "create"},
			wantStderr: "--team is required",
			wantCode:   2,
		},
		{
			name:       "create for an unknown team",
			args:       []string{"keys", "create", "--team", "nope"},
			handle:     answer(200, teams),
			wantReqs:   []string{`GET /teams`},
			wantStderr: `no team with the id or name "nope"`,
			wantCode:   1,
		},
		{
			name:       "list every key",
			args:       []string{"keys", "list"},
			handle:     answer(200, keys),
			wantReqs:   []string{`GET /api-keys`},
			wantStdout: "KEY     TEAM    NAME  ADMIN  CREATED               REVOKED\nkey_ab  team_1  ci    false  2026-11-27T07:00:00Z  2026-11-27T08:00:00Z\n",
		},
		{
			name:       "list a team's keys as JSON",
			args:       []string{"--json", "keys", "list", "--team", "acme"},
			handle:     routes(map[string]http.HandlerFunc{"GET /teams": answer(200, teams), "GET /teams/team_1/api-keys": answer(200, keys)}),
			wantReqs:   []string{`GET /teams`, `GET /teams/team_1/api-keys`},
			wantStdout: `[{"key_id":"key_ab","team_id":"team_1","name":"ci","admin":false,"created_at":"2026-11-27T07:00:00Z","revoked_at":"2026-11-27T08:00:00Z"}]` + "\n",
		},
		{
			name: "revoke two, one already revoked",
			args: []string{"keys", "revoke", "key_ab", "key_cd"},
			handle: routes(map[string]http.HandlerFunc{
				"DELETE /api-keys/key_ab": answer(200, `{"key_id":"key_ab","revoked":true}`),
				"DELETE /api-keys/key_cd": answer(200, `{"key_id":"key_cd","revoked":false}`),
			}),
			wantReqs:   []string{`DELETE /api-keys/key_ab`, `DELETE /api-keys/key_cd`},
			wantStdout: "revoked key_ab\nkey_cd was already revoked\n",
		},
		{
			name:       "revoke by a non-admin key",
			args:       []string{"keys", "revoke", "key_ab"},
			handle:     answer(403, `{"message":"this call needs an admin API key","code":"forbidden"}`),
			wantReqs:   []string{`DELETE /api-keys/key_ab`},
			wantStderr: "declaw keys revoke: key_ab: this call needs an admin API key (403 forbidden)",
			wantCode:   1,
		},
		{
			name:       "teams create",
			args:       []string{"teams", "create", "acme"},
			handle:     answer(201, `{"team_id":"team_1","name":"acme","created_at":"2026-11-27T06:00:00Z"}`),
			wantReqs:   []string{`POST /teams {"name":"acme"}`},
			wantStdout: "team_1\n",
		},
		{
			name:       "teams list",
			args:       []string{"teams", "list"},
			handle:     answer(200, teams),
			wantReqs:   []string{`GET /teams`},
			wantStdout: "TEAM     NAME     CREATED\ndefault  default  2026-11-27T05:00:00Z\nteam_1   acme     2026-11-27T06:00:00Z\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t, tt.handle)
			stdout, stderr, code := runCLI(t, f, strings.NewReader(""), nil, tt.args...)
			if code != tt.wantCode {
				t.Errorf("run(%q) = exit %d, want %d; stderr: %s", tt.args, code, tt.wantCode, stderr)
			}
			if stdout != tt.wantStdout {
				t.Errorf("run(%q) stdout:\n%s\nwant:\n%s", tt.args, stdout, tt.wantStdout)
			}
			if tt.wantStderr == "" && stderr != "" || !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("run(%q) stderr = %q, want it to contain %q", tt.args, stderr, tt.wantStderr)
			}
			if got := f.requestLines(); strings.Join(got, "\n") != strings.Join(tt.wantReqs, "\n") {
				t.Errorf("run(%q) requests:\n%s\nwant:\n%s", tt.args, strings.Join(got, "\n"), strings.Join(tt.wantReqs, "\n"))
			}
		})
	}
}
