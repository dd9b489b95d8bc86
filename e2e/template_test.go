package e2e

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/declaw/declaw/internal/testenv"
)

// tarEntry is one file of a test image layer.
type tarEntry struct {
	name     string
	typ      byte
	body     []byte
	mode     int64
	uid      int
	link     string
	fromHost string // body from this host file
}

func mustLayer(t *testing.T, b []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func layerTar(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		body := e.body
		if e.fromHost != "" {
			b, err := os.ReadFile(e.fromHost)
			if err != nil {
				t.Fatal(err)
			}
			body = b
		}
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.uid, Linkname: e.link, ModTime: time.Unix(1700000000, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(body)
		}
	}
	tw.Close()
	return buf.Bytes()
}

// testImage builds a two-layer image from files of the base template: a
// static bash as /bin/bash and /bin/sh, users, and files the second layer
// deletes (whiteout), hides (opaque directory), links and re-owns.
func testImage(t *testing.T) v1.Image {
	t.Helper()
	base := filepath.Join(templatesDir(), "base", "rootfs")
	l1 := layerTar(t, []tarEntry{
		{name: "bin/", typ: tar.TypeDir}, {name: "etc/", typ: tar.TypeDir}, {name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		{name: "root/", typ: tar.TypeDir, mode: 0o700}, {name: "opt/", typ: tar.TypeDir},
		{name: "bin/bash", fromHost: filepath.Join(base, "bin/bash-static"), mode: 0o755},
		{name: "bin/sh", typ: tar.TypeSymlink, link: "bash"},
		{name: "etc/passwd", fromHost: filepath.Join(base, "etc/passwd")},
		{name: "etc/group", fromHost: filepath.Join(base, "etc/group")},
		{name: "opt/gone/", typ: tar.TypeDir}, {name: "opt/gone/file", body: []byte("deleted in layer 2\n")},
		{name: "opt/opq/", typ: tar.TypeDir}, {name: "opt/opq/old", body: []byte("hidden by the opaque dir\n")},
		{name: "opt/keep", body: []byte("kept\n")},
	})
	l2 := layerTar(t, []tarEntry{
		{name: "opt/gone/.wh.file", body: nil},
		{name: "opt/opq/", typ: tar.TypeDir},
		{name: "opt/opq/.wh..wh..opq"},
		{name: "opt/opq/new", body: []byte("new content\n"), mode: 0o4755, uid: 1000},
		{name: "opt/link", typ: tar.TypeSymlink, link: "/opt/opq/new"},
		{name: "opt/hard", typ: tar.TypeLink, link: "opt/opq/new"},
	})
	img := empty.Image
	for _, b := range [][]byte{l1, l2} {
		b := b
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Env = []string{"PATH=/bin", "IMAGE_VAR=from-image"}
	cf.Config.WorkingDir = "/opt"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

type buildStatus struct {
	BuildID    string   `json:"build_id"`
	Status     string   `json:"status"`
	TemplateID string   `json:"template_id"`
	Alias      string   `json:"alias"`
	Reason     string   `json:"reason"`
	Step       string   `json:"step"`
	Logs       []string `json:"logs"`
	NextOffset int      `json:"next_offset"`
}

// multipartBuild is a build request with a context tar.
func multipartBuild(t *testing.T, req map[string]any, files map[string]string) (io.Reader, string) {
	t.Helper()
	var entries []tarEntry
	for n, c := range files {
		if strings.HasPrefix(c, "->") {
			entries = append(entries, tarEntry{name: n, typ: tar.TypeSymlink, link: strings.TrimPrefix(c, "->")})
			continue
		}
		entries = append(entries, tarEntry{name: n, body: []byte(c)})
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	j, _ := json.Marshal(req)
	pw, _ := mw.CreateFormField("request")
	pw.Write(j)
	fw, _ := mw.CreateFormFile("context", "context.tar")
	fw.Write(layerTar(t, entries))
	mw.Close()
	return &buf, mw.FormDataContentType()
}

func (s *server) build(req map[string]any, files map[string]string) (int, buildStatus, []byte) {
	s.t.Helper()
	var code int
	var b []byte
	if files != nil {
		body, ct := multipartBuild(s.t.(*testing.T), req, files)
		code, b = s.do("POST", "/templates/build", body, "Content-Type", ct)
	} else {
		code, b = s.do("POST", "/templates/build", req)
	}
	var st buildStatus
	json.Unmarshal(b, &st)
	return code, st, b
}

func TestTemplates(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := os.Stat(filepath.Join(templatesDir(), "base", "rootfs", "bin", "bash-static")); err != nil {
		testenv.Unavailable(t, "the base template is not built: %v", err)
	}
	reg := testenv.ServiceIP.String()
	// The registry answers on every uplink address; on OtherIP it wants
	// credentials, which the server finds in the docker config file.
	private := testenv.OtherIP.String()
	dockerConfig := t.TempDir()
	t.Setenv("DOCKER_CONFIG", dockerConfig)
	basic := func(u, p string) string { return base64.StdEncoding.EncodeToString([]byte(u + ":" + p)) }
	os.WriteFile(filepath.Join(dockerConfig, "config.json"), []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q},%q:{"auth":%q}}}`,
		private, basic("e2e", "right"), private+":80", basic("e2e", "wrong"))), 0o600)
	s := startServer(t, "--insecure-registry", reg+","+private+","+private+":80")
	regHandler := registry.New()
	s.net.HandleHTTP("/v2/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if host, _, _ := strings.Cut(r.Host, ":"); host == private {
			if u, p, ok := r.BasicAuth(); !ok || u != "e2e" || p != "right" {
				w.Header().Set("WWW-Authenticate", `Basic realm="e2e"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"credentials required"}]}`, http.StatusUnauthorized)
				return
			}
		}
		regHandler.ServeHTTP(w, r)
	}))
	tag := "e2e" + randHex(4)
	ref, err := name.ParseReference(reg+"/declaw/"+tag+":v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, testImage(t), remote.WithTransport(&http.Transport{DialContext: s.net.DialContext})); err != nil {
		t.Fatalf("push the test image: %v", err)
	}
	suffix := randHex(3)
	alias := func(n string) string {
		a := "e2e-" + n + "-" + suffix
		t.Cleanup(func() { s.do("DELETE", "/templates/"+a+"?force=true", nil) })
		return a
	}

	t.Run("ImageSpec", func(t *testing.T) {
		a := alias("img")
		code, st, b := s.build(map[string]any{"alias": a, "force": true, "template": map[string]any{
			"base_image": ref.String(),
			"run_cmds":   []string{`[[ -e /opt/gone/file || -e /opt/opq/old ]] && exit 3; echo "built by $(id -u 2>/dev/null || echo root) $IMAGE_VAR $SPEC_VAR" > /opt/built`},
			"envs":       map[string]string{"SPEC_VAR": "from-spec"},
		}}, nil)
		if code != 200 || st.Status != "completed" {
			t.Fatalf("build: %d %s", code, b)
		}
		if !strings.HasPrefix(st.TemplateID, "tpl-") || st.Alias != a {
			t.Errorf("build answer: template_id %q alias %q", st.TemplateID, st.Alias)
		}
		var got map[string]any
		s.must(200, "GET", "/templates/"+st.TemplateID, nil, &got)
		if got["alias"] != a {
			t.Errorf("GET /templates/%s: %v", st.TemplateID, got)
		}
		id := s.create(map[string]any{"template": st.TemplateID})
		r := s.run(id, `echo "$(</opt/built)|$(</opt/keep)|$(</opt/opq/new)|$IMAGE_VAR|$SPEC_VAR"; [[ -e /opt/gone/file ]] && echo GONE-PRESENT; [[ -e /opt/opq/old ]] && echo OPQ-PRESENT; [[ /opt/hard -ef /opt/opq/new ]] && echo HARDLINK; echo done`)
		want := "built by root from-image from-spec|kept|new content|from-image|from-spec\nHARDLINK\ndone\n"
		if r.Stdout != want {
			t.Errorf("in a sandbox of the image template: stdout %q, want %q (stderr %q)", r.Stdout, want, r.Stderr)
		}
		var fi map[string]any
		s.must(200, "GET", "/sandboxes/"+id+"/files/info?path=/opt/opq/new", nil, &fi)
		if fi["owner"] != "user" || !strings.Contains(fmt.Sprint(fi["permissions"]), "s") {
			t.Errorf("/opt/opq/new: owner %v permissions %v, want user and setuid", fi["owner"], fi["permissions"])
		}
		s.must(200, "GET", "/sandboxes/"+id+"/files/info?path=/opt/link", nil, &fi)
		if fi["symlink_target"] != "/opt/opq/new" && fi["type"] != "symlink" {
			t.Errorf("/opt/link: %v", fi)
		}
		// In use: 409, then forced.
		code, b = s.do("DELETE", "/templates/"+a, nil)
		if code != 409 || !strings.Contains(string(b), "template_in_use") {
			t.Errorf("DELETE a template in use: %d %s, want 409 template_in_use", code, b)
		}
	})

	t.Run("DockerfileTwoStages", func(t *testing.T) {
		a := alias("df")
		df := fmt.Sprintf(`ARG IMG=%s
