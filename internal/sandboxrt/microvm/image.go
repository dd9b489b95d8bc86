package microvm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// An ext4 image of a template root directory, shared read-only by every VM
// of that template. A template built by internal/template has a
// template.json beside its rootfs/ directory: its image is rootfs.ext4
// there, keyed by template.json's content (a rebuild rewrites it). Any
// other directory gets an image under the driver's image dir, keyed by its
// path and modification times (top directory and etc/), which catches a
// replaced tree but not edits deep inside it.

// imageFor returns where the image of rootfs lives and the key it must carry.
func imageFor(rootfs, imageDir string) (path, key string, err error) {
	rootfs, err = filepath.Abs(rootfs)
	if err != nil {
		return "", "", err
	}
	dir := filepath.Dir(rootfs)
	h := sha256.New()
	if b, err := os.ReadFile(filepath.Join(dir, "template.json")); err == nil && filepath.Base(rootfs) == "rootfs" {
		h.Write([]byte("template.json\x00"))
		h.Write(b)
		return filepath.Join(dir, "rootfs.ext4"), hex.EncodeToString(h.Sum(nil)), nil
	}
	fmt.Fprintf(h, "dir\x00%s", rootfs)
	for _, p := range []string{rootfs, filepath.Join(rootfs, "etc")} {
		fi, err := os.Stat(p)
		if err != nil {
			if p == rootfs {
				return "", "", fmt.Errorf("root image: %w", err)
			}
			continue
		}
		fmt.Fprintf(h, "\x00%d", fi.ModTime().UnixNano())
	}
	sum := hex.EncodeToString(h.Sum(nil))
	name := strings.Trim(filepath.Base(rootfs), ".") + "-" + sum[:12] + ".ext4"
	return filepath.Join(imageDir, name), sum, nil
}

func keyFile(image string) string { return image + ".key" }

// imageCurrent reports whether image exists and carries key.
func imageCurrent(image, key string) bool {
	b, err := os.ReadFile(keyFile(image))
	if err != nil || strings.TrimSpace(string(b)) != key {
		return false
	}
	_, err = os.Stat(image)
	return err == nil
}

// buildImage makes an ext4 image of dir at image with mkfs.ext4 -d, sized
// to the tree plus a margin, without a journal (it is only ever mounted
// read-only). It writes a temporary file and renames it into place, so VMs
// still running on the old image keep it.
func buildImage(ctx context.Context, mkfs, dir, image, key string) error {
	size, inodes, err := treeSize(dir)
	if err != nil {
		return fmt.Errorf("root image of %s: %w", dir, err)
	}
	sizeKB := (size+size/5)/1024 + 64<<10
	inodes += inodes/5 + 1024
	if err := os.MkdirAll(filepath.Dir(image), 0o755); err != nil {
		return err
	}
	tmp := image + ".tmp-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	defer os.Remove(tmp)
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-t", "ext4", "-L", "declaw-root", "-O", "^has_journal",
		"-m", "0", "-N", strconv.FormatInt(inodes, 10), "-d", dir, tmp, strconv.FormatInt(sizeKB, 10)+"k")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("root image: %s -d %s: %w: %s", mkfs, dir, err, strings.TrimSpace(out.String()))
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, image); err != nil {
		return err
	}
	return os.WriteFile(keyFile(image), []byte(key+"\n"), 0o644)
}

// treeSize returns the bytes (rounded up to 4 KiB blocks) and entries under dir.
func treeSize(dir string) (size, entries int64, err error) {
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrPermission) {
				return nil
			}
			return err
		}
		entries++
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		size += (fi.Size() + 4095) &^ 4095
		if d.IsDir() {
			size += 4096
		}
		return nil
	})
	return size, entries, err
}

// BuildTemplateImage builds (or keeps, when current) the ext4 root image of
// a built template, rootfs.ext4 beside its rootfs directory, with mkfs
// ("" = mkfs.ext4). `declaw template build` calls it so the first microVM
// of a template does not wait for it.
func BuildTemplateImage(ctx context.Context, mkfs, rootfs string) (string, error) {
	if mkfs == "" {
		mkfs = "mkfs.ext4"
	}
	image, key, err := imageFor(rootfs, filepath.Join(filepath.Dir(rootfs), "images"))
	if err != nil {
		return "", err
	}
	if imageCurrent(image, key) {
		return image, nil
	}
	return image, buildImage(ctx, mkfs, rootfs, image, key)
}
