package api

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
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
	h := newHarness(t)
	tm, err := template.New(template.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
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
