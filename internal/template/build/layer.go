package build

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// OCI whiteout names (image-spec layer.md) and their overlayfs forms.
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
)

// unpackLayer extracts one OCI layer tar into dir in overlayfs form, so a
// stack of such directories mounted as lower layers shows the image: a
// ".wh.NAME" entry becomes a whiteout (a 0/0 character device) NAME, and
// ".wh..wh..opq" marks its directory opaque (trusted.overlay.opaque=y).
// Modes, owners, times, symlinks, hardlinks and xattrs are kept. No entry
// reaches outside dir: names are cleaned and every parent is resolved
// inside dir (a symlink in the layer cannot redirect a later entry).
// Device nodes are skipped: a sandbox never needs the host's devices.
func unpackLayer(r io.Reader, dir string, logf func(string, ...any)) error {
	tr := tar.NewReader(r)
	type dirTime struct {
		path  string
		mtime time.Time
	}
	var dirs []dirTime
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		name := path.Clean("/" + h.Name)
		if name == "/" {
			if h.Typeflag == tar.TypeDir {
				dirs = append(dirs, dirTime{dir, h.ModTime})
				if err := applyMeta(dir, h); err != nil {
					return err
				}
			}
			continue
		}
		parentRel, base := path.Split(name)
		parent, err := securejoin.SecureJoin(dir, parentRel)
		if err != nil {
			return fmt.Errorf("layer entry %s: %w", h.Name, err)
		}
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("layer entry %s: %w", h.Name, err)
		}
		if st, err := os.Lstat(parent); err != nil || !st.IsDir() {
			return fmt.Errorf("layer entry %s: parent is not a directory", h.Name)
		}
		if base == opaqueMarker {
			if err := unix.Lsetxattr(parent, opaqueXattr, []byte("y"), 0); err != nil {
				return fmt.Errorf("layer entry %s: mark opaque: %w", h.Name, err)
			}
			continue
		}
		target := filepath.Join(parent, base)
		if strings.HasPrefix(base, whiteoutPrefix) {
			target = filepath.Join(parent, strings.TrimPrefix(base, whiteoutPrefix))
			if err := os.RemoveAll(target); err != nil {
				return fmt.Errorf("layer entry %s: %w", h.Name, err)
			}
			if err := unix.Mknod(target, unix.S_IFCHR, 0); err != nil {
				return fmt.Errorf("layer entry %s: whiteout: %w", h.Name, err)
			}
			continue
		}
		if h.Typeflag != tar.TypeDir {
			if st, err := os.Lstat(target); err == nil && st.IsDir() {
				if err := os.RemoveAll(target); err != nil {
					return fmt.Errorf("layer entry %s: %w", h.Name, err)
				}
			} else if err == nil {
				if err := os.Remove(target); err != nil {
					return fmt.Errorf("layer entry %s: %w", h.Name, err)
				}
			}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if st, err := os.Lstat(target); err == nil && !st.IsDir() {
				os.Remove(target)
			}
			if err := os.Mkdir(target, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("layer entry %s: %w", h.Name, err)
			}
			dirs = append(dirs, dirTime{target, h.ModTime})
		case tar.TypeReg: // the reader turns the old TypeRegA into TypeReg
			f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
			if err != nil {
				return fmt.Errorf("layer entry %s: %w", h.Name, err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("layer entry %s: %w", h.Name, err)
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, target); err != nil {
				return fmt.Errorf("layer entry %s: %w", h.Name, err)
			}
		case tar.TypeLink:
			lname := path.Clean("/" + h.Linkname)
			lparent, err := securejoin.SecureJoin(dir, path.Dir(lname))
			if err != nil {
				return fmt.Errorf("layer entry %s: link target: %w", h.Name, err)
			}
			src := filepath.Join(lparent, path.Base(lname))
			if st, err := os.Lstat(src); err != nil || st.IsDir() {
				return fmt.Errorf("layer entry %s: hardlink to %s, which is not a file of this layer", h.Name, h.Linkname)
			}
			if err := os.Link(src, target); err != nil {
				return fmt.Errorf("layer entry %s: %w", h.Name, err)
			}
			continue // shares the target's metadata
		case tar.TypeFifo:
			if err := unix.Mkfifo(target, uint32(h.Mode&0o7777)); err != nil {
				return fmt.Errorf("layer entry %s: %w", h.Name, err)
			}
		case tar.TypeChar, tar.TypeBlock:
			logf("skipped device node %s", name)
			continue
		default:
			continue // pax/GNU metadata entries are consumed by the reader
		}
		if err := applyMeta(target, h); err != nil {
			return err
		}
	}
	// Directory times last: creating entries in them changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		setTimes(dirs[i].path, dirs[i].mtime)
	}
	return nil
}

// applyMeta sets owner, mode, xattrs and times of an extracted entry
// (never following a symlink).
func applyMeta(p string, h *tar.Header) error {
	if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
		return fmt.Errorf("layer entry %s: chown: %w", h.Name, err)
	}
	if h.Typeflag != tar.TypeSymlink {
		// After chown, which clears setuid bits.
		if err := os.Chmod(p, tarMode(h)); err != nil {
			return fmt.Errorf("layer entry %s: chmod: %w", h.Name, err)
		}
	}
	for k, v := range h.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if strings.HasPrefix(name, "trusted.overlay.") {
				continue // an image cannot forge overlay metadata
			}
			if err := unix.Lsetxattr(p, name, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
				return fmt.Errorf("layer entry %s: xattr %s: %w", h.Name, name, err)
			}
		}
	}
	if h.Typeflag != tar.TypeDir {
		setTimes(p, h.ModTime)
	}
	return nil
}

func tarMode(h *tar.Header) fs.FileMode {
	m := fs.FileMode(h.Mode & 0o777)
	if h.Mode&04000 != 0 {
		m |= fs.ModeSetuid
	}
	if h.Mode&02000 != 0 {
		m |= fs.ModeSetgid
	}
	if h.Mode&01000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

func setTimes(p string, mtime time.Time) {
	ts := unix.NsecToTimespec(mtime.UnixNano())
	_ = unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}
