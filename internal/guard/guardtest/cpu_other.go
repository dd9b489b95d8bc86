//go:build !unix

package guardtest

import "time"

// CPUTime returns 0 on platforms without getrusage.
func CPUTime() time.Duration { return 0 }
