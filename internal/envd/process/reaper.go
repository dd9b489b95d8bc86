package process

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// The reaper is the only code in envd that waits for children.
//
// There can be only one per OS process: wait4(-1) reaps any child, so a
// second waiter (os/exec's Cmd.Wait, os.Process.Wait) would either steal
// statuses from the reaper or have its own stolen. Invariant: envd never
// uses os/exec or os.Process; every child is started through reaper.start
// and its exit status is delivered to the callback registered there.
// Children nobody registered (orphans reparented to envd as PID 1 or as a
// child subreaper) are reaped and dropped.
//
// Statuses are never lost to a start/exit race: start holds mu across fork
// and registration, and the reaper only consumes a status under mu.
// And a pid is never reused while a caller holds mu and sees it registered,
// because the reaper only reaps under mu (see whileAlive).
type reaper struct {
	once    sync.Once
	mu      sync.Mutex
	waiters map[int]func(syscall.WaitStatus) // +checklocks:mu
}

var theReaper = &reaper{waiters: make(map[int]func(syscall.WaitStatus))}

// reapInterval is how often the reaper polls in case a SIGCHLD was missed.
// SIGCHLD alone suffices: signals coalesce, but every wake-up drains all
// exited children, and a child that exits while a drain runs raises a new
// notification. The poll is a safety net only, and rare: an idle sandbox
// should not wake up. Under gVisor's ptrace platform a once-a-second tick
// of envd was most of a sandbox's idle CPU (1.4 ms per second, against
// 0.16 for a sandbox running only sleep).
const reapInterval = time.Minute

func (r *reaper) run() {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, syscall.SIGCHLD)
	t := time.NewTicker(reapInterval)
	defer t.Stop()
	for {
		r.reapAll()
		select {
		case <-ch:
		case <-t.C:
		}
	}
}

// reapAll consumes every exited child. Each wait4 runs under mu, so a
// registered pid is never reaped (and so never reused) while another
// goroutine holds mu and sees it registered (see whileAlive).
func (r *reaper) reapAll() {
	for {
		var ws syscall.WaitStatus
		r.mu.Lock()
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		var fn func(syscall.WaitStatus)
		if err == nil && pid > 0 {
			fn = r.waiters[pid]
			delete(r.waiters, pid)
		}
		r.mu.Unlock()
		if fn != nil {
			fn(ws)
		}
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none exited
		}
	}
}

// ensureRunning starts the reaper goroutine once per OS process.
func (r *reaper) ensureRunning() {
	r.once.Do(func() { go r.run() })
}

// start forks and execs argv0. With the child's pid it calls register
// (under mu, before the reaper can see the child's exit), which returns the
// callback that receives the exit status.
func (r *reaper) start(argv0 string, argv []string, attr *syscall.ProcAttr, register func(pid int) func(syscall.WaitStatus)) (int, error) {
	r.ensureRunning()
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := syscall.ForkExec(argv0, argv, attr)
	if err != nil {
		return 0, err
	}
	r.waiters[pid] = register(pid)
	return pid, nil
}

// whileAlive runs fn with mu held if pid is a registered child that was not
// reaped yet (so the pid cannot be reused while fn runs), and reports
// whether fn ran.
func (r *reaper) whileAlive(pid int, fn func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.waiters[pid]; !ok {
		return false
	}
	fn()
	return true
}
