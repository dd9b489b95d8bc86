package microvm

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/sandboxrt/microvm/guestinit"
)

// writeConfigDisk writes the VM's config disk: a tar archive (read raw from
// the virtio-blk device by the guest init) holding guestinit.ConfigFile and
// the source of each mount under guestinit.FilesDir/<index>. cfg.Mounts is
// filled from mounts.
func writeConfigDisk(path string, cfg guestinit.Config, mounts []sandboxrt.Mount) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	err = func() error {
		cfg.Mounts = nil
		for i, m := range mounts {
			fi, err := os.Stat(m.Source)
			if err != nil {
				return fmt.Errorf("mount source: %w", err)
			}
			name := guestinit.FilesDir + "/" + strconv.Itoa(i)
			if err := addTree(tw, m.Source, name); err != nil {
				return fmt.Errorf("mount %s: %w", m.Target, err)
			}
			cfg.Mounts = append(cfg.Mounts, guestinit.Mount{Index: i, Target: m.Target, ReadOnly: m.ReadOnly, Dir: fi.IsDir()})
		}
		b, err := json.Marshal(cfg)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: guestinit.ConfigFile, Mode: 0o600, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
		if err := tw.Close(); err != nil {
			return err
		}
		return bw.Flush()
	}()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("config disk: %w", err)
	}
	return nil
}

// addTree adds src (a file, or a directory with everything under it) as name.
func addTree(tw *tar.Writer, src, name string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		fi, err := os.Stat(p) // follow symlinks, as a bind mount of the source would show them
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(filepath.Join(name, rel)), Mode: int64(fi.Mode().Perm()), ModTime: fi.ModTime()}
		switch {
		case fi.IsDir():
			h.Typeflag = tar.TypeDir
			return tw.WriteHeader(h)
		case fi.Mode().IsRegular():
			h.Typeflag = tar.TypeReg
			h.Size = fi.Size()
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.CopyN(tw, f, fi.Size())
			return err
		}
		return nil // sockets, devices: not carried
	})
}
