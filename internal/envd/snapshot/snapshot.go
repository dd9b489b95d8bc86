// Package snapshot writes and restores filesystem snapshots of a sandbox:
// a gzipped tar of every directory, regular file and symlink changed since
// a point in time (by ctime or mtime), taken inside the sandbox by envd, and
// extracted again by envd into a fresh sandbox of the same template.
//
// The archive ends with a list of every path the sandbox held (a PathsType
// entry), so a restore also removes what was deleted before the snapshot:
// the result is the snapshot's filesystem, not the template plus changes.
// Special files (devices, sockets, fifos) are not captured.
package snapshot

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Skipped are the paths never captured: kernel filesystems and the files the
// runtime bind-mounts into every sandbox.
var Skipped = []string{"/proc", "/sys", "/dev", "/run", "/usr/local/bin/envd", "/etc/resolv.conf", "/etc/hosts", "/etc/hostname"}

// MaxEntries bounds what one snapshot may hold.
const MaxEntries = 1_000_000

// PathsType is the tar type of the archive's last entry: the NUL-separated
// paths ("/a/b") of everything the sandbox held outside the skipped paths;
// "?/dir" marks a directory that could not be read (nothing under it is
// removed by a restore). Write emits only directories, regular files and
// symlinks, so the type cannot be confused with a file of the sandbox.
const PathsType = 'Z'

// pathsName names the PathsType entry (for tools that list the archive).
const pathsName = ".declaw-snapshot-paths"

// maxPathsBytes bounds the PathsType entry a restore reads.
const maxPathsBytes = 256 << 20

// Write streams a gzipped tar of what changed under root since since.
func Write(w io.Writer, root string, since time.Time, skip []string) error {
	gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	n := 0
	var paths bytes.Buffer // every path held, for the PathsType entry
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(root, p)
		name := "/" + filepath.ToSlash(rel)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
				if d != nil && d.IsDir() && rel != "." {
					paths.WriteString("?" + name + "\x00") // listed in part: a restore keeps what is under it
				}
				return nil // vanished or unreadable while walking
			}
			return err
		}
		if rel == "." {
			return nil
		}
		if skipped(name, skip) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return nil
		}
		if strings.ContainsRune(name, 0) {
			return nil // cannot be listed (and no filesystem allows it)
		}
		paths.WriteString(name + "\x00")
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		changed := time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
		if m := fi.ModTime(); m.After(changed) {
			changed = m
		}
		if changed.Before(since) {
			return nil
		}
		var link string
		switch {
		case fi.Mode().IsRegular(), fi.IsDir():
		case fi.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return nil
			}
		default:
			return nil
		}
		if n++; n > MaxEntries {
			return fmt.Errorf("snapshot: more than %d changed entries", MaxEntries)
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return nil
		}
		hdr.Name = strings.TrimPrefix(name, "/")
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
		hdr.Uname, hdr.Gname = "", ""
		if !fi.Mode().IsRegular() {
			return tw.WriteHeader(hdr)
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		// The file may change while it is read: write exactly hdr.Size bytes.
		if _, err := io.Copy(tw, io.LimitReader(io.MultiReader(f, zeros{}), hdr.Size)); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: PathsType, Name: pathsName, Size: int64(paths.Len()), Mode: 0o600}); err != nil {
		return err
	}
	if _, err := tw.Write(paths.Bytes()); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// skipped reports whether name is one of skip.
