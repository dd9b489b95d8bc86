package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/declaw/declaw/sdk/go/declaw"
)

const sandboxUsage = `Usage: declaw sandbox COMMAND [flags]    (alias: declaw sbx)

Commands:
  create [-t TEMPLATE] [--timeout 300] [-e KEY[=VAL]]... [--metadata k=v]...
         [--no-internet] [--allow-out X]... [--deny-out X]... [--security-file policy.json]
         [--cpu-count N] [--memory-mb N] [--disk-mb N]
                                   create a sandbox and print its id
  list [--state running,paused] [--metadata k=v]... [--limit N]
                                   list sandboxes
  info ID                          describe a sandbox
  status ID                        print whether it runs
  kill ID...                       kill sandboxes
  set-timeout ID SECONDS           kill it SECONDS from now (0: never)
  pause ID / resume ID [--timeout S]
  snapshot ID                      snapshot its filesystem and print the snapshot id
  snapshots ID                     list its snapshots, newest first
  delete-snapshot ID SNAPSHOT      delete a snapshot
  restore ID [--snapshot SNAP] [--fork]
                                   bring the sandbox back to a snapshot, in place (same id;
                                   also a killed one); --fork: print a NEW sandbox's id instead
  exec ID [--cwd DIR] [--user U] [--timeout 60] [-e K=V]... -- CMD [ARGS...]
                                   run a command, stream its output, exit with its exit code
  connect ID [--user U] [--cwd DIR] [--timeout 0]
                                   an interactive terminal in the sandbox
  port-forward ID PORT [LOCAL]     serve PORT inside the sandbox on local LOCAL (port or host:port,
                                   default 127.0.0.1:PORT) over HTTP/WebSocket, until Ctrl-C
  files ls ID PATH [--depth N]     list a directory
  files read ID PATH               write a file's bytes to stdout
  files write ID PATH [LOCALFILE|-] upload a file (default: stdin)

` + clientFlagsHelp

// runSandbox runs "declaw sandbox VERB ..."; globals are client flags given
// before "sandbox".
func runSandbox(e *env, globals, args []string) int {
	if n := leadingClientFlags(args); n > 0 { // declaw sandbox --json list
		globals, args = append(globals[:len(globals):len(globals)], args[:n]...), args[n:]
	}
	if len(args) == 0 {
		fmt.Fprint(e.stderr, sandboxUsage)
		return 2
	}
	verb, args := args[0], args[1:]
	name := "declaw sandbox " + verb
	switch verb {
	case "create", "new":
		return sandboxCreate(e.newClientCmd(name, globals), args)
	case "list", "ls":
		return sandboxList(e.newClientCmd(name, globals), args)
	case "info", "get":
		return sandboxInfo(e.newClientCmd(name, globals), args)
	case "status":
		return sandboxStatus(e.newClientCmd(name, globals), args)
	case "kill", "rm":
		return sandboxKill(e.newClientCmd(name, globals), args)
	case "set-timeout", "timeout":
		return sandboxSetTimeout(e.newClientCmd(name, globals), args)
	case "pause", "resume":
		return sandboxPauseResume(e.newClientCmd(name, globals), verb, args)
	case "snapshot":
		return sandboxSnapshot(e.newClientCmd(name, globals), args)
	case "snapshots":
		return sandboxSnapshots(e.newClientCmd(name, globals), args)
	case "delete-snapshot":
		return sandboxDeleteSnapshot(e.newClientCmd(name, globals), args)
	case "restore":
		return sandboxRestore(e.newClientCmd(name, globals), args)
	case "exec":
		return sandboxExec(e.newClientCmd(name, globals), args)
	case "connect", "terminal":
		return sandboxConnect(e.newClientCmd(name, globals), args)
	case "files", "fs":
		return runFiles(e, globals, args)
	case "port-forward":
		return sandboxPortForward(e.newClientCmd(name, globals), args)
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, sandboxUsage)
		return 0
	}
	fmt.Fprintf(e.stderr, "declaw sandbox: unknown command %q\n\n%s", verb, sandboxUsage)
	return 2
}

