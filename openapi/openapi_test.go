package openapi

import (
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The routes are read from the source text of the packages that register
// them, so that a route added there without being documented here fails
// this test.
const (
	apiSource = "../internal/api/api.go"
	envdDir   = "../internal/envd"
	// proxied is the public prefix under which envd's routes are reachable.
	proxied = "/sandboxes/{id}"
)

var (
	// m.HandleFunc("GET /sandboxes/{id}", s.auth(s.getSandbox))
	handleRe = regexp.MustCompile(`\.Handle(?:Func)?\(\s*"(?:([A-Z]+) +)?(/[^"]*)"\s*,\s*(s\.auth\()?`)
	// for _, p := range []string{"commands", "files", "pty", "stdio"} {
	prefixLoopRe = regexp.MustCompile(`range\s+\[\]string\{([^}]*)\}`)
	// m.HandleFunc("/sandboxes/{id}/"+p, ...)
	prefixUseRe = regexp.MustCompile(`\.Handle(?:Func)?\(\s*"/sandboxes/\{id\}/"\s*\+\s*p\b`)
	quotedRe    = regexp.MustCompile(`"([^"]+)"`)
	paramRe     = regexp.MustCompile(`\{([^}/]+?)(\.\.\.)?\}`)
)

var methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// route is one method+path pair; Method is "" for patterns that match any method.
type route struct {
	Method string
	Path   string
	Auth   bool
	Source string
}

func (r route) String() string {
	m := r.Method
	if m == "" {
		m = "ANY"
	}
	return m + " " + r.Path + " (" + r.Source + ")"
}

// normPath makes paths comparable whatever their parameters are called.
func normPath(p string) string { return paramRe.ReplaceAllString(p, "{}") }

func loadSpec(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(Spec, &doc); err != nil {
		t.Fatalf("openapi.yaml does not parse: %v", err)
	}
	if doc == nil {
		t.Fatal("openapi.yaml is empty")
	}
	return doc
}

func asMap(t *testing.T, v any, where string) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: want a mapping with string keys, got %T", where, v)
	}
	return m
}

// apiRoutes extracts the routes of internal/api and the prefixes it forwards to envd.
func apiRoutes(t *testing.T) (routes []route, prefixes []string) {
	t.Helper()
	src, err := os.ReadFile(apiSource)
	if err != nil {
		t.Fatalf("read API routes: %v", err)
	}
	text := string(src)
	for _, m := range handleRe.FindAllStringSubmatch(text, -1) {
		routes = append(routes, route{Method: m[1], Path: m[2], Auth: m[3] != "", Source: apiSource})
	}
	if len(routes) < 5 {
		t.Fatalf("found only %d routes in %s; did the registration style change? Update handleRe.", len(routes), apiSource)
	}
	if prefixUseRe.MatchString(text) {
		loop := prefixLoopRe.FindStringSubmatch(text)
		if loop == nil {
			t.Fatalf("%s forwards \"/sandboxes/{id}/\"+p but the prefix list was not found; update prefixLoopRe", apiSource)
		}
		for _, q := range quotedRe.FindAllStringSubmatch(loop[1], -1) {
			prefixes = append(prefixes, q[1])
		}
	}
	if len(prefixes) == 0 {
		t.Fatalf("no forwarded prefixes found in %s", apiSource)
	}
	return routes, prefixes
}

