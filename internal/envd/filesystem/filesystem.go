// Package filesystem implements envd's file operations on the sandbox's
// file system: read, atomic write, list, stat, mkdir, rename, remove.
//
// envd runs as root; operations are done as root and every entry created
// for a request is then chowned to the requesting user (Owner). Paths are
// literal guest paths; relative ones are resolved against the user's home
// by Resolve. Errors wrap fs.ErrNotExist, fs.ErrExist or the sentinels
// below so that callers can map them to statuses.
package filesystem

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/declaw/declaw/internal/envd/sysuser"
	"github.com/declaw/declaw/internal/envdapi"
)

// Sentinel errors.
var (
	ErrBadRequest = errors.New("invalid file request")
	ErrIsDir      = errors.New("is a directory")
	ErrNotDir     = errors.New("not a directory")
)

// Limits on listings, so a hostile depth cannot exhaust memory.
const (
	MaxListDepth   = 64
	MaxListEntries = 100_000
)

// Owner is who new entries belong to.
type Owner struct {
	Uid, Gid int
}

// FS performs file operations. The zero value uses /etc/passwd and
// /etc/group for owner names. Safe for concurrent use.
type FS struct {
	Users sysuser.DB
}

// Resolve turns a request path into an absolute, cleaned path: "~" and
// "~/..." and relative paths are taken relative to home.
func Resolve(p, home string) (string, error) {
	switch {
	case p == "":
		return "", fmt.Errorf("%w: empty path", ErrBadRequest)
	case strings.IndexByte(p, 0) >= 0:
		return "", fmt.Errorf("%w: path contains NUL", ErrBadRequest)
	case p == "~":
		p = home
	case strings.HasPrefix(p, "~/"):
		p = filepath.Join(home, p[2:])
	case !filepath.IsAbs(p):
		p = filepath.Join(home, p)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%w: cannot resolve %q without an absolute home", ErrBadRequest, p)
	}
	return filepath.Clean(p), nil
}

// OpenFile opens the regular file at path for reading (following symlinks).
func OpenFile(path string) (*os.File, fs.FileInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	if st.IsDir() {
		return nil, nil, fmt.Errorf("read %s: %w", path, ErrIsDir)
	}
	if !st.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%w: read %s: not a regular file", ErrBadRequest, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	st, err = f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%w: read %s: not a regular file", ErrBadRequest, path)
	}
	return f, st, nil
}

// WriteFile replaces the content of path with r, atomically: the data
// goes to a temporary file in the same directory that is renamed over path
// only once complete, so a failed upload never leaves a partial file.
// Missing parent directories are created. A symlink at path is followed.
// The file keeps the mode of the file it replaces (0644 for a new one) and
// belongs to owner. It returns the number of bytes written.
func WriteFile(path string, r io.Reader, owner Owner) (int64, error) {
	if target, err := filepath.EvalSymlinks(path); err == nil {
		path = target
	}
	mode := fs.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		if st.IsDir() {
			return 0, fmt.Errorf("write %s: %w", path, ErrIsDir)
		}
		mode = st.Mode().Perm() | st.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)
	}
	dir := filepath.Dir(path)
	if _, err := mkdirAll(dir, owner); err != nil {
		return 0, fmt.Errorf("write %s: %w", path, err)
	}
	base := filepath.Base(path)
	if len(base) > 64 {
		base = base[:64] // keep the temporary name under NAME_MAX
	}
	tmp, err := os.CreateTemp(dir, "."+base+".envd-*")
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", path, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	n, err := io.Copy(tmp, r)
	if err != nil {
		return n, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chown(owner.Uid, owner.Gid); err != nil {
		return n, fmt.Errorf("write %s: %w", path, err)
	}
	// After chown, which clears setuid bits.
	if err := tmp.Chmod(mode); err != nil {
		return n, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return n, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return n, fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	return n, nil
}

// MakeDir creates path and its missing parents (mkdir -p), owned by
// owner. It reports false if path already was a directory, and wraps
// fs.ErrExist if something else is there.
func MakeDir(path string, owner Owner) (bool, error) {
	created, err := mkdirAll(path, owner)
	if err != nil {
		return false, fmt.Errorf("mkdir %s: %w", path, err)
	}
	return created, nil
}

// mkdirAll creates path and its missing parents, chowning each one it
// creates, and reports whether path itself was created.
func mkdirAll(path string, owner Owner) (bool, error) {
	st, err := os.Stat(path)
	if err == nil {
		if !st.IsDir() {
			return false, fmt.Errorf("%s exists and is not a directory: %w", path, fs.ErrExist)
		}
		return false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		return false, err
	}
	if parent := filepath.Dir(path); parent != path {
		if _, err := mkdirAll(parent, owner); err != nil {
			return false, err
		}
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			if st, err := os.Stat(path); err == nil && st.IsDir() {
				return false, nil // created concurrently
			}
		}
		return false, err
	}
	if err := os.Lchown(path, owner.Uid, owner.Gid); err != nil {
		return true, err
	}
	return true, nil
}

