package build

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// MaxDockerfile is the largest Dockerfile accepted (413 above it).
const MaxDockerfile = 64 << 10

var lineRE = regexp.MustCompile(`(?i)line (\d+)`)

// ParseDockerfile parses a Dockerfile with buildkit's parser into a Plan.
// Supported: FROM [AS], RUN, COPY/ADD (local sources, --from, --chown,
// --chmod), ENV, ARG, WORKDIR, USER, EXPOSE, CMD, ENTRYPOINT, LABEL and
// MAINTAINER (ignored). Anything else is an InputError naming its line.
// Variables ($X, ${X:-d}) are expanded from the Dockerfile's ARGs and ENVs.
func ParseDockerfile(src []byte) (*Plan, error) {
	if len(src) > MaxDockerfile {
		return nil, &InputError{Msg: fmt.Sprintf("Dockerfile is %d bytes, more than the limit of %d", len(src), MaxDockerfile)}
	}
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, inputErr(err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, inputErr(err)
	}
	if len(stages) == 0 {
		return nil, &InputError{Line: 1, Msg: "no FROM instruction"}
	}
	lex := shell.NewLex(res.EscapeToken)
	global := map[string]string{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				v, _, err := lex.ProcessWord(*kv.Value, envGetter(global))
				if err != nil {
					return nil, &InputError{Line: lineOf(&a), Msg: err.Error()}
				}
				global[kv.Key] = v
			} else if _, ok := global[kv.Key]; !ok {
				global[kv.Key] = ""
			}
		}
	}
	plan := &Plan{}
	names := map[string]bool{}
	for i := range stages {
		st := &stages[i]
		line := 0
		if len(st.Location) > 0 {
			line = st.Location[0].Start.Line
		}
		base, _, err := lex.ProcessWord(st.BaseName, envGetter(global))
		if err != nil {
			return nil, &InputError{Line: line, Msg: err.Error()}
		}
		if base == "" {
			return nil, &InputError{Line: line, Msg: "FROM needs an image"}
		}
		if st.Platform != "" {
			return nil, &InputError{Line: line, Msg: "FROM --platform is not supported"}
		}
		stage := &Stage{Name: strings.ToLower(st.Name), Base: base, Line: line}
		if stage.Name != "" {
			if names[stage.Name] {
				return nil, &InputError{Line: line, Msg: fmt.Sprintf("stage name %q is used twice", stage.Name)}
			}
		}
		env := map[string]string{}
		for _, c := range st.Commands {
			step, err := convertCommand(c, lex, env, names)
			if err != nil {
				return nil, err
			}
			if step != nil {
				stage.Steps = append(stage.Steps, *step)
			}
		}
		if stage.Name != "" {
			names[stage.Name] = true
		}
		plan.Stages = append(plan.Stages, stage)
	}
	return plan, nil
}

type envGetter map[string]string

func (e envGetter) Get(k string) (string, bool) { v, ok := e[k]; return v, ok }
func (e envGetter) Keys() []string {
	out := make([]string, 0, len(e))
	for k := range e {
		out = append(out, k)
	}
	return out
}

type located interface{ Location() []parser.Range }

func lineOf(c located) int {
	if loc := c.Location(); len(loc) > 0 {
		return loc[0].Start.Line
	}
	return 0
}

// inputErr turns a parser error into an InputError with its line.
func inputErr(err error) error {
	line := 0
	var le *parser.LocationError
	if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
		line = le.Locations[0][0].Start.Line
	} else if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
		fmt.Sscan(m[1], &line)
	}
	msg := err.Error()
	if i := strings.Index(msg, ": "); i >= 0 && strings.HasPrefix(strings.ToLower(msg), "dockerfile parse error") {
		msg = msg[i+2:]
	}
	return &InputError{Line: line, Msg: msg}
}

