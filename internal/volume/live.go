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
	"sync"
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

// MountReq is one live mount of a sandbox being created: volume ID at
// Subpath ("" = the whole volume), read-write when RW.
type MountReq struct {
	ID, Subpath string
	RW          bool
}

// MountDirs returns the host directories to bind for the live mounts reqs
// of one new sandbox, unpacking volumes that have no live directory yet.
// A subpath that is absolute, climbs out with "..", or goes through a
// symlink is an InvalidError; a missing one is created.
//
// A subpath is resolved to a real path that runsc opens later: another
// sandbox writing to the volume in between could swap a component for a
// symlink. So a subpath mount is refused (ErrInUse) while another sandbox
// mounts the volume read-write (live, per alive, or being created), and a
// read-write mount while another sandbox mounting a subpath of it is
// being created.
//
// Until done is called (with the new sandbox's id, or "" when it was not
// created) the volumes cannot be deleted.
func (m *Manager) MountDirs(ctx context.Context, reqs []MountReq, alive func(sandbox string) bool) (dirs []string, done func(sandbox string), err error) {
	ds, ok := m.cfg.Store.(DirStore)
	if !ok {
		return nil, nil, ErrNoLiveMounts
	}
	rels := make([]string, len(reqs))
	for i, r := range reqs {
		if rels[i], err = CleanRel(r.Subpath); err != nil {
			return nil, nil, err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, r := range reqs {
		if rels[i] != "." {
			if m.pendingW[r.ID] > 0 {
				return nil, nil, fmt.Errorf("volume %s: %w (a sandbox mounting it read-write is being created; a subpath cannot be mounted meanwhile)", r.ID, ErrInUse)
			}
			for sb := range m.writers[r.ID] {
				if !alive(sb) {
					delete(m.writers[r.ID], sb)
					continue
				}
				return nil, nil, fmt.Errorf("volume %s: %w (sandbox %s mounts it read-write; a subpath cannot be mounted meanwhile)", r.ID, ErrInUse, sb)
			}
		}
		if r.RW && m.pendingSub[r.ID] > 0 {
			return nil, nil, fmt.Errorf("volume %s: %w (a sandbox mounting a subpath of it is being created)", r.ID, ErrInUse)
		}
	}
	for i, r := range reqs {
		dir, err := ds.Dir(ctx, r.ID)
		if err != nil {
			return nil, nil, err
		}
		if rels[i] != "." {
			if dir, err = resolveSub(dir, rels[i]); err != nil {
				return nil, nil, err
			}
		}
		dirs = append(dirs, dir)
	}
	for i, r := range reqs {
		m.pending[r.ID]++
		if r.RW {
			m.pendingW[r.ID]++
		}
		if rels[i] != "." {
			m.pendingSub[r.ID]++
		}
	}
	var once sync.Once
	return dirs, func(sandbox string) {
		once.Do(func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			for i, r := range reqs {
				dec(m.pending, r.ID)
				if r.RW {
					dec(m.pendingW, r.ID)
				}
				if rels[i] != "." {
					dec(m.pendingSub, r.ID)
				}
				if sandbox == "" {
					continue
				}
				if m.attached[r.ID] == nil {
					m.attached[r.ID] = map[string]bool{}
				}
				m.attached[r.ID][sandbox] = true
				if r.RW {
					if m.writers[r.ID] == nil {
						m.writers[r.ID] = map[string]bool{}
					}
					m.writers[r.ID][sandbox] = true
				}
			}
		})
	}, nil
}

func dec(c map[string]int, id string) {
	if c[id]--; c[id] <= 0 {
		delete(c, id)
	}
}

// Live reports whether volume id is kept as a live directory (its size is
// then not known in advance).
func (m *Manager) Live(id string) bool {
	ds, ok := m.cfg.Store.(DirStore)
	return ok && ds.HasDir(id)
}
