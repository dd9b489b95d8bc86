// Package store defines the persistence seam of the server: teams, API
// keys, sandboxes, idempotency records, snapshots and audit events.
//
// Implementations live in subpackages: sqlite (the embedded default) and
// postgres (shared by several servers). Each owns its SQL and its versioned
// migrations (package migrate); nothing above this package sees SQL. Every
// implementation passes the conformance suite in storetest, which pins the
// contract below:
//   - safe for concurrent use, also by several processes on one database;
//   - times keep at least microsecond precision and come back in UTC; a
//     zero time stays zero;
//   - json.RawMessage fields must hold valid JSON (or be empty) and come
//     back byte for byte; strings must be valid UTF-8 without NUL bytes
//     (metadata and env values may hold any character: they are stored as
//     JSON);
//   - a sandbox's audit event ids grow in the order its events become
//     visible, so a reader that pages one sandbox's events with AfterID
//     never skips one appended later (across sandboxes, ids only grow).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// DefaultLimit is the page size of ListSandboxes and ListAudit when the
// caller gives none.
const DefaultLimit = 100

// ErrNotFound is returned (wrapped) when a record does not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when creating a record whose key is taken.
var ErrExists = errors.New("already exists")

// DefaultTeam owns what existed before teams (migration 3) and what is
// created without a team; the keys the server configures or generates
// (AddAPIKey) are admin keys of this team.
const DefaultTeam = "default"

// Team is a tenant: it owns API keys, sandboxes and snapshots.
type Team struct {
	ID        string
	Name      string // unique
	CreatedAt time.Time
}

// APIKey is a stored API key. The key itself is never stored: only its
// hash (SHA-256 hex), which authentication looks up.
type APIKey struct {
	ID        string // public id, for listing and revoking (KeyID of the hash)
	Hash      string // unique
	TeamID    string // the team whose resources the key reaches
	Name      string
	Admin     bool // may manage teams and keys
	CreatedAt time.Time
	RevokedAt time.Time // zero while the key is valid
}

// KeyID is the public id of the key with hash: "key_" and the first 16
// characters of the hash (the hash of a random key reveals nothing of it).
func KeyID(hash string) string { return "key_" + hash[:min(16, len(hash))] }

// Sandbox is the persisted view of one sandbox.
type Sandbox struct {
	ID         string
	TeamID     string // owner; "" on create means DefaultTeam
	TemplateID string
	State      string // "running", "paused", "killed", ...
	Metadata   map[string]string
	Envs       map[string]string // as shown to users (secrets already masked)
	Timeout    int               // seconds, as last set
	StartedAt  time.Time
	EndAt      time.Time       // when the timeout fires (zero: never)
	KilledAt   time.Time       // zero while alive
	Security   json.RawMessage // normalised SecurityPolicy JSON, may be nil
	Network    json.RawMessage // normalised network policy JSON, may be nil
	Lifecycle  json.RawMessage
	GuestIP    string
	Runtime    string
	// Resources is the sandbox's limits and what happened at them (OOM
	// kills, why it ended), as JSON owned by the orchestrator; may be nil.
	Resources json.RawMessage
}

// SandboxFilter selects sandboxes for ListSandboxes. Zero values select all.
type SandboxFilter struct {
	TeamID   string            // "" = every team
	States   []string          // any of
	Metadata map[string]string // all must match
	Limit    int               // 0 = store default (100)
	After    string            // pagination cursor: return ids after this one (by creation order)
}

// Idempotency is one create request's record.
type Idempotency struct {
	Key       string
	BodyHash  string
	SandboxID string // empty while in progress
	Response  []byte // the create response, once done
	CreatedAt time.Time
}

