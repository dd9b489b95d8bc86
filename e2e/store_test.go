package e2e

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/declaw/declaw/internal/store/postgres/pgtest"
)

// TestPostgresStore runs a real server on the Postgres store
// (--database postgres://...): sandboxes, commands, metadata listing and
// audit go through it; a second server on the same database is refused;
// after a crash the claim is gone with the dead server's connection and
// the restarted server finds the left-over sandbox and marks it killed.
func TestPostgresStore(t *testing.T) {
	dsn := pgtest.FreshSchema(t)
	s := startServer(t, "--database", dsn)
	if len(s.logLines("store: postgres")) == 0 {
		t.Errorf("the server did not log that it uses the Postgres store")
	}
	if _, err := os.Stat(filepath.Join(s.stateDir, "declaw.db")); !os.IsNotExist(err) {
		t.Errorf("a SQLite database was created beside the Postgres store: %v", err)
	}

	id := s.create(map[string]any{"metadata": map[string]string{"owner": "pg-e2e"}})
	if res := s.run(id, "echo from-postgres"); res.Stdout != "from-postgres\n" {
		t.Fatalf("run = %+v", res)
	}
	var list struct {
		Sandboxes []info `json:"sandboxes"`
	}
	s.must(200, "GET", "/sandboxes?metadata="+url.QueryEscape("owner=pg-e2e"), nil, &list)
	if len(list.Sandboxes) != 1 || list.Sandboxes[0].SandboxID != id {
		t.Fatalf("list by metadata = %s", fmtJSON(list))
	}
	var audit struct {
		Events []struct {
			Type string `json:"type"`
		} `json:"events"`
	}
	s.must(200, "GET", "/sandboxes/"+id+"/audit", nil, &audit)
	seen := map[string]bool{}
	for _, e := range audit.Events {
		seen[e.Type] = true
	}
	if !seen["sandbox.created"] || !seen["command.run"] {
		t.Errorf("audit = %s; want sandbox.created and command.run", fmtJSON(audit))
	}

	// The records are in Postgres.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var state string
	var events int
	if err := conn.QueryRow(ctx, `SELECT state, (SELECT COUNT(*) FROM audit WHERE sandbox_id = $1) FROM sandboxes WHERE id = $1`, id).Scan(&state, &events); err != nil {
		t.Fatalf("read the sandbox from Postgres: %v", err)
	}
	if state != "running" || events < 2 {
		t.Errorf("in Postgres: state %q, %d audit events; want running and the events above", state, events)
	}

	// A second server on the same database refuses to start (it would
	// take the first one's sandboxes for leftovers).
	second := s.net.Host.Command(ctx, s.declaw, "server", "--listen", "127.0.0.1:8081", "--state-dir", t.TempDir(),
		"--api-key", "second", "--net-prefix", "dt"+randHex(3), "--envd", s.envd, "--warm-pool=", "--database", dsn)
	out, err := second.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another declaw server uses this database") {
		t.Errorf("second server on one database: %v\n%s\nwant a refusal", err, out)
	}
	if strings.Contains(string(out), "postgres://") {
		t.Errorf("the refusal echoes the DSN: %s", out)
	}

	// Crash: Postgres drops the claim with the connection, and the
	// restarted server marks the crashed run's sandbox killed.
	s.crash()
	s.start("--database", dsn)
	var got info
	s.must(200, "GET", "/sandboxes/"+id, nil, &got)
	if got.State != "killed" {
		t.Errorf("sandbox of the crashed server: state %q, want killed", got.State)
	}
	id2 := s.create(nil)
	if res := s.run(id2, "echo again"); res.Stdout != "again\n" {
		t.Errorf("after restart: %+v", res)
	}
}
