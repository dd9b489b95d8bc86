package api

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/network"
	"github.com/declaw/declaw/internal/policy"
	"github.com/declaw/declaw/internal/sandbox"
	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/store"
)

func TestAuth(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name    string
		path    string
		headers []string
		status  int
	}{
		{"x-api-key", "/sandboxes", []string{"X-API-Key", testKey}, 200},
		{"bearer", "/sandboxes", []string{"Authorization", "Bearer " + testKey}, 200},
		{"bearer lower case", "/sandboxes", []string{"Authorization", "bearer " + testKey}, 200},
		{"missing", "/sandboxes", []string{"-auth"}, 401},
		{"wrong key", "/sandboxes", []string{"X-API-Key", "dk_wrong"}, 401},
		{"wrong bearer", "/sandboxes", []string{"Authorization", "Bearer dk_wrong"}, 401},
		{"basic is not bearer", "/sandboxes", []string{"Authorization", "Basic " + testKey}, 401},
		{"forwarded route needs a key", "/sandboxes/sbx-x/commands", []string{"-auth"}, 401},
		{"health needs none", "/health", []string{"-auth"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := h.do(t, "GET", tt.path, nil, tt.headers...)
			call := fmt.Sprintf("GET %s with %q", tt.path, tt.headers)
			if tt.status == 401 {
				wantError(t, call, resp, body, 401, "unauthorized")
				return
			}
			if resp.StatusCode != tt.status {
				t.Errorf("%s: status = %d, want %d (body %s)", call, resp.StatusCode, tt.status, body)
			}
		})
	}
	resp, body := h.do(t, "GET", "/health", nil, "-auth")
	if got := decode[map[string]any](t, "GET /health", body); got["status"] != "ok" || got["runtime"] != "fake" || resp.StatusCode != 200 {
		t.Errorf("GET /health = %d %v, want 200 with status ok and the Health fields", resp.StatusCode, got)
	}
}

func TestCreateSandbox(t *testing.T) {
	h := newHarness(t)
	before := time.Now()
	resp, b := h.do(t, "POST", "/sandboxes", map[string]any{
		"template": "python", "timeout": 60, "metadata": map[string]string{"team": "a"},
		"envs": map[string]string{"MY_API_KEY": "secret", "PLAIN": "x"},
	})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /sandboxes: status %d, want 201 (body %s)", resp.StatusCode, b)
	}
	got := decode[createResp](t, "POST /sandboxes", b)
	if !strings.HasPrefix(got.SandboxID, "sbx-") || got.TemplateID != "python" || got.State != "running" || got.Timeout != 60 ||
		got.Metadata["team"] != "a" || got.GuestIP != "127.0.0.1" || got.EnvdPort != envdapi.Port {
		t.Errorf("POST /sandboxes body = %s, want a running python sandbox, timeout 60, metadata team=a, guest 127.0.0.1, envd_port %d", b, envdapi.Port)
	}
	if want := map[string]string{"MY_API_KEY": "***", "PLAIN": "x"}; !reflect.DeepEqual(got.Envs, want) {
		t.Errorf("POST /sandboxes envs = %v, want %v", got.Envs, want)
	}
	if got.EndAt == nil || got.EndAt.Before(before.Add(59*time.Second)) {
		t.Errorf("POST /sandboxes end_at = %v, want about now+60s", got.EndAt)
	}
	if u, _ := url.Parse(h.srv.URL); got.SandboxDomain != u.Host {
		t.Errorf("POST /sandboxes sandbox_domain = %q, want the request host %q", got.SandboxDomain, u.Host)
	}
	spec, ok := h.rt.Spec(got.SandboxID)
	if !ok || !slices.Contains(spec.Env, envdapi.AccessTokenEnv+"="+got.EnvdAccessToken) || got.EnvdAccessToken == "" {
		t.Errorf("envd_access_token %q is not the token given to the runtime (spec env %q)", got.EnvdAccessToken, spec.Env)
	}

	// GET shows the same sandbox without the token.
	resp, b = h.do(t, "GET", "/sandboxes/"+got.SandboxID, nil)
	if resp.StatusCode != 200 || strings.Contains(string(b), got.EnvdAccessToken) {
		t.Errorf("GET /sandboxes/%s = %d %s, want 200 without the access token", got.SandboxID, resp.StatusCode, b)
	}

	// Defaults, template_id alias and fractional timeouts.
	tests := []struct {
		body        string
		wantTmpl    string
		wantTimeout int
	}{
		{``, "base", 300},
		{`{}`, "base", 300},
		{`{"template_id":"python"}`, "python", 300},
		{`{"timeout":1.2}`, "base", 2},
		{`{"timeout":0}`, "base", 0},
	}
	for _, tt := range tests {
		resp, b := h.do(t, "POST", "/sandboxes", tt.body)
		got := decode[createResp](t, "POST /sandboxes "+tt.body, b)
		if resp.StatusCode != 201 || got.TemplateID != tt.wantTmpl || got.Timeout != tt.wantTimeout {
			t.Errorf("POST /sandboxes %q = %d template %q timeout %d, want 201 %q %d", tt.body, resp.StatusCode, got.TemplateID, got.Timeout, tt.wantTmpl, tt.wantTimeout)
		}
	}
}

