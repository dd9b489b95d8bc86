package build

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/declaw/declaw/internal/template"
	"github.com/declaw/declaw/internal/tenancy"
)

// Build statuses.
const (
	StatusBuilding  = "building"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
)

// ErrBuildNotFound is returned (wrapped) for an unknown build id.
var ErrBuildNotFound = errors.New("build not found")

// ErrAliasTaken is returned (wrapped) when a build names an alias that
// another team's template (or build in progress) holds. Aliases are one
// namespace for the whole server; the error says nothing of the holder.
var ErrAliasTaken = errors.New("the alias is not available")

// MaxLogLines bounds the lines kept per build; older ones are dropped
// behind LogTruncated.
const MaxLogLines = 20000

// LogTruncated is the first line of a log whose oldest lines were dropped.
const LogTruncated = "... [earlier build output truncated]"

// Request is a build to start (POST /templates/build).
type Request struct {
	Template   Spec   `json:"template"`
	Alias      string `json:"alias,omitempty"`
	CPUCount   int    `json:"cpu_count,omitempty"`
	MemoryMB   int    `json:"memory_mb,omitempty"`
	DiskMB     int    `json:"disk_mb,omitempty"`
	Background bool   `json:"background,omitempty"`
	Force      bool   `json:"force,omitempty"`
	// Team owns the template and the build: the team of the API key that
	// starts it (set by the server, never from the request body).
	Team string `json:"-"`
}

// Status is a build's state as the API shows it.
type Status struct {
	BuildID    string     `json:"build_id"`
	Status     string     `json:"status"`
	TemplateID string     `json:"template_id"`
	Alias      string     `json:"alias"`
	Reason     string     `json:"reason,omitempty"`
	Step       string     `json:"step,omitempty"` // the failing step
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Logs       []string   `json:"logs"`
	LogOffset  int        `json:"log_offset"`  // index of Logs[0] in the whole log
	NextOffset int        `json:"next_offset"` // pass as ?offset= to read on
	TeamID     string     `json:"team_id,omitempty"`
	Owner      int        `json:"-"`
}

// InUse reports how many live sandboxes use a template (by name).
type InUse func(name string) int

// ServiceConfig configures a Service.
type ServiceConfig struct {
	Builder   *Builder
	Templates *template.Manager
	InUse     InUse
	// AfterBuild runs on a new template before it is reported completed
	// (the microVM runtime's disk image); its error fails the build.
	AfterBuild func(ctx context.Context, t template.Template) error
	Logf       func(format string, args ...any)
}

// Service tracks builds: it starts them, keeps their status and logs
// (also on disk, <templates>/.builds/<id>.json and .log), cancels them.
type Service struct {
	cfg ServiceConfig
	dir string

	mu     sync.Mutex
	builds map[string]*run
}

type run struct {
	mu      sync.Mutex
	st      Status
	lines   []string
	dropped int
	changed chan struct{} // closed and replaced on every change
	cancel  context.CancelFunc
	done    chan struct{}
	logFile *os.File
}

// NewService returns a Service; call Recover once before use.
func NewService(cfg ServiceConfig) *Service {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	return &Service{cfg: cfg, dir: cfg.Builder.buildsDir, builds: map[string]*run{}}
}

// Recover marks builds left "building" by a process that died as failed
// and removes their work directories and mounts. Builds of live
// processes (sharing the state directory) are left alone: each holds a
// lock on its work directory's lock file.
func (s *Service) Recover() {
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() {
			continue
		}
		work := filepath.Join(s.dir, name)
		lock, err := os.OpenFile(filepath.Join(work, ".lock"), os.O_RDWR, 0)
		if err == nil {
			if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
				lock.Close()
				continue // a live build
			}
		}
		if err := unmountUnder(work); err != nil {
			s.cfg.Logf("template build: unmount leftovers of %s: %v", name, err)
		}
		os.RemoveAll(work)
		if lock != nil {
			lock.Close()
		}
		var st Status
		if b, err := os.ReadFile(work + ".json"); err == nil && json.Unmarshal(b, &st) == nil && st.Status == StatusBuilding {
			now := time.Now().UTC()
			st.Status, st.Reason, st.FinishedAt = StatusFailed, "the server stopped during the build", &now
			writeStatus(work+".json", st)
		}
		s.cfg.Logf("template build %s: removed leftovers of an interrupted build", name)
	}
	s.cfg.Templates.CleanTmp()
	s.sweep()
	// Build records are kept a week.
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && !e.IsDir() && time.Since(fi.ModTime()) > 7*24*time.Hour {
			os.Remove(filepath.Join(s.dir, e.Name()))
		}
	}
}

