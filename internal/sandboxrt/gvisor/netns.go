package gvisor

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// startInNetNS starts cmd with the network namespace at nsPath, so that
// runsc and its abstract control sockets live in the sandbox's netns.
//
// It locks a fresh goroutine to its OS thread, moves that thread into the
// namespace, forks from it (the child inherits the thread's netns) and
// moves the thread back. If moving back fails the goroutine exits with the
// thread still locked, which makes the Go runtime discard the thread, so no
// other goroutine ever runs in the wrong namespace.
func startInNetNS(nsPath string, cmd *exec.Cmd) error {
	target, err := os.Open(nsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer target.Close()

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", nsPath, err)
			return
		}
		startErr := cmd.Start()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: the runtime destroys it when this
			// goroutine returns. The child, if started, is fine.
			errc <- startErr
			return
		}
		runtime.UnlockOSThread()
		errc <- startErr
	}()
	return <-errc
}
