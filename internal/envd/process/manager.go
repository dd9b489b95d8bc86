// Package process runs and tracks the processes envd starts.
//
// A Manager starts processes and keeps one Handler per process (see
// Handler); a single process-wide reaper (see reaper.go) does all waiting
// for children, including orphans reparented to envd, which is PID 1.
// Invariant: nothing else in envd may wait for children (no os/exec).
package process

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/declaw/declaw/internal/envd/sysuser"
)

// Sentinel errors; callers branch on them with errors.Is.
var (
	ErrNotFound     = errors.New("process not found")
	ErrBadRequest   = errors.New("invalid process request")
	ErrNoStdin      = errors.New("process has no stdin pipe")
	ErrStdinClosed  = errors.New("process stdin is closed")
	ErrStdinBlocked = errors.New("process stdin is full")
	ErrNotPty       = errors.New("process has no pty")
)

// Config tunes a Manager. The zero value is valid.
type Config struct {
	// OutputLimit is how many bytes of output are retained per stream of
	// each process; older output is dropped. Default 16 MiB.
	OutputLimit int
	// WaitDelay is how long the output must stay quiet after the process
	// exited, when a descendant still holds its pipes, before the result
	// is final (see copyOutput). Default 200ms.
	WaitDelay time.Duration
	// Retention is how long a finished process is kept for a later wait
	// when nobody waited for it. Default 10 minutes.
	Retention time.Duration
	// WaitedRetention is how long it is kept once its result was delivered.
	// Default 1 minute.
	WaitedRetention time.Duration
	// MaxFinished is how many finished processes are kept at most (with
	// their output); beyond it the oldest are dropped early. Default 128.
	MaxFinished int
	// MaxFinishedOutput caps the output retained by finished processes
	// together, in bytes; beyond it the oldest finished are dropped early
	// (the newest is always kept). Running processes are bounded by
	// OutputLimit each. Default 256 MiB.
	MaxFinishedOutput int
}

func (c Config) maxFinishedOutput() int {
	if c.MaxFinishedOutput > 0 {
		return c.MaxFinishedOutput
	}
	return 256 << 20
}

func (c Config) maxFinished() int {
	if c.MaxFinished > 0 {
		return c.MaxFinished
	}
	return 128
}

func (c Config) outputLimit() int {
	if c.OutputLimit > 0 {
		return c.OutputLimit
	}
	return 16 << 20
}

func (c Config) waitDelay() time.Duration {
	if c.WaitDelay > 0 {
		return c.WaitDelay
	}
	return 200 * time.Millisecond
}

func (c Config) retention() time.Duration {
	if c.Retention > 0 {
		return c.Retention
	}
	return 10 * time.Minute
}

func (c Config) waitedRetention() time.Duration {
	if c.WaitedRetention > 0 {
		return c.WaitedRetention
	}
	return time.Minute
}

// Spec describes a process to start.
type Spec struct {
	Cmd     string            // shell command, run with bash -c (sh -c without bash)
	User    *sysuser.User     // required
	Dir     string            // working directory, must exist
	Env     []string          // the full environment, see BuildEnv
	Envs    map[string]string // the request's envs, for listing only
	Stdin   bool              // keep a stdin pipe; otherwise stdin is /dev/null
	Pty     *Size             // run on a new pseudo-terminal of this size (implies a stdin); Cmd "" = interactive shell
	Timeout time.Duration     // kill the tree after this long; 0 = never
	Tag     string
	Kind    string // how the process was started, for listing: KindCommand (default), KindPty, KindStdio
	// HoldOutput registers a Hold on the output from the start (see
	// Handler.OutputHold): the client that started the process and
	// streams it gets all of the output, and the process blocks on its
	// pipes while that client is behind, instead of output being dropped.
	HoldOutput bool
}

// Kinds of processes (Spec.Kind, Info.Kind).
const (
	KindCommand = "command"
	KindPty     = "pty"
	KindStdio   = "stdio"
)

