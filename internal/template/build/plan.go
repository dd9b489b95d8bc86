package build

import (
	"fmt"
	"github.com/declaw/declaw/internal/template"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Plan is a parsed build: stages in order; the last one is the template.
type Plan struct {
	Stages []*Stage
}

// Stage is one FROM and the steps after it.
type Stage struct {
	Name  string // "AS name", lower-cased; "" if none
	Base  string // a built-in template, an earlier stage's name, or an image reference
	Line  int
	Steps []Step
}

// Step kinds.
const (
	StepRun     = "RUN"
	StepCopy    = "COPY"
	StepEnv     = "ENV"
	StepArg     = "ARG"
	StepWorkdir = "WORKDIR"
	StepUser    = "USER"
	StepExpose  = "EXPOSE"
	StepStart   = "START" // CMD / ENTRYPOINT / start_cmd: the start command
	StepReady   = "READY"
)

// Step is one instruction. Only RUN, COPY and WORKDIR change files; the
// others change what later steps and sandboxes see.
type Step struct {
	Kind string
	Line int    // 1-based line in the Dockerfile; 0 for a structured spec
	Text string // the instruction as shown in logs and hashed into the cache key

	Cmd        string      // RUN (a shell command line), START
	Argv       []string    // RUN/START in exec form (then Cmd is their quoted join)
	Env        [][2]string // ENV, ARG (in order)
	Path       string      // WORKDIR (absolute), USER
	Copy       *CopyStep
	Ports      []string // EXPOSE
	Entrypoint bool     // START from ENTRYPOINT (CMD then appends)
	Ready      *ReadyCheck
}

// CopyStep is a COPY/ADD: sources relative to the build context (or to
// the root of the stage From), a destination in the image.
type CopyStep struct {
	Srcs  []string
	Dst   string
	From  string // a stage name; "" = the build context
	Chown string // "user[:group]" as numbers or names
	Mode  *uint32
}

// ReadyCheck is the template package's ready check.
type ReadyCheck = template.ReadyCheck

func validateReady(r *ReadyCheck) error {
	n := 0
	if r.Cmd != "" {
		n++
	}
	if r.Port != 0 {
		n++
		if r.Port < 1 || r.Port > 65535 {
			return fmt.Errorf("ready check: port %d out of range", r.Port)
		}
	}
	if r.URL != "" {
		n++
		if !strings.HasPrefix(r.URL, "http://") && !strings.HasPrefix(r.URL, "https://") {
			return fmt.Errorf("ready check: url %q is not http(s)", r.URL)
		}
	}
	if n != 1 {
		return fmt.Errorf("ready check: set exactly one of cmd, port, url")
	}
	if r.Timeout < 0 || r.Timeout > 3600 {
		return fmt.Errorf("ready check: timeout %d out of range (0..3600 s)", r.Timeout)
	}
	return nil
}

// InputError is a problem with the build request itself (400): a bad
// Dockerfile or spec. Line is the Dockerfile line (0: not a line).
type InputError struct {
	Line int
	Msg  string
}

func (e *InputError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("Dockerfile line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

// StepError is a build failure to show users as is: a step that failed,
// an image that cannot be pulled.
type StepError struct {
	Step string // the failing step ("" = before any step)
	Msg  string
	Err  error // a sentinel callers branch on, or nil
}

func (e *StepError) Error() string { return e.Msg }
func (e *StepError) Unwrap() error { return e.Err }

var (
	envKeyRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	packageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$`)
)

// shellQuote quotes s as one POSIX shell word.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:@%+,", r))
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func joinArgv(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

func sortedEnv(m map[string]string) [][2]string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([][2]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, [2]string{k, m[k]})
	}
	return out
}

func parseMode(s string) (*uint32, error) {
	if s == "" {
		return nil, nil
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o7777 {
		return nil, fmt.Errorf("bad mode %q (want octal, e.g. 0755)", s)
	}
	m := uint32(v)
	return &m, nil
}
