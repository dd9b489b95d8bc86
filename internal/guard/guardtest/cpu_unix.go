//go:build unix

package guardtest

import (
	"syscall"
	"time"
)

// CPUTime returns the CPU time (user + system) the process has used so
// far, or 0 where unavailable.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
