package api

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/store"
)

// teamKey is a team and one of its keys, made through the API with the
// harness's admin key (testKey, the default team's).
type teamKey struct {
	TeamID, KeyID, Key string
}

func (h *harness) newTeam(t *testing.T, name string) string {
	t.Helper()
	resp, b := h.do(t, "POST", "/teams", map[string]string{"name": name})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /teams %s: %d %s, want 201", name, resp.StatusCode, b)
	}
	tm := decode[teamJSON](t, "POST /teams", b)
	if tm.Name != name || !strings.HasPrefix(tm.TeamID, "team_") || tm.CreatedAt.IsZero() {
		t.Fatalf("POST /teams %s = %s, want its name, a team_ id and a creation time", name, b)
	}
	return tm.TeamID
}

func (h *harness) newKey(t *testing.T, team, name string, admin bool) teamKey {
	t.Helper()
	resp, b := h.do(t, "POST", "/teams/"+team+"/api-keys", map[string]any{"name": name, "admin": admin})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /teams/%s/api-keys: %d %s, want 201", team, resp.StatusCode, b)
	}
	k := decode[keyJSON](t, "POST api-keys", b)
	if k.Key == "" || k.TeamID != team || k.Name != name || k.Admin != admin || k.RevokedAt != nil || !strings.HasPrefix(k.KeyID, "key_") {
		t.Fatalf("POST /teams/%s/api-keys = %s, want the key once, its team, name, admin flag and id", team, b)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("POST api-keys Cache-Control = %q, want no-store", cc)
	}
	return teamKey{TeamID: team, KeyID: k.KeyID, Key: k.Key}
}

// as returns the header arguments of h.do for key.
func as(key string) []string { return []string{"X-API-Key", key} }

func (h *harness) createAs(t *testing.T, key string) string {
	t.Helper()
	resp, b := h.do(t, "POST", "/sandboxes", `{"template":"base"}`, as(key)...)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /sandboxes: %d %s", resp.StatusCode, b)
	}
	return decode[createResp](t, "POST /sandboxes", b).SandboxID
}

func (h *harness) listAs(t *testing.T, key, query string) []string {
	t.Helper()
	resp, b := h.do(t, "GET", "/sandboxes"+query, nil, as(key)...)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /sandboxes%s: %d %s", query, resp.StatusCode, b)
	}
	var ids []string
	for _, s := range decode[listResp](t, "GET /sandboxes", b).Sandboxes {
		ids = append(ids, s.SandboxID)
	}
	slices.Sort(ids)
	return ids
}

