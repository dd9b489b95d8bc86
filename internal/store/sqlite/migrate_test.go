package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/store"
	"github.com/declaw/declaw/internal/store/migrate"
)

// userVersion reads PRAGMA user_version of the file at path.
func userVersion(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		t.Fatalf("read user_version of %s: %v", path, err)
	}
	return v
}

func copyFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "declaw.db")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestUpgradeFromV1 opens a database written by the first release (no
// version, IF NOT EXISTS schema) and checks it is migrated in place with
// every record intact and usable.
func TestUpgradeFromV1(t *testing.T) {
	ctx := context.Background()
	path := copyFixture(t, "v1.db")
	if v := userVersion(t, path); v != 0 {
		t.Fatalf("fixture user_version = %d; want 0 (the first release recorded none)", v)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open(v1 database): %v", err)
	}
	defer s.Close()
	if v := userVersion(t, path); v != SchemaVersion() {
		t.Errorf("after Open, user_version = %d; want %d", v, SchemaVersion())
	}

	base := time.Date(2026, 11, 20, 10, 0, 0, 123456789, time.UTC)
	all, next, err := s.ListSandboxes(ctx, store.SandboxFilter{})
	if err != nil || next != "" {
		t.Fatalf("ListSandboxes: %v (next %q)", err, next)
	}
	var got []string
	for _, sb := range all {
		got = append(got, sb.ID)
	}
	if want := []string{"sbx-v1-running", "sbx-v1-killed", "sbx-v1-paused"}; !slices.Equal(got, want) {
		t.Fatalf("sandboxes = %v; want %v", got, want)
	}
	r := all[0]
	if r.TemplateID != "python" || r.State != "running" || r.Metadata["owner"] != "alice" || r.Metadata["job"] != "42" ||
		r.Envs["TOKEN"] != "***" || r.Timeout != 300 || !r.StartedAt.Equal(base) || !r.EndAt.Equal(base.Add(300*time.Second)) ||
		!r.KilledAt.IsZero() || string(r.Security) != `{"pii":{"enabled":true}}` || string(r.Network) != `{"allow_out":["example.com"]}` ||
		string(r.Lifecycle) != `{"on_timeout":"kill"}` || r.GuestIP != "10.200.0.2" || r.Runtime != "gvisor" {
		t.Errorf("sbx-v1-running = %+v; not as the first release wrote it", r)
	}
	if k := all[1]; k.State != "killed" || !k.KilledAt.Equal(base.Add(2*time.Minute)) || k.Metadata["owner"] != "bob" {
		t.Errorf("sbx-v1-killed = %+v", k)
	}
	if byOwner, _, err := s.ListSandboxes(ctx, store.SandboxFilter{Metadata: map[string]string{"owner": "bob"}}); err != nil || len(byOwner) != 1 {
		t.Errorf("ListSandboxes(owner=bob) = %d, %v; want sbx-v1-killed", len(byOwner), err)
	}

	evs, err := s.ListAudit(ctx, store.AuditQuery{SandboxID: "sbx-v1-running"})
	if err != nil || len(evs) != 4 {
		t.Fatalf("audit of sbx-v1-running = %+v, %v; want 4 events", evs, err)
	}
	for i, typ := range []string{"sandbox.created", "command.run", "egress.blocked", "dns.query"} {
		e := evs[i]
		if e.Type != typ || e.ID != int64(i+1) || !e.Time.Equal(base.Add(time.Duration(i)*time.Second)) || string(e.Data) != `{"n":`+string(rune('0'+i))+`}` {
			t.Errorf("audit event %d = %+v; want %s", i, e, typ)
		}
	}
	if evs, _ := s.ListAudit(ctx, store.AuditQuery{Types: []string{"sandbox"}}); len(evs) != 2 || evs[1].Data != nil {
		t.Errorf("audit sandbox.* = %+v; want created and killed", evs)
	}

	// The keys the first release stored still authenticate (sha256 hex of
	// "v1-secret-key" and "v1-generated-key").
	for _, h := range []string{"2980564eb2554742bdd346f9cab1ffba7d3b03fba85ff9cac2977ce5a2bf12ac", "4e709621a7aaa6eb4169790f59fb53dfba6a3cc5647e2e40d93a797f06ed8fec"} {
		if ok, err := s.HasAPIKey(ctx, h); !ok || err != nil {
			t.Errorf("HasAPIKey(%s…) = %v, %v; want true", h[:8], ok, err)
		}
	}
	if n, _ := s.CountAPIKeys(ctx); n != 2 {
		t.Errorf("CountAPIKeys = %d; want 2", n)
	}
	// Migration 3: what existed belongs to the default team, whose admin
	// keys the old keys become (they could do everything before).
	if teams, err := s.ListTeams(ctx); err != nil || len(teams) != 1 || teams[0].ID != store.DefaultTeam {
		t.Errorf("teams = %+v, %v; want only %q", teams, err, store.DefaultTeam)
	}
	keys, err := s.ListAPIKeys(ctx, store.DefaultTeam)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys of the default team = %+v, %v; want the 2 old keys", keys, err)
	}
	for _, k := range keys {
		if !k.Admin || k.ID != store.KeyID(k.Hash) || !k.RevokedAt.IsZero() || k.CreatedAt.IsZero() || (k.Name != "configured" && k.Name != "generated") {
			t.Errorf("old key after migration = %+v; want a valid admin key with id KeyID(hash) and its name", k)
		}
	}
	for _, sb := range all {
		if sb.TeamID != store.DefaultTeam {
			t.Errorf("sandbox %s team %q; want %q", sb.ID, sb.TeamID, store.DefaultTeam)
		}
	}
	if sn, err := s.GetSnapshot(ctx, "snap-v1"); err != nil || sn.SandboxID != "sbx-v1-paused" || sn.TeamID != store.DefaultTeam || sn.SizeBytes != 4096 || !sn.CreatedAt.Equal(base.Add(4*time.Minute)) {
		t.Errorf("GetSnapshot(snap-v1) = %+v, %v", sn, err)
	}
	rec, err := s.BeginIdempotent(ctx, store.Idempotency{Key: "idem-v1", BodyHash: "bodyhash"})
	if !errors.Is(err, store.ErrExists) || rec.SandboxID != "sbx-v1-running" || string(rec.Response) != `{"sandboxID":"sbx-v1-running"}` {
		t.Errorf("idempotency record idem-v1 = %+v, %v", rec, err)
	}

	// New writes continue the old sequences.
	if err := s.CreateSandbox(ctx, &store.Sandbox{ID: "sbx-v2", TemplateID: "base", State: "running", StartedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if all, _, _ := s.ListSandboxes(ctx, store.SandboxFilter{}); len(all) != 4 || all[3].ID != "sbx-v2" {
		t.Errorf("after a new create, list = %d sandboxes; want the new one last", len(all))
	}
	if err := s.AppendAudit(ctx, store.AuditEvent{SandboxID: "sbx-v2", Type: "sandbox.created", Data: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if evs, _ := s.ListAudit(ctx, store.AuditQuery{SandboxID: "sbx-v2"}); len(evs) != 1 || evs[0].ID != 6 {
		t.Errorf("new audit event = %+v; want id 6", evs)
	}

	// The migration added the audit_ts index.
	var n int
	if err := s.db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'audit_ts'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("index audit_ts: %d, %v; want present", n, err)
	}
}

// TestReopenIsIdempotent opens a migrated database again: nothing to do,
// nothing changes.
func TestReopenIsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "declaw.db")
	for i := range 3 {
		s, err := Open(path)
		if err != nil {
			t.Fatalf("Open #%d: %v", i+1, err)
		}
		if err := s.AddAPIKey(context.Background(), "h", "k"); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if v := userVersion(t, path); v != SchemaVersion() {
			t.Fatalf("after Open #%d, user_version = %d; want %d", i+1, v, SchemaVersion())
		}
	}
}

// seedSQL fills a database at schema version v with one sandbox, one
// audit event and one API key, in SQL that version understands (the
// current Go code only speaks the newest schema).
func seedSQL(v int) []string {
	out := []string{
		`INSERT INTO sandboxes (id, template_id, state, metadata, started_at) VALUES ('sbx-old', 'base', 'running', '{"k":"v"}', 1795168800123456789)`,
		`INSERT INTO audit (sandbox_id, ts, type, data) VALUES ('sbx-old', 1795168800123456789, 'sandbox.created', '{"n":1}')`,
	}
	if v < 3 {
		return append(out, `INSERT INTO api_keys (hash, name, created_at) VALUES ('hash-old', 'configured', 1795168800123456789)`)
	}
	return append(out, `INSERT INTO api_keys (id, hash, team_id, name, admin, created_at) VALUES ('key_hash-old', 'hash-old', 'default', 'configured', 1, 1795168800123456789)`)
}

// TestUpgradeFromEveryVersion builds a database at each older version with
// this package's own steps, fills it, and opens it with the current code.
func TestUpgradeFromEveryVersion(t *testing.T) {
	ctx := context.Background()
	for v := 1; v < SchemaVersion(); v++ {
		path := filepath.Join(t.TempDir(), "declaw.db")
		s, err := open(path, v)
		if err != nil {
			t.Fatalf("open at version %d: %v", v, err)
		}
		for _, q := range seedSQL(v) {
			if _, err := s.db.Exec(q); err != nil {
				t.Fatalf("seed version %d: %s: %v", v, q, err)
			}
		}
		s.Close()
		if got := userVersion(t, path); got != v {
			t.Fatalf("built database at user_version %d; want %d", got, v)
		}
		s, err = Open(path)
		if err != nil {
			t.Fatalf("Open(version %d): %v", v, err)
		}
		if sb, err := s.GetSandbox(ctx, "sbx-old"); err != nil || sb.Metadata["k"] != "v" || sb.TeamID != store.DefaultTeam {
			t.Errorf("sandbox after upgrade from version %d = %+v, %v", v, sb, err)
		}
		if evs, err := s.ListAudit(ctx, store.AuditQuery{SandboxID: "sbx-old"}); err != nil || len(evs) != 1 || string(evs[0].Data) != `{"n":1}` {
			t.Errorf("audit after upgrade from version %d = %+v, %v", v, evs, err)
		}
		if k, err := s.LookupAPIKey(ctx, "hash-old"); err != nil || k.TeamID != store.DefaultTeam || !k.Admin {
			t.Errorf("API key after upgrade from version %d = %+v, %v", v, k, err)
		}
		s.Close()
	}
}

// TestRefuseNewerDatabase: a database from a newer declaw is refused with
// a clear error and not altered by a single byte.
func TestRefuseNewerDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "declaw.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSandbox(context.Background(), &store.Sandbox{ID: "sbx-future", TemplateID: "base", State: "running", StartedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	future := SchemaVersion() + 7 // as if a newer declaw had migrated it
	if _, err := s.db.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, future)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	entries := func() []string {
		des, _ := os.ReadDir(filepath.Dir(path))
		var out []string
		for _, d := range des {
			out = append(out, d.Name())
		}
		return out
	}
	filesBefore := entries()

	_, err = Open(path)
	var tooNew *migrate.TooNewError
	if !errors.Is(err, migrate.ErrTooNew) || !errors.As(err, &tooNew) || tooNew.Have != future || tooNew.Known != SchemaVersion() {
		t.Fatalf("Open(newer database) = %v; want a TooNewError %d > %d", err, future, SchemaVersion())
	}
	if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "newer declaw") {
		t.Errorf("error %q does not name the file and the cause", msg)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("the refused database file was changed")
	}
	if filesAfter := entries(); !slices.Equal(filesBefore, filesAfter) {
		t.Errorf("files beside the database changed: %v -> %v", filesBefore, filesAfter)
	}
	if v := userVersion(t, path); v != future {
		t.Errorf("user_version = %d; want %d untouched", v, future)
	}
}

// TestConcurrentOpen: several servers opening one fresh file at once all
// succeed and the steps run once.
func TestConcurrentOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "declaw.db")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			s, err := Open(path)
			if err == nil {
				err = s.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Open: %v", err)
		}
	}
	if v := userVersion(t, path); v != SchemaVersion() {
		t.Errorf("user_version = %d; want %d", v, SchemaVersion())
	}
}

// TestMigrationsLoad keeps the embedded steps well formed (names, order).
func TestMigrationsLoad(t *testing.T) {
	if _, err := migrate.Load(migrationFiles, "migrations"); err != nil {
		t.Fatal(err)
	}
	if SchemaVersion() < 2 {
		t.Fatalf("SchemaVersion = %d; want at least 2", SchemaVersion())
	}
}