func sandboxCreate(c *clientCmd, args []string) int {
	fs := c.fs
	tmpl := fs.String("t", "base", "template")
	fs.StringVar(tmpl, "template", "base", "template")
	timeout := fs.Int("timeout", 300, "seconds until the sandbox is killed (0: never)")
	envs := &kvFlag{lookup: c.e.getenv}
	fs.Var(envs, "e", "environment `KEY=VAL` of every process (KEY alone: the local value); repeatable")
	fs.Var(envs, "env", "same as -e")
	meta := &kvFlag{}
	fs.Var(meta, "metadata", "`k=v` metadata; repeatable")
	noInternet := fs.Bool("no-internet", false, "deny all egress (deny_out 0.0.0.0/0); --allow-out entries still pass")
	var allowOut, denyOut listFlag
	fs.Var(&allowOut, "allow-out", "allow egress to an IP, CIDR, domain or *.domain; repeatable")
	fs.Var(&denyOut, "deny-out", "deny egress to an IP, CIDR or *; repeatable")
	secFile := fs.String("security-file", "", "SecurityPolicy JSON `file` (- for stdin)")
	cpus := fs.Float64("cpu-count", 0, "vCPUs (0: the template's, else the server's default)")
	mem := fs.Int64("memory-mb", 0, "memory in MiB (0: the template's, else the server's default)")
	disk := fs.Int64("disk-mb", 0, "writable disk in MiB (0: the template's, else the server's default)")
	var vols listFlag
	fs.Var(&vols, "volume", "attach a volume `ID:PATH[:MODE[:SUBPATH]]` (mode copy, the default); repeatable")
	if _, _, _, ok := c.parse(args, 0, 0); !ok {
		return 2
	}
	req := declaw.CreateRequest{Template: *tmpl, Timeout: timeout, Envs: envs.m, Metadata: meta.m}
	for _, v := range vols {
		a, err := parseVolumeFlag(v)
		if err != nil {
			c.usagef("%v", err)
			return 2
		}
		req.Volumes = append(req.Volumes, a)
	}
	fs.Visit(func(f *flag.Flag) { // only what was given: the server validates the values
		switch f.Name {
		case "cpu-count":
			req.CPUCount = cpus
		case "memory-mb":
			req.MemoryMB = mem
		case "disk-mb":
			req.DiskMB = disk
		}
	})
	if *noInternet {
		denyOut = append(denyOut, "0.0.0.0/0")
	}
	if len(allowOut) > 0 || len(denyOut) > 0 {
		req.Network = &declaw.Network{AllowOut: allowOut, DenyOut: denyOut}
	}
	if *secFile != "" {
		var b []byte
		var err error
		if *secFile == "-" {
			b, err = io.ReadAll(c.e.stdin)
		} else {
			b, err = os.ReadFile(*secFile)
		}
		if err != nil {
			return c.fail(fmt.Errorf("security file: %w", err))
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(b, &obj); err != nil {
			return c.fail(fmt.Errorf("security file %s: not a JSON object: %w", *secFile, err))
		}
		req.Security = json.RawMessage(b)
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	sb, err := cl.CreateSandbox(ctx, req)
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		c.printRaw(sb.Raw)
		return 0
	}
	fmt.Fprintln(c.e.stdout, sb.SandboxID)
	return 0
}

func sandboxList(c *clientCmd, args []string) int {
	var states listFlag
	c.fs.Var(&states, "state", "states to list, comma-separated: running, paused, killed (default running,paused)")
	meta := &kvFlag{}
	c.fs.Var(meta, "metadata", "only sandboxes with metadata `k=v`; repeatable")
	limit := c.fs.Int("limit", 0, "list at most N sandboxes (0: all)")
	if _, _, _, ok := c.parse(args, 0, 0); !ok {
		return 2
	}
	if *limit < 0 {
		c.usagef("--limit must be >= 0")
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	q := declaw.ListQuery{States: states, Metadata: meta.m}
	all := []declaw.Sandbox{}
	for {
		q.Limit = 0
		if *limit > 0 {
			q.Limit = min(*limit-len(all), 1000)
		}
		page, err := cl.ListSandboxes(ctx, q)
		if err != nil {
			return c.fail(err)
		}
		all = append(all, page.Sandboxes...)
		if page.NextToken == "" || len(page.Sandboxes) == 0 || *limit > 0 && len(all) >= *limit {
			break
		}
		q.NextToken = page.NextToken
	}
	if *limit > 0 && len(all) > *limit {
		all = all[:*limit]
	}
	if c.opts.json {
		raws := make([]json.RawMessage, len(all))
		for i, sb := range all {
			raws[i] = sb.Raw
		}
		c.printJSON(raws)
		return 0
	}
	tw := tabwriter.NewWriter(c.e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SANDBOX ID\tTEMPLATE\tSTATE\tSTARTED\tENDS\tMETADATA")
	for _, sb := range all {
		ends, meta := fmtTime(sb.EndAt), fmtMap(sb.Metadata)
		if ends == "" {
			ends = "never"
		}
		if meta == "" {
			meta = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", sb.SandboxID, sb.TemplateID, sb.State, fmtTime(&sb.StartedAt), ends, meta)
	}
	tw.Flush()
	return 0
}

func sandboxInfo(c *clientCmd, args []string) int {
	pos, _, _, ok := c.parse(args, 1, 1)
	if !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	sb, err := cl.GetSandbox(ctx, pos[0])
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		c.printRaw(sb.Raw)
		return 0
	}
	tw := tabwriter.NewWriter(c.e.stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("sandbox_id", sb.SandboxID)
	row("template", sb.TemplateID)
	row("state", sb.State)
	row("started_at", fmtTime(&sb.StartedAt))
	if sb.EndAt != nil {
		row("end_at", fmtTime(sb.EndAt))
	} else if sb.State != "killed" {
		row("end_at", "never")
	}
	row("killed_at", fmtTime(sb.KilledAt))
	row("timeout", strconv.Itoa(sb.Timeout)+"s")
	row("metadata", fmtMap(sb.Metadata))
	row("envs", fmtMap(sb.Envs))
	if len(sb.Network) > 0 && string(sb.Network) != "null" {
		row("network", string(sb.Network))
	}
	row("guest_ip", sb.GuestIP)
	row("runtime", sb.Runtime)
	tw.Flush()
	return 0
}

func sandboxStatus(c *clientCmd, args []string) int {
	pos, _, _, ok := c.parse(args, 1, 1)
	if !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	st, err := cl.SandboxStatus(ctx, pos[0])
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		c.printJSON(st)
		return 0
	}
	state := st.State
	if state == "" {
		state = map[bool]string{true: "running", false: "not running"}[st.IsRunning]
	}
	fmt.Fprintln(c.e.stdout, state)
	return 0
}

func sandboxKill(c *clientCmd, args []string) int {
	pos, _, _, ok := c.parse(args, 1, -1)
	if !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	type result struct {
		SandboxID string `json:"sandbox_id"`
		Killed    *bool  `json:"killed,omitempty"`
		Error     string `json:"error,omitempty"`
		Code      string `json:"code,omitempty"`
	}
	var results []result
	code := 0
	for _, id := range pos {
		killed, err := cl.KillSandbox(ctx, id)
		if err != nil {
			code = c.fail(err) // the server's message names the sandbox
			r := result{SandboxID: id, Error: err.Error()}
			var apiErr *declaw.Error
			if errors.As(err, &apiErr) {
				r.Code = apiErr.Code
			}
			results = append(results, r)
			continue
		}
		results = append(results, result{SandboxID: id, Killed: &killed})
		if !c.opts.json {
			if killed {
				fmt.Fprintf(c.e.stdout, "killed %s\n", id)
			} else {
				fmt.Fprintf(c.e.stdout, "%s was already killed\n", id)
			}
		}
	}
	if c.opts.json {
		c.printJSON(results)
	}
	return code
}

func sandboxSetTimeout(c *clientCmd, args []string) int {
	pos, _, _, ok := c.parse(args, 2, 2)
	if !ok {
		return 2
	}
	secs, err := strconv.Atoi(pos[1])
	if err != nil || secs < 0 {
		c.usagef("SECONDS must be a non-negative integer, got %q", pos[1])
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	sb, err := cl.SetTimeout(ctx, pos[0], secs)
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		c.printRaw(sb.Raw)
		return 0
	}
	if sb.EndAt == nil {
		fmt.Fprintf(c.e.stdout, "%s: no timeout\n", pos[0])
	} else {
		fmt.Fprintf(c.e.stdout, "%s: killed at %s\n", pos[0], fmtTime(sb.EndAt))
	}
	return 0
}

func sandboxPauseResume(c *clientCmd, verb string, args []string) int {
	timeout := -1
	if verb == "resume" {
		c.fs.IntVar(&timeout, "timeout", -1, "reset the timeout to `S` seconds from now")
	}
	pos, _, _, ok := c.parse(args, 1, 1)
	if !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	var raw json.RawMessage
	if verb == "pause" {
		raw, err = cl.Pause(ctx, pos[0])
	} else {
		var t *int
		if timeout >= 0 {
			t = &timeout
		}
		raw, err = cl.Resume(ctx, pos[0], t)
	}
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		// The server's answer, naming the sandbox if it does not ({} today).
		var obj map[string]json.RawMessage
		if len(raw) == 0 || json.Unmarshal(raw, &obj) == nil && obj != nil {
			if _, ok := obj["sandbox_id"]; !ok {
				if obj == nil {
					obj = map[string]json.RawMessage{}
				}
				obj["sandbox_id"], _ = json.Marshal(pos[0])
				c.printJSON(obj)
				return 0
			}
		}
		c.printRaw(raw)
		return 0
	}
	fmt.Fprintf(c.e.stdout, "%sd %s\n", verb, pos[0])
	return 0
}

// fmtTime formats t in UTC (RFC 3339), or "" for nil or zero.
func fmtTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// fmtMap formats m as sorted k=v pairs separated by commas.
func fmtMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}
