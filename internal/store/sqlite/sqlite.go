// Package sqlite is the embedded default implementation of store.Store,
// backed by a single SQLite file (modernc.org/sqlite: pure Go, no cgo).
// Its schema is versioned (PRAGMA user_version) and migrated on Open by the
// steps in migrations/ (see package migrate).
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/declaw/declaw/internal/store"
	"github.com/declaw/declaw/internal/store/migrate"
	sqlite "modernc.org/sqlite" // registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations is the ordered schema history of this backend.
var migrations = func() []migrate.Migration {
	m, err := migrate.Load(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded files are part of the binary: a test catches this
	}
	return m
}()

// SchemaVersion is the user_version of a database this package has migrated.
func SchemaVersion() int { return migrate.Latest(migrations) }

// Store is a store.Store on one SQLite file.
type Store struct {
	db *sql.DB
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path and migrates its
// schema to SchemaVersion. A database written by a newer declaw (a higher
// user_version) is refused with a *migrate.TooNewError and left unchanged.
func Open(path string) (*Store, error) {
	return open(path, SchemaVersion())
}

// open is Open migrating only up to version target (tests build older
// schemas with it).
func open(path string, target int) (*Store, error) {
	// Connection settings only: nothing here writes to the file, so a
	// database that is refused below is left as it was. _txlock=immediate
	// takes the write lock at BEGIN, so two processes that migrate (or
	// read-modify-write) at once queue on busy_timeout instead of failing.
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	// One writer at a time keeps SQLite free of SQLITE_BUSY storms.
	db.SetMaxOpenConns(1)
	s := &Store{db: db}
	if err := s.migrate(context.Background(), path, target); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// migrate brings the schema from its user_version to target in one
// transaction, after checking (before anything is written) that the
// database is not newer than this binary.
func (s *Store) migrate(ctx context.Context, path string, target int) error {
	var current int
	if err := s.db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&current); err != nil {
		return fmt.Errorf("open sqlite %s: read schema version: %w", path, err)
	}
	if _, err := migrate.Plan(path, current, migrations); err != nil {
		return err
	}
	// Persistent, and the first write: only once the version is known good.
	if _, err := s.db.ExecContext(ctx, `PRAGMA journal_mode=WAL`); err != nil {
		return fmt.Errorf("open sqlite %s: set WAL mode: %w", path, err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate sqlite %s: %w", path, err)
	}
	defer tx.Rollback()
	// Read again under the write lock: another process may have migrated
	// between the check above and BEGIN IMMEDIATE.
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&current); err != nil {
		return fmt.Errorf("migrate sqlite %s: read schema version: %w", path, err)
	}
	steps, err := migrate.Plan(path, current, migrations)
	if err != nil {
		return err
	}
	if n := target - current; n < len(steps) {
		steps = steps[:max(n, 0)]
	}
	for _, m := range steps {
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			return fmt.Errorf("migrate sqlite %s to version %d (%s): %w", path, m.Version, m.Name, err)
		}
	}
	if len(steps) == 0 {
		return nil
	}
	// PRAGMA takes no parameters; the version is an int from our own list.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, steps[len(steps)-1].Version)); err != nil {
		return fmt.Errorf("migrate sqlite %s: set schema version: %w", path, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate sqlite %s: %w", path, err)
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// isUnique reports whether err is a UNIQUE or PRIMARY KEY violation.
func isUnique(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// isForeignKey reports whether err is a REFERENCES violation.
func isForeignKey(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

func teamOr(id string) string {
	if id == "" {
		return store.DefaultTeam
	}
	return id
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "{}"
	}
	return string(b)
}

func nullRaw(r json.RawMessage) any {
	if len(r) == 0 {
		return nil
	}
	return string(r)
}

// CreateSandbox inserts sb; ErrExists if the id is taken.
func (s *Store) CreateSandbox(ctx context.Context, sb *store.Sandbox) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO sandboxes
		(id, team_id, template_id, state, metadata, envs, timeout, started_at, end_at, killed_at, security, network, lifecycle, guest_ip, runtime, resources)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		sb.ID, teamOr(sb.TeamID), sb.TemplateID, sb.State, mustJSON(orEmpty(sb.Metadata)), mustJSON(orEmpty(sb.Envs)), sb.Timeout,
		unixNano(sb.StartedAt), unixNano(sb.EndAt), unixNano(sb.KilledAt),
		nullRaw(sb.Security), nullRaw(sb.Network), nullRaw(sb.Lifecycle), sb.GuestIP, sb.Runtime, nullRaw(sb.Resources))
	if err != nil {
		if isUnique(err) {
			return fmt.Errorf("create sandbox %s: %w", sb.ID, store.ErrExists)
		}
		return fmt.Errorf("create sandbox %s: %w", sb.ID, err)
	}
	return nil
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

const sandboxCols = `id, team_id, template_id, state, metadata, envs, timeout, started_at, end_at, killed_at, security, network, lifecycle, guest_ip, runtime, resources`

type scanner interface{ Scan(...any) error }

func scanSandbox(r scanner) (*store.Sandbox, error) {
	var (
		sb                           store.Sandbox
		meta, envs                   string
		started, end, killed         int64
		security, network, lifecycle sql.NullString
		resources                    sql.NullString
	)
	if err := r.Scan(&sb.ID, &sb.TeamID, &sb.TemplateID, &sb.State, &meta, &envs, &sb.Timeout, &started, &end, &killed,
		&security, &network, &lifecycle, &sb.GuestIP, &sb.Runtime, &resources); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(meta), &sb.Metadata); err != nil {
		return nil, fmt.Errorf("sandbox %s: metadata: %w", sb.ID, err)
	}
	if err := json.Unmarshal([]byte(envs), &sb.Envs); err != nil {
		return nil, fmt.Errorf("sandbox %s: envs: %w", sb.ID, err)
	}
	sb.StartedAt, sb.EndAt, sb.KilledAt = fromNano(started), fromNano(end), fromNano(killed)
	if security.Valid {
		sb.Security = json.RawMessage(security.String)
	}
	if network.Valid {
		sb.Network = json.RawMessage(network.String)
	}
	if lifecycle.Valid {
		sb.Lifecycle = json.RawMessage(lifecycle.String)
	}
	if resources.Valid {
		sb.Resources = json.RawMessage(resources.String)
	}
	return &sb, nil
}

// GetSandbox returns the sandbox or ErrNotFound.
func (s *Store) GetSandbox(ctx context.Context, id string) (*store.Sandbox, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+sandboxCols+` FROM sandboxes WHERE id = ?`, id)
	sb, err := scanSandbox(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sandbox %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get sandbox %s: %w", id, err)
	}
	return sb, nil
}

