// Package volume keeps tarball volumes: team-owned gzip-tar archives that
// outlive sandboxes and are unpacked into a sandbox when it is created
// with the volume attached (mode "copy").
//
// Archives are sanitised on upload: only directories and regular files
// are kept (symlinks, hard links, devices and FIFOs are dropped, as the
// hosted Declaw does), names are relative and may not climb out of the
// volume (".." or absolute names refuse the whole upload), and modes lose
// setuid/setgid/sticky bits. The stored blob is the sanitised archive, so
// whatever unpacks it later (in a sandbox) cannot be led outside the
// mount path.
package volume

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"
)

// Volume is a volume's metadata, as the API shows it (wire-compatible with
// the official SDK's Volume).
type Volume struct {
	ID          string            `json:"volume_id"`
	Team        string            `json:"owner_id"`
	Name        string            `json:"name"`
	BlobKey     string            `json:"blob_key"`
	SizeBytes   int64             `json:"size_bytes"` // the stored (sanitised, compressed) archive
	Files       int               `json:"files"`
	Unpacked    int64             `json:"unpacked_bytes"`
	ContentType string            `json:"content_type"`
	Backend     string            `json:"backend"`
	QuotaBytes  int64             `json:"quota_bytes"`
	Metadata    map[string]string `json:"metadata"`
	CreatedAt   time.Time         `json:"created_at"`
	UpdatedAt   time.Time         `json:"updated_at"`
}

var (
	// ErrNotFound is returned for an unknown volume (or another team's).
	ErrNotFound = errors.New("volume not found")
	// ErrInUse is returned when deleting a volume a live sandbox attached.
	ErrInUse = errors.New("volume is attached to a live sandbox")
	// ErrQuota is returned when an upload passes a size limit.
	ErrQuota = errors.New("volume quota exceeded")
)

// InvalidError is a bad upload or request (400). Err is the read error
// behind it, if any (a body over its size limit is then a 413, not a 400).
type InvalidError struct {
	Reason string
	Err    error
}

func (e *InvalidError) Error() string { return "invalid volume: " + e.Reason }
func (e *InvalidError) Unwrap() error { return e.Err }

// Store keeps volumes' metadata and archives. LocalStore keeps them under
// a directory; an object store can implement the same interface.
type Store interface {
	// Create stores v and its archive (read to EOF), setting v.SizeBytes
	// and v.BlobKey; nothing is left behind when it fails.
	Create(ctx context.Context, v *Volume, archive io.Reader) error
	Get(ctx context.Context, id string) (*Volume, error) // ErrNotFound
	List(ctx context.Context) ([]*Volume, error)
	Open(ctx context.Context, id string) (io.ReadCloser, error) // the archive
	Delete(ctx context.Context, id string) error                // ErrNotFound
}

// Config bounds volumes.
type Config struct {
	Store Store
	// MaxUploadBytes caps one uploaded archive (default 500 MiB, as the
	// hosted Declaw); MaxUnpackedBytes caps what it unpacks to (default
	// 4 GiB: a small gzip can unpack to a lot); TeamQuotaBytes caps the
	// sum of a team's stored archives (0: none).
	MaxUploadBytes, MaxUnpackedBytes, TeamQuotaBytes int64
}

// Manager creates, lists, serves and deletes volumes, and remembers which
// live sandboxes attached which volume.
type Manager struct {
	cfg Config

	mu       sync.Mutex
	attached map[string]map[string]bool // volume id -> sandbox ids
	// Live mounts (MountDir): ones not yet done, of which read-write and
	// subpath ones, and the sandboxes mounting a volume read-write.
	pending, pendingW, pendingSub map[string]int
	writers                       map[string]map[string]bool
}

// NewManager returns a Manager over cfg.Store.
func NewManager(cfg Config) *Manager {
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = 500 << 20
	}
	if cfg.MaxUnpackedBytes <= 0 {
		cfg.MaxUnpackedBytes = 4 << 30
	}
	return &Manager{cfg: cfg, attached: map[string]map[string]bool{}, pending: map[string]int{}, pendingW: map[string]int{}, pendingSub: map[string]int{}, writers: map[string]map[string]bool{}}
}

