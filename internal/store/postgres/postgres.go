// Package postgres is the store.Store for several servers sharing one
// database (jackc/pgx). Its schema is versioned in the table
// declaw_schema_migrations and migrated on Open by the steps in
// migrations/, which keep the same version numbers as the sqlite backend's.
//
// Several servers may start at once: migrations run in one transaction
// under an advisory lock. Audit appends lock their sandboxes, which keeps
// each sandbox's audit ids in commit order (a reader paging a sandbox's
// events with AfterID never skips one).
package postgres

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/declaw/declaw/internal/store"
	"github.com/declaw/declaw/internal/store/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

var migrations = func() []migrate.Migration {
	m, err := migrate.Load(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded files are part of the binary: a test catches this
	}
	return m
}()

// SchemaVersion is the version of a database this package has migrated.
func SchemaVersion() int { return migrate.Latest(migrations) }

// Advisory lock keys (pg_advisory_xact_lock), arbitrary but fixed.
const (
	migrateLock int64 = 0x6465636c61770001 // "declaw" 1
	// auditLock is the first key of AppendAudit's per-sandbox two-key
	// locks; the second is a hash of the sandbox id.
	auditLock int32 = 0x64636c61
	// serverLock is the first key of ClaimServer's two-key lock; the
	// second is the schema's hash, so servers on separate schemas of one
	// database do not exclude each other.
	serverLock int32 = 0x64636c77
)

// ErrInUse is returned by ClaimServer when another server holds the database.
var ErrInUse = errors.New("another declaw server uses this database")

// Store is a store.Store on a Postgres database.
type Store struct {
	pool *pgxpool.Pool
	name string // host/database, for messages (never the password)

	mu    sync.Mutex
	owner *pgxpool.Conn // holds the server lock (ClaimServer) until Close
}

var _ store.Store = (*Store)(nil)

// IsDSN reports whether s names a Postgres database (postgres:// or
// postgresql:// URL).
func IsDSN(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Open connects to the database named by dsn (a postgres:// URL or a
// key=value string, as libpq takes; a search_path parameter selects a
// schema) and migrates its schema to SchemaVersion. A database migrated by
// a newer declaw is refused with a *migrate.TooNewError and left unchanged.
func Open(ctx context.Context, dsn string) (*Store, error) {
	return open(ctx, dsn, SchemaVersion())
}

func open(ctx context.Context, dsn string, target int) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err) // pgx redacts the password
	}
	name := cfg.ConnConfig.Host + "/" + cfg.ConnConfig.Database
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres %s: %w", name, err)
	}
	s := &Store{pool: pool, name: name}
	if err := s.migrate(ctx, target); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// migrate brings the schema to target in one transaction, under an
