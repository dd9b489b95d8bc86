package process

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// stdinWriteTimeout bounds one write to a process's stdin, so a process
// that never reads cannot hold a request forever.
const stdinWriteTimeout = 10 * time.Second

// readChunk is the largest single read from a process's output.
const readChunk = 32 << 10

// Info describes a process for listing.
type Info struct {
	Pid   int
	Cmd   string
	Tag   string
	Cwd   string
	User  string
	Envs  map[string]string // the request's own envs, not the full environment
	IsPty bool
	Kind  string // see Spec.Kind
}

// Result is the outcome of a process, or its state so far while it runs.
type Result struct {
	Pid      int
	Stdout   []byte // retained output, see Config.OutputLimit
	Stderr   []byte
	Running  bool
	ExitCode int    // exit status, 128+signal if killed by a signal, -1 while running
	Error    string // why it ended abnormally: timeout, kill, signal
	TimedOut bool
	Killed   bool // by Handler.Kill
}

// Handler owns one process: its pid, stdio, retained output and exit
// status. Output is recorded in a Log that any number of readers follow
// without slowing the process, except the client that started it with
// Spec.HoldOutput, which the process waits for (see Log and Hold). Handlers are created by
// Manager.Start and are safe for concurrent use.
type Handler struct {
	m       *Manager
	pid     int  // immutable after start (written under the reaper's mu)
	info    Info // immutable after start, except Pid
	log     *Log
	hold    *Hold // see OutputHold; immutable
	timeout time.Duration

	stdin       *os.File // nil without a stdin pipe; immutable (the master for a pty)
	pty         *os.File // pty master, nil without a pty; immutable
	stdinClosed atomic.Bool
	subscribed  atomic.Bool // see FirstSubscriber

	outputs     []*os.File    // the parent's ends of the outputs; immutable
	readersDone chan struct{} // closed when the output was copied (see copyOutput)
	done        chan struct{} // closed when the result is final

	mu       sync.Mutex
	status   syscall.WaitStatus // +checklocks:mu, valid once exited
	exited   bool               // +checklocks:mu
	timedOut bool               // +checklocks:mu
	killed   bool               // +checklocks:mu
	timer    *time.Timer        // +checklocks:mu, the command timeout
	expire   *time.Timer        // +checklocks:mu, removes the finished handler
}

// Pid returns the process id.
func (h *Handler) Pid() int { return h.pid }

// Info returns the process description.
func (h *Handler) Info() Info {
	info := h.info
	info.Pid = h.pid
	info.Envs = maps.Clone(h.info.Envs)
	return info
}

// FirstSubscriber reports true exactly once per process: to the first
// caller. Streams use it to replay all output to the first subscriber.
func (h *Handler) FirstSubscriber() bool {
	return h.subscribed.CompareAndSwap(false, true)
}

// OutputHold returns the hold registered at start for the client that
// started the process to stream its output (Spec.HoldOutput), nil
// without. That client must Release it when it stops reading.
func (h *Handler) OutputHold() *Hold { return h.hold }

// Output returns the process's output log.
func (h *Handler) Output() *Log { return h.log }

// Done is closed when the process has exited and its output is final.
func (h *Handler) Done() <-chan struct{} { return h.done }

// Running reports whether the process has not exited yet.
func (h *Handler) Running() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.exited
}

// readLoop copies one output into the log until EOF, or until the
// process has exited and its output went quiet (see copyOutput). Then it
// marks the copy as done and keeps draining the output without holding on
// to h, so that a lingering descendant that inherited it never blocks on a
// full pipe.
func (h *Handler) readLoop(f *os.File, s Stream, wg *sync.WaitGroup) {
	defer f.Close()
	eof := copyOutput(h.log, f, s, h.m.cfg.waitDelay())
	wg.Done()
	if !eof {
		f.SetReadDeadline(time.Time{})
		drain(f)
	}
}

// copyOutput appends what it reads from f to log. It reports whether it
// stopped at the end of f (EOF, or EIO for a pty master).
//
// Once the process exited, onExit sets a read deadline on f. When that
// passes, copying stops if f holds no unread data: everything the process
// wrote before it exited has been read, and what follows comes from
// descendants that outlived it. While unread data remains (a slow reader,
// not a quiet process) the deadline is extended, for at most
// maxQuietExtensions times quiet.
func copyOutput(log *Log, f *os.File, s Stream, quiet time.Duration) bool {
	buf := make([]byte, readChunk)
	extensions := 0
	held := false // an append waited for a hold since the last deadline
	for {
		n, err := f.Read(buf)
		if n > 0 {
			ok, waited := log.append(s, append([]byte(nil), buf[:n]...))
			if !ok {
				return false
			}
			held = held || waited
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if unread(f) == 0 {
				return false
			}
			// Time spent waiting for a holding reader (see Hold) is
			// not the process's descendants writing on: it does not
			// count against the extensions.
			if !held {
				if extensions >= maxQuietExtensions {
					return false
				}
				extensions++
			}
			held = false
			f.SetReadDeadline(time.Now().Add(quiet))
		default:
			return true
		}
	}
}