func convertCommand(c instructions.Command, lex *shell.Lex, env map[string]string, stages map[string]bool) (*Step, error) {
	line := lineOf(c)
	bad := func(format string, args ...any) error {
		return &InputError{Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	expand := func(w string) (string, error) {
		v, _, err := lex.ProcessWord(w, envGetter(env))
		if err != nil {
			return "", bad("%v", err)
		}
		return v, nil
	}
	text := strings.TrimSpace(c.(fmt.Stringer).String())
	step := &Step{Line: line, Text: text}
	switch c := c.(type) {
	case *instructions.RunCommand:
		if len(c.FlagsUsed) > 0 {
			return nil, bad("RUN --%s is not supported", c.FlagsUsed[0])
		}
		if len(c.Files) > 0 {
			return nil, bad("RUN with a here-document is not supported")
		}
		step.Kind = StepRun
		if c.PrependShell {
			step.Cmd = strings.Join(c.CmdLine, " ")
		} else {
			step.Argv = c.CmdLine
			step.Cmd = joinArgv(c.CmdLine)
		}
	case *instructions.CopyCommand:
		if c.Link || c.Parents || len(c.ExcludePatterns) > 0 || len(c.SourceContents) > 0 {
			return nil, bad("COPY --link, --parents, --exclude and here-documents are not supported")
		}
		cp, err := copyStep(c.SourcePaths, c.DestPath, c.Chown, c.Chmod, expand, bad)
		if err != nil {
			return nil, err
		}
		if c.From != "" {
			from := strings.ToLower(c.From)
			if !stages[from] {
				return nil, bad("COPY --from=%s: no earlier stage has that name (images are not supported as a source)", c.From)
			}
			cp.From = from
		}
		step.Kind, step.Copy = StepCopy, cp
	case *instructions.AddCommand:
		if c.Link || len(c.ExcludePatterns) > 0 || c.KeepGitDir != nil || c.Checksum != "" || len(c.SourceContents) > 0 {
			return nil, bad("ADD flags other than --chown/--chmod are not supported")
		}
		for _, s := range c.SourcePaths {
			if strings.Contains(s, "://") || strings.HasPrefix(s, "git@") {
				return nil, bad("ADD from a URL is not supported (download it in a RUN step)")
			}
		}
		cp, err := copyStep(c.SourcePaths, c.DestPath, c.Chown, c.Chmod, expand, bad)
		if err != nil {
			return nil, err
		}
		step.Kind, step.Copy = StepCopy, cp
	case *instructions.EnvCommand:
		step.Kind = StepEnv
		for _, kv := range c.Env {
			k, err := expand(kv.Key)
			if err != nil {
				return nil, err
			}
			v, err := expand(kv.Value)
			if err != nil {
				return nil, err
			}
			if !envKeyRE.MatchString(k) {
				return nil, bad("bad variable name %q", k)
			}
			env[k] = v
			step.Env = append(step.Env, [2]string{k, v})
		}
	case *instructions.ArgCommand:
		step.Kind = StepArg
		for _, kv := range c.Args {
			v := ""
			if kv.Value != nil {
				var err error
				if v, err = expand(*kv.Value); err != nil {
					return nil, err
				}
			}
			if _, set := env[kv.Key]; !set || kv.Value != nil {
				env[kv.Key] = v
			}
			step.Env = append(step.Env, [2]string{kv.Key, env[kv.Key]})
		}
	case *instructions.WorkdirCommand:
		p, err := expand(c.Path)
		if err != nil {
			return nil, err
		}
		step.Kind, step.Path = StepWorkdir, p
	case *instructions.UserCommand:
		u, err := expand(c.User)
		if err != nil {
			return nil, err
		}
		step.Kind, step.Path = StepUser, u
	case *instructions.ExposeCommand:
		step.Kind, step.Ports = StepExpose, c.Ports
	case *instructions.CmdCommand:
		step.Kind = StepStart
		step.Cmd, step.Argv = shellOrExec(c.ShellDependantCmdLine)
	case *instructions.EntrypointCommand:
		step.Kind, step.Entrypoint = StepStart, true
		step.Cmd, step.Argv = shellOrExec(c.ShellDependantCmdLine)
	case *instructions.HealthCheckCommand:
		// The health check becomes the start command's ready check.
		h := c.Health
		if h == nil || len(h.Test) == 0 || h.Test[0] == "NONE" {
			step.Kind, step.Ready = StepReady, nil
			return step, nil
		}
		r := &ReadyCheck{}
		switch h.Test[0] {
		case "CMD-SHELL":
			r.Cmd = strings.Join(h.Test[1:], " ")
		case "CMD":
			r.Cmd = joinArgv(h.Test[1:])
		default:
			return nil, bad("HEALTHCHECK %s is not supported", h.Test[0])
		}
		if d := h.StartPeriod + h.Interval*time.Duration(max(h.Retries, 1)); d > 0 {
			r.Timeout = int(min(d, time.Hour) / time.Second)
		}
		step.Kind, step.Ready = StepReady, r
	case *instructions.LabelCommand, *instructions.MaintainerCommand:
		return nil, nil
	default:
		name := strings.ToUpper(strings.Fields(text + " ?")[0])
		return nil, bad("%s is not supported", name)
	}
	return step, nil
}

func shellOrExec(c instructions.ShellDependantCmdLine) (string, []string) {
	if c.PrependShell {
		return strings.Join(c.CmdLine, " "), nil
	}
	return joinArgv(c.CmdLine), c.CmdLine
}

func copyStep(srcs []string, dst, chown, chmod string, expand func(string) (string, error), bad func(string, ...any) error) (*CopyStep, error) {
	cp := &CopyStep{Chown: chown}
	for _, s := range srcs {
		v, err := expand(s)
		if err != nil {
			return nil, err
		}
		cp.Srcs = append(cp.Srcs, v)
	}
	d, err := expand(dst)
	if err != nil {
		return nil, err
	}
	cp.Dst = d
	if cp.Mode, err = parseMode(chmod); err != nil {
		return nil, bad("%v", err)
	}
	if len(cp.Srcs) == 0 || cp.Dst == "" {
		return nil, bad("COPY needs a source and a destination")
	}
	if len(cp.Srcs) > 1 && !strings.HasSuffix(cp.Dst, "/") {
		return nil, bad("COPY with several sources needs a destination directory ending in /")
	}
	for _, s := range cp.Srcs {
		if s == ".." || strings.HasPrefix(path.Clean(s), "../") || path.Clean(s) == ".." {
			return nil, bad("COPY source %q is outside the build context", s)
		}
	}
	return cp, nil
}
