package microvm

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/declaw/declaw/internal/sandboxrt/microvm/guestinit"
)

// DefaultModules are the kernel modules the guest init loads (with their
// dependencies): the virtio-mmio transport, the disks and the NIC, the root
// filesystem and its checksum, and the overlay. Debian's 6.1 kernel builds
// them all as modules.
var DefaultModules = []string{"virtio_mmio", "virtio_blk", "virtio_net", "crc32c_generic", "ext4", "overlay"}

// moduleOrder returns the .ko paths (relative to modDir) of mods and their
// dependencies in load order (dependencies first), read from modules.dep.
// Modules built into the kernel (modules.builtin) are skipped.
func moduleOrder(modDir string, mods []string) ([]string, error) {
	deps, err := readModulesDep(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(modDir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[moduleName(l)] = true
		}
	}
	byName := map[string]string{}
	for p := range deps {
		byName[moduleName(p)] = p
	}
	var order []string
	seen := map[string]bool{}
	var visit func(p string, depth int) error
	visit = func(p string, depth int) error {
		if seen[p] {
			return nil
		}
		if depth > 64 {
			return fmt.Errorf("module dependency loop at %s", p)
		}
		seen[p] = true
		for _, d := range deps[p] {
			if err := visit(d, depth+1); err != nil {
				return err
			}
		}
		order = append(order, p)
		return nil
	}
	for _, m := range mods {
		name := strings.ReplaceAll(m, "-", "_")
		p, ok := byName[name]
		if !ok {
			if builtin[name] {
				continue
			}
			return nil, fmt.Errorf("module %s: not in %s", m, filepath.Join(modDir, "modules.dep"))
		}
		if err := visit(p, 0); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleName maps "kernel/fs/ext4/ext4.ko.xz" to "ext4" (dashes folded to underscores).
func moduleName(p string) string {
	base := filepath.Base(p)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

func readModulesDep(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kernel modules: %w", err)
	}
	defer f.Close()
	deps := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
	}
	return deps, sc.Err()
}

// readModule returns the uncompressed contents of a module file. Compressed
// modules (.ko.xz, .ko.zst, .ko.gz; newer Debian kernels) are decompressed
// on the host with the matching tool, because the guest loads them with
// finit_module without flags.
func readModule(path string) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(path, ".ko"):
		return os.ReadFile(path)
	case strings.HasSuffix(path, ".xz"):
		tool = "xz"
	case strings.HasSuffix(path, ".zst"):
		tool = "zstd"
	case strings.HasSuffix(path, ".gz"):
		tool = "gzip"
	default:
		return nil, fmt.Errorf("module %s: unknown format", path)
	}
	var out, stderr bytes.Buffer
	cmd := exec.Command(tool, "-dc", path)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("decompress module %s: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	return out.Bytes(), nil
}

// writeInitramfs writes the initramfs: /init (the static guest init),
// /dev/console, the modules under guestinit.ModulesDir and their load order.
// It returns a hash of the inputs (a cache key).
func writeInitramfs(w io.Writer, initBinary, modDir string, modules []string) error {
	order, err := moduleOrder(modDir, modules)
	if err != nil {
		return err
	}
	init, err := os.ReadFile(initBinary)
	if err != nil {
		return fmt.Errorf("guest init: %w", err)
	}
	c := newCPIOWriter(w)
	for _, d := range []string{"dev", "proc", "sys", "lib", "lib/modules"} {
		if err := c.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := c.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := c.File("init", 0o755, init); err != nil {
		return err
	}
	var names []string
	for _, rel := range order {
		data, err := readModule(filepath.Join(modDir, rel))
		if err != nil {
			return err
		}
		name := moduleName(rel) + ".ko"
		if err := c.File(strings.TrimPrefix(guestinit.ModulesDir, "/")+"/"+name, 0o644, data); err != nil {
			return err
		}
		names = append(names, name)
	}
	if err := c.File(strings.TrimPrefix(guestinit.ModulesOrder, "/"), 0o644, []byte(strings.Join(names, "\n")+"\n")); err != nil {
		return err
	}
	return c.Close()
}

// initramfsKey identifies an initramfs by its inputs: the init binary's
// content and the module directory, modules.dep and module list.
func initramfsKey(initBinary, modDir string, modules []string) (string, error) {
	h := sha256.New()
	f, err := os.Open(initBinary)
	if err != nil {
		return "", fmt.Errorf("guest init: %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	fi, err := os.Stat(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return "", fmt.Errorf("kernel modules: %w", err)
	}
	fmt.Fprintf(h, "\x00%s\x00%d\x00%s", modDir, fi.ModTime().UnixNano(), strings.Join(modules, ","))
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