// Manager starts processes and tracks their handlers. Safe for concurrent use.
type Manager struct {
	cfg   Config
	mu    sync.Mutex
	procs map[int]*Handler // +checklocks:mu, running and recently finished
	done  []*Handler       // +checklocks:mu, finished handlers in procs, oldest first
}

// NewManager returns a Manager and makes sure the reaper runs.
func NewManager(cfg Config) *Manager {
	theReaper.ensureRunning()
	return &Manager{cfg: cfg, procs: make(map[int]*Handler)}
}

// SetSubreaper makes the calling OS process the reaper of orphaned
// descendants (as PID 1 already is), so envd reaps them too.
func SetSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// Shell returns the shell commands run with: bash if present, else sh.
func Shell() string {
	if isExecutable("/bin/bash") {
		return "/bin/bash"
	}
	return "/bin/sh"
}

// StaticBash is Debian's bash-static: the same bash release as /bin/bash,
// linked statically. Templates install it.
const StaticBash = "/bin/bash-static"

// commandShell returns the binary that runs a command and the argv[0] it
// gets. Where the template has bash-static next to bash, commands run on it
// with argv[0] /bin/bash (so $0, $BASH and ps show /bin/bash): it skips the
// dynamic loader, about 40 syscalls and the relocation faults, which under
// gVisor's ptrace platform is ~40% of a command's start.
func commandShell() (path, argv0 string) {
	shell := Shell()
	if shell == "/bin/bash" && isExecutable(StaticBash) {
		return StaticBash, shell
	}
	return shell, shell
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// Start starts a process. Its output is recorded from the start.
func (m *Manager) Start(spec Spec) (*Handler, error) {
	if spec.User == nil {
		return nil, fmt.Errorf("%w: no user", ErrBadRequest)
	}
	if strings.IndexByte(spec.Cmd, 0) >= 0 {
		return nil, fmt.Errorf("%w: command contains NUL", ErrBadRequest)
	}
	if spec.Cmd == "" && spec.Pty == nil {
		return nil, fmt.Errorf("%w: empty command", ErrBadRequest)
	}
	st, err := os.Stat(spec.Dir)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: cwd %q does not exist or is not accessible", ErrBadRequest, spec.Dir)
	case !st.IsDir():
		return nil, fmt.Errorf("%w: cwd %q is not a directory", ErrBadRequest, spec.Dir)
	}

	if spec.Kind == "" {
		spec.Kind = KindCommand
		if spec.Pty != nil {
			spec.Kind = KindPty
		}
	}
	h := &Handler{
		m:           m,
		info:        Info{Cmd: spec.Cmd, Tag: spec.Tag, Cwd: spec.Dir, User: spec.User.Name, Envs: spec.Envs, IsPty: spec.Pty != nil, Kind: spec.Kind},
		log:         NewLog(m.cfg.outputLimit()),
		timeout:     spec.Timeout,
		readersDone: make(chan struct{}),
		done:        make(chan struct{}),
	}
	if spec.HoldOutput {
		h.hold = h.log.Hold(0)
	}
	sio, err := newStdio(spec)
	if err != nil {
		return nil, fmt.Errorf("start %q: %w", spec.Cmd, err)
	}
	defer sio.closeChildEnds()
	h.stdin, h.pty = sio.stdin, sio.pty
	for _, o := range sio.outputs {
		h.outputs = append(h.outputs, o.f)
	}

	sys := &syscall.SysProcAttr{Setsid: true}
	if spec.Pty != nil {
		sys.Setctty, sys.Ctty = true, 0 // the tty is the child's fd 0
	}
	if cred := credential(spec.User); cred != nil {
		sys.Credential = cred
	}
	shell, argv0 := commandShell()
	// Not a login shell (-l): /etc/profile would reset PATH and others
	// after we built the environment, so request envs could not win.
	argv := []string{argv0, "-c", spec.Cmd}
	if spec.Cmd == "" {
		shell = Shell()
		argv = []string{shell, "-i"} // an interactive shell on the pty
	}
	attr := &syscall.ProcAttr{Dir: spec.Dir, Env: spec.Env, Files: sio.childFds(), Sys: sys}
	_, err = theReaper.start(shell, argv, attr, func(pid int) func(syscall.WaitStatus) {
		h.pid = pid
		return h.onExit
	})
	if err != nil {
		sio.closeParentEnds()
		if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.E2BIG) {
			return nil, fmt.Errorf("%w: start %q as %s in %q: %v", ErrBadRequest, spec.Cmd, spec.User.Name, spec.Dir, err)
		}
		return nil, fmt.Errorf("start %q as %s: %w", spec.Cmd, spec.User.Name, err)
	}

	m.mu.Lock()
	if old := m.procs[h.pid]; old != nil {
		m.removeLocked(old) // a finished handler whose pid was reused
	}
	m.procs[h.pid] = h
	m.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(len(sio.outputs))
	for _, o := range sio.outputs {
		go h.readLoop(o.f, o.stream, &wg)
	}
	go func() {
		wg.Wait()
		close(h.readersDone)
	}()
	if spec.Timeout > 0 {
		h.mu.Lock()
		if !h.exited {
			h.timer = time.AfterFunc(spec.Timeout, h.onTimeout)
		}
		h.mu.Unlock()
	}
	return h, nil
}