// sweep removes layers replaced by forced builds when no build runs here.
func (s *Service) sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.builds {
		if r.status(1<<30).Status == StatusBuilding {
			return
		}
	}
	trash, _ := filepath.Glob(filepath.Join(s.cfg.Builder.layersDir, ".trash-*"))
	for _, t := range trash {
		os.RemoveAll(t)
	}
}

// Start validates req, then builds it in the background; the returned
// status is "building". contextTar (may be nil) is the build context, a
// tar (optionally gzipped).
func (s *Service) Start(ctx context.Context, req Request, contextTar io.Reader) (*Status, error) {
	plan, err := req.Template.Plan()
	if err != nil {
		return nil, err
	}
	if req.CPUCount < 0 || req.MemoryMB < 0 || req.DiskMB < 0 {
		return nil, &InputError{Msg: "cpu_count, memory_mb and disk_mb must not be negative"}
	}
	id := "bld-" + randHex()
	tmplID := "tpl-" + randHex()
	alias := strings.ToLower(strings.TrimSpace(req.Alias))
	if alias == "" {
		alias = tmplID
	}
	if !template.ValidName(alias) {
		return nil, &InputError{Msg: fmt.Sprintf("alias %q: want lower-case letters, digits, '.', '_' or '-', at most 63 characters", req.Alias)}
	}
	if template.IsBuiltin(alias) {
		return nil, &InputError{Msg: fmt.Sprintf("alias %q is a built-in template", alias)}
	}
	team := tenancy.Owner(req.Team)
	taken := fmt.Errorf("alias %q: %w; choose another", alias, ErrAliasTaken)
	if s.buildingFor(alias, team) {
		return nil, taken
	}
	release, err := s.cfg.Templates.Reserve(alias)
	if err != nil {
		return nil, err
	}
	// Checked under the reservation: no build of alias can finish meanwhile.
	if old, err := s.cfg.Templates.Get(alias); err == nil {
		if TemplateTeam(old) != team {
			release()
			return nil, taken
		}
		if old.ID != "" {
			tmplID = old.ID // a rebuild keeps the id
		}
		if s.cfg.InUse != nil && s.cfg.InUse(alias) > 0 {
			release()
			return nil, fmt.Errorf("template %s: running sandboxes use it; kill them before rebuilding: %w", alias, template.ErrInUse)
		}
	}
	work := filepath.Join(s.dir, id)
	if err := os.MkdirAll(work, 0o755); err != nil {
		release()
		return nil, err
	}
	lock, err := os.Create(filepath.Join(work, ".lock"))
	if err == nil {
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err != nil {
		release()
		os.RemoveAll(work)
		return nil, fmt.Errorf("lock build dir: %w", err)
	}
	ctxDir := ""
	if contextTar != nil {
		ctxDir = filepath.Join(work, "context")
		if err := extractContext(contextTar, ctxDir); err != nil {
			lock.Close()
			release()
			os.RemoveAll(work)
			return nil, &InputError{Msg: "build context: " + err.Error()}
		}
	}
	logFile, _ := os.Create(filepath.Join(s.dir, id+".log"))
	source := "spec"
	if req.Template.Dockerfile != "" {
		source = "dockerfile"
	}
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &run{
		st:      Status{BuildID: id, Status: StatusBuilding, TemplateID: tmplID, Alias: alias, StartedAt: time.Now().UTC(), Owner: os.Getpid(), TeamID: team},
		changed: make(chan struct{}), cancel: cancel, done: make(chan struct{}), logFile: logFile,
	}
	s.mu.Lock()
	s.builds[id] = r
	s.mu.Unlock()
	s.persist(r)
	job := &Job{
		ID: id, Name: alias, TmplID: tmplID, Team: team, Plan: plan, Source: source, Context: ctxDir, Force: req.Force,
		CPUCount: req.CPUCount, MemoryMB: req.MemoryMB, DiskMB: req.DiskMB, Log: r.log,
	}
	s.cfg.Logf("template build %s: %s (%s) started", id, alias, source)
	go func() {
		defer close(r.done)
		defer lock.Close() // after the work dir is gone
		defer release()
		err := s.cfg.Builder.Build(bctx, job)
		if err == nil && s.cfg.AfterBuild != nil {
			if t, gerr := s.cfg.Templates.Get(alias); gerr == nil {
				err = s.cfg.AfterBuild(bctx, t)
				if err != nil {
					s.cfg.Templates.Delete(alias)
				}
			}
		}
		s.finish(r, err, bctx.Err() != nil)
		cancel()
		go s.sweep()
		// The record stays on disk; memory keeps it a while for followers.
		time.AfterFunc(10*time.Minute, func() {
			s.mu.Lock()
			delete(s.builds, id)
			s.mu.Unlock()
		})
	}()
	st := r.status(0)
	return &st, nil
}

// Wait blocks until the build ends or ctx is done, then returns its status.
func (s *Service) Wait(ctx context.Context, id string) (*Status, error) {
	r := s.lookup(id)
	if r == nil {
		return s.Get(id, 0)
	}
	select {
	case <-r.done:
	case <-ctx.Done():
	}
	st := r.status(0)
	return &st, nil
}

// Get returns a build's status with its log lines from offset on.
func (s *Service) Get(id string, offset int) (*Status, error) {
	if r := s.lookup(id); r != nil {
		st := r.status(offset)
		return &st, nil
	}
	if !validBuildID(id) {
		return nil, fmt.Errorf("build %q: %w", id, ErrBuildNotFound)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, id+".json"))
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", id, ErrBuildNotFound)
	}
	var st Status
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("build %s: %w", id, err)
	}
	lines := readLogLines(filepath.Join(s.dir, id+".log"))
	if offset < 0 {
		offset = 0
	}
	if offset > len(lines) {
		offset = len(lines)
	}
	st.Logs, st.LogOffset, st.NextOffset = lines[offset:], offset, len(lines)
	if st.Logs == nil {
		st.Logs = []string{}
	}
	return &st, nil
}