// envdRoutes extracts every route envd registers (non-test files).
func envdRoutes(t *testing.T) []route {
	t.Helper()
	var out []route
	err := filepath.WalkDir(envdDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range handleRe.FindAllStringSubmatch(string(src), -1) {
			out = append(out, route{Method: m[1], Path: m[2], Source: path})
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read envd routes: %v", err)
	}
	if len(out) < 5 {
		t.Fatalf("found only %d routes under %s; did the registration style change? Update handleRe.", len(out), envdDir)
	}
	return out
}

// publicRoutes is every route the API serves, envd's forwarded ones under
// their public path. Routes that match every path ("/") are left out.
func publicRoutes(t *testing.T) []route {
	api, prefixes := apiRoutes(t)
	var out []route
	for _, r := range api {
		if r.Path == "/" {
			continue // the JSON 404 catch-all
		}
		if r.Method == "" && isForwardPattern(r.Path, prefixes) {
			continue // stands for envd's concrete routes, added below
		}
		out = append(out, r)
	}
	served := map[string]bool{}
	for _, r := range envdRoutes(t) {
		first, _, _ := strings.Cut(strings.TrimPrefix(r.Path, "/"), "/")
		if !slices.Contains(prefixes, first) {
			continue // not reachable through the API (/init, /health, ...)
		}
		served[first] = true
		if r.Method == "" {
			t.Errorf("envd route %s has no method; give it one so it can be documented", r)
		}
		out = append(out, route{Method: r.Method, Path: proxied + r.Path, Auth: true, Source: r.Source})
	}
	for _, p := range prefixes {
		if !served[p] {
			t.Logf("the API forwards %s/%s... but envd serves nothing there (answers 404)", proxied, p)
		}
	}
	return out
}

// documented returns "METHOD normpath" -> operation for every operation.
func documented(t *testing.T, doc map[string]any) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	paths := asMap(t, doc["paths"], "paths")
	for p, item := range paths {
		for k, op := range asMap(t, item, "paths."+p) {
			if !slices.Contains(methods, k) {
				continue
			}
			out[strings.ToUpper(k)+" "+normPath(p)] = asMap(t, op, "paths."+p+"."+k)
		}
	}
	return out
}

func TestDocumentHeader(t *testing.T) {
	doc := loadSpec(t)
	v, _ := doc["openapi"].(string)
	if !strings.HasPrefix(v, "3.1.") {
		t.Errorf("openapi = %q, want 3.1.x", v)
	}
	info := asMap(t, doc["info"], "info")
	for _, k := range []string{"title", "version"} {
		if s, _ := info[k].(string); s == "" {
			t.Errorf("info.%s is missing", k)
		}
	}
	if len(asMap(t, doc["paths"], "paths")) == 0 {
		t.Error("paths is empty")
	}
	schemes := asMap(t, asMap(t, doc["components"], "components")["securitySchemes"], "components.securitySchemes")
	var apiKey, bearer bool
	for _, s := range schemes {
		s := asMap(t, s, "securityScheme")
		apiKey = apiKey || s["type"] == "apiKey" && s["in"] == "header" && s["name"] == "X-API-Key"
		bearer = bearer || s["type"] == "http" && strings.EqualFold(s["scheme"].(string), "bearer")
	}
	if !apiKey || !bearer {
		t.Errorf("security schemes: X-API-Key header %v, HTTP bearer %v; want both", apiKey, bearer)
	}
}

// TestEveryRouteDocumented fails when a route is registered (in internal/api,
// or in envd under a forwarded prefix) without being in openapi.yaml.
func TestEveryRouteDocumented(t *testing.T) {
	doc := loadSpec(t)
	ops := documented(t, doc)
	for _, r := range publicRoutes(t) {
		if r.Method == "" {
			found := false
			for _, m := range methods {
				if _, ok := ops[strings.ToUpper(m)+" "+normPath(r.Path)]; ok {
					found = true
				}
			}
			if !found {
				t.Errorf("route %s is not documented in openapi.yaml", r)
			}
			continue
		}
		op, ok := ops[r.Method+" "+normPath(r.Path)]
		if !ok {
			t.Errorf("route %s is not documented in openapi.yaml", r)
			continue
		}
		public := false
		if sec, ok := op["security"].([]any); ok && len(sec) == 0 {
			public = true
		}
		if public == r.Auth {
			t.Errorf("route %s: authenticated = %v in the code but security %v in openapi.yaml", r, r.Auth, op["security"])
		}
	}
}

// isForwardPattern reports whether p is one of the API's catch-all forwarding patterns.
func isForwardPattern(p string, prefixes []string) bool {
	for _, pre := range prefixes {
		if p == proxied+"/"+pre || p == proxied+"/"+pre+"/{rest...}" {
			return true
		}
	}
	return false
}

// TestNoPhantomOperations fails when openapi.yaml documents an operation
// that nothing serves (a removed or renamed route).
func TestNoPhantomOperations(t *testing.T) {
	doc := loadSpec(t)
	served := map[string]bool{}
	for _, r := range publicRoutes(t) {
		if r.Method == "" {
			for _, m := range methods {
				served[strings.ToUpper(m)+" "+normPath(r.Path)] = true
			}
			continue
		}
		served[r.Method+" "+normPath(r.Path)] = true
	}
	var keys []string
	for k := range documented(t, doc) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !served[k] {
			t.Errorf("openapi.yaml documents %s, which no route serves", k)
		}
	}
}

