package template

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// ErrInUse is returned (wrapped) when a template cannot be deleted or
// replaced because running sandboxes use it.
var ErrInUse = errors.New("template in use")

// ErrBuilding is returned (wrapped) when a build of the same name is in progress.
var ErrBuilding = errors.New("a build of this template is in progress")

// ReadyCheck says when the start command of a template's sandboxes is
// ready: a command exiting 0, a TCP port accepting, or a URL answering
// (status below 500). Exactly one of Cmd, Port, URL is set.
type ReadyCheck struct {
	Cmd     string `json:"cmd,omitempty"`
	Port    int    `json:"port,omitempty"`
	URL     string `json:"url,omitempty"`
	Timeout int    `json:"timeout,omitempty"` // seconds; 0 = DefaultReadyTimeout
}

// DefaultReadyTimeout bounds the wait for a ready check when it names none.
const DefaultReadyTimeout = 60 * time.Second

// Runtime is what the sandboxes of a custom template start with.
type Runtime struct {
	Envs     map[string]string `json:"envs,omitempty"`
	Workdir  string            `json:"workdir,omitempty"`
	User     string            `json:"user,omitempty"`
	StartCmd string            `json:"start_cmd,omitempty"`
	Ready    *ReadyCheck       `json:"ready_check,omitempty"`
	Ports    []string          `json:"ports,omitempty"`
}

// Custom describes how a custom template was built.
type Custom struct {
	BuildID  string `json:"build_id"`
	Source   string `json:"source"` // "dockerfile" or "spec"
	Base     string `json:"base"`   // what the final stage started from
	CPUCount int    `json:"cpu_count,omitempty"`
	MemoryMB int    `json:"memory_mb,omitempty"`
	DiskMB   int    `json:"disk_mb,omitempty"`
	// Key is the build cache key of the whole template: a rebuild that
	// comes to the same key keeps the template as it is.
	Key string `json:"key,omitempty"`
	// TeamID is the team whose API key started the build: only that team
	// sees and uses the template ("" = store.DefaultTeam, templates built
	// before teams).
	TeamID string `json:"team_id,omitempty"`
}

// ValidName reports whether name can name a template (and its directory).
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Resolve returns the template called idOrAlias: a name (alias), or the
// template_id of a custom template.
func (m *Manager) Resolve(idOrAlias string) (Template, error) {
	t, err := m.Get(idOrAlias)
	if err == nil || !errors.Is(err, ErrUnknownTemplate) {
		return t, err
	}
	ts, lerr := m.List()
	if lerr != nil {
		return Template{}, lerr
	}
	for _, c := range ts {
		if c.ID != "" && c.ID == idOrAlias {
			return c, nil
		}
	}
	return Template{}, err
}

// Building reports whether a build of name is in progress in this process.
func (m *Manager) Building(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.builds[name]
	return ok
}

// Reserve marks name as being built by the caller until release is
// called: built-in builds, Delete and other Reserves of the same name
// fail with ErrBuilding meanwhile.
func (m *Manager) Reserve(name string) (release func(), err error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("template name %q: want [a-z0-9._-], at most 63 characters", name)
	}
	if _, ok := builtins[name]; ok {
		return nil, fmt.Errorf("template %s: %w (a built-in template)", name, ErrBuilding)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.builds[name]; ok {
		return nil, fmt.Errorf("template %s: %w", name, ErrBuilding)
	}
	b := &build{done: make(chan struct{})}
	m.builds[name] = b
	return func() {
		m.mu.Lock()
		delete(m.builds, name)
		m.mu.Unlock()
		close(b.done)
	}, nil
}

// TmpDir returns a new empty directory beside the templates (same file
// system), for a build to assemble a template in before Install.
func (m *Manager) TmpDir(name string) (string, error) {
	tmp := filepath.Join(m.dir, ".build-"+name+"-"+randHex())
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return "", fmt.Errorf("template %s: %w", name, err)
	}
	return tmp, nil
}

// Install makes the directory tmp (from TmpDir, holding rootfs/) the
// template t.Name, replacing a built one: it installs envd and the mount
// points every sandbox needs, writes the metadata and renames tmp into
// place. The caller holds Reserve(t.Name). On error tmp is removed.
func (m *Manager) Install(tmp string, t Template) (err error) {
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	rootfs := filepath.Join(tmp, "rootfs")
	if st, err := os.Stat(rootfs); err != nil || !st.IsDir() {
		return fmt.Errorf("template %s: install: no rootfs in %s", t.Name, tmp)
	}
	if t.EnvdSHA256 == "" && m.cfg.EnvdPath != "" {
		if t.EnvdSHA256, err = fileSHA256(m.cfg.EnvdPath); err != nil {
			return fmt.Errorf("template %s: envd: %w", t.Name, err)
		}
	}
	// Files written below are replaced, not written in place: the rest of
	// the tree may be hard links shared with the build's layer cache.
	for _, p := range []string{EnvdPath, MetadataPath} {
		if err := os.Remove(filepath.Join(rootfs, p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("template %s: %w", t.Name, err)
		}
	}
	if err := finishRootFS(rootfs, m.cfg.EnvdPath); err != nil {
		return fmt.Errorf("template %s: %w", t.Name, err)
	}
	t.Recipe = Recipe
	if pk, err := installedPackages(filepath.Join(rootfs, "var/lib/dpkg/status")); err == nil {
		t.Packages = pk
	}
	if err := os.MkdirAll(filepath.Join(rootfs, filepath.Dir(MetadataPath)), 0o755); err != nil {
		return fmt.Errorf("template %s: %w", t.Name, err)
	}
	if err := writeJSON(filepath.Join(rootfs, MetadataPath), t); err != nil {
		return fmt.Errorf("template %s: %w", t.Name, err)
	}
	if t.SizeBytes, err = dirSize(rootfs); err != nil {
		return fmt.Errorf("template %s: size: %w", t.Name, err)
	}
	if err := writeJSON(filepath.Join(tmp, "template.json"), t); err != nil {
		return fmt.Errorf("template %s: %w", t.Name, err)
	}
	if err := m.removeAside(m.tmplDir(t.Name)); err != nil {
		return fmt.Errorf("template %s: replace old build: %w", t.Name, err)
	}
	if err := os.Rename(tmp, m.tmplDir(t.Name)); err != nil {
		return fmt.Errorf("template %s: %w", t.Name, err)
	}
	return nil
}

// IsBuiltin reports whether name is a built-in template.
func IsBuiltin(name string) bool { _, ok := builtins[name]; return ok }

// Dir is the directory templates live in (<StateDir>/templates).
func (m *Manager) Dir() string { return m.dir }

// CleanTmp removes leftovers of builds that died: TmpDir directories and
// old builds renamed aside, when no build of their name runs here.
func (m *Manager) CleanTmp() {
	ents, _ := os.ReadDir(m.dir)
	for _, e := range ents {
		n := e.Name()
		if len(n) > 7 && n[:7] == ".build-" || len(n) > 5 && n[:5] == ".old-" {
			fi, err := e.Info()
			if err != nil || time.Since(fi.ModTime()) < 6*time.Hour {
				continue // may belong to a live build of another process
			}
			if err := os.RemoveAll(filepath.Join(m.dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				m.cfg.Logf("template: remove leftover %s: %v", n, err)
			}
		}
	}
}