func TestCreateSandboxErrors(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name   string
		body   string
		status int
		code   string
		inMsg  string
	}{
		{"malformed json", `{"template":]`, 400, "invalid_json", ""},
		{"two values", `{} {}`, 400, "invalid_json", ""},
		{"wrong type", `{"timeout":"soon"}`, 400, "invalid_json", ""},
		{"negative timeout", `{"timeout":-5}`, 400, "invalid_argument", "timeout"},
		{"bad env name", `{"envs":{"A=B":"x"}}`, 400, "invalid_argument", "envs"},
		{"bad network", `{"network":{"allow_out":["10.0.0.0/33"]}}`, 400, "invalid_argument", "network"},
		{"unknown template", `{"template":"nope"}`, 404, "template_not_found", ""},
		{"bad security field", `{"security":{"pii":{"action":"shred"}}}`, 400, "invalid_policy", "pii.action"},
		{"security not an object", `{"security":[1]}`, 400, "invalid_policy", "security"},
		{"policy_json not a string", `{"security":{"policy_json":5}}`, 400, "invalid_policy", "security.policy_json"},
		{"policy_json not json", `{"security":{"policy_json":"{nope"}}`, 400, "invalid_policy", "security.policy_json"},
		{"bad policy_json field", `{"security":{"policy_json":"{\"pii\":{\"action\":\"shred\"}}"}}`, 400, "invalid_policy", "pii.action"},
		{"bad lifecycle", `{"lifecycle":{"on_timeout":"explode"}}`, 400, "invalid_argument", "on_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := h.do(t, "POST", "/sandboxes", tt.body)
			call := "POST /sandboxes " + tt.body
			wantError(t, call, resp, b, tt.status, tt.code)
			if !strings.Contains(string(b), tt.inMsg) {
				t.Errorf("%s: message %s does not name %q", call, b, tt.inMsg)
			}
		})
	}
	if ids := h.rt.IDs(); len(ids) != 0 {
		t.Errorf("runtime holds %v after only failed creates, want none", ids)
	}
	resp, b := h.do(t, "POST", "/sandboxes", strings.Repeat(" ", MaxJSONBody+1))
	wantError(t, "POST /sandboxes with an oversized body", resp, b, 413, "body_too_large")
}

// A truncated JSON body makes json.Decoder return io.ErrUnexpectedEOF,
// which is neither a *json.SyntaxError nor mapped in toAPIError.
func TestTruncatedJSON(t *testing.T) {
	h := newHarness(t)
	id := h.create(t, nil).SandboxID
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/sandboxes", `{"template":`},
		{"PATCH", "/sandboxes/" + id + "/timeout", `{"timeout":`},
		{"PUT", "/sandboxes/" + id + "/network", `{"allow_out":[`},
		{"POST", "/sandboxes/kill-many", `{"sandbox_ids":["a"`},
	} {
		resp, b := h.do(t, c.method, c.path, c.body)
		wantError(t, fmt.Sprintf("%s %s %q", c.method, c.path, c.body), resp, b, 400, "invalid_json")
	}
}

func TestCreateSecurityPolicy(t *testing.T) {
	h := newHarness(t)
	envs := map[string]string{"MY_API_KEY": "k", "CUSTOM": "c"}
	tests := []struct {
		name     string
		security any
		want     map[string]string
	}{
		{"default", nil, map[string]string{"MY_API_KEY": "***", "CUSTOM": "c"}},
		{"object", map[string]any{"env_security": map[string]any{"mask_patterns": []string{"CUSTOM"}}}, map[string]string{"MY_API_KEY": "k", "CUSTOM": "***"}},
		{"policy_json", map[string]any{"policy_json": `{"env_security":{"mask_patterns":["CUSTOM"]}}`}, map[string]string{"MY_API_KEY": "k", "CUSTOM": "***"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := h.create(t, map[string]any{"envs": envs, "security": tt.security})
			if !reflect.DeepEqual(got.Envs, tt.want) {
				t.Errorf("POST /sandboxes security %v: envs = %v, want %v", tt.security, got.Envs, tt.want)
			}
		})
	}
}