// MaxUploadBytes is the cap on one uploaded archive.
func (m *Manager) MaxUploadBytes() int64 { return m.cfg.MaxUploadBytes }

// Create sanitises the tar.gz read from body and stores it as a new volume
// of team.
func (m *Manager) Create(ctx context.Context, team, name string, body io.Reader) (*Volume, error) {
	if name == "" || len(name) > 200 {
		return nil, &InvalidError{Reason: "name must be 1 to 200 characters"}
	}
	if m.cfg.TeamQuotaBytes > 0 {
		used, err := m.teamUsage(ctx, team)
		if err != nil {
			return nil, err
		}
		if used >= m.cfg.TeamQuotaBytes {
			return nil, fmt.Errorf("%w: the team stores %d of %d bytes", ErrQuota, used, m.cfg.TeamQuotaBytes)
		}
	}
	now := time.Now().UTC()
	v := &Volume{ID: newID(), Team: team, Name: name, ContentType: "application/gzip", Backend: "tarball",
		QuotaBytes: m.cfg.MaxUploadBytes, Metadata: map[string]string{}, CreatedAt: now, UpdatedAt: now}
	pr, pw := io.Pipe()
	go func() {
		st, err := Sanitize(body, pw, m.cfg.MaxUnpackedBytes)
		// Set before the store sees EOF, so the metadata it then writes
		// holds them (the pipe orders the two).
		v.Files, v.Unpacked = st.Files, st.Bytes
		pw.CloseWithError(err)
	}()
	err := m.cfg.Store.Create(ctx, v, pr)
	pr.CloseWithError(errors.New("volume: store gave up"))
	if err != nil {
		return nil, err
	}
	if m.cfg.TeamQuotaBytes > 0 {
		if used, err := m.teamUsage(ctx, team); err == nil && used > m.cfg.TeamQuotaBytes {
			m.cfg.Store.Delete(context.WithoutCancel(ctx), v.ID)
			return nil, fmt.Errorf("%w: the team would store %d of %d bytes", ErrQuota, used, m.cfg.TeamQuotaBytes)
		}
	}
	return v, nil
}

func (m *Manager) teamUsage(ctx context.Context, team string) (int64, error) {
	vs, err := m.cfg.Store.List(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, v := range vs {
		if v.Team == team {
			n += v.SizeBytes
		}
	}
	return n, nil
}

// Get returns volume id.
func (m *Manager) Get(ctx context.Context, id string) (*Volume, error) {
	return m.cfg.Store.Get(ctx, id)
}

// List returns the volumes of team (all teams when all), oldest first.
func (m *Manager) List(ctx context.Context, team string, all bool) ([]*Volume, error) {
	vs, err := m.cfg.Store.List(ctx)
	if err != nil {
		return nil, err
	}
	out := []*Volume{}
	for _, v := range vs {
		if all || v.Team == team {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Open returns volume id's sanitised archive.
// A volume mounted live is packed from its directory instead.
func (m *Manager) Open(ctx context.Context, id string) (io.ReadCloser, error) {
	if ds, ok := m.cfg.Store.(DirStore); ok && ds.HasDir(id) {
		d, err := ds.Dir(ctx, id)
		if err != nil {
			return nil, err
		}
		return packDir(d), nil
	}
	return m.cfg.Store.Open(ctx, id)
}

// Attach records that sandbox attached volume id.
func (m *Manager) Attach(id, sandbox string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.attached[id] == nil {
		m.attached[id] = map[string]bool{}
	}
	m.attached[id][sandbox] = true
}

// Delete deletes volume id unless a sandbox that attached it is still
// live (alive reports that; dead ones are forgotten).
func (m *Manager) Delete(ctx context.Context, id string, alive func(sandbox string) bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending[id] > 0 {
		return fmt.Errorf("volume %s: %w (a sandbox is being created with it)", id, ErrInUse)
	}
	for sb := range m.attached[id] {
		if alive(sb) {
			return fmt.Errorf("volume %s: %w (sandbox %s)", id, ErrInUse, sb)
		}
		delete(m.attached[id], sb)
	}
	delete(m.attached, id)
	delete(m.writers, id)
	return m.cfg.Store.Delete(ctx, id)
}

func newID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "vol-" + hex.EncodeToString(b)
}