// TestTeamIsolation: two teams, each with its own key, cannot list, read,
// exec in, kill, audit or otherwise touch each other's sandboxes: every
// call by id answers exactly what an unknown id answers (404
// sandbox_not_found, the same message), nothing reaches the other team's
// envd, and lists hold only the caller's team's sandboxes.
func TestTeamIsolation(t *testing.T) {
	h := newHarness(t)
	// A follow of another team's audit that is not refused would stream
	// forever: fail instead of hanging.
	h.srv.Client().Timeout = 10 * time.Second
	a := h.newKey(t, h.newTeam(t, "acme"), "ci", false)
	b := h.newKey(t, h.newTeam(t, "globex"), "", false)
	sbA, sbB := h.createAs(t, a.Key), h.createAs(t, b.Key)
	sbDef := h.create(t, nil).SandboxID // testKey: the default team
	// A snapshot of B's, so snapshot routes have something to find.
	resp, body := h.do(t, "POST", "/sandboxes/"+sbB+"/snapshot", `{}`, as(b.Key)...)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("B snapshots its own sandbox: %d %s", resp.StatusCode, body)
	}
	snapB := decode[struct {
		SnapshotID string `json:"snapshot_id"`
	}](t, "snapshot", body).SnapshotID

	for _, tc := range []struct{ key, want string }{{a.Key, sbA}, {b.Key, sbB}, {testKey, sbDef}} {
		for _, q := range []string{"", "?state=running,paused,killed"} {
			if got := h.listAs(t, tc.key, q); !slices.Equal(got, []string{tc.want}) {
				t.Errorf("GET /sandboxes%s as one team = %v, want only its own [%s]", q, got, tc.want)
			}
		}
	}

	calls := []struct{ method, path, body string }{
		{"GET", "/sandboxes/%s", ""},
		{"GET", "/sandboxes/%s/status", ""},
		{"DELETE", "/sandboxes/%s", ""},
		{"DELETE", "/sandboxes/%s?async=true", ""},
		{"PATCH", "/sandboxes/%s/timeout", `{"timeout":10}`},
		{"POST", "/sandboxes/%s/timeout", `{"timeout":10}`},
		{"GET", "/sandboxes/%s/audit", ""},
		{"GET", "/sandboxes/%s/audit?follow=true", ""},
		{"PUT", "/sandboxes/%s/network", `{"allow_out":["1.1.1.1"]}`},
		{"POST", "/sandboxes/%s/pause", ""},
		{"POST", "/sandboxes/%s/resume", ""},
		{"GET", "/sandboxes/%s/metrics", ""},
		{"POST", "/sandboxes/%s/snapshot", `{}`},
		{"GET", "/sandboxes/%s/snapshots", ""},
		{"DELETE", "/sandboxes/%s/snapshots/" + snapB, ""},
		{"POST", "/sandboxes/%s/restore", ""},
		{"POST", "/sandboxes/%s/restore?fork=true&snapshot_id=" + snapB, ""},
		{"POST", "/sandboxes/%s/commands", `{"cmd":"id"}`},
		{"POST", "/sandboxes/%s/commands/stream", `{"cmd":"id"}`},
		{"GET", "/sandboxes/%s/commands", ""},
		{"DELETE", "/sandboxes/%s/commands/7", ""},
		{"GET", "/sandboxes/%s/files?path=/etc/passwd", ""},
		{"GET", "/sandboxes/%s/files/raw?path=/etc/passwd", ""},
		{"POST", "/sandboxes/%s/files", `{"path":"/tmp/x","content":"x"}`},
		{"PUT", "/sandboxes/%s/files/raw?path=/tmp/x", "x"},
		{"POST", "/sandboxes/%s/pty", `{"cmd":"bash"}`},
		{"POST", "/sandboxes/%s/stdio", `{"cmd":"cat"}`},
	}
	before := len(h.envd.received())
	for _, c := range calls {
		// The answer for an unknown id, which a hidden one must equal.
		path := fmt.Sprintf(c.path, "sbx-0000000000ff")
		unknownResp, unknownBody := h.do(t, c.method, path, nilIfEmpty(c.body), as(a.Key)...)
		wantError(t, c.method+" "+path+" (unknown id)", unknownResp, unknownBody, 404, "sandbox_not_found")
		for _, probe := range []struct {
			who, key, target string
		}{{"A on B's", a.Key, sbB}, {"B on A's", b.Key, sbA}, {"A on the default team's", a.Key, sbDef}, {"the default admin key on A's", testKey, sbA}} {
			path := fmt.Sprintf(c.path, probe.target)
			call := fmt.Sprintf("%s: %s %s", probe.who, c.method, path)
			resp, body := h.do(t, c.method, path, nilIfEmpty(c.body), as(probe.key)...)
			wantError(t, call, resp, body, 404, "sandbox_not_found")
			if want := strings.ReplaceAll(string(unknownBody), "sbx-0000000000ff", probe.target); string(body) != want {
				t.Errorf("%s: body %s differs from an unknown id's %s: the id leaks", call, body, want)
			}
		}
	}
	if got := h.envd.received(); len(got) != before {
		t.Errorf("envd received %d calls from keys of other teams: %+v", len(got)-before, got[before:])
	}

	// kill-many names ids in its body: another team's are "not found".
	resp, body = h.do(t, "POST", "/sandboxes/kill-many", map[string]any{"sandbox_ids": []string{sbA, sbB, sbDef}}, as(a.Key)...)
	if resp.StatusCode != 200 {
		t.Fatalf("kill-many: %d %s", resp.StatusCode, body)
	}
	res := decode[struct {
		Results map[string]map[string]any `json:"results"`
	}](t, "kill-many", body).Results
	if res[sbA]["killed"] != true {
		t.Errorf("kill-many by A: its own sandbox = %v, want killed", res[sbA])
	}
	for _, id := range []string{sbB, sbDef} {
		if msg, _ := res[id]["error"].(string); msg != "sandbox "+id+": sandbox not found" {
			t.Errorf("kill-many by A: another team's %s = %v, want the not-found error of an unknown id", id, res[id])
		}
	}
	resp, body = h.do(t, "POST", "/sandboxes/kill-many?async=true", map[string]any{"sandbox_ids": []string{sbB}}, as(a.Key)...)
	if !strings.Contains(string(body), "not found") {
		t.Errorf("async kill-many by A of B's sandbox = %d %s, want not found", resp.StatusCode, body)
	}

	// B's and the default team's sandboxes are untouched; B's audit holds
	// only its own doings.
	for _, tc := range []struct{ key, id string }{{b.Key, sbB}, {testKey, sbDef}} {
		resp, body := h.do(t, "GET", "/sandboxes/"+tc.id, nil, as(tc.key)...)
		if resp.StatusCode != 200 || decode[createResp](t, "GET", body).State != "running" {
			t.Errorf("GET %s by its own team after the other teams' attempts = %d %s, want 200 running", tc.id, resp.StatusCode, body)
		}
	}
	resp, body = h.do(t, "GET", "/sandboxes/"+sbB+"/audit", nil, as(b.Key)...)
	if resp.StatusCode != 200 {
		t.Fatalf("GET audit of %s by its own team = %d %s, want 200", sbB, resp.StatusCode, body)
	}
	var types []string
	for _, e := range decode[struct {
		Events []store.AuditEvent `json:"events"`
	}](t, "audit", body).Events {
		types = append(types, e.Type)
	}
	if want := []string{"sandbox.created", "sandbox.snapshot"}; !slices.Equal(types, want) {
		t.Errorf("B's audit after A's attempts = %v, want %v", types, want)
	}

	// Own sandboxes work as before: exec, files.
	resp, body = h.do(t, "POST", "/sandboxes/"+sbB+"/commands", `{"cmd":"id"}`, as(b.Key)...)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"stdout":"hi\n"`) {
		t.Errorf("B runs a command in its own sandbox: %d %s", resp.StatusCode, body)
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// TestTeamResourcesFollowTheSandbox: a fork and the snapshots of a team's
// sandbox belong to the team; an Idempotency-Key of one team never replays
// another's create.
func TestTeamResourcesFollowTheSandbox(t *testing.T) {
	h := newHarness(t)
	a := h.newKey(t, h.newTeam(t, "acme"), "", false)
	sb := h.createAs(t, a.Key)
	resp, body := h.do(t, "POST", "/sandboxes/"+sb+"/snapshot", `{}`, as(a.Key)...)
	if resp.StatusCode != 201 {
		t.Fatalf("snapshot: %d %s", resp.StatusCode, body)
	}
	snap := decode[store.Snapshot](t, "snapshot", body)
	if sn, err := h.st.GetSnapshot(t.Context(), snap.ID); err != nil || sn.TeamID != a.TeamID {
		t.Errorf("stored snapshot %s = %+v, %v; want team %s", snap.ID, sn, err, a.TeamID)
	}
	resp, body = h.do(t, "POST", "/sandboxes/"+sb+"/restore?fork=true", nil, as(a.Key)...)
	if resp.StatusCode != 201 {
		t.Fatalf("fork: %d %s", resp.StatusCode, body)
	}
	fork := decode[restoreResp](t, "fork", body).SandboxID
	if got, want := h.listAs(t, a.Key, ""), []string{sb, fork}; !slices.Equal(got, sortedCopy(want)) {
		t.Errorf("A's list after a fork = %v, want %v", got, want)
	}
	if got := h.listAs(t, testKey, ""); len(got) != 0 {
		t.Errorf("default team's list = %v, want none of A's sandboxes", got)
	}

	// The same Idempotency-Key and body from two teams: two sandboxes.
	body1 := `{"template":"base"}`
	r1, b1 := h.do(t, "POST", "/sandboxes", body1, "X-API-Key", a.Key, "Idempotency-Key", "same")
	r2, b2 := h.do(t, "POST", "/sandboxes", body1, "X-API-Key", testKey, "Idempotency-Key", "same")
	if r1.StatusCode != 201 || r2.StatusCode != 201 || r2.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("creates with one Idempotency-Key by two teams: %d %s / %d %s (replayed %q), want two fresh 201s",
			r1.StatusCode, b1, r2.StatusCode, b2, r2.Header.Get("Idempotent-Replayed"))
	}
	if decode[createResp](t, "a", b1).SandboxID == decode[createResp](t, "default", b2).SandboxID {
		t.Errorf("the default team's create replayed A's sandbox")
	}
	r3, b3 := h.do(t, "POST", "/sandboxes", body1, "X-API-Key", a.Key, "Idempotency-Key", "same")
	if r3.Header.Get("Idempotent-Replayed") != "true" || decode[createResp](t, "replay", b3).SandboxID != decode[createResp](t, "a", b1).SandboxID {
		t.Errorf("A's own retry = %d %s, want its first create replayed", r3.StatusCode, b3)
	}
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestTeamsAndKeysAPI: admin keys manage teams and keys; other keys see
// their own team only and manage nothing; a key is shown once, stored
// hashed, listed without its secret, and refused once revoked.
func TestTeamsAndKeysAPI(t *testing.T) {
	h := newHarness(t)
	acme := h.newTeam(t, "acme")
	user := h.newKey(t, acme, "user", false)
	admin2 := h.newKey(t, acme, "ops", true)

	resp, body := h.do(t, "POST", "/teams", map[string]string{"name": "acme"})
	wantError(t, "POST /teams with a taken name", resp, body, 409, "team_exists")
	for _, bad := range []string{"", "a b", "-x", strings.Repeat("x", 64), "é"} {
		resp, body := h.do(t, "POST", "/teams", map[string]string{"name": bad})
		wantError(t, fmt.Sprintf("POST /teams name %q", bad), resp, body, 400, "invalid_argument")
	}
	// Non-admin keys manage nothing.
	for _, c := range []struct{ method, path string }{
		{"POST", "/teams"}, {"GET", "/teams/" + acme + "/api-keys"}, {"POST", "/teams/" + acme + "/api-keys"},
		{"GET", "/api-keys"}, {"DELETE", "/api-keys/" + admin2.KeyID},
	} {
		resp, body := h.do(t, c.method, c.path, `{"name":"x"}`, as(user.Key)...)
		wantError(t, "non-admin "+c.method+" "+c.path, resp, body, 403, "forbidden")
	}
	// GET /teams: an admin sees every team, another key its own.
	teamsOf := func(key string) []string {
		resp, body := h.do(t, "GET", "/teams", nil, as(key)...)
		if resp.StatusCode != 200 {
			t.Fatalf("GET /teams: %d %s", resp.StatusCode, body)
		}
		var names []string
		for _, tm := range decode[struct {
			Teams []teamJSON `json:"teams"`
		}](t, "GET /teams", body).Teams {
			names = append(names, tm.TeamID+"="+tm.Name)
		}
		return names
	}
	if got, want := teamsOf(testKey), []string{"default=default", acme + "=acme"}; !slices.Equal(got, want) {
		t.Errorf("GET /teams as admin = %v, want %v", got, want)
	}
	if got, want := teamsOf(user.Key), []string{acme + "=acme"}; !slices.Equal(got, want) {
		t.Errorf("GET /teams as acme's user key = %v, want %v", got, want)
	}
	if resp, body := h.do(t, "GET", "/teams/"+acme, nil, as(user.Key)...); resp.StatusCode != 200 {
		t.Errorf("GET own team: %d %s", resp.StatusCode, body)
	}
	resp, body = h.do(t, "GET", "/teams/default", nil, as(user.Key)...)
	wantError(t, "GET another team as non-admin", resp, body, 404, "team_not_found")
	resp, body = h.do(t, "GET", "/teams/team_nope", nil)
	wantError(t, "GET unknown team as admin", resp, body, 404, "team_not_found")
	resp, body = h.do(t, "POST", "/teams/team_nope/api-keys", `{}`)
	wantError(t, "POST key of an unknown team", resp, body, 404, "team_not_found")
	resp, body = h.do(t, "GET", "/teams/team_nope/api-keys", nil)
	wantError(t, "GET keys of an unknown team", resp, body, 404, "team_not_found")

	// The secret is stored hashed and never listed.
	if rec, err := h.st.LookupAPIKey(t.Context(), HashKey(user.Key)); err != nil || rec.ID != user.KeyID || rec.Hash == user.Key {
		t.Errorf("stored key = %+v, %v; want its hash under id %s", rec, err, user.KeyID)
	}
	for _, path := range []string{"/api-keys", "/teams/" + acme + "/api-keys", "/api-keys?team_id=" + acme} {
		resp, body := h.do(t, "GET", path, nil, as(admin2.Key)...)
		if resp.StatusCode != 200 || strings.Contains(string(body), user.Key) || strings.Contains(string(body), `"key":`) {
			t.Errorf("GET %s = %d %s: want 200 without any key's secret", path, resp.StatusCode, body)
		}
		var ids []string
		for _, k := range decode[struct {
			Keys []keyJSON `json:"api_keys"`
		}](t, path, body).Keys {
			ids = append(ids, k.KeyID)
		}
		if !slices.Contains(ids, user.KeyID) || !slices.Contains(ids, admin2.KeyID) || path != "/api-keys" && len(ids) != 2 {
			t.Errorf("GET %s lists %v, want acme's two keys (and, unfiltered, the default team's)", path, ids)
		}
	}

	// Revoke: refused at once, listed with its time; again: false.
	resp, body = h.do(t, "DELETE", "/api-keys/"+user.KeyID, nil, as(admin2.Key)...)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"revoked":true`) {
		t.Fatalf("DELETE /api-keys/%s = %d %s, want revoked true", user.KeyID, resp.StatusCode, body)
	}
	resp, body = h.do(t, "GET", "/sandboxes", nil, as(user.Key)...)
	wantError(t, "a revoked key", resp, body, 401, "unauthorized")
	resp, body = h.do(t, "DELETE", "/api-keys/"+user.KeyID, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"revoked":false`) {
		t.Errorf("DELETE a revoked key again = %d %s, want 200 revoked false", resp.StatusCode, body)
	}
	_, body = h.do(t, "GET", "/teams/"+acme+"/api-keys", nil)
	if !strings.Contains(string(body), `"revoked_at":"`) {
		t.Errorf("keys after a revoke = %s, want the revoked key with its revoked_at", body)
	}
	resp, body = h.do(t, "DELETE", "/api-keys/key_nope", nil)
	wantError(t, "DELETE an unknown key", resp, body, 404, "key_not_found")

	// The last valid admin key stays: revoke the default key with acme's
	// admin key, then acme's admin key cannot revoke itself.
	def, err := h.st.LookupAPIKey(t.Context(), HashKey(testKey))
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := h.do(t, "DELETE", "/api-keys/"+def.ID, nil, as(admin2.Key)...); resp.StatusCode != 200 {
		t.Fatalf("revoke the default admin key: %d %s", resp.StatusCode, body)
	}
	resp, body = h.do(t, "DELETE", "/api-keys/"+admin2.KeyID, nil, as(admin2.Key)...)
	wantError(t, "revoke the last admin key", resp, body, 409, "last_admin_key")
	resp, body = h.do(t, "GET", "/teams", nil)
	wantError(t, "the revoked default admin key", resp, body, 401, "unauthorized")
}

