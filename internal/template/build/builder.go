// Package build builds custom templates: from a base (a built-in or built
// template, or an OCI image pulled with go-containerregistry) through the
// steps of a structured spec or a Dockerfile (parsed with buildkit's
// parser), into a template root filesystem.
//
// Every step's result is a layer directory, cached under
// <templates>/.layers by a hash chain of (previous step, instruction,
// content of copied files); the image being built is the overlayfs stack
// of its base's layers and its steps' layers. RUN steps run inside a
// sandbox whose writable root is that stack (Runner: a gVisor sandbox
// under the same host-side network policy as any sandbox), never on the
// host; COPY and WORKDIR are file operations on the stack that resolve
// every path inside it. The finished stack is copied into a plain
// directory and installed as a template (template.Manager.Install).
//
// A build's working files live in <templates>/.builds/<build id>/, locked
// by the process running it, so a crashed server's leftovers are found
// and removed (Service.Recover).
package build

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
	"maps"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"

	"github.com/declaw/declaw/internal/template"
	"github.com/declaw/declaw/internal/tenancy"
)

// Runner starts the sandboxes RUN steps execute in.
type Runner interface {
	// StartBuild boots a sandbox whose root filesystem is the writable
	// host directory rootfs (envd needs the mount points MountPoints
	// lists), under the default network policy: internet allowed, the
	// host, other sandboxes and cloud metadata blocked.
	StartBuild(ctx context.Context, rootfs string, res Resources) (Sandbox, error)
}

// Resources bound a build sandbox (zero: the server's defaults).
type Resources struct {
	CPUCount int
	MemoryMB int
}

// Sandbox is a running build sandbox.
type Sandbox interface {
	// Run runs cmd with sh -c (bash if present) and streams its output
	// to out; a non-zero exit code is not an error.
	Run(ctx context.Context, r RunRequest, out io.Writer) (exitCode int, err error)
	// Close destroys the sandbox and frees everything it held.
	Close(ctx context.Context) error
}

// RunRequest is one RUN step.
type RunRequest struct {
	Cmd  string
	User string // "" = root
	Cwd  string // "" = /
	Envs map[string]string
}

// MountPoints are the files and directories a build sandbox's runtime
// binds over: each build adds them in a layer under its steps.
var MountPoints = []struct {
	Path string
	Dir  bool
}{
	{template.EnvdPath, false}, {template.ResolvConfPath, false}, {template.HostsPath, false},
	{"/etc/hostname", false}, {template.CADir, true},
}

// Config configures a Builder.
type Config struct {
	Templates *template.Manager // where templates are installed; its Dir holds .layers and .builds
	Runner    Runner
	// InsecureRegistries are registry hosts ("host[:port]") pulled from over plain HTTP.
	InsecureRegistries []string
	Transport          http.RoundTripper // for registries; nil = default
	Logf               func(format string, args ...any)
}

// Builder runs builds. It is safe for concurrent use.
type Builder struct {
	cfg       Config
	layersDir string
	buildsDir string
}

// NewBuilder returns a Builder, creating its directories.
func NewBuilder(cfg Config) (*Builder, error) {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	// The real path: mounts show up in /proc/self/mountinfo by it, and
	// finding a dead build's mounts compares against that.
	dir, err := filepath.EvalSymlinks(cfg.Templates.Dir())
	if err != nil {
		return nil, fmt.Errorf("template build: %w", err)
	}
	b := &Builder{cfg: cfg, layersDir: filepath.Join(dir, ".layers"), buildsDir: filepath.Join(dir, ".builds")}
	for _, d := range []string{b.layersDir, b.buildsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("template build: %w", err)
		}
	}
	return b, nil
}

// Job is one build to run.
type Job struct {
	ID                         string // build id, names its work directory
	Name                       string // template name (alias)
	TmplID                     string // template_id to record
	Team                       string // owning team to record
	Plan                       *Plan
	Source                     string // "dockerfile" or "spec"
	Context                    string // directory of the unpacked build context ("" = none)
	Force                      bool   // ignore cached steps
	CPUCount, MemoryMB, DiskMB int
	Log                        func(line string) // receives every log line
}

