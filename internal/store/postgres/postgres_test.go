package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/store"
	"github.com/declaw/declaw/internal/store/migrate"
	"github.com/declaw/declaw/internal/store/postgres/pgtest"
	"github.com/declaw/declaw/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t testing.TB) store.Store {
		s, err := Open(t.Context(), pgtest.FreshSchema(t))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

// versions lists the rows of the migrations table.
func versions(t *testing.T, s *Store) []string {
	t.Helper()
	rows, err := s.pool.Query(context.Background(), `SELECT version, name FROM declaw_schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatalf("read migrations table: %v", err)
	}
	var out []string
	for rows.Next() {
		var (
			v    int
			name string
		)
		if err := rows.Scan(&v, &name); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d_%s", v, name))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func allVersions() []string {
	var out []string
	for _, m := range migrations {
		out = append(out, fmt.Sprintf("%d_%s", m.Version, m.Name))
	}
	return out
}

// seedSQL fills a database at schema version v with one sandbox, one
// audit event and one API key, in SQL that version understands.
func seedSQL(v int) []string {
	out := []string{
		`INSERT INTO sandboxes (id, template_id, state, metadata, started_at) VALUES ('sbx-old', 'base', 'running', '{"k":"v"}', now())`,
		`INSERT INTO audit (sandbox_id, ts, type, data) VALUES ('sbx-old', now(), 'sandbox.created', '{"n":1}')`,
	}
	if v < 3 {
		return append(out, `INSERT INTO api_keys (hash, name, created_at) VALUES ('hash-old', 'configured', now())`)
	}
	return append(out, `INSERT INTO api_keys (id, hash, team_id, name, admin, created_at) VALUES ('key_hash-old', 'hash-old', 'default', 'configured', true, now())`)
}

// TestUpgradeFromEveryVersion builds a database at each older version,
// fills it, and opens it with the current code: the data stays, the
// remaining steps run once, a second Open changes nothing.
func TestUpgradeFromEveryVersion(t *testing.T) {
	ctx := context.Background()
	for v := 1; v < SchemaVersion(); v++ {
		t.Run(fmt.Sprintf("from%d", v), func(t *testing.T) {
			dsn := pgtest.FreshSchema(t)
			old, err := open(ctx, dsn, v)
			if err != nil {
				t.Fatalf("open at version %d: %v", v, err)
			}
			if got := versions(t, old); !slices.Equal(got, allVersions()[:v]) {
				t.Fatalf("versions at %d = %v", v, got)
			}
			for _, q := range seedSQL(v) {
				if _, err := old.pool.Exec(ctx, q); err != nil {
					t.Fatalf("seed version %d: %s: %v", v, q, err)
				}
			}
			old.Close()
			for range 2 {
				s, err := Open(ctx, dsn)
				if err != nil {
					t.Fatalf("Open(version %d): %v", v, err)
				}
				if got := versions(t, s); !slices.Equal(got, allVersions()) {
					t.Errorf("after Open, versions = %v; want %v", got, allVersions())
				}
				if sb, err := s.GetSandbox(ctx, "sbx-old"); err != nil || sb.Metadata["k"] != "v" || sb.TeamID != store.DefaultTeam {
					t.Errorf("sandbox after upgrade = %+v, %v", sb, err)
				}
				if evs, err := s.ListAudit(ctx, store.AuditQuery{SandboxID: "sbx-old"}); err != nil || len(evs) != 1 || string(evs[0].Data) != `{"n":1}` {
					t.Errorf("audit after upgrade = %+v, %v", evs, err)
				}
				if k, err := s.LookupAPIKey(ctx, "hash-old"); err != nil || !k.Admin || k.TeamID != store.DefaultTeam || k.ID != store.KeyID("hash-old") {
					t.Errorf("API key after upgrade = %+v, %v", k, err)
				}
				s.Close()
			}
		})
	}
}

// TestRefuseNewerDatabase: a database migrated by a newer declaw is
// refused with a clear message and left as it was.
func TestRefuseNewerDatabase(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.FreshSchema(t)
	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	future := SchemaVersion() + 3
	if _, err := s.pool.Exec(ctx, `INSERT INTO declaw_schema_migrations (version, name) VALUES ($1, 'from_the_future')`, future); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSandbox(ctx, &store.Sandbox{ID: "sbx-future", TemplateID: "base", State: "running"}); err != nil {
		t.Fatal(err)
	}
	fingerprint := func() string {
		var fp string
		err := s.pool.QueryRow(ctx, `SELECT
			(SELECT string_agg(version || ':' || name || ':' || applied_at, ',' ORDER BY version) FROM declaw_schema_migrations) || '|' ||
			(SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = current_schema()) || '|' ||
			(SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = current_schema()) || '|' ||
			(SELECT string_agg(id || state, ',') FROM sandboxes)`).Scan(&fp)
		if err != nil {
			t.Fatalf("fingerprint: %v", err)
		}
		return fp
	}
	before := fingerprint()

	_, err = Open(ctx, dsn)
	var tooNew *migrate.TooNewError
	if !errors.Is(err, migrate.ErrTooNew) || !errors.As(err, &tooNew) || tooNew.Have != future || tooNew.Known != SchemaVersion() {
		t.Fatalf("Open(newer database) = %v; want a TooNewError %d > %d", err, future, SchemaVersion())
	}
	if !strings.Contains(err.Error(), "newer declaw") {
		t.Errorf("error %q does not say why", err)
	}
	if after := fingerprint(); after != before {
		t.Errorf("the refused database changed:\n before %s\n after  %s", before, after)
	}
	s.Close()
}

// TestConcurrentOpen: several servers starting at once on one empty
// database all succeed and each step runs once.
func TestConcurrentOpen(t *testing.T) {
	dsn := pgtest.FreshSchema(t)
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 5 {
		wg.Go(func() {
			s, err := Open(context.Background(), dsn)
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
	s, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := versions(t, s); !slices.Equal(got, allVersions()) {
		t.Errorf("versions = %v; want %v", got, allVersions())
	}
}

// TestOpenErrorHidesPassword: a connection failure names the database but
// never the password in the DSN.
func TestOpenErrorHidesPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Open(ctx, "postgres://declaw:s3cret-pw@/declawdb?host="+t.TempDir()+"&connect_timeout=2")
	if err == nil {
		t.Fatal("Open(unreachable) succeeded")
	}
	if strings.Contains(err.Error(), "s3cret-pw") || !strings.Contains(err.Error(), "declawdb") {
		t.Errorf("Open(unreachable) = %q; want the database named and the password hidden", err)
	}
	if _, err := Open(ctx, "postgres://x:s3cret-pw@[bad"); err == nil || strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("Open(malformed) = %v; want an error without the password", err)
	}
}

func TestMigrationsLoad(t *testing.T) {
	if _, err := migrate.Load(migrationFiles, "migrations"); err != nil {
		t.Fatal(err)
	}
	// The same version means the same change in every backend: keep the
	// names in step with the sqlite backend's.
	if SchemaVersion() < 2 {
		t.Fatalf("SchemaVersion = %d", SchemaVersion())
	}
}

// TestClaimServer: one server per database; the claim ends with Close.
func TestClaimServer(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.FreshSchema(t)
	a, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.ClaimServer(ctx); err != nil {
		t.Fatalf("first ClaimServer: %v", err)
	}
	if err := a.ClaimServer(ctx); err != nil {
		t.Fatalf("ClaimServer again by the owner: %v", err)
	}
	if err := b.ClaimServer(ctx); !errors.Is(err, ErrInUse) {
		t.Fatalf("second server's ClaimServer = %v; want ErrInUse", err)
	}
	// The owner keeps working while it holds the claim.
	if err := a.AddAPIKey(ctx, "h", "k"); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if err := b.ClaimServer(ctx); err != nil {
		t.Fatalf("ClaimServer after the owner closed: %v", err)
	}
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(tb testing.TB) store.Store {
		s, err := Open(context.Background(), pgtest.FreshSchema(tb))
		if err != nil {
			tb.Fatalf("Open: %v", err)
		}
		return s
	})
}