func TestCreateNetworkPolicy(t *testing.T) {
	explicit := map[string]any{"allow_out": []string{"1.2.3.4"}, "deny_out": []string{"10.0.0.0/8"}}
	secNet := map[string]any{"network": map[string]any{"deny_out": []string{"192.168.0.0/16"}}}
	tests := []struct {
		name string
		body map[string]any
		want network.Policy
	}{
		{"default allows all", map[string]any{}, network.Policy{}},
		{"allow_internet_access true", map[string]any{"allow_internet_access": true}, network.Policy{}},
		{"allow_internet_access false", map[string]any{"allow_internet_access": false}, network.Policy{DenyOut: []string{"0.0.0.0/0"}}},
		{"explicit network", map[string]any{"network": explicit}, network.Policy{AllowOut: []string{"1.2.3.4"}, DenyOut: []string{"10.0.0.0/8"}}},
		{"explicit beats allow_internet_access", map[string]any{"network": explicit, "allow_internet_access": false}, network.Policy{AllowOut: []string{"1.2.3.4"}, DenyOut: []string{"10.0.0.0/8"}}},
		{"security.network", map[string]any{"security": secNet}, network.Policy{DenyOut: []string{"192.168.0.0/16"}}},
		{"explicit beats security.network", map[string]any{"security": secNet, "network": explicit}, network.Policy{AllowOut: []string{"1.2.3.4"}, DenyOut: []string{"10.0.0.0/8"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.create(t, tt.body)
			if got := h.net.policies(); len(got) != 1 || !reflect.DeepEqual(got[0], tt.want) {
				t.Errorf("POST /sandboxes %v: network.Apply got %+v, want [%+v]", tt.body, got, tt.want)
			}
		})
	}
}

func TestIdempotency(t *testing.T) {
	h := newHarness(t)
	body := `{"template":"base","metadata":{"run":"1"}}`
	resp1, b1 := h.do(t, "POST", "/sandboxes", body, "Idempotency-Key", "k1")
	resp2, b2 := h.do(t, "POST", "/sandboxes", body, "Idempotency-Key", "k1")
	if resp1.StatusCode != 201 || resp2.StatusCode != 201 {
		t.Fatalf("POST /sandboxes twice with Idempotency-Key k1: statuses %d, %d; want 201, 201 (%s / %s)", resp1.StatusCode, resp2.StatusCode, b1, b2)
	}
	first, second := decode[createResp](t, "first create", b1), decode[createResp](t, "replay", b2)
	if first.SandboxID != second.SandboxID || second.EnvdAccessToken != first.EnvdAccessToken {
		t.Errorf("replay = %s / %s, want the same sandbox and token as the first create (%s)", second.SandboxID, second.EnvdAccessToken, first.SandboxID)
	}
	if resp2.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay header Idempotent-Replayed = %q, want true", resp2.Header.Get("Idempotent-Replayed"))
	}
	if starts, _ := h.rt.Counts(); starts != 1 {
		t.Errorf("runtime starts after a create and its replay = %d, want 1", starts)
	}

	resp, b := h.do(t, "POST", "/sandboxes", `{"template":"python"}`, "Idempotency-Key", "k1")
	wantError(t, "POST /sandboxes reusing k1 with another body", resp, b, 422, "idempotency_key_reused")

	// A create in progress (another request holds the key).
	inflight := `{"template":"base"}`
	sum := sha256.Sum256([]byte(inflight))
	if _, err := h.st.BeginIdempotent(t.Context(), store.Idempotency{Key: "k2", BodyHash: hex.EncodeToString(sum[:])}); err != nil {
		t.Fatalf("BeginIdempotent: %v", err)
	}
	resp, b = h.do(t, "POST", "/sandboxes", inflight, "Idempotency-Key", "k2")
	wantError(t, "POST /sandboxes with an in-progress key", resp, b, 409, "idempotency_in_progress")
	if ra := resp.Header.Get("Retry-After"); ra == "" {
		t.Errorf("POST /sandboxes with an in-progress key: no Retry-After header")
	}

	// A failed create frees the key for a retry.
	bad := `{"template":"nope"}`
	for i := range 2 {
		resp, b = h.do(t, "POST", "/sandboxes", bad, "Idempotency-Key", "k3")
		wantError(t, fmt.Sprintf("failing create #%d with key k3", i+1), resp, b, 404, "template_not_found")
	}

	resp, b = h.do(t, "POST", "/sandboxes", `{}`, "Idempotency-Key", strings.Repeat("k", 201))
	wantError(t, "POST /sandboxes with a 201-char Idempotency-Key", resp, b, 400, "invalid_argument")
}

// listResp is GET /sandboxes.
type listResp struct {
	Sandboxes []createResp `json:"sandboxes"`
	NextToken *string      `json:"next_token"`
}

func TestListSandboxes(t *testing.T) {
	h := newHarness(t)
	var ids []string
	for i := range 4 {
		team := "a"
		if i%2 == 1 {
			team = "b"
		}
		ids = append(ids, h.create(t, map[string]any{"metadata": map[string]string{"team": team, "n": fmt.Sprint(i)}}).SandboxID)
	}
	if resp, b := h.do(t, "DELETE", "/sandboxes/"+ids[0], nil); resp.StatusCode != 200 {
		t.Fatalf("DELETE /sandboxes/%s: %d %s", ids[0], resp.StatusCode, b)
	}
	tests := []struct {
		query    string
		want     []string
		wantNext string
	}{
		{"", ids[1:], ""},
		{"?state=killed", ids[:1], ""},
		{"?state=running,killed", ids, ""},
		{"?state=running&state=killed", ids, ""},
		{"?state=live", ids[1:], ""},
		{"?metadata=" + url.QueryEscape("team=b"), []string{ids[1], ids[3]}, ""},
		{"?metadata=" + url.QueryEscape("team=b&n=3"), []string{ids[3]}, ""},
		{"?metadata.team=a", []string{ids[2]}, ""},
		{"?metadata.team=a&state=killed", ids[:1], ""},
		{"?metadata=" + url.QueryEscape("team=z"), nil, ""},
		{"?limit=2", ids[1:3], ids[2]},
		{"?limit=2&next_token=" + ids[2], ids[3:], ""},
	}
	for _, tt := range tests {
		resp, b := h.do(t, "GET", "/sandboxes"+tt.query, nil)
		got := decode[listResp](t, "GET /sandboxes"+tt.query, b)
		var gotIDs []string
		for _, s := range got.Sandboxes {
			gotIDs = append(gotIDs, s.SandboxID)
		}
		next := ""
		if got.NextToken != nil {
			next = *got.NextToken
		}
		if resp.StatusCode != 200 || !slices.Equal(gotIDs, tt.want) || next != tt.wantNext {
			t.Errorf("GET /sandboxes%s = %d %v next %q, want 200 %v next %q", tt.query, resp.StatusCode, gotIDs, next, tt.want, tt.wantNext)
		}
	}
	_, b := h.do(t, "GET", "/sandboxes?metadata=team%3Dz", nil)
	if !strings.Contains(string(b), `"sandboxes":[]`) || !strings.Contains(string(b), `"next_token":null`) {
		t.Errorf("GET /sandboxes with no match = %s, want sandboxes [] and next_token null", b)
	}
	for _, q := range []string{"?limit=0", "?limit=abc", "?limit=1001", "?limit=-1", "?state=dead", "?state=running,zombie", "?metadata=" + url.QueryEscape("a=%zz")} {
		resp, b := h.do(t, "GET", "/sandboxes"+q, nil)
		wantError(t, "GET /sandboxes"+q, resp, b, 400, "invalid_argument")
	}
}

