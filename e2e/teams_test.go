package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestTeams runs the real server with two teams made by the CLI with the
// server's startup key (the default team's admin key): each team's key
// cannot list, read, exec in, read files of, kill or audit the other's
// sandbox (404, as for an unknown id); a key revoked with the CLI is
// refused at once and the command stream it had open is cut; the startup
// key keeps working and sees neither team's sandboxes.
func TestTeams(t *testing.T) {
	s := startServer(t)
	acme := strings.TrimSpace(s.mustCLI("", "teams", "create", "acme"))
	globex := strings.TrimSpace(s.mustCLI("", "teams", "create", "globex"))
	if !strings.HasPrefix(acme, "team_") || !strings.HasPrefix(globex, "team_") || acme == globex {
		t.Fatalf("teams create printed %q and %q, want two team_ ids", acme, globex)
	}
	newKey := func(team, name string) (key, id string) {
		t.Helper()
		r := s.cli("", "--json", "keys", "create", "--team", team, "--name", name)
		var k struct {
			Key   string `json:"key"`
			KeyID string `json:"key_id"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &k) != nil || !strings.HasPrefix(k.Key, "dcl_") {
			t.Fatalf("keys create --team %s: exit %d, stdout %q, stderr %q", team, r.code, r.stdout, r.stderr)
		}
		return k.Key, k.KeyID
	}
	keyA, keyAID := newKey("acme", "a") // by name
	keyA2, _ := newKey(acme, "a2")      // by id
	keyB, _ := newKey("globex", "b")

	// The list shows the keys, never their secrets.
	list := s.mustCLI("", "keys", "list", "--team", "acme")
	if !strings.Contains(list, keyAID) || strings.Contains(list, keyA) || strings.Contains(list, keyA2) {
		t.Errorf("keys list --team acme:\n%s\nwant %s listed and no secret", list, keyAID)
	}

	as := func(key string) []string { return []string{"X-API-Key", key} }
	create := func(key string) string {
		t.Helper()
		code, b := s.do("POST", "/sandboxes", map[string]any{"template": "base", "timeout": 300}, as(key)...)
		var out struct {
			SandboxID string `json:"sandbox_id"`
		}
		if code != 201 || json.Unmarshal(b, &out) != nil {
			t.Fatalf("create: %d %s", code, b)
		}
		return out.SandboxID
	}
	sbA, sbB := create(keyA), create(keyB)
	t.Cleanup(func() {
		s.do("DELETE", "/sandboxes/"+sbA, nil, as(keyA2)...)
		s.do("DELETE", "/sandboxes/"+sbB, nil, as(keyB)...)
	})
	ids := func(key string) []string {
		t.Helper()
		code, b := s.do("GET", "/sandboxes?state=running,paused,killed", nil, as(key)...)
		var out struct {
			Sandboxes []struct {
				SandboxID string `json:"sandbox_id"`
			} `json:"sandboxes"`
		}
		if code != 200 || json.Unmarshal(b, &out) != nil {
			t.Fatalf("list: %d %s", code, b)
		}
		var ids []string
		for _, sb := range out.Sandboxes {
			ids = append(ids, sb.SandboxID)
		}
		return ids
	}
	if got := ids(keyA); !slices.Equal(got, []string{sbA}) {
		t.Errorf("acme's list = %v, want [%s]", got, sbA)
	}
	if got := ids(keyB); !slices.Equal(got, []string{sbB}) {
		t.Errorf("globex's list = %v, want [%s]", got, sbB)
	}
	if got := ids(s.key); len(got) != 0 {
		t.Errorf("the startup key's list = %v, want none of the teams' sandboxes", got)
	}

	// Every call by id across teams: 404 sandbox_not_found, like an unknown id.
	calls := []struct{ method, path, body string }{
		{"GET", "/sandboxes/%s", ""},
		{"GET", "/sandboxes/%s/status", ""},
		{"POST", "/sandboxes/%s/commands", `{"cmd":"touch /tmp/pwned; id"}`},
		{"GET", "/sandboxes/%s/files?path=/etc/hostname", ""},
		{"POST", "/sandboxes/%s/files", `{"path":"/tmp/pwned","content":"x"}`},
		{"GET", "/sandboxes/%s/audit", ""},
		{"PUT", "/sandboxes/%s/network", `{"deny_out":["0.0.0.0/0"]}`},
		{"POST", "/sandboxes/%s/snapshot", `{}`},
		{"DELETE", "/sandboxes/%s", ""},
	}
	for _, c := range calls {
		for _, p := range []struct{ who, key, target string }{{"acme on globex's", keyA, sbB}, {"globex on acme's", keyB, sbA}, {"the startup key on acme's", s.key, sbA}} {
			var body any
			if c.body != "" {
				body = c.body
			}
			path := fmt.Sprintf(c.path, p.target)
			code, b := s.do(c.method, path, body, as(p.key)...)
			var e struct{ Message, Code string }
			json.Unmarshal(b, &e)
			if code != 404 || e.Code != "sandbox_not_found" || e.Message != "sandbox "+p.target+": sandbox not found" {
				t.Errorf("%s: %s %s = %d %s, want 404 sandbox_not_found as for an unknown id", p.who, c.method, path, code, b)
			}
		}
	}
	code, b := s.do("POST", "/sandboxes/kill-many", map[string]any{"sandbox_ids": []string{sbB}}, as(keyA)...)
	if code != 200 || !strings.Contains(string(b), "not found") || strings.Contains(string(b), `"killed"`) {
		t.Errorf("kill-many by acme of globex's sandbox = %d %s, want it not found", code, b)
	}
	// Nothing reached the sandboxes: no file, still running, audits clean.
	for _, p := range []struct{ key, id string }{{keyA, sbA}, {keyB, sbB}} {
		code, b := s.do("POST", "/sandboxes/"+p.id+"/commands", map[string]any{"cmd": "test -e /tmp/pwned && echo PWNED; echo ok"}, as(p.key)...)
		if code != 200 || strings.Contains(string(b), "PWNED") || !strings.Contains(string(b), "ok") {
			t.Errorf("own command in %s after the other teams' attempts = %d %s, want ok and no /tmp/pwned", p.id, code, b)
		}
		code, b = s.do("GET", "/sandboxes/"+p.id+"/audit", nil, as(p.key)...)
		if code != 200 || slices.ContainsFunc([]string{"touch /tmp/pwned", "file.", "network.updated", "sandbox.snapshot", "sandbox.killed"},
			func(trace string) bool { return strings.Contains(string(b), trace) }) {
			t.Errorf("audit of %s = %d %s: another team's attempt left a trace", p.id, code, b)
		}
	}
	// The Python SDK with globex's key, unchanged: acme's sandbox does not
	// exist for it.
	pyCtx, pyCancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer pyCancel()
	py := s.pythonCmd(pyCtx, teamsScript, "DECLAW_API_KEY="+keyB, "SBX_A="+sbA, "SBX_B="+sbB)
	if out, err := py.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Errorf("Python SDK with globex's key: %v\n%s", err, out)
	}
	// CLI with a team key: its own sandbox, not the other's.
	r := s.cli("", "--api-key", keyB, "sandbox", "info", sbA)
	if r.code != 1 || !strings.Contains(r.stderr, "404 sandbox_not_found") {
		t.Errorf("declaw sandbox info %s with globex's key: exit %d, stderr %q; want 1 and 404", sbA, r.code, r.stderr)
	}
	// Non-admin keys manage nothing.
	if r := s.cli("", "--api-key", keyB, "keys", "list"); r.code != 1 || !strings.Contains(r.stderr, "403 forbidden") {
		t.Errorf("keys list with a non-admin key: exit %d, stderr %q; want 1 and 403", r.code, r.stderr)
	}

	// Revoke acme's key while a command streams with it and a PTY's output
	// is followed with it: both are cut, and the key refused at once.
	openSSE := func(method, path, body string) <-chan string {
		t.Helper()
		var rd *strings.Reader
		if body != "" {
			rd = strings.NewReader(body)
		} else {
			rd = strings.NewReader("")
		}
		req, _ := http.NewRequest(method, s.base+path, rd)
		req.Header.Set("Authorization", "Bearer "+keyA)
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s with acme's key: %d", method, path, resp.StatusCode)
		}
		lines := make(chan string, 64)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				lines <- sc.Text()
			}
			if err := sc.Err(); err != nil {
				lines <- "ERR " + err.Error()
			}
		}()
		return lines
	}
	waitLine := func(lines <-chan string, what string, match func(string) bool) (string, bool) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					return "", false
				}
				if match(l) {
					return l, true
				}
			case <-deadline:
				t.Fatalf("no %s within 20 s", what)
			}
		}
	}
	cmdLines := openSSE("POST", "/sandboxes/"+sbA+"/commands/stream", `{"cmd":"echo started; sleep 30; echo finished","timeout":0}`)
	if _, ok := waitLine(cmdLines, "started", func(l string) bool { return strings.Contains(l, "started") }); !ok {
		t.Fatal("the command stream ended before the command started")
	}
	var pty struct {
		Pid int `json:"pid"`
	}
	code, b = s.do("POST", "/sandboxes/"+sbA+"/pty", map[string]any{"cmd": "echo pty-up; sleep 30", "size": map[string]int{"cols": 80, "rows": 24}}, as(keyA)...)
	if code != 200 || json.Unmarshal(b, &pty) != nil || pty.Pid == 0 {
		t.Fatalf("POST pty with acme's key: %d %s", code, b)
	}
	ptyLines := openSSE("GET", fmt.Sprintf("/sandboxes/%s/pty/%d/stream", sbA, pty.Pid), "")
	if _, ok := waitLine(ptyLines, "the PTY's first output", func(l string) bool { return strings.Contains(l, `"type":"data"`) }); !ok {
		t.Fatal("the PTY stream ended before its first output")
	}
	revokedAt := time.Now()
	if out := s.mustCLI("", "keys", "revoke", keyAID); out != "revoked "+keyAID+"\n" {
		t.Errorf("keys revoke printed %q", out)
	}
	for name, lines := range map[string]<-chan string{"command": cmdLines, "PTY": ptyLines} {
		if l, ok := waitLine(lines, "the end of the "+name+" stream", func(l string) bool { return strings.Contains(l, "finished") || strings.Contains(l, `"exit"`) }); ok {
			t.Errorf("after the revoke the %s stream went on to %q: it was not cut", name, l)
		}
	}
	if d := time.Since(revokedAt); d > 10*time.Second {
		t.Errorf("the streams ended %v after the revoke, want at once", d)
	}
	code, b = s.do("GET", "/sandboxes", nil, as(keyA)...)
	if code != 401 {
		t.Errorf("GET /sandboxes with the revoked key = %d %s, want 401", code, b)
	}
	// acme's other key still reaches acme's sandbox.
	code, b = s.do("POST", "/sandboxes/"+sbA+"/commands", map[string]any{"cmd": "echo still"}, as(keyA2)...)
	if code != 200 || !strings.Contains(string(b), "still") {
		t.Errorf("acme's other key after the revoke = %d %s, want 200", code, b)
	}
	// The startup key still works (the README's and the SDK's key).
	if code, b := s.do("GET", "/teams", nil); code != 200 || !strings.Contains(string(b), `"name":"default"`) {
		t.Errorf("GET /teams with the startup key = %d %s, want 200 with the default team", code, b)
	}
}

// teamsScript runs with one team's key (DECLAW_API_KEY): the other team's
// sandbox SBX_A is not found by connect, kill or list; its own SBX_B is.
const teamsScript = `
import os
from declaw import Sandbox
from declaw.exceptions import NotFoundException

a, b = os.environ["SBX_A"], os.environ["SBX_B"]
try:
    Sandbox.connect(a)
    raise SystemExit("connect to another team's sandbox succeeded")
except NotFoundException:
    pass
assert Sandbox.kill(a) is False, "kill of another team's sandbox did not answer not found"
ids = [s.sandbox_id for s in Sandbox.list().sandboxes]
assert ids == [b], ids
own = Sandbox.connect(b)
assert own.commands.run("echo hi").stdout == "hi\n"
print("ok")
`
