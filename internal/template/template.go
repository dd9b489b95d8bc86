// Package template builds and caches sandbox root filesystems.
//
// A template is a Debian root directory built with mmdebstrap (minbase plus
// packages and commands) and stored under the state directory:
//
//	<StateDir>/templates/<name>/rootfs         the root filesystem (read-only to runtimes)
//	<StateDir>/templates/<name>/template.json  metadata (also at rootfs/etc/declaw/template.json)
//	<StateDir>/templates/<name>/build.log      mmdebstrap's output
//
// A build goes to a temporary directory beside it and is renamed into
// place, so a template directory is either complete or absent. Every
// template has the "user" account (uid 1000, /home/user, bash), envd at
// /usr/local/bin/envd (when Config.EnvdPath is set), an /etc/hosts and an
// empty /etc/resolv.conf placeholder for the runtime to bind over.
package template

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotFound is returned (wrapped) by Get for a known template that is not built.
var ErrNotFound = errors.New("template not built")

// ErrUnknownTemplate is returned (wrapped) for a name that is neither built nor built-in.
var ErrUnknownTemplate = errors.New("unknown template")

// Config configures a Manager. The zero value builds into /var/lib/declaw.
type Config struct {
	StateDir   string // default "/var/lib/declaw"
	EnvdPath   string // envd binary to install at /usr/local/bin/envd; "" = none
	Suite      string // Debian suite, default "bookworm"
	Mirror     string // apt mirror URL; "" = mmdebstrap's default
	Mmdebstrap string // mmdebstrap binary, default "mmdebstrap"
	Logf       func(format string, args ...any)
}

// Template is a built template.
type Template struct {
	Name       string    `json:"name"`
	RootFS     string    `json:"rootfs"`
	BuiltAt    time.Time `json:"built_at"`
	BuildTime  string    `json:"build_time"` // duration of the build
	SizeBytes  int64     `json:"size_bytes"`
	Suite      string    `json:"suite"`
	Spec       Spec      `json:"spec"`     // as requested (Base not folded in)
	Packages   []string  `json:"packages"` // installed, "name=version", sorted
	EnvdSHA256 string    `json:"envd_sha256,omitempty"`
	// Recipe is the build recipe version the template was built with (0:
	// before versions were recorded). See Recipe.
	Recipe int `json:"recipe"`

	// Custom templates (built by template/build) only.
	ID      string   `json:"template_id,omitempty"` // "tpl-..."; built-ins have none (their name is their id)
	Custom  *Custom  `json:"custom,omitempty"`
	Runtime *Runtime `json:"runtime,omitempty"`
}

// Recipe is the version of what a build puts into every template besides
// the spec's packages and commands (envd mount points, the user account,
// the locale archive, the statx fix, bash-static). It goes up whenever
// that changes; a built-in template built by an older recipe is rebuilt on
// its next use (Ensure) and by "declaw template build --if-needed".
const Recipe = 3

// Current reports whether t was built by this recipe.
func (t Template) Current() bool { return t.Recipe >= Recipe }

// Manager builds, caches and lists templates. It is safe for concurrent use;
// concurrent builds of the same name share one build.
type Manager struct {
	cfg Config
	dir string // <StateDir>/templates

	mu     sync.Mutex
	builds map[string]*build // in flight, by name
}

type build struct {
	done chan struct{}
	err  error
}

