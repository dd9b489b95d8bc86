// Command guard runs the guard subcommands (scan, eval, train) standalone;
// `declaw guard ...` is the same code.
//
//	go run ./internal/guard/cmd/guard eval data/pii/*.json data/injection/*.yaml
package main

import (
	"os"

	"github.com/declaw/declaw/internal/guard/guardcmd"
)

func main() {
	os.Exit(guardcmd.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