FROM base AS builder
RUN mkdir -p /out && echo "compiled on $(. /etc/os-release; echo $ID)" > /out/artifact
FROM ${IMG}
ENV GREETING=hello
COPY --from=builder /out/artifact /app/artifact
COPY hello.txt data/ /app/
WORKDIR /app
USER root
CMD ["/bin/bash", "-c", "echo start"]
`, ref.String())
		req := map[string]any{"alias": a, "force": true, "template": map[string]any{"dockerfile": df}}
		files := map[string]string{"hello.txt": "hello from the context\n", "data/one": "one\n"}
		code, st, b := s.build(req, files)
		if code == 200 && strings.Contains(strings.Join(st.Logs, "\n"), "---> cached") {
			t.Errorf("a forced build used the cache:\n%s", strings.Join(st.Logs, "\n"))
		}
		if code != 200 || st.Status != "completed" {
			t.Fatalf("build: %d %s", code, b)
		}
		id := s.create(map[string]any{"template": a})
		r := s.run(id, `echo "$(</app/artifact)|$(</app/hello.txt)|$(</app/one)|$GREETING|$PWD"`, "cwd", "/app")
		if want := "compiled on debian|hello from the context|one|hello|/app\n"; r.Stdout != want {
			t.Errorf("sandbox of the two-stage build: %q, want %q (stderr %q)", r.Stdout, want, r.Stderr)
		}
		// A rebuild reuses every step.
		s.must(200, "DELETE", "/sandboxes/"+id, nil, nil)
		delete(req, "force")
		code, st, b = s.build(req, files)
		if code != 200 || st.Status != "completed" {
			t.Fatalf("rebuild: %d %s", code, b)
		}
		cached := 0
		for _, l := range st.Logs {
			if strings.Contains(l, "---> cached") {
				cached++
			}
		}
		if cached < 4 {
			t.Errorf("rebuild: %d cached steps, want every file step (4) cached; logs:\n%s", cached, strings.Join(st.Logs, "\n"))
		}
	})

	t.Run("StartCommand", func(t *testing.T) {
		a := alias("svc")
		server := `exec perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalPort=>8080,Listen=>5,ReuseAddr=>1) or die; while($c=$s->accept){<$c>; print $c "HTTP/1.0 200 OK\r\n\r\nserved by the start command\n"; close $c}'`
		code, st, b := s.build(map[string]any{"alias": a, "template": map[string]any{
			"base_image": "base", "start_cmd": server, "ready_check": map[string]any{"port": 8080, "timeout": 30},
		}}, nil)
		if code != 200 || st.Status != "completed" {
			t.Fatalf("build: %d %s", code, b)
		}
		id := s.create(map[string]any{"template": a})
		r := s.run(id, "curl -sS --max-time 5 http://127.0.0.1:8080/")
		if r.Stdout != "served by the start command\n" {
			t.Errorf("right after create: %q (stderr %q)", r.Stdout, r.Stderr)
		}
		// The same from a Dockerfile: CMD starts it, HEALTHCHECK is the ready check.
		dfa := alias("svcdf")
		df := "FROM base\nCMD " + strings.ReplaceAll(server, "8080", "8081") + "\nHEALTHCHECK --interval=1s --retries=30 CMD curl -fs http://127.0.0.1:8081/\n"
		code, st, b = s.build(map[string]any{"alias": dfa, "template": map[string]any{"dockerfile": df}}, nil)
		if code != 200 || st.Status != "completed" {
			t.Fatalf("build from a Dockerfile: %d %s", code, b)
		}
		id = s.create(map[string]any{"template": dfa})
		if r := s.run(id, "curl -sS --max-time 5 http://127.0.0.1:8081/"); r.Stdout != "served by the start command\n" {
			t.Errorf("Dockerfile CMD + HEALTHCHECK, right after create: %q (stderr %q)", r.Stdout, r.Stderr)
		}
		// A start command that never gets ready fails the create with its output.
		b2 := alias("svcbad")
		code, st, b = s.build(map[string]any{"alias": b2, "template": map[string]any{
			"base_image": "base", "start_cmd": "echo about to fail; sleep 1000", "ready_check": map[string]any{"cmd": "false", "timeout": 2},
		}}, nil)
		if code != 200 || st.Status != "completed" {
			t.Fatalf("build: %d %s", code, b)
		}
		code, b = s.do("POST", "/sandboxes", map[string]any{"template": b2})
		if code != 409 || !strings.Contains(string(b), "about to fail") {
			t.Errorf("create with a start command never ready: %d %s, want 409 with its output", code, b)
		}
	})

	t.Run("CLI", func(t *testing.T) {
		a := alias("cli")
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM "+ref.String()+"\nCOPY app.txt /srv/\nRUN echo \"ran in the build\" > /srv/ran\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "app.txt"), []byte("from the cli context\n"), 0o644)
		r := s.cli("", "template", "build", "--alias", a, "--force", dir)
		if r.code != 0 || !strings.Contains(r.stderr, "Step 3/3 : RUN") || !strings.Contains(r.stderr, "build completed") {
			t.Fatalf("declaw template build: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
		}
		out := s.mustCLI("", "template", "list", "--json")
		if !strings.Contains(out, `"alias":"`+a+`"`) {
			t.Errorf("template list --json does not show %s: %s", a, out)
		}
		if out := s.mustCLI("", "template", "info", a); !strings.Contains(out, "template_id") {
			t.Errorf("template info: %s", out)
		}
		id := s.create(map[string]any{"template": a})
		if r := s.run(id, `echo "$(</srv/app.txt)$(</srv/ran)"`); r.Stdout != "from the cli contextran in the build\n" {
			t.Errorf("sandbox of the CLI-built template: %q %q", r.Stdout, r.Stderr)
		}
		if r := s.cli("", "template", "delete", a); r.code == 0 || !strings.Contains(r.stderr, "template_in_use") {
			t.Errorf("delete in use: exit %d %s", r.code, r.stderr)
		}
		s.mustCLI("", "template", "delete", "--force", a)
		if code, _ := s.do("GET", "/templates/"+a, nil); code != 404 {
			t.Errorf("after a forced delete: GET answers %d", code)
		}
		if code, b := s.do("GET", "/sandboxes/"+id, nil); code != 200 || !strings.Contains(string(b), `"killed"`) {
			t.Errorf("the sandbox of a force-deleted template: %d %s, want killed", code, b)
		}
	})

	t.Run("ShellLess", func(t *testing.T) {
		// An image with no shell and no libc: the sandbox boots (envd is
		// static) and serves files.
		img, err := mutate.AppendLayers(empty.Image, mustLayer(t, layerTar(t, []tarEntry{
			{name: "etc/", typ: tar.TypeDir}, {name: "etc/passwd", body: []byte("root:x:0:0:root:/:/nonexistent\n")},
			{name: "data/", typ: tar.TypeDir}, {name: "data/hello", body: []byte("no shell here\n")},
		})))
		if err != nil {
			t.Fatal(err)
		}
		ref2, _ := name.ParseReference(reg+"/declaw/"+tag+"-noshell:v1", name.Insecure)
		if err := remote.Write(ref2, img, remote.WithTransport(&http.Transport{DialContext: s.net.DialContext})); err != nil {
			t.Fatal(err)
		}
		a := alias("noshell")
		code, st, b := s.build(map[string]any{"alias": a, "template": map[string]any{"base_image": ref2.String()}}, nil)
		if code != 200 || st.Status != "completed" {
			t.Fatalf("build: %d %s", code, b)
		}
		id := s.create(map[string]any{"template": a})
		if code, b := s.do("GET", "/sandboxes/"+id+"/files?path=/data/hello", nil); code != 200 || string(b) != "no shell here\n" {
			t.Errorf("read a file in a shell-less sandbox: %d %q", code, b)
		}
	})

	t.Run("PythonSDK", func(t *testing.T) {
		a := alias("sdk")
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "motd.txt"), []byte("copied by the sdk\n"), 0o644)
		script := fmt.Sprintf(`
import sys
from declaw import Sandbox, Template
tpl = (Template().from_base_image(%q).copy("motd.txt", "/etc/motd.d/hello", mode=0o640)
       .run_cmd(["echo", "built", ">", "/opt/sdk"]).set_envs({"SDK_VAR": "yes"})
       .set_start_cmd("exec /bin/bash -c 'echo started > /tmp/started; while :; do read -t 1000 x; done'",
                      ready_check={"cmd": "[[ -e /tmp/started ]]", "timeout": 20}))
lines = []
info = Template.build(tpl, alias=%q, context_dir=%q, on_build_logs=lines.append, force=True)
assert info.status == "completed", info
assert any("Step" in l for l in lines), lines
with Sandbox.create(template=%q) as sbx:
    r = sbx.commands.run('echo "$(</etc/motd.d/hello)|$(</opt/sdk)|$SDK_VAR|$(</tmp/started)"')
    print(r.stdout, end="")
try:
    Template.build(Template().from_base_image(%q).run_cmd("echo failing-step-output; exit 4"), alias=%q)
except Exception as e:
    print(type(e).__name__, getattr(e, "step", None))
`, ref.String(), a, dir, a, ref.String(), a+"x")
		t.Cleanup(func() { s.do("DELETE", "/templates/"+a+"x?force=true", nil) })
		out, err := s.pythonCmd(t.Context(), script).CombinedOutput()
		want := "copied by the sdk|built|yes|started\nBuildException RUN echo failing-step-output; exit 4\n"
		if err != nil || string(out) != want {
			t.Errorf("python SDK: %v\n%s\nwant:\n%s", err, out, want)
		}
	})

	t.Run("PackageIndexes", func(t *testing.T) {
		// apt_packages and pip install in RUN against indexes this test
		// serves in the test network (it has no internet).
		serveTestIndexes(t, s.net)
		host := testenv.ServiceIP.String()
		aptBase := alias("aptbase")
		code, st, b := s.build(map[string]any{"alias": aptBase, "template": map[string]any{"base_image": "base", "run_cmds": []string{
			"rm -f /etc/apt/sources.list.d/* && echo 'deb [trusted=yes] http://" + host + "/apt ./' > /etc/apt/sources.list"}}}, nil)
		if code != 200 || st.Status != "completed" {
			t.Fatalf("build the apt base: %d %s", code, b)
		}
		a := alias("apt")
		code, st, b = s.build(map[string]any{"alias": a, "force": true, "template": map[string]any{
			"base_image": aptBase, "apt_packages": []string{"declaw-e2e-hello"}}}, nil)
		if code != 200 || st.Status != "completed" {
			t.Fatalf("build with apt_packages: %d %s", code, b)
		}
		id := s.create(map[string]any{"template": a})
		if r := s.run(id, "declaw-e2e-hello"); r.Stdout != "hello from the local apt repository\n" {
			t.Errorf("the apt-installed command: %q %q", r.Stdout, r.Stderr)
		}
		p := alias("pip")
		df := "FROM python\nRUN pip install --no-cache-dir --index-url http://" + host + "/simple/ --trusted-host " + host + " hello-e2e\n"
		code, st, b = s.build(map[string]any{"alias": p, "force": true, "template": map[string]any{"dockerfile": df}}, nil)
		if code != 200 || st.Status != "completed" {
			t.Fatalf("build with pip install: %d %s", code, b)
		}
		id = s.create(map[string]any{"template": p})
		if r := s.run(id, "cd / && python3 -c 'import hello_e2e; print(hello_e2e.X)'"); r.Stdout != "42\n" {
			t.Errorf("the pip-installed module: %q %q", r.Stdout, r.Stderr)
		}
	})

	t.Run("PipInPython", func(t *testing.T) {
		// PEP 668 does not stop pip in the built-in python template. The
		// test network has no package index: a wheel made in the sandbox.
		id := s.create(map[string]any{"template": "python"})
		r := s.run(id, `python3 - <<'EOF'
import zipfile
z = zipfile.ZipFile('/tmp/hello_e2e-1.0-py3-none-any.whl', 'w')
z.writestr('hello_e2e/__init__.py', 'X = 42\n')
z.writestr('hello_e2e-1.0.dist-info/METADATA', 'Metadata-Version: 2.1\nName: hello-e2e\nVersion: 1.0\n')
z.writestr('hello_e2e-1.0.dist-info/WHEEL', 'Wheel-Version: 1.0\nGenerator: e2e\nRoot-Is-Purelib: true\nTag: py3-none-any\n')
z.writestr('hello_e2e-1.0.dist-info/RECORD', '')
z.close()
EOF
pip install --no-index /tmp/hello_e2e-1.0-py3-none-any.whl >/dev/null && cd / && python3 -c 'import hello_e2e; print(hello_e2e.X)'`, "timeout", 120)
		if r.Stdout != "42\n" {
			t.Errorf("pip install in the python template: exit %d, stdout %q, stderr %q", r.ExitCode, r.Stdout, r.Stderr)
		}
	})

	t.Run("PrivateRegistry", func(t *testing.T) {
		// The same image through the host that wants credentials: the right
		// ones (docker config) pull it, wrong ones fail the build.
		a := alias("private")
		code, st, b := s.build(map[string]any{"alias": a, "template": map[string]any{"base_image": private + "/declaw/" + tag + ":v1"}}, nil)
		if code != 200 || st.Status != "completed" {
			t.Errorf("build from the private registry with credentials: %d %s", code, b)
		}
		code, st, b = s.build(map[string]any{"alias": alias("wrongcreds"), "template": map[string]any{"base_image": private + ":80/declaw/" + tag + ":v1"}}, nil)
		if code != 200 || st.Status != "failed" || !strings.Contains(st.Reason, "access denied") {
			t.Errorf("build with wrong credentials: %d %s, want failed: access denied", code, b)
		}
	})

	t.Run("Teams", func(t *testing.T) {
		// A template of the default team (the server's startup key) is
		// invisible and unusable for another team's key, like an unknown one.
		a := alias("own")
		code, st, b := s.build(map[string]any{"alias": a, "template": map[string]any{"base_image": "base", "run_cmds": []string{"echo own > /opt/own"}}}, nil)
		if code != 200 || st.Status != "completed" {
			t.Fatalf("build: %d %s", code, b)
		}
		team := strings.TrimSpace(s.mustCLI("", "teams", "create", "tpl-other-"+suffix))
		r := s.cli("", "--json", "keys", "create", "--team", team, "--name", "other")
		var k struct {
			Key string `json:"key"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &k) != nil || k.Key == "" {
			t.Fatalf("keys create: exit %d %q %q", r.code, r.stdout, r.stderr)
		}
		other := []string{"X-API-Key", k.Key}
		code, b = s.do("GET", "/templates", nil, other...)
		if code != 200 || strings.Contains(string(b), a) || strings.Contains(string(b), st.TemplateID) || !strings.Contains(string(b), `"alias":"base"`) {
			t.Errorf("GET /templates as another team: %d %s, want base listed and not %s", code, b, a)
		}
		for _, c := range []struct {
			method, path string
			body         any
			code         string
		}{
			{"GET", "/templates/" + a, nil, "template_not_found"},
			{"GET", "/templates/" + st.TemplateID, nil, "template_not_found"},
			{"DELETE", "/templates/" + a + "?force=true", nil, "template_not_found"},
			{"POST", "/sandboxes", map[string]any{"template": a}, "template_not_found"},
			{"POST", "/sandboxes", map[string]any{"template_id": st.TemplateID}, "template_not_found"},
			{"GET", "/templates/builds/" + st.BuildID, nil, "build_not_found"},
			{"GET", "/templates/builds/" + st.BuildID + "/logs?follow=true", nil, "build_not_found"},
			{"DELETE", "/templates/builds/" + st.BuildID, nil, "build_not_found"},
			{"POST", "/templates/build", map[string]any{"alias": a, "template": map[string]any{"base_image": "base"}}, "alias_taken"},
		} {
			code, b := s.do(c.method, c.path, c.body, other...)
			if !strings.Contains(string(b), `"code":"`+c.code+`"`) || strings.Contains(string(b), "echo own") {
				t.Errorf("%s %s as another team: %d %s, want %s", c.method, c.path, code, b, c.code)
			}
		}
		// The owner still has it, and another team still uses the built-ins.
		s.must(200, "GET", "/templates/"+a, nil, nil)
		id := s.create(map[string]any{"template": a})
		if r := s.run(id, "cat /opt/own"); r.Stdout != "own\n" {
			t.Errorf("the owner's sandbox of %s: %q", a, r.Stdout)
		}
		code, b = s.do("POST", "/sandboxes", map[string]any{"template": "base", "timeout": 60}, other...)
		if code != 201 {
			t.Errorf("another team creates from base: %d %s", code, b)
		} else {
			var sb struct {
				SandboxID string `json:"sandbox_id"`
			}
			json.Unmarshal(b, &sb)
			s.do("DELETE", "/sandboxes/"+sb.SandboxID, nil, other...)
		}
	})

	t.Run("Faults", func(t *testing.T) {
		// Bad Dockerfiles: 400 naming the line.
		for _, c := range []struct{ df, want string }{
			{"FROM base\nRUN true\nFROBNICATE x\n", "line 3"},
			{"RUN true\n", "line"},
			{"FROM base\nONBUILD RUN true\n", "line 2"},
			{"FROM base\nCOPY ../secret /x\n", "line 2"},
		} {
			code, _, b := s.build(map[string]any{"alias": alias("bad"), "template": map[string]any{"dockerfile": c.df}}, nil)
			if code != 400 || !strings.Contains(string(b), c.want) {
				t.Errorf("Dockerfile %q: %d %s, want 400 mentioning %q", c.df, code, b, c.want)
			}
		}
		code, _, b := s.build(map[string]any{"alias": alias("big"), "template": map[string]any{"dockerfile": "FROM base\n#" + strings.Repeat("x", 70<<10)}}, nil)
		if code != 413 {
			t.Errorf("70 KiB Dockerfile: %d %s, want 413", code, b)
		}
		// Build failures: status failed with a reason, no template.
		for _, c := range []struct {
			name  string
			tmpl  map[string]any
			files map[string]string
			want  string
		}{
			{"missing", map[string]any{"base_image": reg + "/declaw/nope:v1"}, nil, "not found"},
			{"unreachable", map[string]any{"base_image": testenv.OtherIP.String() + ":5999/x/y:z"}, nil, "cannot reach"},
			{"runfails", map[string]any{"base_image": "base", "run_cmds": []string{"echo step output here; exit 7"}}, nil, "exit code 7"},
			{"escape", map[string]any{"dockerfile": "FROM base\nCOPY link /x\n"}, map[string]string{"link": "->/etc/shadow"}, "outside the build context"},
		} {
			a := alias(c.name)
			code, st, b := s.build(map[string]any{"alias": a, "template": c.tmpl}, c.files)
			if code != 200 || st.Status != "failed" || !strings.Contains(st.Reason, c.want) {
				t.Errorf("%s: %d %s, want failed with %q", c.name, code, b, c.want)
				continue
			}
			if c.name == "runfails" && (!strings.Contains(st.Step, "exit 7") || !strings.Contains(st.Reason, "step output here")) {
				t.Errorf("runfails: step %q reason %q: want the step and its output", st.Step, st.Reason)
			}
			if code, _ := s.do("GET", "/templates/"+a, nil); code != 404 {
				t.Errorf("%s: the failed template answers %d, want 404", c.name, code)
			}
			if code, b := s.do("POST", "/sandboxes", map[string]any{"template": a}); code != 404 {
				t.Errorf("%s: create from the failed template: %d %s, want 404", c.name, code, b)
			}
		}
		// A step that writes more than disk_mb fails the build.
		a0 := alias("disk")
		code, st, b := s.build(map[string]any{"alias": a0, "disk_mb": 1, "template": map[string]any{
			"base_image": "base", "run_cmds": []string{"head -c 3000000 /dev/zero > /big"}}}, nil)
		if code != 200 || st.Status != "failed" || !strings.Contains(st.Reason, "disk_mb") {
			t.Errorf("a step over disk_mb: %d %s", code, b)
		}
		// Two builds of one alias: the second is refused while the first runs.
		a := alias("twice")
		spec := map[string]any{"alias": a, "background": true, "template": map[string]any{"base_image": "base", "run_cmds": []string{"sleep 3"}}}
		code, st1, b := s.build(spec, nil)
		if code != 202 || st1.Status != "building" {
			t.Fatalf("background build: %d %s", code, b)
		}
		code, _, b = s.build(spec, nil)
		if code != 409 {
			t.Errorf("second build of %s while one runs: %d %s, want 409", a, code, b)
		}
		// Logs stream while it runs, and it can be canceled.
		var cancelled buildStatus
		s.must(200, "DELETE", "/templates/builds/"+st1.BuildID, nil, &cancelled)
		if cancelled.Status != "failed" || cancelled.Reason != "canceled" {
			t.Errorf("canceled build: %+v", cancelled)
		}
		var got buildStatus
		s.must(200, "GET", "/templates/builds/"+st1.BuildID+"?offset=1", nil, &got)
		if got.Status != "failed" || len(got.Logs) == 0 || got.NextOffset < 2 {
			t.Errorf("GET build after cancel: %+v", got)
		}
	})

	t.Run("ServerCrashMidBuild", func(t *testing.T) {
		a := alias("crash")
		code, st, b := s.build(map[string]any{"alias": a, "background": true, "force": true, "template": map[string]any{
			"base_image": "base", "run_cmds": []string{"echo step-started; sleep 600"}}}, nil)
		if code != 202 {
			t.Fatalf("background build: %d %s", code, b)
		}
		testenv.WaitFor(t, 60*time.Second, func() error {
			var got buildStatus
			s.must(200, "GET", "/templates/builds/"+st.BuildID, nil, &got)
			if !strings.Contains(strings.Join(got.Logs, "\n"), "step-started") {
				return fmt.Errorf("the RUN step has not started: %v", got.Logs)
			}
			return nil
		})
		s.crash()
		s.start("--insecure-registry", reg)
		var got buildStatus
		s.must(200, "GET", "/templates/builds/"+st.BuildID, nil, &got)
		if got.Status != "failed" || !strings.Contains(got.Reason, "server stopped") {
			t.Errorf("a build interrupted by a crash, after the restart: %+v", got)
		}
		if code, _ := s.do("GET", "/templates/"+a, nil); code != 404 {
			t.Errorf("the interrupted build's template answers %d, want 404", code)
		}
		if _, err := os.Stat(filepath.Join(templatesDir(), ".builds", st.BuildID)); err == nil {
			t.Errorf("the interrupted build's work dir is still there")
		}
		if procs := sandboxProcs(s.stateDir); len(procs) > 0 {
			t.Errorf("runsc processes left after the restart: %v", procs)
		}
	})

	t.Run("NoLeftovers", func(t *testing.T) {
		mi, _ := os.ReadFile("/proc/self/mountinfo")
		if strings.Contains(string(mi), filepath.Join(templatesDir(), ".builds")) {
			t.Errorf("mounts left under .builds:\n%s", mi)
		}
		ents, _ := os.ReadDir(filepath.Join(templatesDir(), ".builds"))
		for _, e := range ents {
			if e.IsDir() {
				if st, err := os.ReadFile(filepath.Join(templatesDir(), ".builds", e.Name()+".json")); err == nil && strings.Contains(string(st), `"building"`) {
					continue // another server's build in progress
				}
				t.Errorf("build work dir left: %s", e.Name())
			}
		}
	})
}

// serveTestIndexes serves, on the test network's HTTP service, a flat apt
// repository with one package (declaw-e2e-hello, built with dpkg-deb) and
// a PEP 503 simple index with one wheel (hello-e2e).
func serveTestIndexes(t *testing.T, n *testenv.Net) {
	t.Helper()
	dir := t.TempDir()
	pkg := filepath.Join(dir, "pkg")
	os.MkdirAll(filepath.Join(pkg, "DEBIAN"), 0o755)
	os.MkdirAll(filepath.Join(pkg, "usr/bin"), 0o755)
	os.WriteFile(filepath.Join(pkg, "DEBIAN/control"), []byte("Package: declaw-e2e-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: e2e <e2e@example.test>\nDescription: e2e test package\n"), 0o644)
	os.WriteFile(filepath.Join(pkg, "usr/bin/declaw-e2e-hello"), []byte("#!/bin/sh\necho hello from the local apt repository\n"), 0o755)
	debPath := filepath.Join(dir, "hello.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", pkg, debPath).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v: %s", err, out)
	}
	deb, err := os.ReadFile(debPath)
	if err != nil {
		t.Fatal(err)
	}
	control, _ := os.ReadFile(filepath.Join(pkg, "DEBIAN/control"))
	packages := fmt.Sprintf("%sFilename: ./declaw-e2e-hello_1.0_all.deb\nSize: %d\nSHA256: %x\n\n", control, len(deb), sha256.Sum256(deb))
	release := fmt.Sprintf("Origin: e2e\nLabel: e2e\nSuite: e2e\nCodename: e2e\nDate: %s\nArchitectures: all amd64\nSHA256:\n %x %d Packages\n",
		time.Now().UTC().Format(time.RFC1123), sha256.Sum256([]byte(packages)), len(packages))

	var whl bytes.Buffer
	zw := zip.NewWriter(&whl)
	for name, body := range map[string]string{
		"hello_e2e/__init__.py":            "X = 42\n",
		"hello_e2e-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: hello-e2e\nVersion: 1.0\n",
		"hello_e2e-1.0.dist-info/WHEEL":    "Wheel-Version: 1.0\nGenerator: e2e\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
		"hello_e2e-1.0.dist-info/RECORD":   "",
	} {
		w, _ := zw.Create(name)
		io.WriteString(w, body)
	}
	zw.Close()
	wheel := whl.Bytes()
	files := map[string][]byte{
		"/apt/Release": []byte(release), "/apt/Packages": []byte(packages), "/apt/declaw-e2e-hello_1.0_all.deb": deb,
		"/simple/hello-e2e/":                     []byte(fmt.Sprintf(`<html><body><a href="/wheels/hello_e2e-1.0-py3-none-any.whl#sha256=%x">hello_e2e-1.0-py3-none-any.whl</a></body></html>`, sha256.Sum256(wheel))),
		"/wheels/hello_e2e-1.0-py3-none-any.whl": wheel,
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := strings.Replace(r.URL.Path, "/apt/./", "/apt/", 1)
		b, ok := files[p]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	})
	for _, prefix := range []string{"/apt/", "/simple/", "/wheels/"} {
		n.HandleHTTP(prefix, h)
	}
}
