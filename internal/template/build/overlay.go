package build

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// maxMountData is the kernel's limit on mount(2) option data (one page).
const maxMountData = 4096

// mountOverlay mounts the layers at target: lowers are listed top first
// (overlayfs order). With upper == "" the mount is read-only.
func mountOverlay(target string, lowers []string, upper, work string) error {
	if len(lowers) == 0 {
		return errors.New("overlay: no lower layer")
	}
	for _, l := range lowers {
		if strings.ContainsAny(l, ":,") {
			return fmt.Errorf("overlay: layer path %q contains ':' or ','", l)
		}
	}
	opts := "lowerdir=" + strings.Join(lowers, ":")
	flags := uintptr(0)
	if upper != "" {
		opts += ",upperdir=" + upper + ",workdir=" + work
	} else {
		flags |= unix.MS_RDONLY
		if len(lowers) == 1 {
			// overlayfs wants two lowers without an upper.
			opts = "lowerdir=" + lowers[0] + ":" + lowers[0]
		}
	}
	opts += ",index=off,xino=off"
	if len(opts) >= maxMountData {
		return fmt.Errorf("overlay: %d layers are too many for one mount (%d bytes of options)", len(lowers), len(opts))
	}
	if err := unix.Mount("overlay", target, "overlay", flags, opts); err != nil {
		return fmt.Errorf("mount overlay at %s: %w", target, err)
	}
	return nil
}

// unmount detaches target (lazily if busy).
func unmount(target string) error {
	err := unix.Unmount(target, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(target, unix.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// unmountUnder unmounts every mount point at or below dir (leftovers of a
// crashed build), deepest first.
func unmountUnder(dir string) error {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	var errs []error
	for i := len(points) - 1; i >= 0; i-- {
		if err := unmount(points[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// copyTree copies the tree at src into dst (which must not exist): modes,
// owners, times, symlinks, hardlinks (within the tree) and xattrs are kept;
// overlayfs' own xattrs are not. Device nodes are skipped. When src is an
// overlay of layers (top first), a regular file is hard-linked from the
// layer it comes from instead of copied: layers are immutable, and so are
// templates, which share their files with the layer cache that way.
func copyTree(src, dst string, layers ...string) error {
	type inode struct{ dev, ino uint64 }
	links := map[inode]string{}
	type dirTime struct {
		path string
		st   *unix.Stat_t
	}
	var dirs []dirTime
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		mode := st.Mode & unix.S_IFMT
		switch mode {
		case unix.S_IFDIR:
			if err := os.Mkdir(out, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, dirTime{out, &st})
		case unix.S_IFREG:
			if st.Nlink > 1 {
				key := inode{st.Dev, st.Ino}
				if first, ok := links[key]; ok {
					return os.Link(first, out)
				}
				links[key] = out
			}
			if linkFromLayer(layers, rel, &st, out) {
				if st.Nlink > 1 {
					links[inode{st.Dev, st.Ino}] = out
				}
				return nil // shares the layer file's metadata
			}
			if err := copyFile(p, out); err != nil {
				return err
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, out); err != nil {
				return err
			}
		case unix.S_IFIFO:
			if err := unix.Mkfifo(out, st.Mode&0o7777); err != nil {
				return err
			}
		default:
			return nil // devices, sockets
		}
		if err := os.Lchown(out, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		if mode != unix.S_IFLNK {
			if err := unix.Chmod(out, st.Mode&0o7777); err != nil {
				return err
			}
		}
		copyXattrs(p, out)
		if mode != unix.S_IFDIR {
			ts := []unix.Timespec{st.Atim, st.Mtim}
			_ = unix.UtimesNanoAt(unix.AT_FDCWD, out, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		ts := []unix.Timespec{dirs[i].st.Atim, dirs[i].st.Mtim}
		_ = unix.UtimesNanoAt(unix.AT_FDCWD, dirs[i].path, ts, 0)
	}
	return nil
}

// linkFromLayer hard-links out to the file rel of the topmost layer that
// has it, if that file is the one the overlay shows (same size, mode,
// owner and mtime). It reports whether it linked.
func linkFromLayer(layers []string, rel string, st *unix.Stat_t, out string) bool {
	for _, l := range layers {
		p := filepath.Join(l, rel)
		var ls unix.Stat_t
		if err := unix.Lstat(p, &ls); err != nil {
			continue
		}
		if ls.Mode&unix.S_IFMT != unix.S_IFREG || ls.Size != st.Size || ls.Mode != st.Mode ||
			ls.Uid != st.Uid || ls.Gid != st.Gid || ls.Mtim != st.Mtim {
			return false
		}
		return os.Link(p, out) == nil
	}
	return false
}

func copyFile(src, dst string) error {
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

func copyXattrs(src, dst string) {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(src, buf)
	if err != nil || n <= 0 {
		return
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if name == "" || strings.HasPrefix(name, "trusted.overlay.") {
			continue
		}
		val := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(src, name, val)
		if err != nil {
			continue
		}
		_ = unix.Lsetxattr(dst, name, val[:vn], 0)
	}
}