// TestRefsResolve checks every $ref (and discriminator mapping) points at
// something in the document.
func TestRefsResolve(t *testing.T) {
	doc := loadSpec(t)
	n := 0
	var walk func(v any, where string)
	walk = func(v any, where string) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if k == "$ref" {
					ref, ok := c.(string)
					if !ok {
						t.Errorf("%s: $ref is %T, want a string", where, c)
						continue
					}
					n++
					if err := resolve(doc, ref); err != "" {
						t.Errorf("%s: $ref %q: %s", where, ref, err)
					}
					continue
				}
				if k == "discriminator" {
					if d, ok := c.(map[string]any); ok {
						if mp, ok := d["mapping"].(map[string]any); ok {
							for name, ref := range mp {
								s, _ := ref.(string)
								if strings.HasPrefix(s, "#") {
									n++
									if err := resolve(doc, s); err != "" {
										t.Errorf("%s.discriminator.mapping.%s: %q: %s", where, name, s, err)
									}
								}
							}
						}
					}
				}
				walk(c, where+"."+k)
			}
		case []any:
			for i, c := range v {
				walk(c, where+"["+strconv.Itoa(i)+"]")
			}
		case map[any]any:
			t.Errorf("%s: mapping with non-string keys (quote keys such as response codes)", where)
		}
	}
	walk(doc, "$")
	if n == 0 {
		t.Error("no $ref found; the walk is broken")
	}
}

func resolve(doc map[string]any, ref string) string {
	if !strings.HasPrefix(ref, "#/") {
		return "only local references (#/...) are allowed"
	}
	var cur any = doc
	for _, tok := range strings.Split(ref[2:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return "cannot descend into " + tok
		}
		if cur, ok = m[tok]; !ok {
			return "no " + tok
		}
	}
	return ""
}

// deref follows a local $ref.
func deref(doc map[string]any, v any) map[string]any {
	for i := 0; i < 10; i++ {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		ref, ok := m["$ref"].(string)
		if !ok || !strings.HasPrefix(ref, "#/") {
			return m
		}
		var cur any = doc
		for _, tok := range strings.Split(ref[2:], "/") {
			c, _ := cur.(map[string]any)
			cur = c[strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")]
		}
		v = cur
	}
	return nil
}

// TestOperations checks every operation: a unique operationId, responses
// with valid status codes, and declared path parameters.
func TestOperations(t *testing.T) {
	doc := loadSpec(t)
	ids := map[string]string{}
	for p, item := range asMap(t, doc["paths"], "paths") {
		item := asMap(t, item, "paths."+p)
		inPath := map[string]bool{}
		for _, m := range paramRe.FindAllStringSubmatch(p, -1) {
			inPath[m[1]] = true
		}
		pathParams := func(list any) map[string]bool {
			out := map[string]bool{}
			l, _ := list.([]any)
			for _, v := range l {
				if prm := deref(doc, v); prm != nil && prm["in"] == "path" {
					name, _ := prm["name"].(string)
					out[name] = true
					if prm["required"] != true {
						t.Errorf("%s: path parameter %q must be required", p, name)
					}
				}
			}
			return out
		}
		common := pathParams(item["parameters"])
		for _, method := range methods {
			v, ok := item[method]
			if !ok {
				continue
			}
			where := strings.ToUpper(method) + " " + p
			op := asMap(t, v, where)
			id, _ := op["operationId"].(string)
			if id == "" {
				t.Errorf("%s: no operationId", where)
			} else if prev, dup := ids[id]; dup {
				t.Errorf("%s: operationId %q already used by %s", where, id, prev)
			}
			ids[id] = where
			declared := pathParams(op["parameters"])
			for k := range common {
				declared[k] = true
			}
			for name := range inPath {
				if !declared[name] {
					t.Errorf("%s: path parameter {%s} is not declared", where, name)
				}
			}
			for name := range declared {
				if !inPath[name] {
					t.Errorf("%s: declares path parameter %q that is not in the path", where, name)
				}
			}
			resp := asMap(t, op["responses"], where+" responses")
			if len(resp) == 0 {
				t.Errorf("%s: no responses", where)
			}
			for code := range resp {
				n, err := strconv.Atoi(code)
				if code != "default" && (err != nil || http.StatusText(n) == "") {
					t.Errorf("%s: response %q is not an HTTP status", where, code)
				}
			}
		}
	}
}
