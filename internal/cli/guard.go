package cli

import "fmt"

func runGuard(e *env, args []string) int {
	fmt.Fprintln(e.stderr, "declaw guard: not built into this binary yet")
	return 1
}