// Store is the persistence interface of the server.
type Store interface {
	CreateSandbox(ctx context.Context, sb *Sandbox) error
	// GetSandbox returns ErrNotFound for unknown ids.
	GetSandbox(ctx context.Context, id string) (*Sandbox, error)
	// UpdateSandbox loads the sandbox, calls fn and writes it back atomically.
	UpdateSandbox(ctx context.Context, id string, fn func(*Sandbox) error) (*Sandbox, error)
	// ListSandboxes returns matching sandboxes in creation order and a cursor
	// for the next page ("" when there is none).
	ListSandboxes(ctx context.Context, f SandboxFilter) ([]*Sandbox, string, error)

	// BeginIdempotent records key as in progress. If the key exists it returns
	// the existing record and ErrExists.
	BeginIdempotent(ctx context.Context, rec Idempotency) (*Idempotency, error)
	// FinishIdempotent stores the outcome of key; a nil response deletes the
	// record (the create failed and may be retried).
	FinishIdempotent(ctx context.Context, key, sandboxID string, response []byte) error

	// AddAPIKey stores the hash of an admin key of DefaultTeam (a no-op if
	// the hash is stored); HasAPIKey reports whether hash is a valid (not
	// revoked) key; CountAPIKeys counts valid keys.
	AddAPIKey(ctx context.Context, hash, name string) error
	HasAPIKey(ctx context.Context, hash string) (bool, error)
	CountAPIKeys(ctx context.Context) (int, error)

	// Teams: CreateTeam returns ErrExists for a taken id or name;
	// GetTeam returns ErrNotFound for unknown ids; ListTeams is in
	// creation order.
	CreateTeam(ctx context.Context, t *Team) error
	GetTeam(ctx context.Context, id string) (*Team, error)
	ListTeams(ctx context.Context) ([]*Team, error)

	// API keys of teams: CreateAPIKey returns ErrExists for a taken id or
	// hash and ErrNotFound for an unknown team (a zero CreatedAt means
	// now); LookupAPIKey returns ErrNotFound for an unknown or revoked
	// hash; ListAPIKeys lists a team's keys ("" = all), revoked ones
	// included, in creation order; RevokeAPIKey reports whether a valid
	// key was revoked (from then on LookupAPIKey and HasAPIKey refuse it).
	CreateAPIKey(ctx context.Context, k *APIKey) error
	LookupAPIKey(ctx context.Context, hash string) (*APIKey, error)
	ListAPIKeys(ctx context.Context, teamID string) ([]*APIKey, error)
	RevokeAPIKey(ctx context.Context, id string) (bool, error)

	// AppendAudit appends events; ListAudit queries them.
	AppendAudit(ctx context.Context, events ...AuditEvent) error
	ListAudit(ctx context.Context, q AuditQuery) ([]AuditEvent, error)
	// PruneAudit deletes events older than before; returns how many.
	PruneAudit(ctx context.Context, sandboxID string, before time.Time) (int64, error)

	// Snapshots: CreateSnapshot inserts; GetSnapshot returns ErrNotFound
	// for unknown ids; ListSnapshots is newest first; DeleteSnapshot
	// reports whether a record was deleted.
	CreateSnapshot(ctx context.Context, s *Snapshot) error
	GetSnapshot(ctx context.Context, id string) (*Snapshot, error)
	ListSnapshots(ctx context.Context, sandboxID string) ([]*Snapshot, error)
	DeleteSnapshot(ctx context.Context, id string) (bool, error)

	Close() error
}

// Snapshot is a stored filesystem snapshot of a sandbox.
type Snapshot struct {
	ID         string    `json:"snapshot_id"`
	TeamID     string    `json:"-"` // owner; "" on create means DefaultTeam
	SandboxID  string    `json:"sandbox_id"`
	TemplateID string    `json:"template_id"`
	Source     string    `json:"source"` // manual | pause | periodic
	Kind       string    `json:"kind"`   // filesystem
	CreatedAt  time.Time `json:"created_at"`
	SizeBytes  int64     `json:"size_bytes"`
	Path       string    `json:"-"` // the archive on the server
}

// AuditEvent is one entry of a sandbox's audit trail.
type AuditEvent struct {
	ID        int64           `json:"id"`
	SandboxID string          `json:"sandbox_id"`
	Time      time.Time       `json:"timestamp"`
	Type      string          `json:"type"` // e.g. "sandbox.created", "command.run", "egress.blocked"
	Data      json.RawMessage `json:"data,omitempty"`
}

// AuditQuery selects audit events. Zero values select all.
type AuditQuery struct {
	SandboxID string
	Types     []string
	Since     time.Time
	Until     time.Time
	AfterID   int64 // cursor
	Limit     int   // 0 = 100
}