// stdio holds the descriptors of a process being started.
//
// The child's ends are raw descriptors in blocking mode, never wrapped in
// an os.File: wrapping registers a descriptor with Go's poller and Fd()
// then takes it out again, four syscalls per descriptor that under gVisor's
// ptrace platform cost ~40 us each on every command start.
type stdio struct {
	child   [3]int   // the child's 0, 1, 2
	owned   []int    // child descriptors to close in the parent after the fork
	tty     *os.File // the pty's tty (the child's 0, 1 and 2), nil without pty
	stdin   *os.File // parent's writable end, nil without stdin
	pty     *os.File // pty master, nil without pty
	outputs []output // parent's readable ends
}

type output struct {
	f      *os.File
	stream Stream
}

// newStdio prepares a pty (stdin, stdout and stderr on the terminal) or
// pipes for stdout and stderr plus a stdin pipe or /dev/null.
func newStdio(spec Spec) (_ *stdio, err error) {
	sio := &stdio{}
	defer func() {
		if err != nil {
			sio.closeChildEnds()
			sio.closeParentEnds()
		}
	}()
	if spec.Pty != nil {
		master, tty, err := openPty(*spec.Pty)
		if err != nil {
			return nil, err
		}
		sio.tty = tty
		fd := int(tty.Fd()) // blocking, as the child expects
		sio.child = [3]int{fd, fd, fd}
		sio.stdin, sio.pty = master, master
		sio.outputs = []output{{master, PtyStream}}
		return sio, nil
	}
	if spec.Stdin {
		w, r, err := pipe(false)
		if err != nil {
			return nil, fmt.Errorf("stdin pipe: %w", err)
		}
		sio.stdin = w
		sio.child[0] = r
		sio.owned = append(sio.owned, r)
	} else {
		null, err := devNull()
		if err != nil {
			return nil, err
		}
		sio.child[0] = null // shared, never closed
	}
	for i, s := range []Stream{Stdout, Stderr} {
		r, w, err := pipe(true)
		if err != nil {
			return nil, fmt.Errorf("output pipe: %w", err)
		}
		sio.child[i+1] = w
		sio.owned = append(sio.owned, w)
		sio.outputs = append(sio.outputs, output{r, s})
	}
	return sio, nil
}

// pipe returns a pipe whose parent end (the read end if parentReads, else
// the write end) is non-blocking and in Go's poller, and whose child end is
// a raw blocking descriptor. Both are close-on-exec; ForkExec dups the
// child end onto 0, 1 or 2, which clears that.
func pipe(parentReads bool) (parent *os.File, child int, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, -1, err
	}
	pfd, cfd, name := p[1], p[0], "|1"
	if parentReads {
		pfd, cfd, name = p[0], p[1], "|0"
	}
	// F_SETFL replaces the status flags; a fresh pipe end has none but
	// its access mode, which F_SETFL ignores.
	if _, err := unix.FcntlInt(uintptr(pfd), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, -1, err
	}
	return os.NewFile(uintptr(pfd), name), cfd, nil
}

