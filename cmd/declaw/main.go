// Command declaw is the Declaw server and CLI.
package main

import (
	"os"

	"github.com/declaw/declaw/internal/cli"
)

func main() { os.Exit(cli.Run(os.Args[1:])) }