// Follow calls fn with every log line from offset on and returns the
// final status when the build ends (or ctx is done).
func (s *Service) Follow(ctx context.Context, id string, offset int, fn func(offset int, line string) error) (*Status, error) {
	r := s.lookup(id)
	if r == nil {
		st, err := s.Get(id, offset)
		if err != nil {
			return nil, err
		}
		for i, l := range st.Logs {
			if err := fn(st.LogOffset+i, l); err != nil {
				return nil, err
			}
		}
		st.Logs = nil
		return st, nil
	}
	for {
		st, changed := r.statusAndWait(offset)
		for i, l := range st.Logs {
			if err := fn(st.LogOffset+i, l); err != nil {
				return nil, err
			}
		}
		offset = st.NextOffset
		if st.Status != StatusBuilding {
			st.Logs = nil
			return &st, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Cancel stops a running build; it ends failed ("canceled"). Canceling
// a finished build is not an error.
func (s *Service) Cancel(id string) (*Status, error) {
	r := s.lookup(id)
	if r == nil {
		return s.Get(id, 0)
	}
	r.mu.Lock()
	if r.st.Status == StatusBuilding && r.st.Reason == "" {
		r.st.Reason = "canceled"
	}
	r.mu.Unlock()
	r.cancel()
	<-r.done
	st := r.status(0)
	return &st, nil
}

// List returns the builds this process knows, newest first.
func (s *Service) List() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Status
	for _, r := range s.builds {
		st := r.status(1 << 30)
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.After(out[j].StartedAt) })
	return out
}

// Shutdown cancels every running build and waits for them.
func (s *Service) Shutdown() {
	s.mu.Lock()
	var runs []*run
	for _, r := range s.builds {
		runs = append(runs, r)
	}
	s.mu.Unlock()
	for _, r := range runs {
		r.mu.Lock()
		if r.st.Status == StatusBuilding && r.st.Reason == "" {
			r.st.Reason = "the server stopped during the build"
		}
		r.mu.Unlock()
		r.cancel()
		<-r.done
	}
}

// buildingFor reports whether a build of alias by a team other than team
// runs in this process.
func (s *Service) buildingFor(alias, team string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.builds {
		r.mu.Lock()
		other := r.st.Alias == alias && r.st.Status == StatusBuilding && tenancy.Owner(r.st.TeamID) != team
		r.mu.Unlock()
		if other {
			return true
		}
	}
	return false
}

// TemplateTeam returns the team owning template t: "" for a shared one
// (every team's: a built-in, or one the operator installed outside the
// API, which has no build record), else the team recorded by its build
// (store.DefaultTeam for builds from before teams).
func TemplateTeam(t template.Template) string {
	if template.IsBuiltin(t.Name) || t.Custom == nil {
		return ""
	}
	return tenancy.Owner(t.Custom.TeamID)
}

func (s *Service) lookup(id string) *run {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.builds[id]
}

func (s *Service) finish(r *run, err error, canceled bool) {
	r.mu.Lock()
	now := time.Now().UTC()
	r.st.FinishedAt = &now
	if err == nil {
		r.st.Status, r.st.Reason = StatusCompleted, ""
	} else {
		r.st.Status = StatusFailed
		var se *StepError
		var ie *InputError
		switch {
		case canceled && r.st.Reason != "":
		case canceled:
			r.st.Reason = "canceled"
		case errors.As(err, &se):
			r.st.Reason, r.st.Step = se.Msg, se.Step
		case errors.As(err, &ie):
			r.st.Reason = ie.Error()
		default:
			r.st.Reason = "internal error: " + err.Error()
		}
	}
	r.mu.Unlock()
	if err != nil {
		r.log("build failed: " + r.st.Reason)
		s.cfg.Logf("template build %s: failed: %v", r.st.BuildID, err)
	} else {
		r.log("build completed")
		s.cfg.Logf("template build %s: completed", r.st.BuildID)
	}
	s.persist(r)
	r.mu.Lock()
	if r.logFile != nil {
		r.logFile.Close()
		r.logFile = nil
	}
	r.mu.Unlock()
}

func (s *Service) persist(r *run) {
	st := r.status(1 << 30)
	st.Logs = nil
	writeStatus(filepath.Join(s.dir, st.BuildID+".json"), st)
}

func writeStatus(path string, st Status) {
	b, _ := json.MarshalIndent(st, "", "  ")
	tmp := path + ".tmp"
	if os.WriteFile(tmp, b, 0o644) == nil {
		os.Rename(tmp, path)
	}
}

func (r *run) log(line string) {
	line = strings.ToValidUTF8(line, "\uFFFD")
	r.mu.Lock()
	r.lines = append(r.lines, line)
	if len(r.lines) > MaxLogLines {
		drop := len(r.lines) - MaxLogLines
		r.lines = r.lines[drop:]
		r.dropped += drop
	}
	if r.logFile != nil {
		r.logFile.WriteString(line + "\n")
	}
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *run) status(offset int) Status {
	st, _ := r.statusAndWait(offset)
	return st
}

// statusAndWait returns the status with lines from offset and a channel
// closed at the next change.
func (r *run) statusAndWait(offset int) (Status, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	total := r.dropped + len(r.lines)
	if offset < 0 {
		offset = 0
	}
	if offset > total {
		offset = total
	}
	start := offset - r.dropped
	var lines []string
	if start < 0 {
		lines = append([]string{LogTruncated}, r.lines...)
		offset = r.dropped
	} else {
		lines = append([]string(nil), r.lines[start:]...)
	}
	if lines == nil {
		lines = []string{}
	}
	st.Logs, st.LogOffset, st.NextOffset = lines, offset, total
	return st, r.changed
}

func validBuildID(id string) bool {
	if !strings.HasPrefix(id, "bld-") || len(id) > 40 {
		return false
	}
	for _, c := range id[4:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func readLogLines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// MaxContext bounds an unpacked build context.
const MaxContext = 1 << 30

// extractContext unpacks a build context tar (gzip or plain) into dir.
// Entries stay inside dir; symlinks are kept as they are (COPY refuses
// to follow one out of the context).
func extractContext(r io.Reader, dir string) error {
	br := bufio.NewReader(r)
	var in io.Reader = br
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return err
		}
		in = zr
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// Reuse the layer unpacker: same safety, modes and links; devices skipped.
	lim := &limitedReader{r: in, n: MaxContext}
	if err := unpackLayer(lim, dir, func(string, ...any) {}); err != nil {
		if lim.n <= 0 {
			return fmt.Errorf("larger than %d bytes", MaxContext)
		}
		return err
	}
	return nil
}

type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("build context too large")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