// maxQuietExtensions bounds how long output is copied after the process
// exited while descendants keep writing.
const maxQuietExtensions = 10

// unread returns how many bytes f holds unread (0 on error).
func unread(f *os.File) int {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	rc.Control(func(fd uintptr) {
		n, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) // FIONREAD
	})
	return n
}

func drain(f *os.File) {
	buf := make([]byte, 4096)
	for {
		if _, err := f.Read(buf); err != nil {
			return
		}
	}
}

// onExit is called by the reaper with the process's exit status. The
// result becomes final once the output was copied (see copyOutput).
func (h *Handler) onExit(ws syscall.WaitStatus) {
	h.mu.Lock()
	h.status = ws
	h.exited = true
	if h.timer != nil {
		h.timer.Stop()
	}
	h.mu.Unlock()
	quietBy := time.Now().Add(h.m.cfg.waitDelay())
	for _, f := range h.outputs {
		f.SetReadDeadline(quietBy) // fails harmlessly if already closed at EOF
	}
	go func() {
		<-h.readersDone
		h.CloseStdin()
		h.log.Close()
		h.mu.Lock()
		h.expire = time.AfterFunc(h.m.cfg.retention(), func() { h.m.remove(h) })
		h.mu.Unlock()
		h.m.finished(h)
		close(h.done)
	}()
}

// kill kills the process tree, see Kill.
func (h *Handler) kill() bool {
	return theReaper.whileAlive(h.pid, func() {
		h.mu.Lock()
		h.killed = true
		h.mu.Unlock()
		killTree(h.pid)
	})
}

// Kill kills the process and its whole tree (see killTree) and stops any
// holding reader from holding back its output (see Log.ReleaseHolds), so
// that a killed process whose reader stalled still ends. It reports
// whether the process was still running.
func (h *Handler) Kill() bool {
	h.log.ReleaseHolds()
	return h.kill()
}

// onTimeout kills the tree when the command timeout expires.
func (h *Handler) onTimeout() {
	h.log.ReleaseHolds()
	theReaper.whileAlive(h.pid, func() {
		h.mu.Lock()
		h.timedOut = true
		h.mu.Unlock()
		killTree(h.pid)
	})
}

// WriteStdin writes data to the process's stdin pipe.
func (h *Handler) WriteStdin(data []byte) error {
	if h.stdin == nil {
		return fmt.Errorf("write stdin of pid %d: %w", h.pid, ErrNoStdin)
	}
	if h.stdinClosed.Load() {
		return fmt.Errorf("write stdin of pid %d: %w", h.pid, ErrStdinClosed)
	}
	if err := h.stdin.SetWriteDeadline(time.Now().Add(stdinWriteTimeout)); err != nil {
		return fmt.Errorf("write stdin of pid %d: %w", h.pid, ErrStdinClosed)
	}
	if _, err := h.stdin.Write(data); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("write stdin of pid %d: process is not reading: %w", h.pid, ErrStdinBlocked)
		}
		return fmt.Errorf("write stdin of pid %d: %w", h.pid, ErrStdinClosed)
	}
	return nil
}

// CloseStdin closes the stdin pipe (the process reads EOF). It is a no-op
// without a pipe or if it was closed already.
func (h *Handler) CloseStdin() {
	if h.stdin != nil && h.stdinClosed.CompareAndSwap(false, true) {
		h.stdin.Close()
	}
}

// Resize sets the terminal size of a process on a pty.
func (h *Handler) Resize(size Size) error {
	if h.pty == nil {
		return fmt.Errorf("resize pid %d: %w", h.pid, ErrNotPty)
	}
	if h.stdinClosed.Load() {
		return fmt.Errorf("resize pid %d: %w", h.pid, ErrStdinClosed)
	}
	return setSize(h.pty, size)
}

// Result returns the process's result, or its state so far if it runs.
func (h *Handler) Result() Result {
	r := Result{
		Pid:    h.pid,
		Stdout: h.log.Bytes(Stdout),
		Stderr: h.log.Bytes(Stderr),
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r.TimedOut, r.Killed = h.timedOut, h.killed
	if !h.exited {
		r.Running = true
		r.ExitCode = -1
		return r
	}
	switch {
	case h.status.Exited():
		r.ExitCode = h.status.ExitStatus()
	case h.status.Signaled():
		r.ExitCode = 128 + int(h.status.Signal())
		r.Error = "terminated by signal: " + h.status.Signal().String()
	default:
		r.ExitCode = -1
	}
	switch {
	case h.timedOut:
		r.Error = fmt.Sprintf("command timed out after %v", h.timeout)
	case h.killed:
		r.Error = "killed"
	}
	return r
}

// Release drops the finished handler at once: for results delivered to
// the one client that could ever ask (foreground and streamed commands).
func (h *Handler) Release() {
	select {
	case <-h.done:
		h.m.remove(h)
	default:
	}
}

// MarkWaited records that a client received the final result, which
// shortens how long the finished handler is kept.
func (h *Handler) MarkWaited() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.expire != nil {
		h.expire.Reset(h.m.cfg.waitedRetention())
	}
}