// advisory lock so concurrent servers migrate one after the other. The
// version check comes before any write: a too new database is not touched.
func (s *Store) migrate(ctx context.Context, target int) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres %s: %w", s.name, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
		return fmt.Errorf("postgres %s: lock for migration: %w", s.name, err)
	}
	var (
		current int
		exists  bool
	)
	if err := tx.QueryRow(ctx, `SELECT to_regclass('declaw_schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return fmt.Errorf("postgres %s: read schema version: %w", s.name, err)
	}
	if exists {
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM declaw_schema_migrations`).Scan(&current); err != nil {
			return fmt.Errorf("postgres %s: read schema version: %w", s.name, err)
		}
	}
	steps, err := migrate.Plan(s.name, current, migrations)
	if err != nil {
		return err
	}
	if n := target - current; n < len(steps) {
		steps = steps[:max(n, 0)]
	}
	if len(steps) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS declaw_schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("postgres %s: create migrations table: %w", s.name, err)
	}
	for _, m := range steps {
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return fmt.Errorf("migrate postgres %s to version %d (%s): %w", s.name, m.Version, m.Name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO declaw_schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
			return fmt.Errorf("migrate postgres %s: record version %d: %w", s.name, m.Version, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate postgres %s: %w", s.name, err)
	}
	return nil
}

// ClaimServer makes this store the only server on its database (schema) until
// Close: it takes a session advisory lock on a connection of its own, which
// Postgres releases when that connection ends, also when the process dies.
// A second claim (from any process) fails with ErrInUse. A server claims
// because it treats every running sandbox in the store as its own (at
// start it marks those left over from a previous run killed); servers that
// share a database need cluster mode instead.
func (s *Store) ClaimServer(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.owner != nil {
		return nil
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres %s: claim: %w", s.name, err)
	}
	// A server that just died may still hold the lock for a moment, until
	// Postgres notices its connection is gone: ask again for a while.
	deadline := time.Now().Add(claimWait)
	for {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext(current_schema()))`, serverLock).Scan(&ok); err != nil {
			conn.Release()
			return fmt.Errorf("postgres %s: claim: %w", s.name, err)
		}
		if ok {
			s.owner = conn
			return nil
		}
		if time.Now().After(deadline) {
			conn.Release()
			return fmt.Errorf("postgres %s: %w (one server per database; stop the other one first)", s.name, ErrInUse)
		}
		select {
		case <-ctx.Done():
			conn.Release()
			return fmt.Errorf("postgres %s: claim: %w", s.name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// claimWait is how long ClaimServer waits for another holder to go away.
const claimWait = 3 * time.Second

// Close releases the server claim, if any, and closes the pool.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.owner != nil {
		// Unlock first: the server side of a closed connection lets go
		// of its locks only when its process ends, a moment later. Then
		// close the connection rather than return it to the pool.
		conn := s.owner.Hijack()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn.Exec(ctx, `SELECT pg_advisory_unlock($1, hashtext(current_schema()))`, serverLock)
		conn.Close(ctx)
		cancel()
		s.owner = nil
	}
	s.mu.Unlock()
	s.pool.Close()
	return nil
}

func isUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// isForeignKey reports whether err is a REFERENCES violation.
func isForeignKey(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23503"
}

func teamOr(id string) string {
	if id == "" {
		return store.DefaultTeam
	}
	return id
}

// nullTime maps the zero time to NULL.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func fromNull(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

func nullRaw(r json.RawMessage) any {
	if len(r) == 0 {
		return nil
	}
	return string(r)
}

func rawOf(p *string) json.RawMessage {
	if p == nil {
		return nil
	}
	return json.RawMessage(*p)
}

func mapJSON(m map[string]string) (string, error) {
	if m == nil {
		m = map[string]string{}
	}
	b, err := json.Marshal(m)
	return string(b), err
}

// CreateSandbox inserts sb; ErrExists if the id is taken.
func (s *Store) CreateSandbox(ctx context.Context, sb *store.Sandbox) error {
	meta, err := mapJSON(sb.Metadata)
	if err != nil {
		return fmt.Errorf("create sandbox %s: metadata: %w", sb.ID, err)
	}
	envs, err := mapJSON(sb.Envs)
	if err != nil {
		return fmt.Errorf("create sandbox %s: envs: %w", sb.ID, err)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO sandboxes
		(id, team_id, template_id, state, metadata, envs, timeout, started_at, end_at, killed_at, security, network, lifecycle, guest_ip, runtime, resources)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)`,
		sb.ID, teamOr(sb.TeamID), sb.TemplateID, sb.State, meta, envs, sb.Timeout,
		nullTime(sb.StartedAt), nullTime(sb.EndAt), nullTime(sb.KilledAt),
		nullRaw(sb.Security), nullRaw(sb.Network), nullRaw(sb.Lifecycle), sb.GuestIP, sb.Runtime, nullRaw(sb.Resources))
	if err != nil {
		if isUnique(err) {
			return fmt.Errorf("create sandbox %s: %w", sb.ID, store.ErrExists)
		}
		return fmt.Errorf("create sandbox %s: %w", sb.ID, err)
	}
	return nil
}

// JSON columns are read as text: scanning json into Go values would turn
// a stored JSON null into a nil pointer.
const sandboxCols = `id, team_id, template_id, state, metadata::text, envs::text, timeout, started_at, end_at, killed_at,
	security::text, network::text, lifecycle::text, guest_ip, runtime, resources::text`

