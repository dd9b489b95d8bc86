// Package diskimg makes the writable disk of a sandbox: a sparse ext4
// image file of a fixed size, which holds what the sandbox writes over its
// template (the upper layer of its root overlay). The size is the limit:
// past it writes fail with ENOSPC inside and nothing outside notices; the
// host only pays for blocks actually written.
//
// Formatting takes ~100 ms, so each size is formatted once (mkfs.ext4,
// into Dir) and every sandbox gets a sparse copy of that pristine image
// (~1 MiB of metadata) in a few milliseconds.
package diskimg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// MountOptions are the ext4 options a disk is mounted with. noinit_itable:
// the image is sparse, its inode tables already read as zeros, so the
// kernel's lazy zeroing would only write (and allocate) them for nothing.
const MountOptions = "noinit_itable"

// Maker makes disk images. Safe for concurrent use.
type Maker struct {
	Dir  string // cache of pristine images, one per size
	Mkfs string // mkfs.ext4 binary; default "mkfs.ext4"

	mu    sync.Mutex
	ready map[int64]string // size MiB -> pristine image
}

// Make writes a fresh, empty ext4 image of sizeMB MiB to path (which must not exist).
func (m *Maker) Make(ctx context.Context, path string, sizeMB int64) error {
	if sizeMB <= 0 {
		return fmt.Errorf("disk image %s: size %d MiB", path, sizeMB)
	}
	src, err := m.pristine(ctx, sizeMB)
	if err != nil {
		return err
	}
	if err := copySparse(src, path); err != nil {
		os.Remove(path)
		return fmt.Errorf("disk image %s: %w", path, err)
	}
	return nil
}

func (m *Maker) pristine(ctx context.Context, sizeMB int64) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p, ok := m.ready[sizeMB]; ok {
		return p, nil
	}
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		return "", fmt.Errorf("disk image cache: %w", err)
	}
	// v2: the format options below; a change makes new names.
	p := filepath.Join(m.Dir, "ext4-v2-"+strconv.FormatInt(sizeMB, 10)+"m.img")
	if _, err := os.Stat(p); err != nil {
		tmp := p + ".tmp"
		os.Remove(tmp)
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return "", fmt.Errorf("disk image cache: %w", err)
		}
		err = f.Truncate(sizeMB << 20)
		f.Close()
		if err != nil {
			os.Remove(tmp)
			return "", fmt.Errorf("disk image cache: %w", err)
		}
		mkfs := m.Mkfs
		if mkfs == "" {
			mkfs = "mkfs.ext4"
		}
		// No journal (a sandbox's disk does not outlive a crash), no
		// blocks reserved for root (all of it is the sandbox's), one inode
		// per 8 KiB (package trees are many small files).
		cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-O", "^has_journal", "-m", "0", "-i", "8192",
			"-E", "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0", "-L", "declaw-disk", tmp)
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp)
			return "", fmt.Errorf("format disk image (%s): %w: %s", mkfs, err, out)
		}
		if err := os.Rename(tmp, p); err != nil {
			os.Remove(tmp)
			return "", fmt.Errorf("disk image cache: %w", err)
		}
	}
	if m.ready == nil {
		m.ready = map[int64]string{}
	}
	m.ready[sizeMB] = p
	return p, nil
}

// copySparse copies src to a new file dst of the same size, writing only
// src's data extents (SEEK_DATA/SEEK_HOLE), so dst stays sparse.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Truncate(st.Size()); err != nil {
		return err
	}
	size := st.Size()
	fd := int(in.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		if _, err := io.Copy(io.NewOffsetWriter(out, data), io.NewSectionReader(in, data, hole-data)); err != nil {
			return err
		}
		off = hole
	}
	return out.Close()
}

// Usage reports the bytes used and the total size of the filesystem
// mounted at dir.
func Usage(dir string) (used, total uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	bs := uint64(st.Bsize)
	return (st.Blocks - st.Bfree) * bs, st.Blocks * bs, nil
}
