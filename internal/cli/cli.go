// Package cli implements the declaw command line: the server and the
// client subcommands. cmd/declaw only calls Run.
package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// Version is set at build time with -ldflags "-X github.com/declaw/declaw/internal/cli.Version=...".
var Version = "dev"

// env is where the CLI reads its environment knobs (one place, for tests).
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

func defaultEnv() *env {
	return &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
}

const usage = `declaw: a secure runtime for AI agents

Usage:
  declaw server [flags]             run the API server and orchestrator
  declaw sandbox COMMAND            (alias sbx) create|list|info|status|kill|set-timeout|
                                    pause|resume|exec|connect|files ls|read|write
  declaw audit ID [--follow]        print a sandbox's audit trail
  declaw keys create|list|revoke    manage API keys (admin key)
  declaw teams create|list          manage teams (admin key)
  declaw volume create|ls|info|download|rm   tarball volumes (attach: sandbox create --volume)
  declaw template build|list|delete manage sandbox templates
  declaw guard scan|eval            run the PII / secrets / injection detectors
  declaw bench [--local] [--quick]  measure latency, concurrency and density vs baselines
  declaw version                    print the version

Run "declaw COMMAND -h" for the flags of a command. The sandbox, audit, keys
and teams commands talk to a server: DECLAW_API_KEY, DECLAW_DOMAIN (host:port) or
DECLAW_API_URL, or --api-key, --domain, --api-url; --json prints JSON.
`

// Run runs the CLI with args (without the program name) and returns the exit code.
func Run(args []string) int {
	return run(defaultEnv(), args)
}

func run(e *env, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return 2
	}
	if n := leadingClientFlags(args); n > 0 {
		return runClientGlobals(e, args[:n], args[n:])
	}
	switch args[0] {
	case "server":
		return runServer(e, args[1:])
	case "sandbox", "sbx", "sandboxes":
		return runSandbox(e, nil, args[1:])
	case "audit":
		return runAudit(e, nil, args[1:])
	case "keys", "key":
		return runKeys(e, nil, args[1:])
	case "teams", "team":
		return runTeams(e, nil, args[1:])
	case "volume", "volumes", "vol":
		return runVolume(e, nil, args[1:])
	case "template", "templates":
		return runTemplate(e, args[1:])
	case "guard":
		return runGuard(e, args[1:])
	case "bench":
		return runBench(e, nil, args[1:])
	case "version", "--version":
		fmt.Fprintln(e.stdout, "declaw", Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, usage)
		return 0
	}
	fmt.Fprintf(e.stderr, "declaw: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// envOr returns the environment value of name, or def.
func (e *env) envOr(name, def string) string {
	if v := strings.TrimSpace(e.getenv(name)); v != "" {
		return v
	}
	return def
}