func TestKill(t *testing.T) {
	h := newHarness(t)
	a := h.create(t, nil).SandboxID
	b := h.create(t, nil).SandboxID
	c := h.create(t, nil).SandboxID
	d := h.create(t, nil).SandboxID

	tests := []struct {
		call   string
		status int
		want   map[string]bool
	}{
		{"DELETE /sandboxes/" + a, 200, map[string]bool{"killed": true}},
		{"DELETE /sandboxes/" + a, 200, map[string]bool{"killed": false}},
		{"DELETE /sandboxes/" + b + "?async=true", 202, map[string]bool{"queued": true}},
	}
	for _, tt := range tests {
		method, path, _ := strings.Cut(tt.call, " ")
		resp, body := h.do(t, method, path, nil)
		if got := decode[map[string]bool](t, tt.call, body); resp.StatusCode != tt.status || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s = %d %s, want %d %v", tt.call, resp.StatusCode, body, tt.status, tt.want)
		}
	}
	resp, body := h.do(t, "DELETE", "/sandboxes/sbx-unknown", nil)
	wantError(t, "DELETE /sandboxes/sbx-unknown", resp, body, 404, "sandbox_not_found")
	resp, body = h.do(t, "DELETE", "/sandboxes/sbx-unknown?async=1", nil)
	wantError(t, "DELETE /sandboxes/sbx-unknown?async=1", resp, body, 404, "sandbox_not_found")
	resp, body = h.do(t, "GET", "/sandboxes/"+b+"/status", nil)
	if got := decode[map[string]any](t, "status after async kill", body); resp.StatusCode != 200 || got["state"] != "killed" || got["is_running"] != false {
		t.Errorf("GET /sandboxes/%s/status right after an async kill = %s, want killed", b, body)
	}

	// kill-many: one live, one already killed, one unknown; then async.
	resp, body = h.do(t, "POST", "/sandboxes/kill-many", map[string]any{"sandbox_ids": []string{c, a, "sbx-unknown"}})
	type result struct {
		Killed *bool  `json:"killed"`
		Queued *bool  `json:"queued"`
		Error  string `json:"error"`
	}
	got := decode[struct {
		Results map[string]result `json:"results"`
	}](t, "POST /sandboxes/kill-many", body)
	if resp.StatusCode != 200 || len(got.Results) != 3 ||
		got.Results[c].Killed == nil || !*got.Results[c].Killed ||
		got.Results[a].Killed == nil || *got.Results[a].Killed ||
		got.Results["sbx-unknown"].Error == "" || got.Results["sbx-unknown"].Killed != nil {
		t.Errorf("POST /sandboxes/kill-many = %d %s, want %s killed true, %s killed false, sbx-unknown an error", resp.StatusCode, body, c, a)
	}
	resp, body = h.do(t, "POST", "/sandboxes/kill-many?async=true", map[string]any{"sandbox_ids": []string{d, "sbx-unknown"}})
	got = decode[struct {
		Results map[string]result `json:"results"`
	}](t, "POST /sandboxes/kill-many?async=true", body)
	if resp.StatusCode != 200 || got.Results[d].Queued == nil || !*got.Results[d].Queued || got.Results["sbx-unknown"].Error == "" {
		t.Errorf("POST /sandboxes/kill-many?async=true = %d %s, want %s queued, sbx-unknown an error", resp.StatusCode, body, d)
	}
	resp, body = h.do(t, "POST", "/sandboxes/kill-many", `{}`)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"results":{}`) {
		t.Errorf("POST /sandboxes/kill-many {} = %d %s, want 200 with empty results", resp.StatusCode, body)
	}
	resp, body = h.do(t, "POST", "/sandboxes/kill-many", "")
	wantError(t, "POST /sandboxes/kill-many with no body", resp, body, 400, "invalid_json")
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprintf("sbx-%d", i)
	}
	resp, body = h.do(t, "POST", "/sandboxes/kill-many", map[string]any{"sandbox_ids": many})
	wantError(t, "POST /sandboxes/kill-many with 1001 ids", resp, body, 400, "invalid_argument")

	waitForAPI(t, "async kills to free the runtime", func() bool { return len(h.rt.IDs()) == 0 })
}

func waitForAPI(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStatusAndGet(t *testing.T) {
	h := newHarness(t)
	id := h.create(t, nil).SandboxID
	check := func(wantState string, wantRunning bool) {
		t.Helper()
		resp, b := h.do(t, "GET", "/sandboxes/"+id+"/status", nil)
		got := decode[map[string]any](t, "GET status", b)
		if resp.StatusCode != 200 || got["state"] != wantState || got["is_running"] != wantRunning {
			t.Errorf("GET /sandboxes/%s/status = %d %s, want state %s is_running %v", id, resp.StatusCode, b, wantState, wantRunning)
		}
		resp, b = h.do(t, "GET", "/sandboxes/"+id, nil)
		if info := decode[createResp](t, "GET sandbox", b); resp.StatusCode != 200 || info.State != wantState {
			t.Errorf("GET /sandboxes/%s = %d %s, want state %s", id, resp.StatusCode, b, wantState)
		}
	}
	check("running", true)
	h.do(t, "DELETE", "/sandboxes/"+id, nil)
	check("killed", false)
	for _, p := range []string{"/sandboxes/sbx-unknown", "/sandboxes/sbx-unknown/status"} {
		resp, b := h.do(t, "GET", p, nil)
		wantError(t, "GET "+p, resp, b, 404, "sandbox_not_found")
	}
}

func TestSetTimeout(t *testing.T) {
	h := newHarness(t)
	id := h.create(t, nil).SandboxID
	dead := h.create(t, nil).SandboxID
	h.do(t, "DELETE", "/sandboxes/"+dead, nil)
	for _, method := range []string{"PATCH", "POST"} {
		resp, b := h.do(t, method, "/sandboxes/"+id+"/timeout", `{"timeout":120}`)
		got := decode[createResp](t, method+" timeout", b)
		if resp.StatusCode != 200 || got.Timeout != 120 || got.EndAt == nil || time.Until(*got.EndAt) < 110*time.Second {
			t.Errorf("%s /sandboxes/%s/timeout {120} = %d %s, want 200 timeout 120 end_at ~now+120s", method, id, resp.StatusCode, b)
		}
	}
	resp, b := h.do(t, "PATCH", "/sandboxes/"+id+"/timeout", `{"timeout":0}`)
	if got := decode[createResp](t, "PATCH timeout 0", b); resp.StatusCode != 200 || got.EndAt != nil {
		t.Errorf("PATCH timeout {0} = %d %s, want 200 with end_at null", resp.StatusCode, b)
	}
	tests := []struct {
		id, body string
		status   int
		code     string
	}{
		{id, `{"timeout":-1}`, 400, "invalid_argument"},
		{id, `{"timeout":700000}`, 400, "invalid_argument"},
		{id, `{}`, 400, "invalid_argument"},
		{id, ``, 400, "invalid_json"},
		{id, `{"timeout":]`, 400, "invalid_json"},
		{dead, `{"timeout":10}`, 410, "sandbox_killed"},
		{"sbx-unknown", `{"timeout":10}`, 404, "sandbox_not_found"},
	}
	for _, tt := range tests {
		resp, b := h.do(t, "PATCH", "/sandboxes/"+tt.id+"/timeout", tt.body)
		wantError(t, fmt.Sprintf("PATCH /sandboxes/%s/timeout %q", tt.id, tt.body), resp, b, tt.status, tt.code)
	}
}

func TestAudit(t *testing.T) {
	h := newHarness(t)
	id := h.create(t, nil).SandboxID
	if resp, b := h.do(t, "PUT", "/sandboxes/"+id+"/network", `{"deny_out":["0.0.0.0/0"]}`); resp.StatusCode != 200 {
		t.Fatalf("PUT network: %d %s", resp.StatusCode, b)
	}
	h.do(t, "DELETE", "/sandboxes/"+id, nil)

	type auditResp struct {
		Events     []store.AuditEvent `json:"events"`
		NextCursor *string            `json:"next_cursor"`
	}
	types := func(evs []store.AuditEvent) []string {
		var out []string
		for _, e := range evs {
			out = append(out, e.Type)
		}
		return out
	}
	get := func(q string) (auditResp, int) {
		resp, b := h.do(t, "GET", "/sandboxes/"+id+"/audit"+q, nil)
		return decode[auditResp](t, "GET audit"+q, b), resp.StatusCode
	}
	all, st := get("")
	if want := []string{"sandbox.created", "network.updated", "sandbox.killed"}; st != 200 || !slices.Equal(types(all.Events), want) || all.NextCursor != nil {
		t.Fatalf("GET /sandboxes/%s/audit = %d %v cursor %v, want 200 %v no cursor", id, st, types(all.Events), all.NextCursor, want)
	}
	got, _ := get("?type=sandbox.created,sandbox.killed")
	if want := []string{"sandbox.created", "sandbox.killed"}; !slices.Equal(types(got.Events), want) {
		t.Errorf("audit ?type=sandbox.created,sandbox.killed = %v, want %v", types(got.Events), want)
	}
	page1, _ := get("?limit=2")
	if !slices.Equal(types(page1.Events), []string{"sandbox.created", "network.updated"}) || page1.NextCursor == nil {
		t.Fatalf("audit ?limit=2 = %v cursor %v, want the first two and a cursor", types(page1.Events), page1.NextCursor)
	}
	page2, _ := get("?limit=2&cursor=" + *page1.NextCursor)
	if !slices.Equal(types(page2.Events), []string{"sandbox.killed"}) || page2.NextCursor != nil {
		t.Errorf("audit ?limit=2&cursor=%s = %v cursor %v, want [sandbox.killed] and no cursor", *page1.NextCursor, types(page2.Events), page2.NextCursor)
	}
	future, _ := get("?since=" + url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339)))
	if len(future.Events) != 0 {
		t.Errorf("audit since an hour from now = %v, want none", types(future.Events))
	}
	for _, q := range []string{"?cursor=abc", "?limit=0", "?limit=5000", "?since=yesterday", "?until=x"} {
		resp, b := h.do(t, "GET", "/sandboxes/"+id+"/audit"+q, nil)
		wantError(t, "GET audit"+q, resp, b, 400, "invalid_argument")
	}
	resp, b := h.do(t, "GET", "/sandboxes/sbx-unknown/audit", nil)
	wantError(t, "GET /sandboxes/sbx-unknown/audit", resp, b, 404, "sandbox_not_found")
}

func TestUpdateNetwork(t *testing.T) {
	h := newHarness(t)
	id := h.create(t, nil).SandboxID
	dead := h.create(t, nil).SandboxID
	h.do(t, "DELETE", "/sandboxes/"+dead, nil)
	resp, b := h.do(t, "PUT", "/sandboxes/"+id+"/network", `{"allow_out":["example.com"],"deny_out":["0.0.0.0/0"]}`)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"network":{"allow_out":["example.com"],"deny_out":["0.0.0.0/0"]}`) {
		t.Errorf("PUT /sandboxes/%s/network = %d %s, want 200 showing the new policy", id, resp.StatusCode, b)
	}
	want := network.Policy{AllowOut: []string{"example.com"}, DenyOut: []string{"0.0.0.0/0"}}
	if ps := h.net.policies(); len(ps) != 3 || !reflect.DeepEqual(ps[2], want) {
		t.Errorf("network.Apply calls = %+v, want the last to be %+v", ps, want)
	}
	tests := []struct {
		id, body string
		status   int
		code     string
	}{
		{id, `{"allow_out":["10.0.0.0/33"]}`, 400, "invalid_argument"},
		{id, `{"allow_out":"x"}`, 400, "invalid_json"},
		{id, ``, 400, "invalid_json"},
		{dead, `{}`, 410, "sandbox_killed"},
		{"sbx-unknown", `{}`, 404, "sandbox_not_found"},
	}
	for _, tt := range tests {
		resp, b := h.do(t, "PUT", "/sandboxes/"+tt.id+"/network", tt.body)
		wantError(t, fmt.Sprintf("PUT /sandboxes/%s/network %q", tt.id, tt.body), resp, b, tt.status, tt.code)
	}
}

