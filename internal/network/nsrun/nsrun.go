// Package nsrun runs code and starts processes inside a network namespace
// named by its path (e.g. /var/run/netns/declaw-s3), without touching the
// namespace of the rest of the process.
//
// Do locks a fresh goroutine to its OS thread, moves that thread into the
// namespace, runs fn and moves the thread back. If moving back fails the
// goroutine ends with the thread still locked, which makes the Go runtime
// discard the thread, so no other goroutine ever runs in the wrong
// namespace. Sockets created in fn keep their namespace; a process started
// in fn (Start) inherits it.
package nsrun

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread that has entered the network namespace at path.
func Do(path string, fn func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
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
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- ferr // the thread stays locked and is discarded
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Start starts cmd inside the network namespace at path.
func Start(path string, cmd *exec.Cmd) error { return Do(path, cmd.Start) }
