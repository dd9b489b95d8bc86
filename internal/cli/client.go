package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/declaw/declaw/sdk/go/declaw"
)

// clientFlagsHelp documents the flags every API client command takes.
const clientFlagsHelp = `Client flags (any command, before or after its arguments):
  --api-key KEY        API key (env DECLAW_API_KEY)
  --domain HOST[:PORT] API server; http unless the port is 443 or absent (env DECLAW_DOMAIN, default 127.0.0.1:8080)
  --api-url URL        full base URL, wins over DECLAW_DOMAIN (env DECLAW_API_URL)
  --json               print JSON instead of text
`

// clientOpts are the flags every client command shares.
type clientOpts struct {
	apiKey, domain, apiURL string
	json                   bool
}

// clientCmd is one run of a client command: its flag set, the shared
// flags and the global flags given before the command group.
type clientCmd struct {
	e       *env
	name    string // "declaw sandbox create"
	fs      *flag.FlagSet
	opts    clientOpts
	globals []string
}

func (e *env) newClientCmd(name string, globals []string) *clientCmd {
	c := &clientCmd{e: e, name: name, globals: globals}
	c.fs = flag.NewFlagSet(name, flag.ContinueOnError)
	c.fs.SetOutput(e.stderr)
	c.fs.StringVar(&c.opts.apiKey, "api-key", e.envOr("DECLAW_API_KEY", ""), "API key (env DECLAW_API_KEY)")
	c.fs.StringVar(&c.opts.domain, "domain", "", "API server host[:port] (env DECLAW_DOMAIN, default "+declaw.DefaultDomain+")")
	c.fs.StringVar(&c.opts.apiURL, "api-url", "", "API base URL (env DECLAW_API_URL)")
	c.fs.BoolVar(&c.opts.json, "json", false, "print JSON")
	return c
}

// parse parses the global flags, then args with flags allowed anywhere
// before "--". It returns the positional arguments and, when "--" was
// given, the arguments after it (dash true).
func (c *clientCmd) parse(args []string, minPos, maxPos int) (pos, rest []string, dash bool, ok bool) {
	if err := c.fs.Parse(c.globals); err != nil {
		return nil, nil, false, false
	}
	for {
		if err := c.fs.Parse(args); err != nil {
			return nil, nil, false, false
		}
		left := c.fs.Args()
		if n := len(args) - len(left); n > 0 && args[n-1] == "--" {
			rest, dash = left, true
			break
		}
		if len(left) == 0 {
			break
		}
		pos = append(pos, left[0])
		args = left[1:]
	}
	if len(pos) < minPos || maxPos >= 0 && len(pos) > maxPos {
		c.usagef("want %s", argCount(minPos, maxPos))
		return nil, nil, false, false
	}
	return pos, rest, dash, true
}

func argCount(min, max int) string {
	switch {
	case min == max && min == 1:
		return "1 argument"
	case min == max:
		return fmt.Sprintf("%d arguments", min)
	case max < 0:
		return fmt.Sprintf("at least %d argument(s)", min)
	}
	return fmt.Sprintf("%d to %d arguments", min, max)
}

// usagef reports a usage error and prints the command's flags.
func (c *clientCmd) usagef(format string, args ...any) {
	fmt.Fprintf(c.e.stderr, "%s: %s\n", c.name, fmt.Sprintf(format, args...))
	c.fs.Usage()
}

// client builds the API client from the flags and the environment:
// --api-url, else --domain, else DECLAW_API_URL, else DECLAW_DOMAIN.
func (c *clientCmd) client() (*declaw.Client, error) {
	cfg := declaw.Config{APIKey: c.opts.apiKey, UserAgent: "declaw-cli/" + Version}
	switch {
	case c.opts.apiURL != "":
		cfg.APIURL = c.opts.apiURL
	case c.opts.domain != "":
		cfg.Domain = c.opts.domain
	default:
		cfg.APIURL = c.e.envOr("DECLAW_API_URL", "")
		cfg.Domain = c.e.envOr("DECLAW_DOMAIN", "")
	}
	return declaw.New(cfg)
}

