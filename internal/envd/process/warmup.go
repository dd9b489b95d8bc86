package process

import (
	"fmt"
	"syscall"
	"time"
)

// Warmup runs the shell once with an empty command (":") and waits for it,
// so that the pages of the shell, its libraries and the locale archive are
// in the sandbox's page cache before the first user command: under gVisor
// the first exec of a binary reads it through the gofer and costs about
// 10 ms more than later ones. It is not a user process: it is not in the
// Manager's list, has no output and runs before any user code can.
func Warmup(timeout time.Duration) error {
	null, err := devNull()
	if err != nil {
		return fmt.Errorf("warmup: %w", err)
	}
	fd := uintptr(null)
	shell, argv0 := commandShell()
	done := make(chan syscall.WaitStatus, 1)
	attr := &syscall.ProcAttr{
		Dir:   "/",
		Env:   []string{"PATH=" + DefaultPath, "LANG=C.UTF-8", "HOME=/root"},
		Files: []uintptr{fd, fd, fd},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	}
	if _, err := theReaper.start(shell, []string{argv0, "-c", ":"}, attr, func(int) func(syscall.WaitStatus) {
		return func(ws syscall.WaitStatus) { done <- ws }
	}); err != nil {
		return fmt.Errorf("warmup: start %s: %w", shell, err)
	}
	select {
	case ws := <-done:
		if !ws.Exited() || ws.ExitStatus() != 0 {
			return fmt.Errorf("warmup: %s -c : ended with %v", shell, ws)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("warmup: %s -c : still running after %v", shell, timeout)
	}
}
