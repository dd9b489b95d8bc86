package cli

import "github.com/declaw/declaw/internal/guard/guardcmd"

// runGuard runs `declaw guard scan|eval|...` (see internal/guard/guardcmd).
func runGuard(e *env, args []string) int {
	return guardcmd.Run(args, e.stdin, e.stdout, e.stderr)
}
