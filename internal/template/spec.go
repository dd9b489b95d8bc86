package template

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Spec describes a template to build: Debian minbase plus packages and
// commands. Built-in templates are Specs too.
type Spec struct {
	Name string `json:"name"`
	// Base names a built-in template whose packages and commands come first ("" = minbase only).
	Base string `json:"base,omitempty"`
	// AptPackages are Debian package names, optionally "name=version".
	AptPackages []string `json:"apt_packages,omitempty"`
	// RunCmds are shell commands run as root in the new root filesystem
	// (chroot, network available), in order, after the packages are installed.
	RunCmds []string `json:"run_cmds,omitempty"`
	// Envs is the environment of the run commands and, recorded in the
	// metadata, of the sandbox's processes.
	Envs map[string]string `json:"envs,omitempty"`
	// StartCmd is recorded in the metadata for the orchestrator to start
	// when a sandbox of this template starts ("" = none).
	StartCmd string `json:"start_cmd,omitempty"`
}

// basePackages go into every template. bash-static is the same bash
// release linked statically: envd runs commands on it (see envd/process).
var basePackages = []string{
	"bash", "bash-static", "ca-certificates", "coreutils", "curl", "git", "iproute2",
	"iputils-ping", "jq", "less", "procps", "vim-tiny",
}

// builtins are the templates every Manager can build by name.
var builtins = map[string]Spec{
	"base": {Name: "base", AptPackages: basePackages},
	// PIP_BREAK_SYSTEM_PACKAGES: pip installs into the system Python
	// despite Debian's PEP 668 marker (sandboxes are disposable).
	"python": {Name: "python", Base: "base", AptPackages: []string{"python3", "python3-pip", "python3-venv"},
		Envs: map[string]string{"PIP_BREAK_SYSTEM_PACKAGES": "1"}},
	"node": {Name: "node", Base: "base", AptPackages: []string{"nodejs", "npm"}},
}

// Builtin returns the built-in template spec called name.
func Builtin(name string) (Spec, bool) {
	s, ok := builtins[name]
	return s, ok
}

// BuiltinEnvs returns the environment the built-in template called name
// gives its sandboxes' processes (its base's included), from this binary's
// definition, so a template built before an env was added gets it too.
func BuiltinEnvs(name string) map[string]string {
	s, ok := builtins[name]
	if !ok {
		return nil
	}
	return s.resolved().Envs
}

// BuiltinNames lists the built-in template names, sorted.
func BuiltinNames() []string {
	names := make([]string, 0, len(builtins))
	for n := range builtins {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	packageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$`)
	envKeyRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Validate checks a spec's names, packages and env keys.
func (s Spec) Validate() error {
	if !nameRE.MatchString(s.Name) {
		return fmt.Errorf("template name %q: want [a-z0-9._-], at most 63 characters", s.Name)
	}
	if s.Base != "" {
		if _, ok := builtins[s.Base]; !ok {
			return fmt.Errorf("template %s: base %q: %w", s.Name, s.Base, ErrUnknownTemplate)
		}
	}
	for _, p := range s.AptPackages {
		if !packageRE.MatchString(p) {
			return fmt.Errorf("template %s: bad package name %q", s.Name, p)
		}
	}
	for k, v := range s.Envs {
		if !envKeyRE.MatchString(k) || strings.ContainsRune(v, 0) {
			return fmt.Errorf("template %s: bad env %q", s.Name, k)
		}
	}
	for _, c := range s.RunCmds {
		if strings.ContainsRune(c, 0) {
			return fmt.Errorf("template %s: run command contains NUL", s.Name)
		}
	}
	return nil
}

// resolved returns the spec with its base folded in: the base's packages
// and commands first, envs merged (the spec's own win).
func (s Spec) resolved() Spec {
	if s.Base == "" {
		return s
	}
	b := builtins[s.Base].resolved()
	r := s
	r.Base = ""
	r.AptPackages = dedup(append(slices.Clone(b.AptPackages), s.AptPackages...))
	r.RunCmds = append(slices.Clone(b.RunCmds), s.RunCmds...)
	if len(b.Envs) > 0 {
		r.Envs = map[string]string{}
		for k, v := range b.Envs {
			r.Envs[k] = v
		}
		for k, v := range s.Envs {
			r.Envs[k] = v
		}
	}
	if r.StartCmd == "" {
		r.StartCmd = b.StartCmd
	}
	return r
}

func dedup(in []string) []string {
	seen := map[string]bool{}
	out := in[:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// userHook creates the unprivileged "user" account (uid 1000, /home/user, bash).
const userHook = `chroot "$1" useradd --create-home --home-dir /home/user --uid 1000 --user-group --shell /bin/bash user`

// localeHook compiles the C.UTF-8 locale (the sandboxes' LANG) into
// locale-archive: glibc then maps one file instead of trying two paths for
// each of a dozen LC_* files at every process start, about 40 syscalls that
// cost ~5 ms per bash start under gVisor's ptrace platform.
const localeHook = `chroot "$1" localedef --add-to-archive /usr/lib/locale/C.utf8`

// mmdebstrapArgs returns mmdebstrap's argv (without the program name) to
// build spec into target. The spec must be valid and resolved. Every hook
// is a fixed string or a quoted user command: mmdebstrap runs each hook
// with sh, "$1" being the new root.
func mmdebstrapArgs(spec Spec, suite, target, mirror string) []string {
	args := []string{
		"--variant=minbase",
		"--mode=root",
		"--format=directory",
		`--aptopt=APT::Install-Recommends "false"`,
		"--dpkgopt=path-exclude=/usr/share/man/*",
		"--dpkgopt=path-exclude=/usr/share/locale/*",
		"--dpkgopt=path-exclude=/usr/share/doc/*",
		"--dpkgopt=path-include=/usr/share/doc/*/copyright",
	}
	if len(spec.AptPackages) > 0 {
		args = append(args, "--include="+strings.Join(spec.AptPackages, ","))
	}
	args = append(args, "--customize-hook="+userHook, "--customize-hook="+localeHook)
	envArgs := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "DEBIAN_FRONTEND=noninteractive"}
	keys := make([]string, 0, len(spec.Envs))
	for k := range spec.Envs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		envArgs = append(envArgs, k+"="+spec.Envs[k])
	}
	for _, c := range spec.RunCmds {
		parts := []string{`chroot "$1" /usr/bin/env -i`}
		for _, e := range envArgs {
			parts = append(parts, shellQuote(e))
		}
		parts = append(parts, "/bin/sh -c", shellQuote(c))
		args = append(args, "--customize-hook="+strings.Join(parts, " "))
	}
	args = append(args, suite, target)
	if mirror != "" {
		args = append(args, mirror)
	}
	return args
}

// shellQuote quotes s as one sh word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