// UpdateSandbox applies fn to the stored sandbox inside one transaction.
func (s *Store) UpdateSandbox(ctx context.Context, id string, fn func(*store.Sandbox) error) (*store.Sandbox, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("update sandbox %s: %w", id, err)
	}
	defer tx.Rollback()
	sb, err := scanSandbox(tx.QueryRowContext(ctx, `SELECT `+sandboxCols+` FROM sandboxes WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sandbox %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("update sandbox %s: %w", id, err)
	}
	team := sb.TeamID
	if err := fn(sb); err != nil {
		return nil, err
	}
	sb.TeamID = team // owners do not change
	_, err = tx.ExecContext(ctx, `UPDATE sandboxes SET template_id=?, state=?, metadata=?, envs=?, timeout=?,
		started_at=?, end_at=?, killed_at=?, security=?, network=?, lifecycle=?, guest_ip=?, runtime=?, resources=? WHERE id=?`,
		sb.TemplateID, sb.State, mustJSON(orEmpty(sb.Metadata)), mustJSON(orEmpty(sb.Envs)), sb.Timeout,
		unixNano(sb.StartedAt), unixNano(sb.EndAt), unixNano(sb.KilledAt),
		nullRaw(sb.Security), nullRaw(sb.Network), nullRaw(sb.Lifecycle), sb.GuestIP, sb.Runtime, nullRaw(sb.Resources), id)
	if err != nil {
		return nil, fmt.Errorf("update sandbox %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("update sandbox %s: %w", id, err)
	}
	return sb, nil
}

// ListSandboxes returns sandboxes matching f in creation order.
func (s *Store) ListSandboxes(ctx context.Context, f store.SandboxFilter) ([]*store.Sandbox, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = store.DefaultLimit
	}
	var (
		where []string
		args  []any
	)
	if f.TeamID != "" {
		where = append(where, "team_id = ?")
		args = append(args, f.TeamID)
	}
	if len(f.States) > 0 {
		where = append(where, "state IN ("+strings.TrimSuffix(strings.Repeat("?,", len(f.States)), ",")+")")
		for _, st := range f.States {
			args = append(args, st)
		}
	}
	if f.After != "" {
		where = append(where, "seq > (SELECT seq FROM sandboxes WHERE id = ?)")
		args = append(args, f.After)
	}
	for k, v := range f.Metadata {
		// json_each compares the key as a plain string: no JSON path to
		// quote, whatever characters a user's key holds.
		where = append(where, "EXISTS (SELECT 1 FROM json_each(sandboxes.metadata) WHERE key = ? AND value = ?)")
		args = append(args, k, v)
	}
	q := `SELECT ` + sandboxCols + ` FROM sandboxes`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq LIMIT ?"
	args = append(args, limit+1)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list sandboxes: %w", err)
	}
	defer rows.Close()
	var out []*store.Sandbox
	for rows.Next() {
		sb, err := scanSandbox(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list sandboxes: %w", err)
		}
		out = append(out, sb)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list sandboxes: %w", err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = out[limit-1].ID
	}
	return out, next, nil
}

// BeginIdempotent records rec.Key as in progress, or returns the existing record with ErrExists.
func (s *Store) BeginIdempotent(ctx context.Context, rec store.Idempotency) (*store.Idempotency, error) {
	now := time.Now()
	_, err := s.db.ExecContext(ctx, `INSERT INTO idempotency (key, body_hash, created_at) VALUES (?,?,?)`,
		rec.Key, rec.BodyHash, unixNano(now))
	if err == nil {
		rec.SandboxID, rec.Response, rec.CreatedAt = "", nil, now.UTC()
		return &rec, nil
	}
	if !isUnique(err) {
		return nil, fmt.Errorf("begin idempotent create %q: %w", rec.Key, err)
	}
	var (
		got     store.Idempotency
		created int64
	)
	err = s.db.QueryRowContext(ctx, `SELECT key, body_hash, sandbox_id, response, created_at FROM idempotency WHERE key = ?`, rec.Key).
		Scan(&got.Key, &got.BodyHash, &got.SandboxID, &got.Response, &created)
	if err != nil {
		return nil, fmt.Errorf("read idempotency record %q: %w", rec.Key, err)
	}
	got.CreatedAt = fromNano(created)
	return &got, store.ErrExists
}

// FinishIdempotent stores the outcome of key, or forgets it when response is nil.
func (s *Store) FinishIdempotent(ctx context.Context, key, sandboxID string, response []byte) error {
	var err error
	if response == nil {
		_, err = s.db.ExecContext(ctx, `DELETE FROM idempotency WHERE key = ?`, key)
	} else {
		_, err = s.db.ExecContext(ctx, `UPDATE idempotency SET sandbox_id = ?, response = ? WHERE key = ?`, sandboxID, response, key)
	}
	if err != nil {
		return fmt.Errorf("finish idempotent create %q: %w", key, err)
	}
	return nil
}

// AddAPIKey stores hash as an admin key of the default team (a no-op if
// the hash is stored, also when that key was revoked).
func (s *Store) AddAPIKey(ctx context.Context, hash, name string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO api_keys (id, hash, team_id, name, admin, created_at) VALUES (?,?,?,?,1,?)
		ON CONFLICT DO NOTHING`, store.KeyID(hash), hash, store.DefaultTeam, name, unixNano(time.Now()))
	if err != nil {
		return fmt.Errorf("add api key: %w", err)
	}
	return nil
}