func skipped(name string, skip []string) bool {
	for _, s := range skip {
		if name == s {
			return true
		}
	}
	return false
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// ErrBadArchive marks an archive that cannot be restored.
var ErrBadArchive = errors.New("bad snapshot archive")

// Restore extracts a snapshot under root. Entries are confined to root
// (no "..", no writing through symlinks), ownership, modes and times are
// kept; existing files are replaced. If the archive lists the paths the
// sandbox held (Write's PathsType entry), everything else under root is
// removed afterwards, except the skip paths and other filesystems mounted
// under root.
func Restore(r io.Reader, root string, skip []string) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadArchive, err)
	}
	tr := tar.NewReader(gz)
	type dirTime struct {
		path string
		mt   time.Time
	}
	var (
		dirs []dirTime
		keep map[string]bool // nil: the archive lists no paths
		kept []string        // "?dir" entries: directories read in part
	)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadArchive, err)
		}
		if hdr.Typeflag == PathsType {
			b, err := io.ReadAll(io.LimitReader(tr, maxPathsBytes+1))
			if err != nil {
				return fmt.Errorf("%w: %v", ErrBadArchive, err)
			}
			if len(b) > maxPathsBytes {
				return fmt.Errorf("%w: path list larger than %d bytes", ErrBadArchive, maxPathsBytes)
			}
			keep = map[string]bool{}
			for _, p := range strings.Split(string(b), "\x00") {
				if d, ok := strings.CutPrefix(p, "?"); ok {
					kept = append(kept, path.Clean(d))
				} else if p != "" {
					keep[path.Clean(p)] = true
				}
			}
			continue
		}
		clean := path.Clean("/" + hdr.Name)
		if clean == "/" || strings.Contains(hdr.Name, "..") {
			continue
		}
		dst := filepath.Join(root, filepath.FromSlash(clean))
		if err := noSymlinkParents(root, dst); err != nil {
			return err
		}
		mode := fs.FileMode(hdr.Mode) & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
			if fi, err := os.Lstat(dst); err != nil || !fi.IsDir() {
				return fmt.Errorf("restore %s: not a directory", clean)
			}
			os.Chmod(dst, mode)
			dirs = append(dirs, dirTime{dst, hdr.ModTime})
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			os.Remove(dst)
			f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
			if err != nil {
				return fmt.Errorf("restore %s: %w", clean, err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("restore %s: %w", clean, err)
			}
			os.Chmod(dst, mode)
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			os.Remove(dst)
			if err := os.Symlink(hdr.Linkname, dst); err != nil {
				return fmt.Errorf("restore %s: %w", clean, err)
			}
		default:
			continue
		}
		os.Lchown(dst, hdr.Uid, hdr.Gid)
		if hdr.Typeflag == tar.TypeReg {
			os.Chmod(dst, mode) // chown clears set-id bits
			os.Chtimes(dst, hdr.AccessTime, hdr.ModTime)
		}
	}
	if keep != nil {
		if err := prune(root, keep, kept, skip); err != nil {
			return err
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Chtimes(dirs[i].path, dirs[i].mt, dirs[i].mt)
	}
	return nil
}

// prune removes what is under root but not in keep: what was deleted
// before the snapshot. It never removes a skip path, anything under a
// directory in partial, or anything on another filesystem (mount points).
func prune(root string, keep map[string]bool, partial, skip []string) error {
	var rootDev uint64
	if fi, err := os.Lstat(root); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			rootDev = uint64(st.Dev)
		}
	}
	var failed []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
				return nil
			}
			return fmt.Errorf("restore: prune: %w", err)
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		name := "/" + filepath.ToSlash(rel)
		if skipped(name, skip) || slices.Contains(partial, name) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if fi, err := d.Info(); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok && uint64(st.Dev) != rootDev {
					return filepath.SkipDir // a mount point: not part of the snapshot
				}
			}
		}
		if keep[name] {
			return nil
		}
		if err := os.RemoveAll(p); err != nil {
			failed = append(failed, name) // best effort: the rest is still restored
		}
		if d.IsDir() {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w: could not remove %d paths deleted before the snapshot, e.g. %s", ErrPartial, len(failed), failed[0])
	}
	return nil
}

// ErrPartial marks a restore whose files are in place but that could not
// remove everything deleted before the snapshot.
var ErrPartial = errors.New("snapshot restored in part")

// noSymlinkParents refuses a destination whose parent directories under
// root include a symlink (a restore must not write through one).
func noSymlinkParents(root, dst string) error {
	rel, err := filepath.Rel(root, filepath.Dir(dst))
	if err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("%w: %s escapes the root", ErrBadArchive, dst)
	}
	cur := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if part == "." || part == "" {
			continue
		}
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			// Template symlinks such as /bin -> usr/bin are fine to pass
			// through only if they resolve inside root.
			target, err := filepath.EvalSymlinks(cur)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrBadArchive, cur, err)
			}
			if r, err := filepath.Rel(root, target); err != nil || strings.HasPrefix(r, "..") {
				return fmt.Errorf("%w: %s leaves the root through a symlink", ErrBadArchive, dst)
			}
		}
	}
	return nil
}