// fail prints err (for an API error: the server's message) and returns exit code 1.
func (c *clientCmd) fail(err error) int {
	var apiErr *declaw.Error
	if errors.As(err, &apiErr) && apiErr.Code != "" {
		fmt.Fprintf(c.e.stderr, "%s: %v (%d %s)\n", c.name, err, apiErr.Status, apiErr.Code)
		return 1
	}
	fmt.Fprintf(c.e.stderr, "%s: %v\n", c.name, err)
	return 1
}

// printJSON writes v as one line of JSON.
func (c *clientCmd) printJSON(v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(c.e.stderr, "%s: encode JSON: %v\n", c.name, err)
		return
	}
	c.e.stdout.Write(b.Bytes())
}

// printRaw writes a JSON value the server sent, compacted onto one line.
func (c *clientCmd) printRaw(raw json.RawMessage) {
	var b bytes.Buffer
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage("{}")
	}
	if err := json.Compact(&b, raw); err != nil {
		c.e.stdout.Write(append(bytes.TrimSpace(raw), '\n'))
		return
	}
	b.WriteByte('\n')
	c.e.stdout.Write(b.Bytes())
}

// signalContext is cancelled by SIGINT and SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// listFlag is a repeatable flag; each value may hold comma-separated items.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// kvFlag is a repeatable KEY=VAL flag. With lookup set, a bare KEY takes
// its value from lookup (the local environment).
type kvFlag struct {
	m      map[string]string
	lookup func(string) string
}

func (f *kvFlag) String() string {
	if f == nil || len(f.m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(f.m))
	for k := range f.m {
		keys = append(keys, k+"="+f.m[k])
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func (f *kvFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	if !ok {
		if f.lookup == nil {
			return fmt.Errorf("want KEY=VALUE, got %q", v)
		}
		val = f.lookup(k)
	}
	if f.m == nil {
		f.m = map[string]string{}
	}
	f.m[k] = val
	return nil
}

// leadingClientFlags returns how many of args are client flags given
// before a client command group ("declaw --json sandbox list").
func leadingClientFlags(args []string) int {
	n := 0
	for n < len(args) {
		a := args[n]
		name := strings.TrimLeft(a, "-")
		if !strings.HasPrefix(a, "-") || name == "" {
			break
		}
		name, _, hasValue := strings.Cut(name, "=")
		switch name {
		case "json":
			n++
		case "api-key", "domain", "api-url":
			if hasValue {
				n++
			} else {
				n += 2
			}
		default:
			return n
		}
	}
	return min(n, len(args))
}

// runClientGlobals runs "declaw [client flags] sandbox|sbx|audit ...".
func runClientGlobals(e *env, globals, args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "sandbox", "sbx", "sandboxes":
			return runSandbox(e, globals, args[1:])
		case "audit":
			return runAudit(e, globals, args[1:])
		case "keys", "key":
			return runKeys(e, globals, args[1:])
		case "teams", "team":
			return runTeams(e, globals, args[1:])
		case "volume", "volumes", "vol":
			return runVolume(e, globals, args[1:])
		}
	}
	fmt.Fprintf(e.stderr, "declaw: %s must be followed by sandbox, audit, keys or teams\n\n%s", strings.Join(globals, " "), usage)
	return 2
}

// runVerbs runs "NOUN VERB ARGS...", a client command group: client flags
// given before the verb join globals, the verb picks its function from
// verbs, and "help" prints usage. A missing or unknown verb prints usage
// and gives exit code 2.
func runVerbs(e *env, globals, args []string, noun, usage string, verbs map[string]func(*clientCmd, []string) int) int {
	if n := leadingClientFlags(args); n > 0 {
		globals, args = append(globals[:len(globals):len(globals)], args[:n]...), args[n:]
	}
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return 2
	}
	verb, args := args[0], args[1:]
	switch verb {
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, usage)
		return 0
	}
	fn, ok := verbs[verb]
	if !ok {
		fmt.Fprintf(e.stderr, "%s: unknown command %q\n\n%s", noun, verb, usage)
		return 2
	}
	return fn(e.newClientCmd(noun+" "+verb, globals), args)
}