// HasAPIKey reports whether hash is a valid (not revoked) key's hash.
func (s *Store) HasAPIKey(ctx context.Context, hash string) (bool, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_keys WHERE hash = ? AND revoked_at = 0`, hash).Scan(&n); err != nil {
		return false, fmt.Errorf("check api key: %w", err)
	}
	return n > 0, nil
}

// CountAPIKeys returns the number of valid keys.
func (s *Store) CountAPIKeys(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_keys WHERE revoked_at = 0`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count api keys: %w", err)
	}
	return n, nil
}

// CreateTeam inserts t; ErrExists if its id or name is taken.
func (s *Store) CreateTeam(ctx context.Context, t *store.Team) error {
	created := t.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO teams (id, name, created_at) VALUES (?,?,?)`, t.ID, t.Name, unixNano(created))
	if err != nil {
		if isUnique(err) {
			return fmt.Errorf("create team %s: %w", t.ID, store.ErrExists)
		}
		return fmt.Errorf("create team %s: %w", t.ID, err)
	}
	t.CreatedAt = created.UTC()
	return nil
}

// GetTeam returns a team or ErrNotFound.
func (s *Store) GetTeam(ctx context.Context, id string) (*store.Team, error) {
	var (
		t       store.Team
		created int64
	)
	err := s.db.QueryRowContext(ctx, `SELECT id, name, created_at FROM teams WHERE id = ?`, id).Scan(&t.ID, &t.Name, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("team %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get team %s: %w", id, err)
	}
	t.CreatedAt = fromNano(created)
	return &t, nil
}

// ListTeams returns every team in creation order.
func (s *Store) ListTeams(ctx context.Context) ([]*store.Team, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, created_at FROM teams ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	defer rows.Close()
	out := []*store.Team{}
	for rows.Next() {
		var (
			t       store.Team
			created int64
		)
		if err := rows.Scan(&t.ID, &t.Name, &created); err != nil {
			return nil, fmt.Errorf("list teams: %w", err)
		}
		t.CreatedAt = fromNano(created)
		out = append(out, &t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	return out, nil
}

// CreateAPIKey stores k; ErrExists for a taken id or hash, ErrNotFound
// for an unknown team.
func (s *Store) CreateAPIKey(ctx context.Context, k *store.APIKey) error {
	created := k.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO api_keys (id, hash, team_id, name, admin, created_at, revoked_at) VALUES (?,?,?,?,?,?,?)`,
		k.ID, k.Hash, k.TeamID, k.Name, k.Admin, unixNano(created), unixNano(k.RevokedAt))
	switch {
	case err == nil:
		k.CreatedAt = created.UTC()
		return nil
	case isUnique(err):
		return fmt.Errorf("create api key %s: %w", k.ID, store.ErrExists)
	case isForeignKey(err):
		return fmt.Errorf("create api key %s: team %s: %w", k.ID, k.TeamID, store.ErrNotFound)
	}
	return fmt.Errorf("create api key %s: %w", k.ID, err)
}