// stageState is a stage being built: its layer stack and what later
// steps and the template's sandboxes see.
type stageState struct {
	name    string
	lowers  []string // top first
	key     string   // cache key of the newest layer
	env     [][2]string
	args    map[string]string
	workdir string
	user    string
	start   string
	entry   string
	ready   *ReadyCheck
	ports   []string
	base    string
}

func (s *stageState) setEnv(k, v string) {
	for i := range s.env {
		if s.env[i][0] == k {
			s.env[i][1] = v
			return
		}
	}
	s.env = append(s.env, [2]string{k, v})
}

func (s *stageState) envMap() map[string]string {
	m := map[string]string{}
	for _, kv := range s.env {
		m[kv[0]] = kv[1]
	}
	return m
}

// Build runs job and installs the template. Errors are *InputError,
// *StepError (show as is) or internal.
func (b *Builder) Build(ctx context.Context, job *Job) (err error) {
	t0 := time.Now()
	work := filepath.Join(b.buildsDir, job.ID)
	if err := os.MkdirAll(work, 0o755); err != nil {
		return fmt.Errorf("build %s: %w", job.ID, err)
	}
	var mounts []string
	defer func() {
		for i := len(mounts) - 1; i >= 0; i-- {
			if uerr := unmount(mounts[i]); uerr != nil {
				b.cfg.Logf("build %s: %v", job.ID, uerr)
			}
		}
		if rerr := os.RemoveAll(work); rerr != nil {
			b.cfg.Logf("build %s: remove work dir: %v", job.ID, rerr)
		}
	}()
	logf := func(format string, args ...any) { job.Log(fmt.Sprintf(format, args...)) }

	prep := filepath.Join(work, "prep")
	if err := makePrepLayer(prep); err != nil {
		return fmt.Errorf("build %s: %w", job.ID, err)
	}
	total := 0
	for _, st := range job.Plan.Stages {
		total += len(st.Steps) + 1
	}
	n := 0
	stages := map[string]*stageState{}
	stageRoots := map[string]string{}
	var last *stageState
	for si, st := range job.Plan.Stages {
		n++
		logf("Step %d/%d : FROM %s%s", n, total, st.Base, asName(st.Name))
		s, err := b.resolveBase(ctx, st, stages, job.Team, logf)
		if err != nil {
			return err
		}
		s.name = st.Name
		s.lowers = append([]string{prep}, s.lowers...)
		s.key = chain(s.key, "prep-v1")
		for _, step := range st.Steps {
			n++
			logf("Step %d/%d : %s", n, total, step.Text)
			if err := b.runStep(ctx, job, s, step, work, stageRoots, &mounts, logf); err != nil {
				var se *StepError
				if errors.As(err, &se) && se.Step == "" {
					se.Step = step.Text
				}
				return err
			}
		}
		if st.Name != "" {
			stages[st.Name] = s
			// Later stages copy from it: mount it read-only once.
			if si < len(job.Plan.Stages)-1 {
				mnt := filepath.Join(work, "stage-"+strconv.Itoa(si))
				if err := os.Mkdir(mnt, 0o755); err != nil {
					return err
				}
				if err := mountOverlay(mnt, s.lowers, "", ""); err != nil {
					return fmt.Errorf("build %s: %w", job.ID, err)
				}
				mounts = append(mounts, mnt)
				stageRoots[st.Name] = mnt
			}
		}
		last = s
	}

	start := last.start
	if last.entry != "" {
		start = strings.TrimSpace(last.entry + " " + last.start)
	}
	rt := &template.Runtime{
		Envs: last.envMap(), Workdir: last.workdir, User: last.user, StartCmd: start, Ready: last.ready, Ports: last.ports,
	}
	rtJSON, _ := json.Marshal(rt)
	finalKey := chain(last.key, "template", string(rtJSON), strconv.Itoa(job.CPUCount), strconv.Itoa(job.MemoryMB), strconv.Itoa(job.DiskMB))
	if !job.Force {
		if old, err := b.cfg.Templates.Get(job.Name); err == nil && old.Custom != nil && old.Custom.Key == finalKey && old.ID == job.TmplID {
			logf("template %s is unchanged ---> cached %s", job.Name, finalKey[:12])
			return nil
		}
	}

	// The template: the last stage's stack, copied into a plain directory.
	final := filepath.Join(work, "final")
	if err := os.Mkdir(final, 0o755); err != nil {
		return err
	}
	if err := mountOverlay(final, last.lowers, "", ""); err != nil {
		return fmt.Errorf("build %s: %w", job.ID, err)
	}
	mounts = append(mounts, final)
	logf("writing template %s", job.Name)
	tmp, err := b.cfg.Templates.TmpDir(job.Name)
	if err != nil {
		return err
	}
	if err := copyTree(final, filepath.Join(tmp, "rootfs"), last.lowers...); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("build %s: %w", job.ID, err)
	}
	if job.DiskMB > 0 {
		if size, err := treeSize(filepath.Join(tmp, "rootfs")); err == nil && size > int64(job.DiskMB)<<20 {
			os.RemoveAll(tmp)
			return &StepError{Msg: fmt.Sprintf("the template is %d MB, more than disk_mb (%d)", size>>20, job.DiskMB)}
		}
	}
	t := template.Template{
		Name: job.Name, ID: job.TmplID, BuiltAt: time.Now().UTC(), BuildTime: time.Since(t0).Round(time.Millisecond).String(),
		Custom:  &template.Custom{BuildID: job.ID, Source: job.Source, Base: last.base, CPUCount: job.CPUCount, MemoryMB: job.MemoryMB, DiskMB: job.DiskMB, Key: finalKey, TeamID: job.Team},
		Runtime: rt,
	}
	if err := b.cfg.Templates.Install(tmp, t); err != nil {
		return err
	}
	logf("built template %s (%s) in %v", job.Name, job.TmplID, time.Since(t0).Round(time.Millisecond))
	return nil
}