func TestUnknownRoutes(t *testing.T) {
	h := newHarness(t)
	for _, c := range []string{"GET /nope", "GET /sandboxes/x/y/z", "PUT /nope/deeper"} {
		method, path, _ := strings.Cut(c, " ")
		resp, b := h.do(t, method, path, nil)
		wantError(t, c, resp, b, 404, "not_found")
	}
	// A known path with another method: 405, the API's error shape, and the
	// methods that path does take.
	for _, tt := range []struct{ call, allow string }{
		{"POST /health", "GET"},
		{"PUT /sandboxes", "GET, POST"},
		{"POST /sandboxes/x/status", "GET"},
		{"GET /sandboxes/x/pause", "POST"},
	} {
		method, path, _ := strings.Cut(tt.call, " ")
		resp, b := h.do(t, method, path, nil)
		wantError(t, tt.call, resp, b, 405, "method_not_allowed")
		if got := resp.Header.Get("Allow"); got != tt.allow {
			t.Errorf("%s: Allow = %q, want %q", tt.call, got, tt.allow)
		}
	}
	resp, b := h.do(t, "GET", "/openapi.yaml", nil)
	wantError(t, "GET /openapi.yaml without a document", resp, b, 404, "not_found")
}

func TestForward(t *testing.T) {
	h := newHarness(t)
	sb := h.create(t, nil)
	resp, b := h.do(t, "POST", "/sandboxes/"+sb.SandboxID+"/commands?timeout=5&tag=a%20b", `{"cmd":"echo hi"}`,
		"Authorization", "Bearer "+testKey, "Cookie", "c=1", "X-Custom", "kept")
	if resp.StatusCode != 200 {
		t.Fatalf("POST /sandboxes/%s/commands: %d %s, want 200", sb.SandboxID, resp.StatusCode, b)
	}
	if got := decode[envdapi.CommandResult](t, "forwarded /commands", b); got.Stdout != "hi\n" || got.Pid != 7 {
		t.Errorf("forwarded /commands body = %s, want the fake envd's answer", b)
	}
	calls := h.envd.received()
	if len(calls) != 1 {
		t.Fatalf("envd received %d calls, want 1: %+v", len(calls), calls)
	}
	c := calls[0]
	if c.Method != "POST" || c.Path != "/commands" || c.RawQuery != "timeout=5&tag=a%20b" || c.BodyLen != len(`{"cmd":"echo hi"}`) {
		t.Errorf("envd got %s %s ?%s (%d bytes), want POST /commands ?timeout=5&tag=a%%20b with the body", c.Method, c.Path, c.RawQuery, c.BodyLen)
	}
	if tok := c.Header.Get(envdapi.AccessTokenHeader); tok != sb.EnvdAccessToken {
		t.Errorf("envd got %s %q, want the sandbox token %q", envdapi.AccessTokenHeader, tok, sb.EnvdAccessToken)
	}
	for _, hd := range []string{"Authorization", "X-Api-Key", "Cookie"} {
		if v := c.Header.Get(hd); v != "" {
			t.Errorf("envd got header %s = %q, want it stripped", hd, v)
		}
	}
	if c.Header.Get("X-Custom") != "kept" {
		t.Errorf("envd got X-Custom = %q, want other headers kept", c.Header.Get("X-Custom"))
	}

	// X-API-Key is stripped as well, and sub-paths keep their rest.
	resp, b = h.do(t, "PUT", "/sandboxes/"+sb.SandboxID+"/files/raw?path=/tmp/a", "raw bytes")
	calls = h.envd.received()
	if c := calls[len(calls)-1]; resp.StatusCode != 200 || c.Path != "/files/raw" || c.RawQuery != "path=/tmp/a" || c.Header.Get("X-Api-Key") != "" || c.BodyLen != 9 {
		t.Errorf("PUT files/raw = %d %s; envd got %s ?%s X-API-Key %q %d bytes, want 200, /files/raw ?path=/tmp/a, no key, 9 bytes", resp.StatusCode, b, c.Path, c.RawQuery, c.Header.Get("X-Api-Key"), c.BodyLen)
	}
	// envd's own errors pass through unchanged.
	resp, b = h.do(t, "GET", "/sandboxes/"+sb.SandboxID+"/commands/none", nil)
	if resp.StatusCode != 404 || !strings.Contains(string(b), "no such envd endpoint") {
		t.Errorf("GET forwarded unknown envd path = %d %s, want envd's 404", resp.StatusCode, b)
	}
}

