package server

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/declaw/declaw/internal/store"
	"github.com/declaw/declaw/internal/store/postgres"
	"github.com/declaw/declaw/internal/store/sqlite"
)

// openStore opens the store that database names (Config.Database) and
// migrates its schema: "" is SQLite at STATE/declaw.db, a postgres:// or
// postgresql:// URL is Postgres (claimed for this server alone), and
// "sqlite:PATH" or a path is a SQLite file.
func openStore(ctx context.Context, database, stateDir string, logf func(string, ...any)) (store.Store, error) {
	switch {
	case postgres.IsDSN(database):
		st, err := postgres.Open(ctx, database)
		if err != nil {
			return nil, err
		}
		if err := st.ClaimServer(ctx); err != nil {
			st.Close()
			return nil, err
		}
		logf("store: postgres (schema version %d)", postgres.SchemaVersion())
		return st, nil
	case database == "" || strings.HasPrefix(database, "sqlite:") || strings.HasPrefix(database, "/") || strings.HasPrefix(database, "."):
		path := strings.TrimPrefix(database, "sqlite:")
		if path == "" {
			path = filepath.Join(stateDir, "declaw.db")
		}
		st, err := sqlite.Open(path)
		if err != nil {
			return nil, err
		}
		logf("store: sqlite %s (schema version %d)", path, sqlite.SchemaVersion())
		return st, nil
	}
	scheme, _, _ := strings.Cut(database, ":")
	return nil, fmt.Errorf("--database %q: want postgres://..., sqlite:PATH or a file path", scheme+":...")
}
