// Package migrate holds the ordered, versioned schema migrations shared by
// the store backends. Each backend embeds a directory of SQL files named
// NNNN_name.sql (version 1, 2, ... with no gaps; the same versions mean the
// same change in every backend), records the version it reached in its own
// way (SQLite: PRAGMA user_version; Postgres: a table) and applies what
// Plan returns in one transaction. A database whose version is newer than
// the newest migration this binary knows is refused, never altered.
package migrate

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
)

// Migration is one schema step.
type Migration struct {
	Version int    // 1, 2, ...
	Name    string // from the file name, e.g. "init"
	SQL     string // one or more statements
}

// ErrTooNew is returned (wrapped in a *TooNewError) when a database was
// migrated by a newer declaw than this one.
var ErrTooNew = errors.New("database schema is newer than this declaw")

// TooNewError names the versions when a database is too new.
type TooNewError struct {
	Database string // a name for messages (a path, or a redacted DSN)
	Have     int    // the database's version
	Known    int    // the newest version this binary has
}

func (e *TooNewError) Error() string {
	return fmt.Sprintf("database %s has schema version %d but this declaw knows versions up to %d: "+
		"it was used by a newer declaw; run that version (or restore a backup taken before the upgrade). "+
		"The database was not changed", e.Database, e.Have, e.Known)
}

// Unwrap makes errors.Is(err, ErrTooNew) hold.
func (e *TooNewError) Unwrap() error { return ErrTooNew }

var fileName = regexp.MustCompile(`^([0-9]{4})_([a-z0-9_]+)\.sql$`)

// Load reads the migrations in dir of fsys, in version order. Every file
// must be named NNNN_name.sql and versions must run 1, 2, ... without gaps
// or repeats; anything else in dir is an error.
func Load(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations %s: %w", dir, err)
	}
	var out []Migration
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil || e.IsDir() {
			return nil, fmt.Errorf("migration %s/%s: want a file named NNNN_name.sql", dir, e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		body, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		out = append(out, Migration{Version: v, Name: m[2], SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i, m := range out {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migrations %s: version %d where %d was expected (versions run 1, 2, ... without gaps)", dir, m.Version, i+1)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("migrations %s: none found", dir)
	}
	return out, nil
}

// Plan returns the migrations to apply to a database at version current,
// in order (none when it is up to date), or a *TooNewError when current is
// beyond the last of all. all must come from Load.
func Plan(database string, current int, all []Migration) ([]Migration, error) {
	if current < 0 {
		return nil, fmt.Errorf("database %s: invalid schema version %d", database, current)
	}
	if current > len(all) {
		return nil, &TooNewError{Database: database, Have: current, Known: len(all)}
	}
	return all[current:], nil
}

// Latest is the version a database has after all migrations.
func Latest(all []Migration) int { return len(all) }
