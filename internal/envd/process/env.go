package process

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/declaw/declaw/internal/envd/sysuser"
)

// DefaultPath is the PATH every process starts with unless overridden.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// BuildEnv returns the environment of a process run as u in cwd, built from
// scratch (never inherited from envd): the defaults HOME, PATH, LANG, USER,
// LOGNAME, SHELL and PWD, then the sandbox-wide envs, then the request's
// envs, each layer overriding the previous. The result is sorted by name.
func BuildEnv(u *sysuser.User, cwd string, sandbox, request map[string]string) ([]string, error) {
	env := map[string]string{
		"HOME":    u.Home,
		"PATH":    DefaultPath,
		"LANG":    "C.UTF-8",
		"USER":    u.Name,
		"LOGNAME": u.Name,
		"SHELL":   u.Shell,
		"PWD":     cwd,
	}
	if u.Shell == "" {
		env["SHELL"] = "/bin/sh"
	}
	for _, layer := range []map[string]string{sandbox, request} {
		for k, v := range layer {
			if err := ValidateEnv(k, v); err != nil {
				return nil, err
			}
			env[k] = v
		}
	}
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out, nil
}

// ValidateEnv reports whether k=v can be passed to execve.
func ValidateEnv(k, v string) error {
	switch {
	case k == "":
		return fmt.Errorf("%w: empty environment variable name", ErrBadRequest)
	case strings.ContainsAny(k, "=\x00"):
		return fmt.Errorf("%w: environment variable name %q contains '=' or NUL", ErrBadRequest, k)
	case strings.IndexByte(v, 0) >= 0:
		return fmt.Errorf("%w: environment variable %q contains NUL", ErrBadRequest, k)
	}
	return nil
}