func TestForwardBodyLimits(t *testing.T) {
	h := newHarness(t)
	id := h.create(t, nil).SandboxID
	big := strings.Repeat("x", MaxJSONBody+1)
	before := len(h.envd.received())
	resp, b := h.do(t, "POST", "/sandboxes/"+id+"/files?path=/tmp/a", big)
	wantError(t, "POST forwarded /files with an oversized body", resp, b, 413, "body_too_large")
	if n := len(h.envd.received()); n != before {
		t.Errorf("envd received %d calls for an oversized body with Content-Length, want none", n-before)
	}

	// Without a Content-Length the limit is enforced while streaming.
	req, _ := http.NewRequestWithContext(t.Context(), "POST", h.srv.URL+"/sandboxes/"+id+"/files?path=/tmp/a", io.MultiReader(strings.NewReader(big)))
	req.Header.Set("X-API-Key", testKey)
	req.ContentLength = -1
	r2, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("chunked POST /files: %v", err)
	}
	b2, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	wantError(t, "chunked POST forwarded /files over the limit", r2, b2, 413, "body_too_large")

	// Raw uploads are not capped.
	resp, b = h.do(t, "PUT", "/sandboxes/"+id+"/files/raw?path=/tmp/big", big)
	if resp.StatusCode != 200 || !strings.Contains(string(b), fmt.Sprintf(`"bytes":%d`, len(big))) {
		t.Errorf("PUT forwarded /files/raw of %d bytes = %d %s, want 200 with every byte", len(big), resp.StatusCode, b)
	}
	// A JSON body at the limit passes.
	resp, b = h.do(t, "POST", "/sandboxes/"+id+"/files", big[:MaxJSONBody])
	if resp.StatusCode != 200 {
		t.Errorf("POST forwarded /files of exactly MaxJSONBody bytes = %d %s, want 200", resp.StatusCode, b)
	}
}