const keyCols = `id, hash, team_id, name, admin, created_at, revoked_at`

func scanKey(r scanner) (*store.APIKey, error) {
	var (
		k                store.APIKey
		created, revoked int64
	)
	if err := r.Scan(&k.ID, &k.Hash, &k.TeamID, &k.Name, &k.Admin, &created, &revoked); err != nil {
		return nil, err
	}
	k.CreatedAt, k.RevokedAt = fromNano(created), fromNano(revoked)
	return &k, nil
}

// LookupAPIKey returns the valid key with hash, or ErrNotFound.
func (s *Store) LookupAPIKey(ctx context.Context, hash string) (*store.APIKey, error) {
	k, err := scanKey(s.db.QueryRowContext(ctx, `SELECT `+keyCols+` FROM api_keys WHERE hash = ? AND revoked_at = 0`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("api key: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("look up api key: %w", err)
	}
	return k, nil
}

// ListAPIKeys returns a team's keys ("" = every team's), revoked ones
// included, in creation order.
func (s *Store) ListAPIKeys(ctx context.Context, teamID string) ([]*store.APIKey, error) {
	q, args := `SELECT `+keyCols+` FROM api_keys`, []any{}
	if teamID != "" {
		q += ` WHERE team_id = ?`
		args = append(args, teamID)
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY seq`, args...)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	defer rows.Close()
	out := []*store.APIKey{}
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list api keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	return out, nil
}

// RevokeAPIKey revokes a valid key; false if id is unknown or revoked.
func (s *Store) RevokeAPIKey(ctx context.Context, id string) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at = 0`, unixNano(time.Now()), id)
	if err != nil {
		return false, fmt.Errorf("revoke api key %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("revoke api key %s: %w", id, err)
	}
	return n > 0, nil
}

// AppendAudit appends events in one transaction.
func (s *Store) AppendAudit(ctx context.Context, events ...store.AuditEvent) error {
	if len(events) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	defer tx.Rollback()
	for _, e := range events {
		ts := e.Time
		if ts.IsZero() {
			ts = time.Now()
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit (sandbox_id, ts, type, data) VALUES (?,?,?,?)`,
			e.SandboxID, unixNano(ts), e.Type, nullRaw(e.Data)); err != nil {
			return fmt.Errorf("append audit: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	return nil
}

// ListAudit returns events matching q in append order.
func (s *Store) ListAudit(ctx context.Context, q store.AuditQuery) ([]store.AuditEvent, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = store.DefaultLimit
	}
	var (
		where []string
		args  []any
	)
	if q.SandboxID != "" {
		where = append(where, "sandbox_id = ?")
		args = append(args, q.SandboxID)
	}
	if len(q.Types) > 0 {
		var ors []string
		for _, t := range q.Types {
			// A type filter "egress" matches "egress" and "egress.*"
			// (a prefix compare: no LIKE wildcards or case folding).
			prefix := t + "."
			ors = append(ors, "type = ? OR substr(type, 1, ?) = ?")
			args = append(args, t, utf8.RuneCountInString(prefix), prefix)
		}
		where = append(where, "("+strings.Join(ors, " OR ")+")")
	}
	if !q.Since.IsZero() {
		where = append(where, "ts >= ?")
		args = append(args, unixNano(q.Since))
	}
	if !q.Until.IsZero() {
		where = append(where, "ts <= ?")
		args = append(args, unixNano(q.Until))
	}
	if q.AfterID > 0 {
		where = append(where, "id > ?")
		args = append(args, q.AfterID)
	}
	sqlq := `SELECT id, sandbox_id, ts, type, data FROM audit`
	if len(where) > 0 {
		sqlq += " WHERE " + strings.Join(where, " AND ")
	}
	sqlq += " ORDER BY id LIMIT ?"
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, sqlq, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []store.AuditEvent
	for rows.Next() {
		var (
			e    store.AuditEvent
			ts   int64
			data sql.NullString
		)
		if err := rows.Scan(&e.ID, &e.SandboxID, &ts, &e.Type, &data); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		e.Time = fromNano(ts)
		if data.Valid {
			e.Data = json.RawMessage(data.String)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}

// PruneAudit deletes a sandbox's events older than before ("" = all sandboxes).
func (s *Store) PruneAudit(ctx context.Context, sandboxID string, before time.Time) (int64, error) {
	q, args := `DELETE FROM audit WHERE ts < ?`, []any{unixNano(before)}
	if sandboxID != "" {
		q += " AND sandbox_id = ?"
		args = append(args, sandboxID)
	}
	res, err := s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("prune audit: %w", err)
	}
	return res.RowsAffected()
}

// CreateSnapshot inserts a snapshot record; ErrExists if the id is taken.
func (s *Store) CreateSnapshot(ctx context.Context, sn *store.Snapshot) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO snapshots (id, team_id, sandbox_id, template_id, source, kind, created_at, size_bytes, path)
		VALUES (?,?,?,?,?,?,?,?,?)`, sn.ID, teamOr(sn.TeamID), sn.SandboxID, sn.TemplateID, sn.Source, sn.Kind, unixNano(sn.CreatedAt), sn.SizeBytes, sn.Path)
	if err != nil {
		if isUnique(err) {
			return fmt.Errorf("create snapshot %s: %w", sn.ID, store.ErrExists)
		}
		return fmt.Errorf("create snapshot %s: %w", sn.ID, err)
	}
	return nil
}

const snapshotCols = `id, team_id, sandbox_id, template_id, source, kind, created_at, size_bytes, path`

func scanSnapshot(r scanner) (*store.Snapshot, error) {
	var (
		sn      store.Snapshot
		created int64
	)
	if err := r.Scan(&sn.ID, &sn.TeamID, &sn.SandboxID, &sn.TemplateID, &sn.Source, &sn.Kind, &created, &sn.SizeBytes, &sn.Path); err != nil {
		return nil, err
	}
	sn.CreatedAt = fromNano(created)
	return &sn, nil
}

// GetSnapshot returns a snapshot or ErrNotFound.
func (s *Store) GetSnapshot(ctx context.Context, id string) (*store.Snapshot, error) {
	sn, err := scanSnapshot(s.db.QueryRowContext(ctx, `SELECT `+snapshotCols+` FROM snapshots WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("snapshot %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get snapshot %s: %w", id, err)
	}
	return sn, nil
}

// ListSnapshots returns a sandbox's snapshots, newest first.
func (s *Store) ListSnapshots(ctx context.Context, sandboxID string) ([]*store.Snapshot, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+snapshotCols+` FROM snapshots WHERE sandbox_id = ? ORDER BY seq DESC`, sandboxID)
	if err != nil {
		return nil, fmt.Errorf("list snapshots of %s: %w", sandboxID, err)
	}
	defer rows.Close()
	out := []*store.Snapshot{}
	for rows.Next() {
		sn, err := scanSnapshot(rows)
		if err != nil {
			return nil, fmt.Errorf("list snapshots of %s: %w", sandboxID, err)
		}
		out = append(out, sn)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list snapshots of %s: %w", sandboxID, err)
	}
	return out, nil
}

// DeleteSnapshot deletes a snapshot record.
func (s *Store) DeleteSnapshot(ctx context.Context, id string) (bool, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM snapshots WHERE id = ?`, id)
	if err != nil {
		return false, fmt.Errorf("delete snapshot %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("delete snapshot %s: %w", id, err)
	}
	return n > 0, nil
}
