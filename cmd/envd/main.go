// Command envd is the agent that runs as PID 1 inside every sandbox; see
// package envd. Build it static: CGO_ENABLED=0 go build ./cmd/envd.
package main

import (
	"fmt"
	"os"

	"github.com/declaw/declaw/internal/envd"
)

func main() {
	if err := envd.Run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "envd:", err)
		os.Exit(1)
	}
}