// TestRevokeCutsOpenStreams: requests open with a key (a command's SSE
// stream forwarded from envd, an audit follow) end the moment the key is
// revoked, without their normal end; other keys' streams go on.
func TestRevokeCutsOpenStreams(t *testing.T) {
	h := newHarness(t)
	team := h.newTeam(t, "acme")
	doomed := h.newKey(t, team, "doomed", false)
	other := h.newKey(t, team, "other", false)
	sb := h.createAs(t, doomed.Key)

	open := func(key, method, path, body string) (<-chan string, func()) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, h.srv.URL+path, strings.NewReader(body))
		req.Header.Set("X-API-Key", key)
		resp, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		// Everything read, then "EOF" or "ERR ..." when the stream ends.
		lines := make(chan string, 256)
		go func() {
			defer close(lines)
			br := bufio.NewReader(resp.Body)
			for {
				s, err := br.ReadString('\n')
				if s != "" {
					lines <- s
				}
				if err == io.EOF {
					lines <- "EOF"
					return
				}
				if err != nil {
					lines <- "ERR " + err.Error()
					return
				}
			}
		}()
		return lines, func() { resp.Body.Close() }
	}
	waitFor := func(lines <-chan string, what string, match func(string) bool) []string {
		t.Helper()
		var got []string
		deadline := time.After(3 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("stream closed before %s (got %q)", what, got)
				}
				got = append(got, l)
				if match(l) {
					return got
				}
			case <-deadline:
				t.Fatalf("no %s within 3 s (got %q)", what, got)
			}
		}
	}
	cmd, closeCmd := open(doomed.Key, "POST", "/sandboxes/"+sb+"/commands/stream", `{"cmd":"sleep 60"}`)
	defer closeCmd()
	waitFor(cmd, "the start event", func(l string) bool { return strings.HasPrefix(l, "data: ") })
	follow, closeFollow := open(doomed.Key, "GET", "/sandboxes/"+sb+"/audit?follow=true", "")
	defer closeFollow()
	waitFor(follow, "the first audit event", func(l string) bool { return strings.Contains(l, "sandbox.created") })
	teamsOther, closeOther := open(other.Key, "GET", "/sandboxes/"+sb+"/audit?follow=true", "")
	defer closeOther()
	waitFor(teamsOther, "the first audit event (other key)", func(l string) bool { return strings.Contains(l, "sandbox.created") })

	if resp, body := h.do(t, "DELETE", "/api-keys/"+doomed.KeyID, nil); resp.StatusCode != 200 {
		t.Fatalf("revoke: %d %s", resp.StatusCode, body)
	}
	for name, ch := range map[string]<-chan string{"command stream": cmd, "audit follow": follow} {
		got := waitFor(ch, "the end of the "+name+" after the revoke", func(l string) bool { return l == "EOF" || strings.HasPrefix(l, "ERR") })
		if name == "command stream" && slices.ContainsFunc(got, func(l string) bool { return strings.Contains(l, "exit") }) {
			t.Errorf("the command stream ended normally (%q): it was not cut by the revoke", got)
		}
	}
	// The other key's follow still runs: a new event reaches it.
	if resp, body := h.do(t, "PUT", "/sandboxes/"+sb+"/network", `{"allow_out":["1.1.1.1"]}`, as(other.Key)...); resp.StatusCode != 200 {
		t.Fatalf("PUT network with the other key: %d %s", resp.StatusCode, body)
	}
	waitFor(teamsOther, "network.updated on the other key's follow", func(l string) bool { return strings.Contains(l, "network.updated") })

	resp, body := h.do(t, "POST", "/sandboxes/"+sb+"/commands", `{"cmd":"id"}`, as(doomed.Key)...)
	wantError(t, "a command with the revoked key", resp, body, 401, "unauthorized")
}