func scanSandbox(r pgx.Row) (*store.Sandbox, error) {
	var (
		sb                           store.Sandbox
		meta, envs                   string
		started, end, killed         *time.Time
		security, network, lifecycle *string
		resources                    *string
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
	sb.StartedAt, sb.EndAt, sb.KilledAt = fromNull(started), fromNull(end), fromNull(killed)
	sb.Security, sb.Network, sb.Lifecycle = rawOf(security), rawOf(network), rawOf(lifecycle)
	sb.Resources = rawOf(resources)
	return &sb, nil
}

// GetSandbox returns the sandbox or ErrNotFound.
func (s *Store) GetSandbox(ctx context.Context, id string) (*store.Sandbox, error) {
	sb, err := scanSandbox(s.pool.QueryRow(ctx, `SELECT `+sandboxCols+` FROM sandboxes WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("sandbox %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get sandbox %s: %w", id, err)
	}
	return sb, nil
}

// UpdateSandbox applies fn to the stored sandbox in one transaction,
// holding the row lock (SELECT ... FOR UPDATE) from read to write.
func (s *Store) UpdateSandbox(ctx context.Context, id string, fn func(*store.Sandbox) error) (*store.Sandbox, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("update sandbox %s: %w", id, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	sb, err := scanSandbox(tx.QueryRow(ctx, `SELECT `+sandboxCols+` FROM sandboxes WHERE id = $1 FOR UPDATE`, id))
	if errors.Is(err, pgx.ErrNoRows) {
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
	meta, err := mapJSON(sb.Metadata)
	if err != nil {
		return nil, fmt.Errorf("update sandbox %s: metadata: %w", id, err)
	}
	envs, err := mapJSON(sb.Envs)
	if err != nil {
		return nil, fmt.Errorf("update sandbox %s: envs: %w", id, err)
	}
	_, err = tx.Exec(ctx, `UPDATE sandboxes SET template_id=$1, state=$2, metadata=$3, envs=$4, timeout=$5,
		started_at=$6, end_at=$7, killed_at=$8, security=$9, network=$10, lifecycle=$11, guest_ip=$12, runtime=$13, resources=$14 WHERE id=$15`,
		sb.TemplateID, sb.State, meta, envs, sb.Timeout,
		nullTime(sb.StartedAt), nullTime(sb.EndAt), nullTime(sb.KilledAt),
		nullRaw(sb.Security), nullRaw(sb.Network), nullRaw(sb.Lifecycle), sb.GuestIP, sb.Runtime, nullRaw(sb.Resources), id)
	if err != nil {
		return nil, fmt.Errorf("update sandbox %s: %w", id, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("update sandbox %s: %w", id, err)
	}
	return sb, nil
}

// args collects query parameters and hands out their $n placeholders.
type args []any

func (a *args) add(v any) string {
	*a = append(*a, v)
	return fmt.Sprintf("$%d", len(*a))
}

// ListSandboxes returns sandboxes matching f in creation order.
func (s *Store) ListSandboxes(ctx context.Context, f store.SandboxFilter) ([]*store.Sandbox, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = store.DefaultLimit
	}
	var (
		where []string
		a     args
	)
	if f.TeamID != "" {
		where = append(where, "team_id = "+a.add(f.TeamID))
	}
	if len(f.States) > 0 {
		where = append(where, "state = ANY("+a.add(f.States)+")")
	}
	if f.After != "" {
		where = append(where, "seq > (SELECT seq FROM sandboxes WHERE id = "+a.add(f.After)+")")
	}
	for k, v := range f.Metadata {
		where = append(where, "EXISTS (SELECT 1 FROM unnest("+a.add(metadataPatterns(k, v))+"::text[]) p WHERE strpos(metadata::text, p) > 0)")
	}
	q := `SELECT ` + sandboxCols + ` FROM sandboxes`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq LIMIT " + a.add(limit+1)
	rows, err := s.pool.Query(ctx, q, a...)
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

// metadataPatterns returns the texts whose presence in a sandbox's
// metadata column means it maps k to v.
//
// The column holds exactly what json.Marshal wrote for a map (json keeps
// the text as given): keys sorted, no spaces, every '"' inside a string
// escaped. So the pair appears as "k":"v" right after '{' or ',' and right
// before ',' or '}', and such a match cannot start inside a string (there
// a '"' always follows a backslash). Postgres's own JSON operators are no
// use here: any \u0000 in the document (a NUL in some value, which users
// may set) makes them fail for the whole query.
func metadataPatterns(k, v string) []string {
	ke, _ := json.Marshal(k) // strings always marshal
	ve, _ := json.Marshal(v)
	pair := string(ke) + ":" + string(ve)
	return []string{"{" + pair + ",", "{" + pair + "}", "," + pair + ",", "," + pair + "}"}
}

// BeginIdempotent records rec.Key as in progress, or returns the existing record with ErrExists.
func (s *Store) BeginIdempotent(ctx context.Context, rec store.Idempotency) (*store.Idempotency, error) {
	// The existing record may be forgotten (FinishIdempotent nil) between
	// the insert and the read: then try again.
	for range 3 {
		var created time.Time
		err := s.pool.QueryRow(ctx, `INSERT INTO idempotency (key, body_hash, created_at) VALUES ($1, $2, now())
			ON CONFLICT (key) DO NOTHING RETURNING created_at`, rec.Key, rec.BodyHash).Scan(&created)
		if err == nil {
			rec.SandboxID, rec.Response, rec.CreatedAt = "", nil, created.UTC()
			return &rec, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("begin idempotent create %q: %w", rec.Key, err)
		}
		var got store.Idempotency
		err = s.pool.QueryRow(ctx, `SELECT key, body_hash, sandbox_id, response, created_at FROM idempotency WHERE key = $1`, rec.Key).
			Scan(&got.Key, &got.BodyHash, &got.SandboxID, &got.Response, &created)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read idempotency record %q: %w", rec.Key, err)
		}
		got.CreatedAt = created.UTC()
		return &got, store.ErrExists
	}
	return nil, fmt.Errorf("begin idempotent create %q: the record kept changing", rec.Key)
}

// FinishIdempotent stores the outcome of key, or forgets it when response is nil.
func (s *Store) FinishIdempotent(ctx context.Context, key, sandboxID string, response []byte) error {
	var err error
	if response == nil {
		_, err = s.pool.Exec(ctx, `DELETE FROM idempotency WHERE key = $1`, key)
	} else {
		_, err = s.pool.Exec(ctx, `UPDATE idempotency SET sandbox_id = $1, response = $2 WHERE key = $3`, sandboxID, response, key)
	}
	if err != nil {
		return fmt.Errorf("finish idempotent create %q: %w", key, err)
	}
	return nil
}

// AddAPIKey stores hash as an admin key of the default team (a no-op if
// the hash is stored, also when that key was revoked).
func (s *Store) AddAPIKey(ctx context.Context, hash, name string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO api_keys (id, hash, team_id, name, admin, created_at) VALUES ($1, $2, $3, $4, true, now())
		ON CONFLICT DO NOTHING`, store.KeyID(hash), hash, store.DefaultTeam, name)
	if err != nil {
		return fmt.Errorf("add api key: %w", err)
	}
	return nil
}

// HasAPIKey reports whether hash is a valid (not revoked) key's hash.
func (s *Store) HasAPIKey(ctx context.Context, hash string) (bool, error) {
	var ok bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM api_keys WHERE hash = $1 AND revoked_at IS NULL)`, hash).Scan(&ok); err != nil {
		return false, fmt.Errorf("check api key: %w", err)
	}
	return ok, nil
}

// CountAPIKeys returns the number of valid keys.
func (s *Store) CountAPIKeys(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL`).Scan(&n); err != nil {
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
	_, err := s.pool.Exec(ctx, `INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3)`, t.ID, t.Name, created)
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
	var t store.Team
	err := s.pool.QueryRow(ctx, `SELECT id, name, created_at FROM teams WHERE id = $1`, id).Scan(&t.ID, &t.Name, &t.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("team %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get team %s: %w", id, err)
	}
	t.CreatedAt = t.CreatedAt.UTC()
	return &t, nil
}

// ListTeams returns every team in creation order.
func (s *Store) ListTeams(ctx context.Context) ([]*store.Team, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, name, created_at FROM teams ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	defer rows.Close()
	out := []*store.Team{}
	for rows.Next() {
		var t store.Team
		if err := rows.Scan(&t.ID, &t.Name, &t.CreatedAt); err != nil {
			return nil, fmt.Errorf("list teams: %w", err)
		}
		t.CreatedAt = t.CreatedAt.UTC()
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
	_, err := s.pool.Exec(ctx, `INSERT INTO api_keys (id, hash, team_id, name, admin, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		k.ID, k.Hash, k.TeamID, k.Name, k.Admin, created, nullTime(k.RevokedAt))
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

func scanKey(r pgx.Row) (*store.APIKey, error) {
	var (
		k       store.APIKey
		revoked *time.Time
	)
	if err := r.Scan(&k.ID, &k.Hash, &k.TeamID, &k.Name, &k.Admin, &k.CreatedAt, &revoked); err != nil {
		return nil, err
	}
	k.CreatedAt, k.RevokedAt = k.CreatedAt.UTC(), fromNull(revoked)
	return &k, nil
}

// LookupAPIKey returns the valid key with hash, or ErrNotFound.
func (s *Store) LookupAPIKey(ctx context.Context, hash string) (*store.APIKey, error) {
	k, err := scanKey(s.pool.QueryRow(ctx, `SELECT `+keyCols+` FROM api_keys WHERE hash = $1 AND revoked_at IS NULL`, hash))
	if errors.Is(err, pgx.ErrNoRows) {
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
	var a args
	q := `SELECT ` + keyCols + ` FROM api_keys`
	if teamID != "" {
		q += ` WHERE team_id = ` + a.add(teamID)
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY seq`, a...)
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
	tag, err := s.pool.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL`, id)
	if err != nil {
		return false, fmt.Errorf("revoke api key %s: %w", id, err)
	}
	return tag.RowsAffected() > 0, nil
}

// AppendAudit appends events in one transaction. The transaction holds
// an advisory lock per sandbox from before its ids are drawn until it
// commits, so a sandbox's ids become visible in order; appends for other
// sandboxes run in parallel.
func (s *Store) AppendAudit(ctx context.Context, events ...store.AuditEvent) error {
	if len(events) == 0 {
		return nil
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	for _, key := range auditLockKeys(events) {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, auditLock, key); err != nil {
			return fmt.Errorf("append audit: lock: %w", err)
		}
	}
	batch := &pgx.Batch{}
	now := time.Now()
	for _, e := range events {
		ts := e.Time
		if ts.IsZero() {
			ts = now
		}
		batch.Queue(`INSERT INTO audit (sandbox_id, ts, type, data) VALUES ($1, $2, $3, $4)`, e.SandboxID, ts, e.Type, nullRaw(e.Data))
	}
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	return nil
}

// auditLockKeys returns the second lock keys of the events' sandboxes,
// distinct and sorted: every transaction takes them in the same order, so
// two appends for overlapping sets of sandboxes cannot deadlock (equal
// hashes of distinct ids only serialize a little more).
func auditLockKeys(events []store.AuditEvent) []int32 {
	var keys []int32
	for _, e := range events {
		h := fnv.New32a()
		h.Write([]byte(e.SandboxID))
		keys = append(keys, int32(h.Sum32()))
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// ListAudit returns events matching q in append order.
func (s *Store) ListAudit(ctx context.Context, q store.AuditQuery) ([]store.AuditEvent, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = store.DefaultLimit
	}
	var (
		where []string
		a     args
	)
	if q.SandboxID != "" {
		where = append(where, "sandbox_id = "+a.add(q.SandboxID))
	}
	if len(q.Types) > 0 {
		// A type filter "egress" matches "egress" and "egress.*".
		prefixes := make([]string, len(q.Types))
		for i, t := range q.Types {
			prefixes[i] = t + "."
		}
		where = append(where, "(type = ANY("+a.add(q.Types)+") OR type ^@ ANY("+a.add(prefixes)+"))")
	}
	if !q.Since.IsZero() {
		where = append(where, "ts >= "+a.add(q.Since))
	}
	if !q.Until.IsZero() {
		where = append(where, "ts <= "+a.add(q.Until))
	}
	if q.AfterID > 0 {
		where = append(where, "id > "+a.add(q.AfterID))
	}
	sqlq := `SELECT id, sandbox_id, ts, type, data::text FROM audit`
	if len(where) > 0 {
		sqlq += " WHERE " + strings.Join(where, " AND ")
	}
	sqlq += " ORDER BY id LIMIT " + a.add(limit)
	rows, err := s.pool.Query(ctx, sqlq, a...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []store.AuditEvent
	for rows.Next() {
		var (
			e    store.AuditEvent
			data *string
		)
		if err := rows.Scan(&e.ID, &e.SandboxID, &e.Time, &e.Type, &data); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		e.Time = e.Time.UTC()
		e.Data = rawOf(data)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}

// PruneAudit deletes a sandbox's events older than before ("" = all sandboxes).
func (s *Store) PruneAudit(ctx context.Context, sandboxID string, before time.Time) (int64, error) {
	var a args
	q := `DELETE FROM audit WHERE ts < ` + a.add(before)
	if sandboxID != "" {
		q += " AND sandbox_id = " + a.add(sandboxID)
	}
	tag, err := s.pool.Exec(ctx, q, a...)
	if err != nil {
		return 0, fmt.Errorf("prune audit: %w", err)
	}
	return tag.RowsAffected(), nil
}

// CreateSnapshot inserts a snapshot record; ErrExists if the id is taken.
func (s *Store) CreateSnapshot(ctx context.Context, sn *store.Snapshot) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO snapshots (id, team_id, sandbox_id, template_id, source, kind, created_at, size_bytes, path)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)`, sn.ID, teamOr(sn.TeamID), sn.SandboxID, sn.TemplateID, sn.Source, sn.Kind, nullTime(sn.CreatedAt), sn.SizeBytes, sn.Path)
	if err != nil {
		if isUnique(err) {
			return fmt.Errorf("create snapshot %s: %w", sn.ID, store.ErrExists)
		}
		return fmt.Errorf("create snapshot %s: %w", sn.ID, err)
	}
	return nil
}

const snapshotCols = `id, team_id, sandbox_id, template_id, source, kind, created_at, size_bytes, path`

func scanSnapshot(r pgx.Row) (*store.Snapshot, error) {
	var (
		sn      store.Snapshot
		created *time.Time
	)
	if err := r.Scan(&sn.ID, &sn.TeamID, &sn.SandboxID, &sn.TemplateID, &sn.Source, &sn.Kind, &created, &sn.SizeBytes, &sn.Path); err != nil {
		return nil, err
	}
	sn.CreatedAt = fromNull(created)
	return &sn, nil
}

// GetSnapshot returns a snapshot or ErrNotFound.
func (s *Store) GetSnapshot(ctx context.Context, id string) (*store.Snapshot, error) {
	sn, err := scanSnapshot(s.pool.QueryRow(ctx, `SELECT `+snapshotCols+` FROM snapshots WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("snapshot %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get snapshot %s: %w", id, err)
	}
	return sn, nil
}

// ListSnapshots returns a sandbox's snapshots, newest first.
func (s *Store) ListSnapshots(ctx context.Context, sandboxID string) ([]*store.Snapshot, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+snapshotCols+` FROM snapshots WHERE sandbox_id = $1 ORDER BY seq DESC`, sandboxID)
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
	tag, err := s.pool.Exec(ctx, `DELETE FROM snapshots WHERE id = $1`, id)
	if err != nil {
		return false, fmt.Errorf("delete snapshot %s: %w", id, err)
	}
	return tag.RowsAffected() > 0, nil
}
