package template

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/declaw/declaw/internal/testenv"
)

func TestMmdebstrapArgs(t *testing.T) {
	spec := Spec{
		Name:        "custom",
		Base:        "base",
		AptPackages: []string{"python3", "jq"},
		RunCmds:     []string{"echo 'hi' > /greeting"},
		Envs:        map[string]string{"FOO": "b a'r"},
	}.resolved()
	got := mmdebstrapArgs(spec, "bookworm", "/t/rootfs", "http://mirror.example/debian")

	if n := len(got); got[n-3] != "bookworm" || got[n-2] != "/t/rootfs" || got[n-1] != "http://mirror.example/debian" {
		t.Errorf("mmdebstrapArgs tail = %q, want suite, target, mirror", got[n-3:])
	}
	for _, want := range []string{"--variant=minbase", "--mode=root", "--customize-hook=" + userHook, "--customize-hook=" + localeHook} {
		if !slices.Contains(got, want) {
			t.Errorf("mmdebstrapArgs missing %q in %q", want, got)
		}
	}
	var include string
	for _, a := range got {
		if s, ok := strings.CutPrefix(a, "--include="); ok {
			include = s
		}
	}
	pkgs := strings.Split(include, ",")
	if !slices.Contains(pkgs, "bash") || !slices.Contains(pkgs, "python3") {
		t.Errorf("--include=%s: want base packages and python3", include)
	}
	if c := strings.Count(include, "jq"); c != 1 {
		t.Errorf("--include=%s: jq %d times, want once (dedup)", include, c)
	}
	// The run command is the last hook, quoted so sh sees it as one word.
	var hooks []string
	for _, a := range got {
		if s, ok := strings.CutPrefix(a, "--customize-hook="); ok {
			hooks = append(hooks, s)
		}
	}
	if len(hooks) != 3 {
		t.Fatalf("hooks = %q, want user hook, locale hook, 1 run command", hooks)
	}
	wantHook := `chroot "$1" /usr/bin/env -i 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'HOME=/root' 'DEBIAN_FRONTEND=noninteractive' 'FOO=b a'\''r' /bin/sh -c 'echo '\''hi'\'' > /greeting'`
	if hooks[2] != wantHook {
		t.Errorf("run hook =\n%s\nwant\n%s", hooks[2], wantHook)
	}
	// The shell must parse the hook back into the original words.
	if _, err := exec.LookPath("sh"); err == nil {
		out, err := exec.Command("sh", "-c", "set -- x "+shellQuote("echo 'hi' > /greeting")+`; for a in "$@"; do printf '%s\n' "$a"; done`, "sh").Output()
		if err != nil || string(out) != "x\necho 'hi' > /greeting\n" {
			t.Errorf("shellQuote round trip = %q, %v", out, err)
		}
	}

	noMirror := mmdebstrapArgs(Spec{Name: "x"}, "bookworm", "/t", "")
	if noMirror[len(noMirror)-1] != "/t" {
		t.Errorf("without mirror, last arg = %q, want target", noMirror[len(noMirror)-1])
	}
	if slices.ContainsFunc(noMirror, func(a string) bool { return strings.HasPrefix(a, "--include=") }) {
		t.Errorf("no packages: unexpected --include in %q", noMirror)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		ok   bool
	}{
		{"builtin", builtins["python"], true},
		{"bad name", Spec{Name: "../etc"}, false},
		{"upper name", Spec{Name: "Base"}, false},
		{"unknown base", Spec{Name: "x", Base: "nope"}, false},
		{"package with comma", Spec{Name: "x", AptPackages: []string{"a,b"}}, false},
		{"package option", Spec{Name: "x", AptPackages: []string{"--foo"}}, false},
		{"package version", Spec{Name: "x", AptPackages: []string{"curl=7.88.1-10+deb12u5"}}, true},
		{"bad env", Spec{Name: "x", Envs: map[string]string{"A B": "1"}}, false},
		{"ok custom", Spec{Name: "my-tmpl", Base: "base", RunCmds: []string{"true"}, Envs: map[string]string{"A": "1"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Validate()
			if (err == nil) != tt.ok {
				t.Errorf("Validate(%+v) = %v, want ok=%v", tt.spec, err, tt.ok)
			}
		})
	}
	if err := (Spec{Name: "x", Base: "nope"}).Validate(); !errors.Is(err, ErrUnknownTemplate) {
		t.Errorf("unknown base: err = %v, want ErrUnknownTemplate", err)
	}
}

func TestParseDpkgStatus(t *testing.T) {
	in := `Package: bash
Status: install ok installed
Version: 5.2.15-2+b2
Description: shell
 continued

Package: removed
Status: deinstall ok config-files
Version: 1.0

Package: coreutils
Status: install ok installed
Version: 9.1-1
`
	got, err := parseDpkgStatus(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"bash=5.2.15-2+b2", "coreutils=9.1-1"}
	if !slices.Equal(got, want) {
		t.Errorf("parseDpkgStatus = %q, want %q", got, want)
	}
}

func TestGetSentinelsAndList(t *testing.T) {
	m, err := New(Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get("base"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(base) unbuilt = %v, want ErrNotFound", err)
	}
	if _, err := m.Get("nope"); !errors.Is(err, ErrUnknownTemplate) {
		t.Errorf("Get(nope) = %v, want ErrUnknownTemplate", err)
	}
	if _, err := m.Get("../x"); !errors.Is(err, ErrUnknownTemplate) {
		t.Errorf("Get(../x) = %v, want ErrUnknownTemplate", err)
	}

	// A hand-made template directory is listed and read back.
	dir := filepath.Join(m.dir, "mine")
	if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(filepath.Join(dir, "template.json"), Template{Name: "mine", Packages: []string{"a=1"}, Spec: Spec{Name: "mine"}}); err != nil {
		t.Fatal(err)
	}
	// Incomplete build directories are not templates.
	if err := os.MkdirAll(filepath.Join(m.dir, ".build-x-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	list, err := m.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "mine" || list[0].RootFS != filepath.Join(dir, "rootfs") {
		t.Errorf("List = %+v, want one template 'mine' with its rootfs", list)
	}
	if err := m.Delete("mine"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := m.Get("mine"); !errors.Is(err, ErrUnknownTemplate) {
		t.Errorf("Get after Delete = %v, want ErrUnknownTemplate", err)
	}
	if err := m.Delete("mine"); err != nil {
		t.Errorf("second Delete = %v, want nil", err)
	}
	if ents, _ := os.ReadDir(m.dir); len(ents) != 1 { // only .build-x-1
		t.Errorf("state dir after Delete has %d entries, want 1", len(ents))
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t) // mmdebstrap --mode=root
	testenv.RequireTools(t, "mmdebstrap")
}

// TestBuildCustom builds a real template with mmdebstrap (about 30-60 s):
// a base-derived custom template with a run command and env.
func TestBuildCustom(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("slow: builds a Debian root filesystem")
	}
	state := t.TempDir()
	envd := filepath.Join(t.TempDir(), "envd")
	if err := os.WriteFile(envd, []byte("#!/bin/sh\necho fake-envd-for-test\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var logs []string
	m, err := New(Config{StateDir: state, EnvdPath: envd, Logf: func(f string, a ...any) { logs = append(logs, f) }})
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{
		Name:     "custom-test",
		Base:     "base",
		RunCmds:  []string{`echo "$GREETING" > /etc/greeting`, `chown user:user /etc/greeting`},
		Envs:     map[string]string{"GREETING": "hello 'quoted' world"},
		StartCmd: "sleep infinity",
	}
	var buildLog strings.Builder
	if err := m.BuildSpec(t.Context(), spec, &buildLog); err != nil {
		t.Fatalf("BuildSpec: %v", err)
	}
	tm, err := m.Get("custom-test")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	root := tm.RootFS
	for _, p := range []string{"home/user", "usr/bin/bash", "usr/bin/curl", "usr/bin/git", "usr/bin/jq", "usr/local/bin/envd", "etc/declaw/template.json",
		"usr/lib/locale/locale-archive", strings.TrimPrefix(StatxFixPath, "/"), "etc/ld.so.preload"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("template lacks /%s: %v", p, err)
		}
	}
	passwd := mustRead(t, filepath.Join(root, "etc/passwd"))
	if !strings.Contains(string(passwd), "user:x:1000:1000::/home/user:/bin/bash") {
		t.Errorf("/etc/passwd lacks the user account:\n%s", passwd)
	}
	if fi, err := os.Stat(filepath.Join(root, "home/user")); err != nil || fi.Sys() == nil {
		t.Errorf("stat /home/user: %v", err)
	}
	greeting := mustRead(t, filepath.Join(root, "etc/greeting"))
	if string(greeting) != "hello 'quoted' world\n" {
		t.Errorf("run command output /etc/greeting = %q", greeting)
	}
	if rc, err := os.ReadFile(filepath.Join(root, "etc/resolv.conf")); err != nil || len(rc) != 0 {
		t.Errorf("/etc/resolv.conf = %q, %v; want empty placeholder", rc, err)
	}
	envdSum, _ := fileSHA256(envd)
	if tm.EnvdSHA256 != envdSum || tm.SizeBytes < 50<<20 || tm.BuiltAt.IsZero() || tm.Spec.StartCmd != "sleep infinity" {
		t.Errorf("metadata = envd %s size %d built %v start %q", tm.EnvdSHA256, tm.SizeBytes, tm.BuiltAt, tm.Spec.StartCmd)
	}
	if !slices.ContainsFunc(tm.Packages, func(p string) bool { return strings.HasPrefix(p, "curl=") }) {
		t.Errorf("metadata packages lack curl: %q", tm.Packages)
	}
	if buildLog.Len() == 0 {
		t.Errorf("build log writer got nothing")
	}
}

// fakeMmdebstrap writes a stand-in for mmdebstrap that records each call
// in calls and makes a minimal root (dpkg status, /etc) at its last argument.
func fakeMmdebstrap(t *testing.T, calls string, fail bool) string {
	t.Helper()
	script := `#!/bin/sh
echo "$@" >> ` + shellQuote(calls) + `
for a; do target="$a"; done
sleep 0.3
` + map[bool]string{true: "echo 'E: simulated failure' >&2; exit 1\n", false: ""}[fail] + `mkdir -p "$target/var/lib/dpkg" "$target/etc" "$target/usr/bin"
printf 'Package: bash\nStatus: install ok installed\nVersion: 5.2\n' > "$target/var/lib/dpkg/status"
ln -s ../run/resolv.conf "$target/etc/resolv.conf"
echo I: done
`
	p := filepath.Join(t.TempDir(), "mmdebstrap")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuildPipeline(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	state := t.TempDir()
	calls := filepath.Join(t.TempDir(), "calls")
	envd := filepath.Join(t.TempDir(), "envd")
	if err := os.WriteFile(envd, []byte("envd-binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{StateDir: state, EnvdPath: envd, Mmdebstrap: fakeMmdebstrap(t, calls, false), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	// Concurrent Ensure calls of one name share one build.
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := m.Ensure(t.Context(), "python")
			errs <- err
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("Ensure: %v", err)
		}
	}
	b := mustRead(t, calls)
	if n := strings.Count(string(b), "\n"); n != 1 {
		t.Errorf("mmdebstrap ran %d times for 3 concurrent Ensure calls, want 1", n)
	}
	tm, err := m.Get("python")
	if err != nil {
		t.Fatal(err)
	}
	root := tm.RootFS
	if got := mustRead(t, filepath.Join(root, "usr/local/bin/envd")); string(got) != "envd-binary" {
		t.Errorf("installed envd = %q", got)
	}
	if fi, err := os.Lstat(filepath.Join(root, "etc/resolv.conf")); err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 {
		t.Errorf("/etc/resolv.conf: %v %v; want an empty regular file replacing the symlink", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(root, CADir)); err != nil || !fi.IsDir() {
		t.Errorf("CA mount point %s: %v", CADir, err)
	}
	if hosts := mustRead(t, filepath.Join(root, "etc/hosts")); !strings.Contains(string(hosts), "localhost") {
		t.Errorf("/etc/hosts = %q", hosts)
	}
	var inner Template
	innerJSON := mustRead(t, filepath.Join(root, "etc/declaw/template.json"))
	if err := json.Unmarshal(innerJSON, &inner); err != nil || inner.Name != "python" {
		t.Errorf("rootfs /etc/declaw/template.json = %q, %v", innerJSON, err)
	}
	if !slices.Equal(tm.Packages, []string{"bash=5.2"}) || tm.EnvdSHA256 == "" || tm.SizeBytes == 0 || tm.Spec.Name != "python" {
		t.Errorf("metadata = %+v", tm)
	}
	if !strings.Contains(string(b), "python3") || !strings.Contains(string(b), "curl") {
		t.Errorf("mmdebstrap args %q lack the python and base packages", b)
	}
	// Ensure on a built template does not rebuild.
	if _, err := m.Ensure(t.Context(), "python"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Ensure(t.Context(), "nope"); !errors.Is(err, ErrUnknownTemplate) {
		t.Errorf("Ensure(nope) = %v, want ErrUnknownTemplate", err)
	}
	if b2 := mustRead(t, calls); string(b2) != string(b) {
		t.Errorf("Ensure of a built template ran mmdebstrap again")
	}
	// The statx fix is compiled into the rootfs and preloaded.
	if pre := mustRead(t, filepath.Join(root, "etc/ld.so.preload")); string(pre) != StatxFixPath+"\n" {
		t.Errorf("/etc/ld.so.preload = %q, want %s", pre, StatxFixPath)
	}
	if fi, err := os.Stat(filepath.Join(root, StatxFixPath)); err != nil || fi.Size() == 0 {
		t.Errorf("statx fix library: %v", err)
	}
	if tm.Recipe != Recipe || !tm.Current() {
		t.Errorf("recipe = %d, want %d", tm.Recipe, Recipe)
	}
	// A built-in template built by an older recipe is rebuilt by Ensure.
	old := tm
	old.Recipe = Recipe - 1
	if err := writeJSON(filepath.Join(state, "templates", "python", "template.json"), old); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Ensure(t.Context(), "python"); err != nil || !got.Current() || !got.BuiltAt.After(tm.BuiltAt) {
		t.Errorf("Ensure of an outdated template = %+v, %v; want a new build", got, err)
	}
	if b2 := mustRead(t, calls); strings.Count(string(b2), "\n") != 2 {
		t.Errorf("mmdebstrap ran %d times after Ensure of an outdated template, want 2", strings.Count(string(b2), "\n"))
	}

	// A failing build leaves the old template and no temp dirs.
	bad, err := New(Config{StateDir: state, Mmdebstrap: fakeMmdebstrap(t, calls, true)})
	if err != nil {
		t.Fatal(err)
	}
	err = bad.Build(t.Context(), "python", nil)
	if err == nil || !strings.Contains(err.Error(), "simulated failure") {
		t.Errorf("failing build: err = %v, want mmdebstrap's message", err)
	}
	if _, err := m.Get("python"); err != nil {
		t.Errorf("old template gone after a failed rebuild: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(state, "templates"))
	for _, e := range ents {
		if e.Name() != "python" && !strings.HasPrefix(e.Name(), ".lock-") {
			t.Errorf("templates dir holds %s after a failed build", e.Name())
		}
	}

	// A custom template is rebuilt by name from its recorded spec.
	custom := Spec{Name: "mine", Base: "base", AptPackages: []string{"htop"}, StartCmd: "sleep 1"}
	if err := m.BuildSpec(t.Context(), custom, nil); err != nil {
		t.Fatalf("BuildSpec(mine): %v", err)
	}
	first, _ := m.Get("mine")
	if err := m.Build(t.Context(), "mine", nil); err != nil {
		t.Fatalf("Build(mine) by name: %v", err)
	}
	second, err := m.Get("mine")
	if err != nil || !second.BuiltAt.After(first.BuiltAt) || second.Spec.StartCmd != "sleep 1" {
		t.Errorf("rebuilt mine = %+v, %v; want a newer build of the same spec", second, err)
	}
	if calls := mustRead(t, calls); strings.Count(string(calls), "htop") != 2 {
		t.Errorf("mmdebstrap calls with htop: %d, want 2", strings.Count(string(calls), "htop"))
	}
	if err := m.Build(t.Context(), "never-built", nil); !errors.Is(err, ErrUnknownTemplate) {
		t.Errorf("Build(never-built) = %v, want ErrUnknownTemplate", err)
	}

	// Another Manager (another process) over the same state dir waits for
	// the lock, then finds the template built and does not build again.
	other, err := New(Config{StateDir: state, Mmdebstrap: fakeMmdebstrap(t, calls, false)})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Delete("python"); err != nil {
		t.Fatal(err)
	}
	before := mustRead(t, calls)
	for range 2 {
		go func() {
			_, err := other.Ensure(t.Context(), "python")
			errs <- err
		}()
		go func() {
			_, err := m.Ensure(t.Context(), "python")
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("Ensure: %v", err)
		}
	}
	after := mustRead(t, calls)
	if n := strings.Count(string(after[len(before):]), "\n"); n != 1 {
		t.Errorf("two managers ran mmdebstrap %d times for one missing template, want 1", n)
	}
	tm, err = other.Get("python")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(tm.RootFS, EnvdPath)); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("envd mount point: %v %v; want a placeholder file", fi, err)
	}
}

// mustRead returns the file's contents and fails t when it cannot be read,
// so a missing file is never mistaken for an empty one.
func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}
