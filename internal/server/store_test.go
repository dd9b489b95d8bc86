package server

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/declaw/declaw/internal/store/migrate"
	"github.com/declaw/declaw/internal/store/postgres"
	"github.com/declaw/declaw/internal/store/postgres/pgtest"
	"github.com/declaw/declaw/internal/store/sqlite"
)

func TestOpenStoreSQLite(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	other := filepath.Join(t.TempDir(), "other.db")
	for _, tc := range []struct{ database, file string }{
		{"", filepath.Join(dir, "declaw.db")},
		{"sqlite:" + other, other},
		{other + "2", other + "2"},
	} {
		st, err := openStore(ctx, tc.database, dir, t.Logf)
		if err != nil {
			t.Fatalf("openStore(%q): %v", tc.database, err)
		}
		if _, ok := st.(*sqlite.Store); !ok {
			t.Errorf("openStore(%q) = %T; want *sqlite.Store", tc.database, st)
		}
		st.Close()
		if _, err := os.Stat(tc.file); err != nil {
			t.Errorf("openStore(%q): %v; want the database at %s", tc.database, err, tc.file)
		}
	}
	for _, bad := range []string{"postgress://x/y", "mysql://u:pw@h/db", "declaw.db"} {
		_, err := openStore(ctx, bad, dir, t.Logf)
		if err == nil || strings.Contains(err.Error(), "pw@") {
			t.Errorf("openStore(%q) = %v; want an error that does not echo the DSN", bad, err)
		}
	}
}

// TestOpenStoreRefusesNewer: a database from a newer declaw stops the
// server with the migrate package's message, and is left as it was.
func TestOpenStoreRefusesNewer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "declaw.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE future (x INTEGER); PRAGMA user_version = 1000`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	before, _ := os.ReadFile(path)
	_, err = openStore(context.Background(), path, t.TempDir(), t.Logf)
	if !errors.Is(err, migrate.ErrTooNew) || !strings.Contains(err.Error(), "newer declaw") {
		t.Fatalf("openStore(newer database) = %v; want ErrTooNew", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("the refused database was changed")
	}
}

// TestOpenStorePostgres: a postgres:// URL opens the Postgres backend and
// claims the database: a second server on it is refused.
func TestOpenStorePostgres(t *testing.T) {
	dsn := pgtest.FreshSchema(t)
	if !postgres.IsDSN(dsn) {
		t.Fatalf("DECLAW_TEST_POSTGRES must be a postgres:// URL here")
	}
	ctx := context.Background()
	st, err := openStore(ctx, dsn, t.TempDir(), t.Logf)
	if err != nil {
		t.Fatalf("openStore(postgres): %v", err)
	}
	defer st.Close()
	if _, ok := st.(*postgres.Store); !ok {
		t.Fatalf("openStore(postgres) = %T", st)
	}
	if _, err := openStore(ctx, dsn, t.TempDir(), t.Logf); !errors.Is(err, postgres.ErrInUse) {
		t.Errorf("second openStore on one database = %v; want ErrInUse", err)
	}
}
