package declaw

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Snapshot is a filesystem snapshot of a sandbox (SnapshotInfo).
type Snapshot struct {
	SnapshotID string    `json:"snapshot_id"`
	SandboxID  string    `json:"sandbox_id"`
	TemplateID string    `json:"template_id"`
	Source     string    `json:"source"` // manual, pause or periodic
	Kind       string    `json:"kind"`   // filesystem
	CreatedAt  time.Time `json:"created_at"`
	SizeBytes  int64     `json:"size_bytes"`
}

// CreateSnapshot snapshots a running sandbox's filesystem (POST
// /sandboxes/{id}/snapshot). It is not retried.
func (c *Client) CreateSnapshot(ctx context.Context, id string) (*Snapshot, error) {
	var sn Snapshot
	if err := c.call(ctx, request{method: http.MethodPost, path: sandboxPath(id, "/snapshot"), json: struct{}{}}, &sn); err != nil {
		return nil, err
	}
	return &sn, nil
}

// ListSnapshots returns a sandbox's snapshots, newest first (killed
// sandboxes included).
func (c *Client) ListSnapshots(ctx context.Context, id string) ([]Snapshot, error) {
	var out struct {
		Snapshots []Snapshot `json:"snapshots"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: sandboxPath(id, "/snapshots")}, &out); err != nil {
		return nil, err
	}
	if out.Snapshots == nil {
		out.Snapshots = []Snapshot{}
	}
	return out.Snapshots, nil
}

// DeleteSnapshot deletes a snapshot; deleted is false if it was already gone.
func (c *Client) DeleteSnapshot(ctx context.Context, id, snapshotID string) (deleted bool, err error) {
	var out struct {
		Deleted bool `json:"deleted"`
	}
	if err := c.call(ctx, request{method: http.MethodDelete, path: sandboxPath(id, "/snapshots/"+url.PathEscape(snapshotID))}, &out); err != nil {
		return false, err
	}
	return out.Deleted, nil
}

// RestoreOptions selects the snapshot of a restore and its kind.
type RestoreOptions struct {
	// SnapshotID is the snapshot; empty: the server picks the most recent
	// (pause > periodic > manual).
	SnapshotID string
	// Fork starts a NEW sandbox from the snapshot and leaves the sandbox
	// alone, instead of restoring the sandbox itself.
	Fork bool
}

// Restored is the answer of a restore.
type Restored struct {
	SandboxID       string  `json:"sandbox_id"` // the sandbox restored (in place: the same id; fork: the new one)
	SnapshotID      string  `json:"snapshot_id"`
	NodeID          string  `json:"node_id"`
	EnvdAccessToken string  `json:"envd_access_token,omitempty"`
	Sandbox         Sandbox `json:"sandbox"`
}

// Restore brings sandbox id back to one of its snapshots, in place (POST
// /sandboxes/{id}/restore): the same id, the snapshot's files, what ran in
// it stopped, its settings kept; a killed sandbox comes back. With
// opts.Fork it starts a new sandbox from the snapshot instead. Not retried.
func (c *Client) Restore(ctx context.Context, id string, opts RestoreOptions) (*Restored, error) {
	fork := ""
	if opts.Fork {
		fork = "true"
	}
	var out Restored
	err := c.call(ctx, request{method: http.MethodPost, path: sandboxPath(id, "/restore"),
		query: query("snapshot_id", opts.SnapshotID, "fork", fork), json: struct{}{}}, &out)
	if err != nil {
		return nil, err
	}
	if out.SandboxID == "" && !opts.Fork {
		out.SandboxID = id
	}
	return &out, nil
}
