package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildCachePrefix names the directories BuildBinaries keeps in os.TempDir.
const buildCachePrefix = "declaw-testbin-"

var built struct {
	sync.Once
	declaw, envd string
	err          error
}

// BuildBinaries builds ./cmd/declaw and ./cmd/envd (CGO_ENABLED=0, static)
// once per test process and returns their paths. The binaries live in
// os.TempDir()/declaw-testbin-HASH, HASH covering the module's non-test
// sources, go.mod, go.sum, the Go version and the build environment, so
// other test processes reuse them until the sources change. A build failure
// fails every caller with the compiler's output.
func BuildBinaries(t testing.TB) (declawPath, envdPath string) {
	t.Helper()
	built.Do(func() {
		start := time.Now()
		root, err := ModuleRoot()
		if err != nil {
			built.err = err
			return
		}
		built.declaw, built.envd, built.err = buildBinaries(root)
		if built.err == nil {
			t.Logf("testenv: binaries ready in %v: %s", time.Since(start).Round(time.Millisecond), filepath.Dir(built.declaw))
		}
	})
	if built.err != nil {
		t.Fatalf("testenv.BuildBinaries: %v", built.err)
	}
	return built.declaw, built.envd
}

// ModuleRoot returns the directory holding go.mod, walking up from the
// working directory (a package directory under `go test`).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// buildBinaries builds the module at root (or reuses a cached build).
func buildBinaries(root string) (declaw, envd string, err error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", "", fmt.Errorf("find the go command: %w", err)
	}
	key, err := sourceKey(root)
	if err != nil {
		return "", "", fmt.Errorf("hash module sources: %w", err)
	}
	dir := filepath.Join(os.TempDir(), buildCachePrefix+key)
	declaw, envd = filepath.Join(dir, "declaw"), filepath.Join(dir, "envd")
	// declaw-init (the microVM guest init) is built beside declaw, where the
	// microvm runtime looks for it.
	if isExecutable(declaw) && isExecutable(envd) && isExecutable(filepath.Join(dir, "declaw-init")) {
		return declaw, envd, nil
	}

	// Build into a private directory, then rename it into place, so test
	// processes racing on the same key never see half-written binaries.
	tmp, err := os.MkdirTemp(os.TempDir(), buildCachePrefix+"tmp-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(tmp)
	var errs []error
	for _, b := range []struct {
		pkg, out string
		env      []string
	}{
		{"./cmd/declaw", "declaw", nil},
		{"./cmd/envd", "envd", []string{"CGO_ENABLED=0"}},
		{"./cmd/declaw-init", "declaw-init", []string{"CGO_ENABLED=0"}},
	} {
		cmd := exec.Command(goTool, "build", "-o", filepath.Join(tmp, b.out), b.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), b.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("go build %s (in %s): %w\n%s", b.pkg, root, err, bytes.TrimSpace(out)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another process may have won the race; use its binaries.
		if !(isExecutable(declaw) && isExecutable(envd)) {
			return "", "", fmt.Errorf("install binaries into %s: %w", dir, err)
		}
	}
	pruneBuildCache(dir)
	return declaw, envd, nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// sourceKey hashes what the binaries are built from: go.mod, go.sum and the
// top-level .go files, and every file below (embedded files included) except
// tests (*_test.go, *.test), hidden directories, testdata, and the top-level
// sdk, docs and bin; plus the toolchain and the environment variables that
// change a build.
func sourceKey(root string) (string, error) {
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	for _, k := range []string{"GOFLAGS", "CGO_ENABLED", "GOEXPERIMENT", "GOAMD64", "CC", "CGO_CFLAGS", "CGO_LDFLAGS"} {
		fmt.Fprintf(h, "%s=%s\n", k, os.Getenv(k))
	}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			if rel, _ := filepath.Rel(root, path); rel == "sdk" || rel == "docs" || rel == "bin" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasSuffix(name, "_test.go") || strings.HasSuffix(name, ".test") {
			return nil
		}
		if filepath.Dir(path) == root && name != "go.mod" && name != "go.sum" && !strings.HasSuffix(name, ".go") {
			return nil // build outputs and docs at the top level
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		rel, _ := filepath.Rel(root, path)
		fmt.Fprintf(h, "%s\x00", rel)
		_, err = io.Copy(h, f)
		return err
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// pruneBuildCache removes other cached builds not used for a day.
func pruneBuildCache(keep string) {
	entries, err := os.ReadDir(os.TempDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(os.TempDir(), e.Name())
		if !e.IsDir() || !strings.HasPrefix(e.Name(), buildCachePrefix) || p == keep {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > 24*time.Hour {
			os.RemoveAll(p)
		}
	}
}
