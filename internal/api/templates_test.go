package api

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/template"
	"github.com/declaw/declaw/internal/template/build"
)

// templatesHarness is the harness's API with templates and builds on a
// temporary state dir (no runtime: builds that would run fail earlier).
func templatesHarness(t *testing.T) (*harness, *template.Manager) {
	t.Helper()
	tm, err := template.New(template.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessWith(t, func(ls *limitsSetup) { ls.templates = customTemplates{tm: tm, dir: t.TempDir()} })
	b, err := build.NewBuilder(build.Config{Templates: tm, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	svc := build.NewService(build.ServiceConfig{Builder: b, Templates: tm, InUse: h.m.TemplateUsers})
	h2 := *h
	h2.api = New(Config{Sandboxes: h.m, Store: h.st, Logf: t.Logf, Templates: tm, Builds: svc})
	h2.srv = httptest.NewServer(h2.api)
	t.Cleanup(h2.srv.Close)
	// One custom template, as a build would leave it.
	dir := filepath.Join(tm.Dir(), "app")
	os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755)
	meta, _ := json.Marshal(template.Template{Name: "app", ID: "tpl-0123", BuiltAt: time.Now().UTC(), Recipe: template.Recipe,
		Custom: &template.Custom{BuildID: "bld-1", Source: "spec", Base: "template base"}, Runtime: &template.Runtime{StartCmd: "serve"}})
	os.WriteFile(filepath.Join(dir, "template.json"), meta, 0o644)
	return &h2, tm
}

// customTemplates gives the orchestrator the custom templates of tm (by
// alias or template_id, as the server's adapter does) besides the fake
// built-ins.
type customTemplates struct {
	tm  *template.Manager
	dir string
}

func (c customTemplates) RootFS(ctx context.Context, name string) (string, error) {
	if t, err := c.tm.Resolve(name); err == nil && !template.IsBuiltin(t.Name) {
		return filepath.Join(c.dir, t.Name), nil
	}
	return fakeTemplates{dir: c.dir}.RootFS(ctx, name)
}

// addTemplate writes a custom template of team as a build would leave it.
func addTemplate(t *testing.T, tm *template.Manager, name, id, team string) {
	t.Helper()
	dir := filepath.Join(tm.Dir(), name)
	if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	meta, _ := json.Marshal(template.Template{Name: name, ID: id, BuiltAt: time.Now().UTC(), Recipe: template.Recipe,
		Custom: &template.Custom{BuildID: "bld-" + id[4:], Source: "spec", Base: "template base", TeamID: team}})
	if err := os.WriteFile(filepath.Join(dir, "template.json"), meta, 0o644); err != nil {
		t.Fatal(err)
	}
}

// addBuild writes a finished build record of team and its log.
func addBuild(t *testing.T, tm *template.Manager, id, alias, team string) {
	t.Helper()
	dir := filepath.Join(tm.Dir(), ".builds")
	now := time.Now().UTC()
	st, _ := json.Marshal(build.Status{BuildID: id, Status: build.StatusCompleted, TemplateID: "tpl-" + id[4:], Alias: alias,
		StartedAt: now, FinishedAt: &now, TeamID: team})
	if err := os.WriteFile(filepath.Join(dir, id+".json"), st, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, id+".log"), []byte("secret step of "+team+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTemplateTeamIsolation: a team cannot list, get, delete, use or read
// the builds and logs of another team's custom templates; each answer is
// that of an unknown id. Built-in templates are every team's and
// read-only; an alias held by another team is refused without details.
func TestTemplateTeamIsolation(t *testing.T) {
	h, tm := templatesHarness(t) // "app": the default team's (no team recorded)
	a := h.newKey(t, h.newTeam(t, "tpl-a"), "a", false)
	b := h.newKey(t, h.newTeam(t, "tpl-b"), "b", false)
	addTemplate(t, tm, "app-a", "tpl-aaaa", a.TeamID)
	addTemplate(t, tm, "app-b", "tpl-bbbb", b.TeamID)
	addBuild(t, tm, "bld-aaaa", "app-a", a.TeamID)
	addBuild(t, tm, "bld-bbbb", "app-b", b.TeamID)
	// "base" stands for the built-ins, "tools" for a template the operator
	// installed (no build record): every team's.
	for _, name := range []string{"base", "tools"} {
		os.MkdirAll(filepath.Join(tm.Dir(), name, "rootfs"), 0o755)
		meta, _ := json.Marshal(template.Template{Name: name, BuiltAt: time.Now().UTC(), Recipe: template.Recipe})
		os.WriteFile(filepath.Join(tm.Dir(), name, "template.json"), meta, 0o644)
	}

	list := func(key string) []string {
		t.Helper()
		resp, body := h.do(t, "GET", "/templates", nil, as(key)...)
		if resp.StatusCode != 200 {
			t.Fatalf("GET /templates: %d %s", resp.StatusCode, body)
		}
		var l struct {
			Templates []struct {
				Alias string `json:"alias"`
			} `json:"templates"`
		}
		json.Unmarshal(body, &l)
		var out []string
		for _, x := range l.Templates {
			out = append(out, x.Alias)
		}
		return out
	}
	for _, c := range []struct {
		who, key string
		want     []string
	}{{"A", a.Key, []string{"app-a", "base", "tools"}}, {"B", b.Key, []string{"app-b", "base", "tools"}}, {"the default team", testKey, []string{"app", "base", "tools"}}} {
		if got := list(c.key); !slices.Equal(got, c.want) {
			t.Errorf("GET /templates as %s = %v, want %v", c.who, got, c.want)
		}
	}

	for _, c := range []struct {
		who, key, tmpl, id, bld string
	}{{"A on B's", a.Key, "app-b", "tpl-bbbb", "bld-bbbb"}, {"B on A's", b.Key, "app-a", "tpl-aaaa", "bld-aaaa"}, {"A on the default team's", a.Key, "app", "tpl-0123", ""}} {
		for _, name := range []string{c.tmpl, c.id} {
			resp, body := h.do(t, "GET", "/templates/"+name, nil, as(c.key)...)
			wantError(t, c.who+" GET /templates/"+name, resp, body, 404, "template_not_found")
			if want := "template " + name + ": unknown template"; !strings.Contains(string(body), want) {
				t.Errorf("%s GET /templates/%s = %s, want the message of an unknown template (%q)", c.who, name, body, want)
			}
			resp, body = h.do(t, "DELETE", "/templates/"+name+"?force=true", nil, as(c.key)...)
			wantError(t, c.who+" DELETE /templates/"+name, resp, body, 404, "template_not_found")
			for _, field := range []string{"template", "template_id"} {
				resp, body = h.do(t, "POST", "/sandboxes", map[string]string{field: name}, as(c.key)...)
				wantError(t, c.who+" POST /sandboxes "+field+"="+name, resp, body, 404, "template_not_found")
				if want := `template \"` + name + `\": template not found`; !strings.Contains(string(body), want) {
					t.Errorf("%s POST /sandboxes %s=%s = %s, want the message of an unknown template (%s)", c.who, field, name, body, want)
				}
			}
		}
		if c.bld == "" {
			continue
		}
		for _, call := range []struct{ method, path string }{
			{"GET", "/templates/builds/" + c.bld}, {"GET", "/templates/builds/" + c.bld + "/logs"},
			{"GET", "/templates/builds/" + c.bld + "?follow=true"}, {"DELETE", "/templates/builds/" + c.bld},
		} {
			resp, body := h.do(t, call.method, call.path, nil, as(c.key)...)
			wantError(t, c.who+" "+call.method+" "+call.path, resp, body, 404, "build_not_found")
			if strings.Contains(string(body), "secret step") {
				t.Errorf("%s %s %s leaks the build log: %s", c.who, call.method, call.path, body)
			}
		}
	}

	// An alias another team holds is taken; the answer names no team.
	resp, body := h.do(t, "POST", "/templates/build", map[string]any{"alias": "app-a", "template": map[string]any{"base_image": "base"}}, as(b.Key)...)
	wantError(t, "B builds alias app-a", resp, body, 409, "alias_taken")
	if strings.Contains(string(body), a.TeamID) || strings.Contains(string(body), "tpl-aaaa") {
		t.Errorf("alias conflict leaks the holder: %s", body)
	}

	// Each team still reaches its own; built-ins are every team's and read-only.
	for _, c := range []struct{ key, tmpl, bld string }{{a.Key, "app-a", "bld-aaaa"}, {b.Key, "app-b", "bld-bbbb"}} {
		if resp, body := h.do(t, "GET", "/templates/"+c.tmpl, nil, as(c.key)...); resp.StatusCode != 200 {
			t.Errorf("GET own /templates/%s: %d %s", c.tmpl, resp.StatusCode, body)
		}
		if resp, body := h.do(t, "GET", "/templates/builds/"+c.bld+"/logs", nil, as(c.key)...); resp.StatusCode != 200 || !strings.Contains(string(body), "secret step") {
			t.Errorf("GET own build logs %s: %d %s", c.bld, resp.StatusCode, body)
		}
		resp, body := h.do(t, "POST", "/sandboxes", map[string]string{"template": c.tmpl}, as(c.key)...)
		if resp.StatusCode != 201 {
			t.Errorf("POST /sandboxes with its own template %s: %d %s", c.tmpl, resp.StatusCode, body)
		}
		for _, shared := range []string{"base", "tools"} {
			if resp, body := h.do(t, "GET", "/templates/"+shared, nil, as(c.key)...); resp.StatusCode != 200 {
				t.Errorf("GET /templates/%s: %d %s", shared, resp.StatusCode, body)
			}
			resp, body := h.do(t, "DELETE", "/templates/"+shared+"?force=true", nil, as(c.key)...)
			wantError(t, "DELETE /templates/"+shared, resp, body, 403, "builtin_template")
		}
		resp, body = h.do(t, "POST", "/sandboxes", map[string]string{"template": "base"}, as(c.key)...)
		if resp.StatusCode != 201 {
			t.Errorf("POST /sandboxes with base: %d %s", resp.StatusCode, body)
		}
	}
	// Nothing of another team was deleted.
	for _, name := range []string{"app", "app-a", "app-b", "base", "tools"} {
		if _, err := tm.Get(name); err != nil {
			t.Errorf("template %s after the other teams' attempts: %v", name, err)
		}
	}
	resp, body = h.do(t, "DELETE", "/templates/app-a?force=true", nil, as(a.Key)...)
	if resp.StatusCode != 204 {
		t.Errorf("A DELETE its own app-a: %d %s", resp.StatusCode, body)
	}
}

func TestTemplateEndpoints(t *testing.T) {
	h, _ := templatesHarness(t)
	resp, b := h.do(t, "GET", "/templates", nil)
	var list struct {
		Templates []map[string]any `json:"templates"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &list) != nil || len(list.Templates) != 1 || list.Templates[0]["template_id"] != "tpl-0123" {
		t.Fatalf("GET /templates: %d %s", resp.StatusCode, b)
	}
	for _, id := range []string{"tpl-0123", "app"} {
		resp, b = h.do(t, "GET", "/templates/"+id, nil)
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"start_cmd":"serve"`) {
			t.Errorf("GET /templates/%s: %d %s", id, resp.StatusCode, b)
		}
	}
	resp, b = h.do(t, "GET", "/templates/nope", nil)
	wantError(t, "GET /templates/nope", resp, b, 404, "template_not_found")
	resp, b = h.do(t, "GET", "/templates/python", nil) // a built-in not built here
	wantError(t, "GET /templates/python", resp, b, 404, "template_not_found")
	resp, b = h.do(t, "DELETE", "/templates/tpl-0123", nil)
	if resp.StatusCode != 204 {
		t.Errorf("DELETE: %d %s", resp.StatusCode, b)
	}
	resp, b = h.do(t, "GET", "/templates/app", nil)
	wantError(t, "GET after DELETE", resp, b, 404, "template_not_found")

	resp, b = h.do(t, "GET", "/templates/builds/bld-0123456789ab", nil)
	wantError(t, "GET unknown build", resp, b, 404, "build_not_found")
	resp, b = h.do(t, "DELETE", "/templates/builds/nope", nil)
	wantError(t, "DELETE unknown build", resp, b, 404, "build_not_found")
}

func TestTemplateBuildErrors(t *testing.T) {
	h, _ := templatesHarness(t)
	for _, c := range []struct {
		name   string
		body   any
		status int
		code   string
		msg    string
	}{
		{"bad instruction", map[string]any{"alias": "x", "template": map[string]any{"dockerfile": "FROM base\nFROBNICATE\n"}}, 400, "invalid_template", "line 2"},
		{"no FROM", map[string]any{"alias": "x", "template": map[string]any{"dockerfile": "RUN true\n"}}, 400, "invalid_template", "line 1"},
		{"too large", map[string]any{"alias": "x", "template": map[string]any{"dockerfile": "FROM base\n#" + strings.Repeat("x", 65<<10)}}, 413, "dockerfile_too_large", ""},
		{"bad alias", map[string]any{"alias": "Bad Alias!", "template": map[string]any{"base_image": "base"}}, 400, "invalid_template", "alias"},
		{"builtin alias", map[string]any{"alias": "python", "template": map[string]any{"base_image": "base"}}, 400, "invalid_template", "built-in"},
		{"bad package", map[string]any{"alias": "x", "template": map[string]any{"apt_packages": []string{"a b"}}}, 400, "invalid_template", "package"},
		{"bad json", `{"template":`, 400, "invalid_json", ""},
		{"ready without start", map[string]any{"alias": "x", "template": map[string]any{"ready_check": "true"}}, 400, "invalid_template", "start_cmd"},
	} {
		resp, b := h.do(t, "POST", "/templates/build", c.body)
		wantError(t, c.name, resp, b, c.status, c.code)
		if c.msg != "" && !strings.Contains(string(b), c.msg) {
			t.Errorf("%s: %s does not mention %q", c.name, b, c.msg)
		}
	}
}
