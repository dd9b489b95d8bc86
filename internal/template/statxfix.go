package template

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// statxFixSource is a tiny library preloaded into every template's
// programs; see the comment in statxfix.c.in for why (.in: the go command refuses .c files in a package without cgo).
//
//go:embed statxfix.c.in
var statxFixSource []byte

// Where the statx fix lives in a template, and the preload list naming it.
const (
	StatxFixPath  = "/usr/local/lib/declaw/statxfix.so"
	ldPreloadPath = "/etc/ld.so.preload"
)

// installStatxFix compiles statxfix.c.in with the host's C compiler (the
// templates are Debian like the host: the library only needs glibc's
// syscall(3)) into rootfs and lists it in /etc/ld.so.preload. Build output
// goes to log.
func installStatxFix(ctx context.Context, rootfs string, log io.Writer) error {
	cc, err := exec.LookPath("cc")
	if err != nil {
		if cc, err = exec.LookPath("gcc"); err != nil {
			return fmt.Errorf("statx fix: no C compiler (install gcc): %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "declaw-statxfix-")
	if err != nil {
		return fmt.Errorf("statx fix: %w", err)
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "statxfix.c")
	if err := os.WriteFile(src, statxFixSource, 0o644); err != nil {
		return fmt.Errorf("statx fix: %w", err)
	}
	lib := filepath.Join(rootfs, StatxFixPath)
	if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
		return fmt.Errorf("statx fix: %w", err)
	}
	cmd := exec.CommandContext(ctx, cc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-s", "-o", lib, src)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("statx fix: compile with %s: %w", cc, err)
	}
	if err := os.Chmod(lib, 0o644); err != nil {
		return fmt.Errorf("statx fix: %w", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, ldPreloadPath), []byte(StatxFixPath+"\n"), 0o644); err != nil {
		return fmt.Errorf("statx fix: preload: %w", err)
	}
	return nil
}
