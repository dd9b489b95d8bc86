// Package pgtest gives tests a Postgres to run against: the server named
// by DECLAW_TEST_POSTGRES (scripts/postgres.sh starts one and prints its
// DSN), with an empty schema of its own per test.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/declaw/declaw/internal/testenv"
)

// DSN returns DECLAW_TEST_POSTGRES. Without it the test is skipped, except
// under DECLAW_E2E=1, where it fails: CI never skips the Postgres tests.
func DSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("DECLAW_TEST_POSTGRES")
	if dsn == "" {
		testenv.Unavailable(t, "DECLAW_TEST_POSTGRES is not set (scripts/postgres.sh starts a server and prints its DSN)")
	}
	return dsn
}

// WithSearchPath returns dsn (a URL or key=value string) selecting schema.
func WithSearchPath(t testing.TB, dsn, schema string) string {
	t.Helper()
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return dsn + " search_path=" + schema
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("DECLAW_TEST_POSTGRES: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// FreshSchema creates an empty schema with a unique name, dropped (with
// everything in it) when the test ends, and returns a DSN that uses it.
func FreshSchema(t testing.TB) string {
	t.Helper()
	dsn := DSN(t)
	var b [6]byte
	rand.Read(b[:])
	schema := "declaw_test_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	exec := func(sql string) error {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec(`CREATE SCHEMA ` + schema); err != nil {
		t.Fatalf("create test schema in DECLAW_TEST_POSTGRES: %v", err)
	}
	t.Cleanup(func() {
		if err := exec(`DROP SCHEMA ` + schema + ` CASCADE`); err != nil {
			t.Errorf("drop test schema %s: %v", schema, err)
		}
	})
	return WithSearchPath(t, dsn, schema)
}