// New returns a Manager for cfg.
func New(cfg Config) (*Manager, error) {
	if cfg.StateDir == "" {
		cfg.StateDir = "/var/lib/declaw"
	}
	if cfg.Suite == "" {
		cfg.Suite = "bookworm"
	}
	if cfg.Mmdebstrap == "" {
		cfg.Mmdebstrap = "mmdebstrap"
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	dir, err := filepath.Abs(filepath.Join(cfg.StateDir, "templates"))
	if err != nil {
		return nil, fmt.Errorf("template: state dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("template: create state dir: %w", err)
	}
	return &Manager{cfg: cfg, dir: dir, builds: map[string]*build{}}, nil
}

func (m *Manager) tmplDir(name string) string { return filepath.Join(m.dir, name) }

// Get returns the built template called name: ErrNotFound if it is built-in
// but not built, ErrUnknownTemplate if it is neither.
func (m *Manager) Get(name string) (Template, error) {
	if !nameRE.MatchString(name) {
		return Template{}, fmt.Errorf("template %q: %w", name, ErrUnknownTemplate)
	}
	b, err := os.ReadFile(filepath.Join(m.tmplDir(name), "template.json"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, ok := builtins[name]; ok {
				return Template{}, fmt.Errorf("template %s: %w", name, ErrNotFound)
			}
			return Template{}, fmt.Errorf("template %s: %w", name, ErrUnknownTemplate)
		}
		return Template{}, fmt.Errorf("template %s: %w", name, err)
	}
	var t Template
	if err := json.Unmarshal(b, &t); err != nil {
		return Template{}, fmt.Errorf("template %s: parse metadata: %w", name, err)
	}
	t.RootFS = filepath.Join(m.tmplDir(name), "rootfs") // wherever the state dir now is
	return t, nil
}

// List returns the built templates, sorted by name.
func (m *Manager) List() ([]Template, error) {
	ents, err := os.ReadDir(m.dir)
	if err != nil {
		return nil, fmt.Errorf("template: list: %w", err)
	}
	var out []Template
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		t, err := m.Get(e.Name())
		if err != nil {
			continue // not a complete template
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Delete removes a built template. Deleting one that is not built is not an error.
// Sandboxes still running on it lose their root; the caller checks first.
func (m *Manager) Delete(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("template %q: %w", name, ErrUnknownTemplate)
	}
	m.mu.Lock()
	_, building := m.builds[name]
	m.mu.Unlock()
	if building {
		return fmt.Errorf("template %s: delete: %w", name, ErrBuilding)
	}
	if err := m.removeAside(m.tmplDir(name)); err != nil {
		return fmt.Errorf("template %s: delete: %w", name, err)
	}
	return nil
}

// removeAside renames dir out of the way, then removes it.
func (m *Manager) removeAside(dir string) error {
	old := filepath.Join(m.dir, ".old-"+filepath.Base(dir)+"-"+randHex())
	if err := os.Rename(dir, old); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return os.RemoveAll(old)
}

// Ensure returns the template called name, building it first if it is a
// built-in that is not built yet or was built by an older Recipe.
func (m *Manager) Ensure(ctx context.Context, name string) (Template, error) {
	t, err := m.Get(name)
	switch {
	case err == nil && t.Current():
		return t, nil
	case err == nil && builtins[name].Name == "":
		return t, nil // a custom template: rebuilt only on request
	case err == nil:
		m.cfg.Logf("template: %s was built by an older recipe (%d, now %d); rebuilding it now (about a minute)", name, t.Recipe, Recipe)
	case errors.Is(err, ErrNotFound):
		m.cfg.Logf("template: %s is not built yet; building it now (about a minute, once per machine)", name)
	default:
		return t, err
	}
	if err := m.buildShared(ctx, builtins[name], nil, true); err != nil {
		return Template{}, err
	}
	return m.Get(name)
}

// Build (re)builds the template called name: a built-in, or a custom one
// built before (from its recorded spec). log receives mmdebstrap's output (may be nil).
func (m *Manager) Build(ctx context.Context, name string, log io.Writer) error {
	spec, ok := builtins[name]
	if !ok {
		t, err := m.Get(name)
		if err != nil {
			return err
		}
		spec = t.Spec
	}
	return m.BuildSpec(ctx, spec, log)
}

// BuildSpec builds a template from spec, replacing a built one of the same
// name. Concurrent builds of one name share the first one's result.
func (m *Manager) BuildSpec(ctx context.Context, spec Spec, log io.Writer) error {
	return m.buildShared(ctx, spec, log, false)
}

// buildShared builds spec unless a build of the same name is in flight in
// this process (then it shares that one's result) or, with ifMissing, the
// template exists once the cross-process build lock is held.
func (m *Manager) buildShared(ctx context.Context, spec Spec, log io.Writer, ifMissing bool) error {
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("template: %w", err)
	}
	m.mu.Lock()
	if b, ok := m.builds[spec.Name]; ok {
		m.mu.Unlock()
		select {
		case <-b.done:
			return b.err
		case <-ctx.Done():
			return fmt.Errorf("template %s: waiting for build: %w", spec.Name, ctx.Err())
		}
	}
	b := &build{done: make(chan struct{})}
	m.builds[spec.Name] = b
	m.mu.Unlock()

	b.err = m.lockedBuild(ctx, spec, log, ifMissing)
	m.mu.Lock()
	delete(m.builds, spec.Name)
	m.mu.Unlock()
	close(b.done)
	return b.err
}

// lockedBuild builds under a per-name file lock, so that several
// processes sharing a state dir (servers, CLI, tests) build a name once.
func (m *Manager) lockedBuild(ctx context.Context, spec Spec, log io.Writer, ifMissing bool) error {
	f, err := os.OpenFile(filepath.Join(m.dir, ".lock-"+spec.Name), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("template %s: lock: %w", spec.Name, err)
	}
	defer f.Close() // releases the lock
	for logged := false; ; {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("template %s: lock: %w", spec.Name, err)
		}
		if !logged {
			m.cfg.Logf("template: %s is being built by another process; waiting", spec.Name)
			logged = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("template %s: waiting for another build: %w", spec.Name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	if ifMissing {
		if t, err := m.Get(spec.Name); err == nil && t.Current() {
			return nil
		}
	}
	return m.build(ctx, spec, log)
}

func (m *Manager) build(ctx context.Context, spec Spec, log io.Writer) (err error) {
	t0 := time.Now()
	var envdSum string
	if m.cfg.EnvdPath != "" {
		if envdSum, err = fileSHA256(m.cfg.EnvdPath); err != nil {
			return fmt.Errorf("template %s: envd: %w", spec.Name, err)
		}
	}
	tmp := filepath.Join(m.dir, ".build-"+spec.Name+"-"+randHex())
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return fmt.Errorf("template %s: %w", spec.Name, err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	logFile, err := os.Create(filepath.Join(tmp, "build.log"))
	if err != nil {
		return fmt.Errorf("template %s: %w", spec.Name, err)
	}
	defer logFile.Close()
	var out io.Writer = logFile
	if log != nil {
		out = io.MultiWriter(logFile, log)
	}

	rootfs := filepath.Join(tmp, "rootfs")
	r := spec.resolved()
	args := mmdebstrapArgs(r, m.cfg.Suite, rootfs, m.cfg.Mirror)
	m.cfg.Logf("template: building %s: %s %s", spec.Name, m.cfg.Mmdebstrap, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, m.cfg.Mmdebstrap, args...)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("template %s: mmdebstrap: %w: %s", spec.Name, err, tailFile(filepath.Join(tmp, "build.log")))
	}

	t := Template{
		Name:       spec.Name,
		BuiltAt:    time.Now().UTC(),
		Suite:      m.cfg.Suite,
		Spec:       spec,
		EnvdSHA256: envdSum,
		Recipe:     Recipe,
	}
	if err := finishRootFS(rootfs, m.cfg.EnvdPath); err != nil {
		return fmt.Errorf("template %s: %w", spec.Name, err)
	}
	if err := installStatxFix(ctx, rootfs, out); err != nil {
		return fmt.Errorf("template %s: %w", spec.Name, err)
	}
	if t.Packages, err = installedPackages(filepath.Join(rootfs, "var/lib/dpkg/status")); err != nil {
		return fmt.Errorf("template %s: %w", spec.Name, err)
	}
	t.BuildTime = time.Since(t0).Round(time.Millisecond).String()
	// The copy inside the rootfs is written first so its size is counted.
	if err := writeJSON(filepath.Join(rootfs, MetadataPath), t); err != nil {
		return fmt.Errorf("template %s: %w", spec.Name, err)
	}
	if t.SizeBytes, err = dirSize(rootfs); err != nil {
		return fmt.Errorf("template %s: size: %w", spec.Name, err)
	}
	if err := writeJSON(filepath.Join(tmp, "template.json"), t); err != nil {
		return fmt.Errorf("template %s: %w", spec.Name, err)
	}
	if err := m.removeAside(m.tmplDir(spec.Name)); err != nil {
		return fmt.Errorf("template %s: replace old build: %w", spec.Name, err)
	}
	if err := os.Rename(tmp, m.tmplDir(spec.Name)); err != nil {
		return fmt.Errorf("template %s: %w", spec.Name, err)
	}
	m.cfg.Logf("template: built %s in %v (%d MB)", spec.Name, time.Since(t0).Round(time.Second), t.SizeBytes>>20)
	return nil
}

// Mount points every template provides, so that runtimes can bind files
// over them without creating anything in the (shared, read-only) template.
const (
	EnvdPath       = "/usr/local/bin/envd" // envd binary (a placeholder if none was installed)
	ResolvConfPath = "/etc/resolv.conf"    // empty placeholder
	HostsPath      = "/etc/hosts"
	CADir          = "/etc/declaw/ca" // empty directory for the sandbox's CA certificate
	MetadataPath   = "/etc/declaw/template.json"
)

// finishRootFS installs envd, the mount points and the files every sandbox expects.
func finishRootFS(rootfs, envdPath string) error {
	if err := os.MkdirAll(filepath.Join(rootfs, CADir), 0o755); err != nil {
		return err
	}
	envd := filepath.Join(rootfs, EnvdPath)
	if envdPath != "" {
		if err := copyFile(envdPath, envd, 0o755); err != nil {
			return fmt.Errorf("install envd: %w", err)
		}
	} else if err := copyFile(os.DevNull, envd, 0o755); err != nil {
		return fmt.Errorf("envd placeholder: %w", err)
	}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	files := map[string]string{HostsPath: hosts, ResolvConfPath: ""}
	for name, content := range files {
		p := filepath.Join(rootfs, name)
		_ = os.Remove(p) // may be a symlink
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// installedPackages parses a dpkg status file into sorted "name=version" entries.
func installedPackages(statusPath string) ([]string, error) {
	f, err := os.Open(statusPath)
	if err != nil {
		return nil, fmt.Errorf("read dpkg status: %w", err)
	}
	defer f.Close()
	return parseDpkgStatus(f)
}

func parseDpkgStatus(r io.Reader) ([]string, error) {
	var pkgs []string
	var name, version, status string
	flush := func() {
		if name != "" && strings.HasSuffix(status, " installed") {
			pkgs = append(pkgs, name+"="+version)
		}
		name, version, status = "", "", ""
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, "Package: "):
			name = strings.TrimPrefix(line, "Package: ")
		case strings.HasPrefix(line, "Version: "):
			version = strings.TrimPrefix(line, "Version: ")
		case strings.HasPrefix(line, "Status: "):
			status = strings.TrimPrefix(line, "Status: ")
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse dpkg status: %w", err)
	}
	sort.Strings(pkgs)
	return pkgs, nil
}

func dirSize(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func tailFile(path string) string {
	b, _ := os.ReadFile(path)
	const max = 1500
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(bytes.TrimSpace(b))
}

func randHex() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
