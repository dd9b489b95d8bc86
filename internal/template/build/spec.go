package build

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"
)

// Spec is a template to build: the structured fields, or a Dockerfile
// (which then overrides every other field, as in the official SDK).
type Spec struct {
	BaseImage   string            `json:"base_image,omitempty"` // built-in template, built template or image reference; default "base"
	RunCmds     []string          `json:"run_cmds,omitempty"`
	Copies      []Copy            `json:"copies,omitempty"`
	Envs        map[string]string `json:"envs,omitempty"`
	AptPackages []string          `json:"apt_packages,omitempty"`
	Packages    []string          `json:"packages,omitempty"` // the official SDK's name for apt_packages
	Workdir     string            `json:"workdir,omitempty"`
	User        string            `json:"user,omitempty"`
	StartCmd    string            `json:"start_cmd,omitempty"`
	ReadyCheck  *ReadyCheck       `json:"-"`
	ReadyCmd    string            `json:"ready_cmd,omitempty"`
	Dockerfile  string            `json:"dockerfile,omitempty"`
}

// Copy copies Src (relative to the build context) to Dst in the template.
type Copy struct {
	Src  string `json:"src"`
	Dst  string `json:"dst"`
	Mode *int   `json:"mode,omitempty"` // permission bits, e.g. 0o755 (493)
}

// UnmarshalJSON accepts ready_check as an object or as a command string.
func (s *Spec) UnmarshalJSON(b []byte) error {
	type plain Spec
	var aux struct {
		plain
		ReadyCheck json.RawMessage `json:"ready_check,omitempty"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*s = Spec(aux.plain)
	raw := strings.TrimSpace(string(aux.ReadyCheck))
	switch {
	case raw == "" || raw == "null":
	case strings.HasPrefix(raw, `"`):
		var cmd string
		if err := json.Unmarshal(aux.ReadyCheck, &cmd); err != nil {
			return err
		}
		s.ReadyCheck = &ReadyCheck{Cmd: cmd}
	default:
		s.ReadyCheck = &ReadyCheck{}
		if err := json.Unmarshal(aux.ReadyCheck, s.ReadyCheck); err != nil {
			return fmt.Errorf("ready_check: %w", err)
		}
	}
	return nil
}

// MarshalJSON writes ready_check as an object.
func (s Spec) MarshalJSON() ([]byte, error) {
	type plain Spec
	return json.Marshal(struct {
		plain
		ReadyCheck *ReadyCheck `json:"ready_check,omitempty"`
	}{plain(s), s.ReadyCheck})
}

// Plan turns the spec into a build plan: one stage whose steps are the
// envs, the apt packages, the run commands, the copies, the working
// directory and user, then the start command.
func (s Spec) Plan() (*Plan, error) {
	if s.Dockerfile != "" {
		p, err := ParseDockerfile([]byte(s.Dockerfile))
		if err != nil {
			return nil, err
		}
		// A start command and ready check beside a Dockerfile override its CMD.
		last := p.Stages[len(p.Stages)-1]
		if s.StartCmd != "" {
			last.Steps = append(last.Steps,
				Step{Kind: StepStart, Entrypoint: true, Text: "ENTRYPOINT []"}, // clears the Dockerfile's
				Step{Kind: StepStart, Cmd: s.StartCmd, Text: "CMD " + s.StartCmd})
		}
		if r := s.readyCheck(); r != nil {
			if err := validateReady(r); err != nil {
				return nil, &InputError{Msg: err.Error()}
			}
			b, _ := json.Marshal(r)
			last.Steps = append(last.Steps, Step{Kind: StepReady, Ready: r, Text: "READY " + string(b)})
		}
		return p, nil
	}
	bad := func(format string, args ...any) error { return &InputError{Msg: fmt.Sprintf(format, args...)} }
	st := &Stage{Base: strings.TrimSpace(s.BaseImage)}
	if st.Base == "" {
		st.Base = "base"
	}
	if env := sortedEnv(s.Envs); len(env) > 0 {
		var parts []string
		for _, kv := range env {
			if !envKeyRE.MatchString(kv[0]) || strings.ContainsRune(kv[1], 0) {
				return nil, bad("envs: bad variable %q", kv[0])
			}
			parts = append(parts, kv[0]+"="+shellQuote(kv[1]))
		}
		st.Steps = append(st.Steps, Step{Kind: StepEnv, Env: env, Text: "ENV " + strings.Join(parts, " ")})
	}
	pkgs := append(append([]string(nil), s.AptPackages...), s.Packages...)
	if len(pkgs) > 0 {
		for _, p := range pkgs {
			if !packageRE.MatchString(p) {
				return nil, bad("apt_packages: bad package name %q", p)
			}
		}
		cmd := "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends " +
			strings.Join(pkgs, " ") + " && rm -rf /var/lib/apt/lists/*"
		st.Steps = append(st.Steps, Step{Kind: StepRun, Cmd: cmd, Text: "RUN " + cmd})
	}
	for _, c := range s.RunCmds {
		if strings.TrimSpace(c) == "" || strings.ContainsRune(c, 0) {
			return nil, bad("run_cmds: empty command or NUL byte")
		}
		st.Steps = append(st.Steps, Step{Kind: StepRun, Cmd: c, Text: "RUN " + c})
	}
	for _, c := range s.Copies {
		if c.Src == "" || c.Dst == "" {
			return nil, bad("copies: src and dst are required")
		}
		if cl := path.Clean(c.Src); cl == ".." || strings.HasPrefix(cl, "../") {
			return nil, bad("copies: source %q is outside the build context", c.Src)
		}
		cp := &CopyStep{Srcs: []string{c.Src}, Dst: c.Dst}
		text := "COPY " + shellQuote(c.Src) + " " + shellQuote(c.Dst)
		if c.Mode != nil {
			if *c.Mode < 0 || *c.Mode > 0o7777 {
				return nil, bad("copies: bad mode %d", *c.Mode)
			}
			m := uint32(*c.Mode)
			cp.Mode = &m
			text = fmt.Sprintf("COPY --chmod=%o %s %s", m, shellQuote(c.Src), shellQuote(c.Dst))
		}
		st.Steps = append(st.Steps, Step{Kind: StepCopy, Copy: cp, Text: text})
	}
	if s.Workdir != "" {
		st.Steps = append(st.Steps, Step{Kind: StepWorkdir, Path: s.Workdir, Text: "WORKDIR " + s.Workdir})
	}
	if s.User != "" {
		st.Steps = append(st.Steps, Step{Kind: StepUser, Path: s.User, Text: "USER " + s.User})
	}
	if s.StartCmd != "" {
		st.Steps = append(st.Steps, Step{Kind: StepStart, Cmd: s.StartCmd, Text: "CMD " + s.StartCmd})
	}
	if ready := s.readyCheck(); ready != nil {
		if s.StartCmd == "" {
			return nil, bad("ready_check needs a start_cmd")
		}
		if err := validateReady(ready); err != nil {
			return nil, bad("%v", err)
		}
		b, _ := json.Marshal(ready)
		st.Steps = append(st.Steps, Step{Kind: StepReady, Ready: ready, Text: "READY " + string(b)})
	}
	return &Plan{Stages: []*Stage{st}}, nil
}

func (s Spec) readyCheck() *ReadyCheck {
	if s.ReadyCheck == nil && s.ReadyCmd != "" {
		return &ReadyCheck{Cmd: s.ReadyCmd}
	}
	return s.ReadyCheck
}