// Exists reports whether something (possibly a dangling symlink) is at path.
func Exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// Remove removes path, recursively for a directory.
func Remove(path string) error {
	if path == "/" {
		return fmt.Errorf("%w: refusing to remove /", ErrBadRequest)
	}
	if _, err := os.Lstat(path); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// Rename moves oldPath to newPath, creating newPath's missing parents
// owned by owner, and returns the entry at newPath.
func (f *FS) Rename(oldPath, newPath string, owner Owner) (envdapi.EntryInfo, error) {
	if _, err := os.Lstat(oldPath); err != nil {
		return envdapi.EntryInfo{}, fmt.Errorf("rename %s: %w", oldPath, err)
	}
	if _, err := mkdirAll(filepath.Dir(newPath), owner); err != nil {
		return envdapi.EntryInfo{}, fmt.Errorf("rename %s to %s: %w", oldPath, newPath, err)
	}
	if err := os.Rename(oldPath, newPath); err != nil {
		if errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EISDIR) ||
			errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EINVAL) {
			return envdapi.EntryInfo{}, fmt.Errorf("%w: rename %s to %s: %v", ErrBadRequest, oldPath, newPath, errors.Unwrap(err))
		}
		return envdapi.EntryInfo{}, fmt.Errorf("rename %s to %s: %w", oldPath, newPath, err)
	}
	return f.Stat(newPath)
}

// Stat describes the entry at path without following a final symlink.
func (f *FS) Stat(path string) (envdapi.EntryInfo, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return envdapi.EntryInfo{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return newNames(f.Users).entry(path, fi), nil
}

// List describes the entries of directory path (following a symlink to
// it), sorted by name. With depth > 1 it descends into subdirectories (not
// into symlinks), listing each directory before its content.
func (f *FS) List(path string, depth int) ([]envdapi.EntryInfo, error) {
	depth = min(max(depth, 1), MaxListDepth)
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", path, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("list %s: %w", path, ErrNotDir)
	}
	out := []envdapi.EntryInfo{}
	n := newNames(f.Users)
	if err := n.list(path, depth, &out, true); err != nil {
		return nil, err
	}
	return out, nil
}

func (n *names) list(dir string, depth int, out *[]envdapi.EntryInfo, top bool) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if top {
			return fmt.Errorf("list %s: %w", dir, err)
		}
		return nil // an unreadable subdirectory is listed but not entered
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		fi, err := e.Info()
		if err != nil {
			continue // vanished
		}
		if len(*out) >= MaxListEntries {
			return fmt.Errorf("%w: list %s: more than %d entries, use a smaller depth", ErrBadRequest, dir, MaxListEntries)
		}
		*out = append(*out, n.entry(p, fi))
		if depth > 1 && fi.IsDir() {
			if err := n.list(p, depth-1, out, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// names caches uid and gid names for one operation.
type names struct {
	db     sysuser.DB
	users  map[int]string
	groups map[int]string
}

func newNames(db sysuser.DB) *names {
	return &names{db: db, users: map[int]string{}, groups: map[int]string{}}
}

func (n *names) entry(path string, fi fs.FileInfo) envdapi.EntryInfo {
	e := envdapi.EntryInfo{
		Name:         filepath.Base(path),
		Path:         path,
		Type:         entryType(fi.Mode()),
		Size:         fi.Size(),
		Permissions:  permissions(fi.Mode()),
		ModifiedTime: fi.ModTime().UTC().Format(time.RFC3339),
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.Mode = st.Mode & 0o7777
		uid, gid := int(st.Uid), int(st.Gid)
		if _, ok := n.users[uid]; !ok {
			n.users[uid] = n.db.UserName(uid)
		}
		if _, ok := n.groups[gid]; !ok {
			n.groups[gid] = n.db.GroupName(gid)
		}
		e.Owner, e.Group = n.users[uid], n.groups[gid]
	} else {
		e.Mode = uint32(fi.Mode().Perm())
		e.Owner, e.Group = strconv.Itoa(-1), strconv.Itoa(-1)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		e.SymlinkTarget, _ = os.Readlink(path)
	}
	return e
}

func entryType(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "dir"
	}
	return "file"
}

// permissions formats m like ls -l: "drwxr-xr-x", "-rwsr-xr-x", "lrwxrwxrwx".
func permissions(m fs.FileMode) string {
	b := []byte("----------")
	switch {
	case m&fs.ModeSymlink != 0:
		b[0] = 'l'
	case m.IsDir():
		b[0] = 'd'
	case m&fs.ModeNamedPipe != 0:
		b[0] = 'p'
	case m&fs.ModeSocket != 0:
		b[0] = 's'
	case m&fs.ModeCharDevice != 0:
		b[0] = 'c'
	case m&fs.ModeDevice != 0:
		b[0] = 'b'
	}
	const rwx = "rwxrwxrwx"
	for i := range 9 {
		if m&(1<<uint(8-i)) != 0 {
			b[i+1] = rwx[i]
		}
	}
	special := []struct {
		bit      fs.FileMode
		pos      int
		set, off byte
	}{
		{fs.ModeSetuid, 3, 's', 'S'},
		{fs.ModeSetgid, 6, 's', 'S'},
		{fs.ModeSticky, 9, 't', 'T'},
	}
	for _, s := range special {
		if m&s.bit != 0 {
			if b[s.pos] == 'x' || b[s.pos] == 't' || b[s.pos] == 's' {
				b[s.pos] = s.set
			} else {
				b[s.pos] = s.off
			}
		}
	}
	return string(b)
}
