package volume

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Live volumes: a volume mounted into sandboxes (modes mount and mount-ro)
// lives as a host directory. Its first live mount unpacks the archive
// there; from then on the directory is the volume's content (downloads
// pack it), and sandboxes write to it directly.
//
// Sandboxes write into that directory, so its content is hostile: every
// host-side walk or open stays beneath it (os.Root, openat2).

// DirStore is a Store that can keep a volume as a host directory.
type DirStore interface {
	Store
	// Dir returns volume id's live directory, unpacking its archive there
	// when it has none yet.
	Dir(ctx context.Context, id string) (string, error)
	// HasDir reports whether volume id has a live directory.
	HasDir(id string) bool
}

// ErrNoLiveMounts is returned by MountDir when the store keeps only archives.
var ErrNoLiveMounts = errors.New("this volume store cannot mount volumes live")

func (s *LocalStore) dataDir(id string) (string, error) {
	p, err := s.path(id)
	if err != nil {
		return "", err
	}
	return filepath.Join(p, "data"), nil
}

// HasDir implements DirStore.
func (s *LocalStore) HasDir(id string) bool {
	d, err := s.dataDir(id)
	if err != nil {
		return false
	}
	fi, err := os.Lstat(d)
	return err == nil && fi.IsDir()
}

// Dir implements DirStore: DIR/<id>/data. The caller serialises calls.
func (s *LocalStore) Dir(ctx context.Context, id string) (string, error) {
	d, err := s.dataDir(id)
	if err != nil {
		return "", err
	}
	if s.HasDir(id) {
		return d, nil
	}
	rc, err := s.Open(ctx, id)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	tmp, err := os.MkdirTemp(filepath.Dir(d), ".data-")
	if err != nil {
		return "", fmt.Errorf("volume %s: live directory: %w", id, err)
	}
	if err := unpack(rc, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("volume %s: unpack into its live directory: %w", id, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("volume %s: live directory: %w", id, err)
	}
	if err := os.Rename(tmp, d); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("volume %s: live directory: %w", id, err)
	}
	return d, nil
}

// unpack extracts a sanitised archive (directories and regular files under
// clean relative names, see Sanitize) into dir.
func unpack(r io.Reader, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	zr, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name, err := CleanRel(h.Name)
		if err != nil {
			return err
		}
		if name == "." {
			continue
		}
		mode := fs.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return err
			}
			if err := root.Chmod(name, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if d := filepath.Dir(name); d != "." {
				if err := root.MkdirAll(d, 0o755); err != nil {
					return err
				}
			}
			f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}

// packDir streams dir as a tar.gz of its directories and regular files
// (symlinks, devices, FIFOs and sockets a sandbox made are left out;
// nothing is opened outside dir).
func packDir(dir string) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeTar(dir, pw))
	}()
	return pr
}

func writeTar(dir string, w io.Writer) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	err = fs.WalkDir(root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name == "." {
			return nil
		}
		switch {
		case d.IsDir():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: int64(fi.Mode().Perm()), ModTime: fi.ModTime()})
		case d.Type().IsRegular():
			// O_NONBLOCK: a FIFO swapped in since the walk does not block.
			f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
			if err != nil {
				return nil // gone or replaced since the walk
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil || !fi.Mode().IsRegular() {
				return nil
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(fi.Mode().Perm()), Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
				return err
			}
			n, err := io.CopyN(tw, f, fi.Size())
			if err == io.EOF { // shrank while read: pad to the size announced
				_, err = io.CopyN(tw, zeros{}, fi.Size()-n)
			}
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// resolveSub returns the real path of directory rel (clean, relative)
// beneath dir, creating it when missing. No component may be a symlink:
// a sandbox that mounts the volume read-write controls its content.
func resolveSub(dir, rel string) (string, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", err
	}
	defer root.Close()
	if err := root.MkdirAll(rel, 0o755); err != nil {
		return "", &InvalidError{Reason: fmt.Sprintf("subpath %q: %v", rel, err)}
	}
	rootFD, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(rootFD)
	fd, err := unix.Openat2(rootFD, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return "", &InvalidError{Reason: fmt.Sprintf("subpath %q is not a directory inside the volume without symlinks: %v", rel, err)}
	}
	defer unix.Close(fd)
	real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(real, dir+"/") {
		return "", &InvalidError{Reason: fmt.Sprintf("subpath %q resolves outside the volume", rel)}
	}
	return real, nil
}

// MountDir returns the host directory to bind for a live mount of volume
// id at subpath ("" = the whole volume), unpacking the volume first when
// it has no live directory yet. A subpath that is absolute, climbs out
// with "..", or goes through a symlink is an InvalidError; a missing one
// is created. Until Release, the volume cannot be deleted.
func (m *Manager) MountDir(ctx context.Context, id, subpath string) (string, error) {
	ds, ok := m.cfg.Store.(DirStore)
	if !ok {
		return "", ErrNoLiveMounts
	}
	rel, err := CleanRel(subpath)
	if err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, err := ds.Dir(ctx, id)
	if err != nil {
		return "", err
	}
	if rel != "." {
		if dir, err = resolveSub(dir, rel); err != nil {
			return "", err
		}
	}
	m.pending[id]++
	return dir, nil
}

// Release ends the hold of one successful MountDir (call it after Attach,
// or when the sandbox was not created).
func (m *Manager) Release(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending[id]--; m.pending[id] <= 0 {
		delete(m.pending, id)
	}
}

// Live reports whether volume id is kept as a live directory (its size is
// then not known in advance).
func (m *Manager) Live(id string) bool {
	ds, ok := m.cfg.Store.(DirStore)
	return ok && ds.HasDir(id)
}
