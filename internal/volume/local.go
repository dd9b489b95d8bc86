package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
)

// LocalStore keeps each volume in DIR/<id>/ as volume.json and
// archive.tar.gz.
type LocalStore struct{ dir string }

// NewLocalStore returns a store under dir (created if missing).
func NewLocalStore(dir string) (*LocalStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("volume store: %w", err)
	}
	return &LocalStore{dir: dir}, nil
}

var idRe = regexp.MustCompile(`^vol-[0-9a-f]{16}$`)

func (s *LocalStore) path(id string) (string, error) {
	if !idRe.MatchString(id) {
		return "", fmt.Errorf("volume %s: %w", id, ErrNotFound)
	}
	return filepath.Join(s.dir, id), nil
}

// Create implements Store.
func (s *LocalStore) Create(ctx context.Context, v *Volume, archive io.Reader) (err error) {
	final, err := s.path(v.ID)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(s.dir, ".tmp-"+v.ID+"-")
	if err != nil {
		return fmt.Errorf("volume store: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	f, err := os.OpenFile(filepath.Join(tmp, "archive.tar.gz"), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("volume store: %w", err)
	}
	n, err := io.Copy(f, archive)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	v.SizeBytes, v.BlobKey = n, "volumes/"+v.ID+"/archive.tar.gz"
	meta, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "volume.json"), meta, 0o600); err != nil {
		return fmt.Errorf("volume store: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("volume store: %w", err)
	}
	return nil
}

// Get implements Store.
func (s *LocalStore) Get(ctx context.Context, id string) (*Volume, error) {
	p, err := s.path(id)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(p, "volume.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("volume %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("volume store: %w", err)
	}
	var v Volume
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("volume store: %s: %w", id, err)
	}
	return &v, nil
}

// List implements Store.
func (s *LocalStore) List(ctx context.Context) ([]*Volume, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("volume store: %w", err)
	}
	var out []*Volume
	for _, e := range ents {
		if !e.IsDir() || !idRe.MatchString(e.Name()) {
			continue
		}
		v, err := s.Get(ctx, e.Name())
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// Open implements Store.
func (s *LocalStore) Open(ctx context.Context, id string) (io.ReadCloser, error) {
	p, err := s.path(id)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(p, "archive.tar.gz"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("volume %s: %w", id, ErrNotFound)
	}
	return f, err
}

// Delete implements Store.
func (s *LocalStore) Delete(ctx context.Context, id string) error {
	p, err := s.path(id)
	if err != nil {
		return err
	}
	// Rename first so a concurrent Get sees it gone at once.
	gone := filepath.Join(s.dir, ".del-"+id)
	if err := os.Rename(p, gone); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("volume %s: %w", id, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("volume store: %w", err)
	}
	return os.RemoveAll(gone)
}