// devNull returns a descriptor of /dev/null opened once for reading, which
// every child without a stdin gets as its fd 0. It is never closed.
var devNull = sync.OnceValues(func() (int, error) {
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	return fd, nil
})

// childFds returns the child's descriptors.
func (sio *stdio) childFds() []uintptr {
	return []uintptr{uintptr(sio.child[0]), uintptr(sio.child[1]), uintptr(sio.child[2])}
}

func (sio *stdio) closeChildEnds() {
	for _, fd := range sio.owned {
		unix.Close(fd)
	}
	sio.owned = nil
	if sio.tty != nil {
		sio.tty.Close()
		sio.tty = nil
	}
}

func (sio *stdio) closeParentEnds() {
	if sio.stdin != nil {
		sio.stdin.Close()
	}
	for _, o := range sio.outputs {
		o.f.Close()
	}
}

// credential returns the credential to run as u, or nil to keep envd's.
func credential(u *sysuser.User) *syscall.Credential {
	if os.Geteuid() != 0 && u.Uid == os.Geteuid() && u.Gid == os.Getegid() {
		return nil // not root: can only run as ourselves
	}
	groups := make([]uint32, 0, len(u.Groups))
	for _, g := range u.Groups {
		groups = append(groups, uint32(g))
	}
	return &syscall.Credential{Uid: uint32(u.Uid), Gid: uint32(u.Gid), Groups: groups}
}

// Get returns the handler of pid, running or recently finished.
func (m *Manager) Get(pid int) (*Handler, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.procs[pid]
	if !ok {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNotFound)
	}
	return h, nil
}

// List returns the running processes, sorted by pid.
func (m *Manager) List() []Info {
	m.mu.Lock()
	hs := make([]*Handler, 0, len(m.procs))
	for _, h := range m.procs {
		hs = append(hs, h)
	}
	m.mu.Unlock()
	var out []Info
	for _, h := range hs {
		if h.Running() {
			out = append(out, h.Info())
		}
	}
	slices.SortFunc(out, func(a, b Info) int { return a.Pid - b.Pid })
	return out
}

// KillAll kills every running process tree.
func (m *Manager) KillAll() {
	m.mu.Lock()
	hs := make([]*Handler, 0, len(m.procs))
	for _, h := range m.procs {
		hs = append(hs, h)
	}
	m.mu.Unlock()
	for _, h := range hs {
		h.Kill()
	}
}

// remove drops h if it is still the handler of its pid.
func (m *Manager) remove(h *Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.removeLocked(h)
}

// +checklocks:m.mu
func (m *Manager) removeLocked(h *Handler) {
	if m.procs[h.pid] == h {
		delete(m.procs, h.pid)
	}
	// Stop the expiry timer, whose closure would keep h and its output alive.
	h.mu.Lock()
	if h.expire != nil {
		h.expire.Stop()
	}
	h.mu.Unlock()
	if i := slices.Index(m.done, h); i >= 0 {
		m.done = slices.Delete(m.done, i, i+1)
	}
}

// finished records that h finished and drops the oldest finished handlers
// beyond Config.MaxFinished and Config.MaxFinishedOutput, so finished
// output cannot pile up.
func (m *Manager) finished(h *Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.procs[h.pid] != h {
		return // already replaced
	}
	m.done = append(m.done, h)
	for len(m.done) > m.cfg.maxFinished() {
		m.removeLocked(m.done[0])
	}
	total := 0
	for _, d := range m.done {
		total += d.log.Retained()
	}
	for total > m.cfg.maxFinishedOutput() && len(m.done) > 1 {
		total -= m.done[0].log.Retained()
		m.removeLocked(m.done[0])
	}
}