func TestForwardSSEStreams(t *testing.T) {
	h := newHarness(t)
	id := h.create(t, nil).SandboxID
	req, _ := http.NewRequestWithContext(t.Context(), "POST", h.srv.URL+"/sandboxes/"+id+"/commands/stream", strings.NewReader(`{"cmd":"sleep 1"}`))
	req.Header.Set("X-API-Key", testKey)
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("POST /sandboxes/%s/commands/stream: %v", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("POST commands/stream = %d %q, want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	type line struct {
		s   string
		err error
	}
	lines := make(chan line, 16)
	go func() {
		br := bufio.NewReader(resp.Body)
		for {
			s, err := br.ReadString('\n')
			lines <- line{s, err}
			if err != nil {
				return
			}
		}
	}()
	// The first event arrives while the fake envd still holds the stream open.
	var got []string
	deadline := time.After(3 * time.Second)
	for len(got) < 2 {
		select {
		case l := <-lines:
			if l.err != nil {
				t.Fatalf("reading the stream before the end: %v (got %q)", l.err, got)
			}
			got = append(got, l.s)
		case <-deadline:
			t.Fatalf("first SSE event not forwarded within 3 s while envd holds the stream (got %q): the proxy buffers", got)
		}
	}
	if want := []string{"event: start\n", "data: {\"type\":\"start\",\"pid\":7}\n"}; !slices.Equal(got, want) {
		t.Errorf("first SSE lines = %q, want %q", got, want)
	}
	close(h.envd.streamRelease)
	rest := ""
	for l := range lines {
		rest += l.s
		if l.err != nil {
			if !errors.Is(l.err, io.EOF) {
				t.Errorf("reading the stream end: %v", l.err)
			}
			break
		}
	}
	if !strings.Contains(rest, "event: exit") {
		t.Errorf("rest of the stream = %q, want the exit event", rest)
	}
}

func TestForwardStates(t *testing.T) {
	h := newHarness(t)
	paused := h.create(t, nil).SandboxID
	dead := h.create(t, nil).SandboxID
	dying := h.create(t, nil).SandboxID
	if err := h.m.Pause(t.Context(), paused); err != nil {
		t.Fatalf("Pause(%s): %v", paused, err)
	}
	h.do(t, "DELETE", "/sandboxes/"+dead, nil)
	h.do(t, "DELETE", "/sandboxes/"+dying+"?async=true", nil)
	tests := []struct {
		id     string
		status int
		code   string
	}{
		{paused, 409, "sandbox_paused"},
		{dead, 410, "sandbox_killed"},
		{dying, 410, "sandbox_killed"},
		{"sbx-unknown", 404, "sandbox_not_found"},
	}
	for _, tt := range tests {
		for _, p := range []string{"/commands", "/files?path=/etc/hosts"} {
			resp, b := h.do(t, "POST", "/sandboxes/"+tt.id+p, `{}`)
			wantError(t, "POST /sandboxes/"+tt.id+p, resp, b, tt.status, tt.code)
		}
	}
	if calls := h.envd.received(); len(calls) != 0 {
		t.Errorf("envd received %+v, want nothing for paused, killed or unknown sandboxes", calls)
	}
}

func TestForwardEnvdDown(t *testing.T) {
	h := newHarness(t)
	id := h.create(t, nil).SandboxID
	h.envd.srv.Close()
	resp, b := h.do(t, "POST", "/sandboxes/"+id+"/commands", `{"cmd":"true"}`)
	wantError(t, "POST /sandboxes/"+id+"/commands with envd down", resp, b, 502, "envd_unreachable")
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{&Error{Status: 418, Code: "teapot", Message: "short and stout"}, 418, "teapot"},
		{fmt.Errorf("wrapped: %w", &http.MaxBytesError{Limit: 1}), 413, "body_too_large"},
		{&sandbox.InvalidError{Field: "timeout", Msg: "bad"}, 400, "invalid_argument"},
		{&policy.Error{Field: "pii.action", Msg: "bad"}, 400, "invalid_policy"},
		{&sandbox.StateError{ID: "sbx-1", Op: "pause", State: "killed"}, 409, "invalid_state"},
		{fmt.Errorf("x: %w", sandbox.ErrTemplateUnknown), 404, "template_not_found"},
		{fmt.Errorf("x: %w", sandbox.ErrNotFound), 404, "sandbox_not_found"},
		{fmt.Errorf("x: %w", sandbox.ErrKilled), 410, "sandbox_killed"},
		{fmt.Errorf("x: %w", sandbox.ErrPaused), 409, "sandbox_paused"},
		{fmt.Errorf("x: %w", sandbox.ErrUnavailable), 503, "unavailable"},
		{errors.New("open /var/lib/declaw/secret-token-abc: permission denied"), 500, "internal"},
	}
	for _, tt := range tests {
		got := toAPIError(tt.err)
		if got.Status != tt.status || got.Code != tt.code {
			t.Errorf("toAPIError(%v) = %d %s, want %d %s", tt.err, got.Status, got.Code, tt.status, tt.code)
		}
		if tt.status == 500 && strings.Contains(got.Message, "secret") {
			t.Errorf("toAPIError(%v).Message = %q leaks the internal error", tt.err, got.Message)
		}
	}
}

