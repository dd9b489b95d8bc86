package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/store"
)

// ErrSnapshotNotFound is returned (wrapped) for unknown snapshot ids.
var ErrSnapshotNotFound = errors.New("snapshot not found")

// MaxSnapshotBytes bounds one snapshot archive.
const MaxSnapshotBytes = 4 << 30

// Snapshot takes a filesystem snapshot of a running sandbox: every file,
// directory and symlink changed since it started and the list of every
// path it holds (a restore removes the others), kept on the server
// (also after the sandbox is killed) until deleted. Memory snapshots are
// refused: runsc cannot checkpoint a sandbox that uses host networking.
func (m *Manager) Snapshot(ctx context.Context, id string, memory bool) (*store.Snapshot, error) {
	if memory {
		return nil, fmt.Errorf("memory snapshot of sandbox %s: runtime %s cannot checkpoint a sandbox with host networking (runsc refuses it): %w",
			id, m.cfg.Runtime.Name(), ErrNotSupported)
	}
	rec, err := m.cfg.Store.GetSandbox(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("sandbox %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	t, err := m.Envd(ctx, id)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(m.cfg.StateDir, "snapshots")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id, err)
	}
	sn := &store.Snapshot{ID: newID("snap-", 6), TeamID: rec.TeamID, SandboxID: id, TemplateID: rec.TemplateID, Source: "manual", Kind: "filesystem"}
	sn.Path = filepath.Join(dir, sn.ID+".tar.gz")
	// What changed since the container started, on the sandbox's own clock
	// (envd's default; a microVM's clock may lag the host's).
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.BaseURL.String()+"/snapshot", nil)
	req.Header.Set(envdapi.AccessTokenHeader, t.Token)
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("snapshot %s: envd answered %s", id, resp.Status)
	}
	tmp := sn.Path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id, err)
	}
	n, err := io.Copy(f, io.LimitReader(resp.Body, MaxSnapshotBytes+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > MaxSnapshotBytes {
		err = fmt.Errorf("larger than %d bytes", int64(MaxSnapshotBytes))
	}
	if err == nil {
		err = os.Rename(tmp, sn.Path)
	}
	if err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("snapshot %s: %w", id, err)
	}
	sn.SizeBytes, sn.CreatedAt = n, time.Now().UTC()
	if err := m.cfg.Store.CreateSnapshot(ctx, sn); err != nil {
		os.Remove(sn.Path)
		return nil, err
	}
	m.audit(ctx, id, "sandbox.snapshot", map[string]any{"snapshot_id": sn.ID, "size_bytes": n})
	return sn, nil
}

// Snapshots lists a sandbox's snapshots, newest first (also once killed).
func (m *Manager) Snapshots(ctx context.Context, id string) ([]*store.Snapshot, error) {
	if _, err := m.Get(ctx, id); err != nil {
		return nil, err
	}
	return m.cfg.Store.ListSnapshots(ctx, id)
}

// DeleteSnapshot deletes a snapshot; deleting it again reports false.
func (m *Manager) DeleteSnapshot(ctx context.Context, id, snapID string) (bool, error) {
	sn, err := m.cfg.Store.GetSnapshot(ctx, snapID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if sn.SandboxID != id {
		return false, nil
	}
	ok, err := m.cfg.Store.DeleteSnapshot(ctx, snapID)
	if err != nil {
		return false, err
	}
	os.Remove(sn.Path)
	m.audit(ctx, id, "sandbox.snapshot_deleted", map[string]any{"snapshot_id": snapID})
	return ok, nil
}