func asName(n string) string {
	if n == "" {
		return ""
	}
	return " AS " + n
}

// resolveBase returns the state a stage starts from. Another team's
// custom template is no base of team's builds: its name is then taken as
// an image reference, as an unknown name is.
func (b *Builder) resolveBase(ctx context.Context, st *Stage, stages map[string]*stageState, team string, logf func(string, ...any)) (*stageState, error) {
	if prev, ok := stages[strings.ToLower(st.Base)]; ok {
		s := *prev
		s.lowers = slices.Clone(prev.lowers[1:]) // the prep layer is added again
		s.env = slices.Clone(prev.env)
		s.args = maps.Clone(prev.args)
		s.ports = slices.Clone(prev.ports)
		s.key = prev.key
		s.base = "stage " + st.Base
		return &s, nil
	}
	if template.ValidName(st.Base) {
		t, err := b.cfg.Templates.Get(st.Base)
		if err != nil && template.IsBuiltin(st.Base) {
			logf("building the built-in template %s first", st.Base)
			t, err = b.cfg.Templates.Ensure(ctx, st.Base)
		}
		if owner := TemplateTeam(t); err == nil && owner != "" && owner != tenancy.Owner(team) {
			err = template.ErrUnknownTemplate
		}
		if err == nil {
			s := &stageState{
				lowers: []string{t.RootFS},
				key:    chain("", "template:"+t.Name+"@"+t.BuiltAt.Format(time.RFC3339Nano)),
				env:    [][2]string{{"PATH", defaultPath}},
				base:   "template " + t.Name,
			}
			for _, kv := range sortedEnv(template.BuiltinEnvs(t.Name)) {
				s.setEnv(kv[0], kv[1])
			}
			if rt := t.Runtime; rt != nil {
				s.env = sortedEnv(rt.Envs)
				s.workdir, s.user, s.start, s.ready = rt.Workdir, rt.User, rt.StartCmd, rt.Ready
			}
			logf("base: template %s (built %s)", t.Name, t.BuiltAt.Format(time.RFC3339))
			return s, nil
		}
	}
	img, err := b.pullImage(ctx, st.Base, logf)
	if err != nil {
		var se *StepError
		if errors.As(err, &se) {
			se.Step = "FROM " + st.Base
		}
		return nil, err
	}
	s := &stageState{key: chain("", "image:"+img.Digest), workdir: img.Config.WorkingDir, user: img.Config.User, base: img.Summary}
	for i := len(img.Layers) - 1; i >= 0; i-- {
		s.lowers = append(s.lowers, img.Layers[i])
	}
	if len(s.lowers) == 0 {
		empty := filepath.Join(b.layersDir, "empty")
		if err := os.MkdirAll(empty, 0o755); err != nil {
			return nil, err
		}
		s.lowers = []string{empty}
	}
	for _, kv := range img.Config.Env {
		k, v, _ := strings.Cut(kv, "=")
		s.setEnv(k, v)
	}
	if len(img.Config.Entrypoint) > 0 {
		s.entry = joinArgv(img.Config.Entrypoint)
	}
	if len(img.Config.Cmd) > 0 {
		s.start = joinArgv(img.Config.Cmd)
	}
	logf("base: %s", img.Summary)
	return s, nil
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// runStep applies one step to s.
func (b *Builder) runStep(ctx context.Context, job *Job, s *stageState, step Step, work string, stageRoots map[string]string, mounts *[]string, logf func(string, ...any)) error {
	switch step.Kind {
	case StepEnv:
		for _, kv := range step.Env {
			s.setEnv(kv[0], kv[1])
		}
		s.key = chain(s.key, step.Text)
		return nil
	case StepArg:
		if s.args == nil {
			s.args = map[string]string{}
		}
		for _, kv := range step.Env {
			s.args[kv[0]] = kv[1]
		}
		s.key = chain(s.key, step.Text)
		return nil
	case StepUser:
		s.user = step.Path
		s.key = chain(s.key, step.Text)
		return nil
	case StepExpose:
		s.ports = append(s.ports, step.Ports...)
		return nil
	case StepStart:
		if step.Entrypoint {
			s.entry, s.start = step.Cmd, ""
		} else {
			s.start = step.Cmd
		}
		return nil
	case StepReady:
		s.ready = step.Ready
		return nil
	}

	// Steps that change files: a layer each, cached by the key chain.
	var key string
	switch step.Kind {
	case StepWorkdir:
		p := step.Path
		if !path.IsAbs(p) {
			p = path.Join("/", s.workdir, p)
		}
		s.workdir = path.Clean(p)
		key = chain(s.key, "WORKDIR "+s.workdir)
	case StepRun:
		key = chain(s.key, step.Text, envKey(s.args))
	case StepCopy:
		root, err := b.copyRoot(job, step.Copy, stageRoots)
		if err != nil {
			return err
		}
		h, err := contentHash(root, step.Copy.Srcs)
		if err != nil {
			return err
		}
		key = chain(s.key, step.Text, h)
	default:
		return &InputError{Line: step.Line, Msg: step.Kind + " is not supported"}
	}
	layer := filepath.Join(b.layersDir, "step-"+key[:32])
	if !job.Force {
		if _, err := os.Stat(layer); err == nil {
			logf(" ---> cached %s", key[:12])
			s.lowers = append([]string{layer}, s.lowers...)
			s.key = key
			return nil
		}
	}
	t0 := time.Now()
	upper := filepath.Join(work, "upper-"+randHex())
	wdir := filepath.Join(work, "work-"+randHex())
	mnt := filepath.Join(work, "mnt-"+randHex())
	for _, d := range []string{upper, wdir, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	defer os.RemoveAll(wdir)
	defer os.RemoveAll(upper) // renamed away on success
	if err := mountOverlay(mnt, s.lowers, upper, wdir); err != nil {
		return fmt.Errorf("step %q: %w", step.Text, err)
	}
	err := func() error {
		defer func() {
			if err := unmount(mnt); err != nil {
				b.cfg.Logf("build %s: %v", job.ID, err)
			}
			os.Remove(mnt)
		}()
		switch step.Kind {
		case StepWorkdir:
			if err := mkdirIn(mnt, s.workdir); err != nil {
				return &StepError{Msg: fmt.Sprintf("WORKDIR %s: %v", s.workdir, err)}
			}
			return nil
		case StepCopy:
			root, _ := b.copyRoot(job, step.Copy, stageRoots)
			return copyInto(mnt, root, s.workdir, step.Copy, logf)
		default:
			return b.runInSandbox(ctx, job, s, step, mnt, logf)
		}
	}()
	if err != nil {
		return err
	}
	if job.DiskMB > 0 {
		if size, err := treeSize(upper); err == nil && size > int64(job.DiskMB)<<20 {
			return &StepError{Msg: fmt.Sprintf("step wrote %d MB, more than disk_mb (%d)", size>>20, job.DiskMB)}
		}
	}
	if job.Force {
		// Builds running now may stack the old layer: move it aside (their
		// mounts keep it), it is removed when no build runs (Service.sweep).
		if err := os.Rename(layer, filepath.Join(b.layersDir, ".trash-"+randHex())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("replace cached layer: %w", err)
		}
	}
	if err := os.Rename(upper, layer); err != nil {
		if _, serr := os.Stat(layer); serr != nil {
			return fmt.Errorf("store layer: %w", err)
		}
		// Another build stored the same step meanwhile: use that one.
	}
	s.lowers = append([]string{layer}, s.lowers...)
	s.key = key
	logf(" ---> done in %v (%s)", time.Since(t0).Round(time.Millisecond), key[:12])
	return nil
}

// runInSandbox runs a RUN step in a build sandbox on mnt.
func (b *Builder) runInSandbox(ctx context.Context, job *Job, s *stageState, step Step, mnt string, logf func(string, ...any)) error {
	sbx, err := b.cfg.Runner.StartBuild(ctx, mnt, Resources{CPUCount: job.CPUCount, MemoryMB: job.MemoryMB})
	if err != nil {
		return fmt.Errorf("start build sandbox: %w", err)
	}
	defer func() {
		if err := sbx.Close(context.WithoutCancel(ctx)); err != nil {
			b.cfg.Logf("build %s: close build sandbox: %v", job.ID, err)
		}
	}()
	envs := s.envMap()
	for k, v := range s.args {
		if _, set := envs[k]; !set {
			envs[k] = v
		}
	}
	if _, ok := envs["PATH"]; !ok {
		envs["PATH"] = defaultPath
	}
	tail := &tailLines{max: 30}
	lw := &lineWriter{fn: func(l string) { tail.add(l); job.Log(l) }}
	code, err := sbx.Run(ctx, RunRequest{Cmd: step.Cmd, User: s.user, Cwd: cmpOr(s.workdir, "/"), Envs: envs}, lw)
	lw.Flush()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &StepError{Step: step.Text, Msg: fmt.Sprintf("%s: %v", step.Text, err)}
	}
	if code != 0 {
		return &StepError{Step: step.Text, Msg: fmt.Sprintf("%s: exit code %d\n%s", step.Text, code, strings.Join(tail.lines, "\n"))}
	}
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// copyRoot is the directory a COPY reads from: the build context or an
// earlier stage's mounted root.
func (b *Builder) copyRoot(job *Job, c *CopyStep, stageRoots map[string]string) (string, error) {
	if c.From != "" {
		r, ok := stageRoots[c.From]
		if !ok {
			return "", &StepError{Msg: fmt.Sprintf("COPY --from=%s: no such stage", c.From)}
		}
		return r, nil
	}
	if job.Context == "" {
		return "", &StepError{Msg: "COPY needs a build context: upload one with the build"}
	}
	return job.Context, nil
}

// resolveSource returns the host path of src inside root: "..", absolute
// paths and symlinks that leave root are refused.
func resolveSource(root, src string) (string, error) {
	clean := path.Clean("/" + src)
	if strings.HasPrefix(path.Clean(src), "../") || path.Clean(src) == ".." {
		return "", fmt.Errorf("COPY source %q is outside the build context", src)
	}
	lexical := filepath.Join(root, clean)
	real, err := filepath.EvalSymlinks(lexical)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("COPY source %q does not exist", src)
		}
		return "", fmt.Errorf("COPY source %q: %w", src, err)
	}
	rootReal, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", err
	}
	if real != rootReal && !strings.HasPrefix(real, rootReal+"/") {
		return "", fmt.Errorf("COPY source %q leads outside the build context (a symlink)", src)
	}
	return real, nil
}

