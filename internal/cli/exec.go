package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/declaw/declaw/sdk/go/declaw"
)

// Exit codes of exec besides the remote command's own.
const (
	exitTimeout     = 124 // the command hit its --timeout (as timeout(1))
	exitInterrupted = 130 // interrupted locally (SIGINT / SIGTERM)
)

// sandboxExec runs "declaw sandbox exec ID [flags] -- CMD ARGS...": the
// command's output is streamed to the local stdout/stderr as it comes, and
// the exit code is the remote one.
func sandboxExec(c *clientCmd, args []string) int {
	cwd := c.fs.String("cwd", "", "working directory (default: the user's home)")
	user := c.fs.String("user", "", "user to run as (default: root)")
	timeout := c.fs.Float64("timeout", 60, "seconds before the command is killed (0: none)")
	envs := &kvFlag{lookup: c.e.getenv}
	c.fs.Var(envs, "e", "environment `KEY=VAL` (KEY alone: the local value); repeatable")
	c.fs.Var(envs, "env", "same as -e")
	pos, rest, _, ok := c.parse(args, 1, -1)
	if !ok {
		return 2
	}
	argv := append(pos[1:], rest...)
	if len(argv) == 0 {
		c.usagef("missing the command: declaw sandbox exec ID -- CMD [ARGS...]")
		return 2
	}
	if *timeout < 0 {
		c.usagef("--timeout must be >= 0")
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	req := declaw.CommandRequest{Cmd: shellJoin(argv), User: *user, Cwd: *cwd, Envs: envs.m, Timeout: timeout}
	return c.execStream(ctx, cl, pos[0], req)
}

// execStream runs req, copying its output (or, with --json, its events as
// JSON lines) as it arrives, and returns the exit code to exit with.
func (c *clientCmd) execStream(ctx context.Context, cl *declaw.Client, id string, req declaw.CommandRequest) int {
	ev, err := cl.RunStream(ctx, id, req, func(ev declaw.CommandEvent) error {
		if c.opts.json {
			c.printJSON(ev)
			return nil
		}
		switch ev.Type {
		case "stdout":
			io.WriteString(c.e.stdout, ev.Data)
		case "stderr":
			io.WriteString(c.e.stderr, ev.Data)
		}
		return nil
	})
	var cmdErr *declaw.CommandError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		fmt.Fprintf(c.e.stderr, "%s: interrupted; the command was killed\n", c.name)
		return exitInterrupted
	case errors.As(err, &cmdErr):
		if c.opts.json {
			c.printJSON(declaw.CommandEvent{Type: "error", Error: cmdErr.Message, Code: cmdErr.Code})
		}
		fmt.Fprintf(c.e.stderr, "%s: %s\n", c.name, cmdErr.Message)
		if cmdErr.Timeout() {
			return exitTimeout
		}
		return 1
	default:
		return c.fail(err)
	}
	if ev.Error != "" && !c.opts.json {
		fmt.Fprintf(c.e.stderr, "%s: %s\n", c.name, ev.Error)
	}
	return exitCode(*ev.ExitCode)
}

// exitCode maps a remote exit code onto a local one (0..255).
func exitCode(code int) int {
	switch {
	case code < 0:
		return 1
	case code > 255:
		return 255
	}
	return code
}

// shellJoin turns argv into the command line envd runs with bash -c: a
// single argument is used as is (it may be a whole script); several are
// each quoted as needed, so they reach the remote program unchanged.
func shellJoin(argv []string) string {
	if len(argv) == 1 {
		return argv[0]
	}
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = shellQuote(a)
	}
	return strings.Join(quoted, " ")
}

// shellQuote quotes s for a POSIX shell unless it is made of safe characters.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_@%+=:,./-", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