// A create runs to its end when the client goes away, so that a retry with
// the same Idempotency-Key gets the finished sandbox (sandboxes.go doCreate).
// FinishIdempotent is called with the request's context, which is cancelled
// by then: the record stays "in progress" and every retry gets 409.
func TestIdempotencyAfterClientDisconnect(t *testing.T) {
	h := newHarness(t)
	started, release := make(chan struct{}), make(chan struct{})
	h.rt.StartErr = func(sandboxrt.Spec) error {
		close(started)
		<-release
		return nil
	}
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "POST", h.srv.URL+"/sandboxes", strings.NewReader(`{}`))
	req.Header.Set("X-API-Key", testKey)
	req.Header.Set("Idempotency-Key", "k-disconnect")
	errc := make(chan error, 1)
	go func() {
		resp, err := h.srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; err == nil {
		t.Fatalf("cancelled POST /sandboxes returned no error")
	}
	time.Sleep(200 * time.Millisecond) // let the server see the disconnect
	close(release)
	waitForAPI(t, "the abandoned create to finish", func() bool { return len(h.rt.IDs()) == 1 })
	var resp *http.Response
	var b []byte
	deadline := time.Now().Add(3 * time.Second)
	for {
		resp, b = h.do(t, "POST", "/sandboxes", `{}`, "Idempotency-Key", "k-disconnect")
		if resp.StatusCode != http.StatusConflict || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("retry with the key of an abandoned create = %d %s, want 201 with the finished sandbox", resp.StatusCode, b)
	}
	if got := decode[createResp](t, "retry", b); got.SandboxID != h.rt.IDs()[0] {
		t.Errorf("retry returned %s, want the sandbox the abandoned create made (%s)", got.SandboxID, h.rt.IDs()[0])
	}
}