// expandSources resolves a COPY's sources (with * ? [ ] patterns).
func expandSources(root string, srcs []string) ([]string, error) {
	var out []string
	for _, s := range srcs {
		if strings.ContainsAny(s, "*?[") {
			matches, err := filepath.Glob(filepath.Join(root, path.Clean("/"+s)))
			if err != nil {
				return nil, fmt.Errorf("COPY source %q: %w", s, err)
			}
			if len(matches) == 0 {
				return nil, fmt.Errorf("COPY source %q matches no file", s)
			}
			for _, m := range matches {
				rel, _ := filepath.Rel(root, m)
				p, err := resolveSource(root, rel)
				if err != nil {
					return nil, err
				}
				out = append(out, p)
			}
			continue
		}
		p, err := resolveSource(root, s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// contentHash hashes the sources of a COPY: names, modes, link targets and contents.
func contentHash(root string, srcs []string) (string, error) {
	paths, err := expandSources(root, srcs)
	if err != nil {
		return "", &StepError{Msg: err.Error()}
	}
	h := sha256.New()
	for _, p := range paths {
		err := filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(p, q)
			fi, err := d.Info()
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%s\x00%s\x00%o\x00", filepath.Base(p), rel, fi.Mode())
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				t, _ := os.Readlink(q)
				io.WriteString(h, t)
			case fi.Mode().IsRegular():
				f, err := os.Open(q)
				if err != nil {
					return err
				}
				_, err = io.Copy(h, f)
				f.Close()
				if err != nil {
					return err
				}
			}
			h.Write([]byte{0})
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("hash COPY sources: %w", err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyInto performs a COPY into the image mounted at mnt. Destination
// paths are resolved inside mnt (symlinks in the image cannot lead out).
func copyInto(mnt, root, workdir string, c *CopyStep, logf func(string, ...any)) error {
	paths, err := expandSources(root, c.Srcs)
	if err != nil {
		return &StepError{Msg: err.Error()}
	}
	dst := c.Dst
	if !path.IsAbs(dst) {
		dst = path.Join("/", workdir, dst)
	}
	uid, gid, err := parseChown(mnt, c.Chown)
	if err != nil {
		return &StepError{Msg: err.Error()}
	}
	toDir := strings.HasSuffix(c.Dst, "/") || len(paths) > 1
	for _, src := range paths {
		st, err := os.Lstat(src)
		if err != nil {
			return err
		}
		target := dst
		if st.IsDir() {
			// A directory's contents go into dst.
			if err := mkdirIn(mnt, target); err != nil {
				return &StepError{Msg: fmt.Sprintf("COPY to %s: %v", target, err)}
			}
			err = filepath.WalkDir(src, func(q string, d fs.DirEntry, err error) error {
				if err != nil || q == src {
					return err
				}
				rel, _ := filepath.Rel(src, q)
				return copyEntry(mnt, q, path.Join(target, filepath.ToSlash(rel)), uid, gid, c.Mode)
			})
			if err != nil {
				return &StepError{Msg: fmt.Sprintf("COPY: %v", err)}
			}
			continue
		}
		if toDir {
			target = path.Join(dst, filepath.Base(src))
		} else if in, err := securejoin.SecureJoin(mnt, dst); err == nil {
			if fi, err := os.Stat(in); err == nil && fi.IsDir() {
				target = path.Join(dst, filepath.Base(src))
			}
		}
		if err := mkdirIn(mnt, path.Dir(target)); err != nil {
			return &StepError{Msg: fmt.Sprintf("COPY to %s: %v", target, err)}
		}
		if err := copyEntry(mnt, src, target, uid, gid, c.Mode); err != nil {
			return &StepError{Msg: fmt.Sprintf("COPY: %v", err)}
		}
	}
	return nil
}

// copyEntry copies the file, symlink or directory src to dst (a path in
// the image at mnt whose parent exists).
func copyEntry(mnt, src, dst string, uid, gid int, mode *uint32) error {
	parent, err := securejoin.SecureJoin(mnt, path.Dir(dst))
	if err != nil {
		return err
	}
	if st, err := os.Lstat(parent); err != nil || !st.IsDir() {
		return fmt.Errorf("%s is not a directory in the image", path.Dir(dst))
	}
	out := filepath.Join(parent, path.Base(dst))
	st, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if cur, err := os.Lstat(out); err == nil && !(cur.IsDir() && st.IsDir()) {
		if err := os.RemoveAll(out); err != nil {
			return err
		}
	}
	perm := uint32(st.Mode().Perm())
	if mode != nil {
		perm = *mode
	}
	switch {
	case st.IsDir():
		if err := os.Mkdir(out, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	case st.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(t, out); err != nil {
			return err
		}
		return os.Lchown(out, uid, gid)
	case st.Mode().IsRegular():
		if err := copyFile(src, out); err != nil {
			return err
		}
	default:
		return nil
	}
	if err := os.Lchown(out, uid, gid); err != nil {
		return err
	}
	return unix.Fchmodat(unix.AT_FDCWD, out, perm, 0)
}

// mkdirIn creates dir (an absolute path in the image at mnt) and its
// parents, resolving every component inside mnt.
func mkdirIn(mnt, dir string) error {
	cur := "/"
	for _, part := range strings.Split(strings.Trim(path.Clean(dir), "/"), "/") {
		if part == "" {
			continue
		}
		cur = path.Join(cur, part)
		p, err := securejoin.SecureJoin(mnt, cur)
		if err != nil {
			return err
		}
		st, err := os.Stat(p)
		if err == nil {
			if !st.IsDir() {
				return fmt.Errorf("%s is not a directory", cur)
			}
			continue
		}
		if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	return nil
}

// parseChown resolves "user[:group]" against the image's passwd and group files.
func parseChown(mnt, spec string) (int, int, error) {
	if spec == "" {
		return 0, 0, nil
	}
	u, g, hasGroup := strings.Cut(spec, ":")
	uid, gid := -1, -1
	if n, err := strconv.Atoi(u); err == nil {
		uid = n
	} else if id, pgid, ok := lookupDB(mnt, "/etc/passwd", u); ok {
		uid, gid = id, pgid
	} else {
		return 0, 0, fmt.Errorf("--chown: no user %q in the image", u)
	}
	if hasGroup {
		if n, err := strconv.Atoi(g); err == nil {
			gid = n
		} else if id, _, ok := lookupDB(mnt, "/etc/group", g); ok {
			gid = id
		} else {
			return 0, 0, fmt.Errorf("--chown: no group %q in the image", g)
		}
	}
	if gid < 0 {
		gid = uid
	}
	return uid, gid, nil
}

// lookupDB finds name in a passwd or group file of the image: its id and
// (passwd) primary group.
func lookupDB(mnt, file, name string) (int, int, bool) {
	p, err := securejoin.SecureJoin(mnt, file)
	if err != nil {
		return 0, 0, false
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) >= 3 && f[0] == name {
			id, err := strconv.Atoi(f[2])
			if err != nil {
				return 0, 0, false
			}
			g := id
			if len(f) >= 4 {
				if n, err := strconv.Atoi(f[3]); err == nil {
					g = n
				}
			}
			return id, g, true
		}
	}
	return 0, 0, false
}

// makePrepLayer writes the layer every build stacks on its base: the
// mount points the build sandbox's runtime binds over.
func makePrepLayer(dir string) error {
	for _, mp := range MountPoints {
		p := filepath.Join(dir, mp.Path)
		if mp.Dir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if mp.Path == template.EnvdPath {
			mode = 0o755
		}
		if err := os.WriteFile(p, nil, mode); err != nil {
			return err
		}
	}
	return nil
}

func chain(prev string, parts ...string) string {
	h := sha256.New()
	io.WriteString(h, prev)
	for _, p := range parts {
		h.Write([]byte{0})
		io.WriteString(h, p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func envKey(m map[string]string) string {
	var b strings.Builder
	for _, kv := range sortedEnv(m) {
		b.WriteString(kv[0] + "=" + kv[1] + "\x00")
	}
	return b.String()
}

func treeSize(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n, err
}

func randHex() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// lineWriter calls fn for every complete line written (and the rest at Flush).
type lineWriter struct {
	fn  func(string)
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexAny(w.buf, "\n\r")
		if i < 0 {
			break
		}
		w.fn(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 {
		w.fn(string(w.buf))
		w.buf = nil
	}
	return len(p), nil
}

// Flush passes on a last line without a newline.
func (w *lineWriter) Flush() {
	if len(w.buf) > 0 {
		w.fn(string(w.buf))
		w.buf = nil
	}
}

type tailLines struct {
	max   int
	lines []string
}

func (t *tailLines) add(l string) {
	t.lines = append(t.lines, l)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}
