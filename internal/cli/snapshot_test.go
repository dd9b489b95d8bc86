package cli

import (
	"net/http"
	"strings"
	"testing"
)

func TestSnapshotCommands(t *testing.T) {
	const snap = `{"snapshot_id":"snap-1","sandbox_id":"sbx-1","template_id":"base","source":"manual","kind":"filesystem","created_at":"2026-11-27T05:00:00Z","size_bytes":2048}`
	tests := []struct {
		name       string
		args       []string
		handle     http.HandlerFunc
		wantReqs   []string
		wantStdout string
		wantStderr string
		wantCode   int
	}{
		{
			name:       "snapshot",
			args:       []string{"sandbox", "snapshot", "sbx-1"},
			handle:     answer(201, snap),
			wantReqs:   []string{`POST /sandboxes/sbx-1/snapshot {}`},
			wantStdout: "snap-1\n",
		},
		{
			name:       "snapshots",
			args:       []string{"sandbox", "snapshots", "sbx-1"},
			handle:     answer(200, `{"snapshots":[`+snap+`]}`),
			wantReqs:   []string{`GET /sandboxes/sbx-1/snapshots`},
			wantStdout: "SNAPSHOT  SOURCE  KIND        SIZE  CREATED\nsnap-1    manual  filesystem  2048  2026-11-27T05:00:00Z\n",
		},
		{
			name:       "delete-snapshot",
			args:       []string{"sandbox", "delete-snapshot", "sbx-1", "snap-1"},
			handle:     answer(200, `{"deleted":false}`),
			wantReqs:   []string{`DELETE /sandboxes/sbx-1/snapshots/snap-1`},
			wantStdout: "snap-1 was already deleted\n",
		},
		{
			name:       "restore in place",
			args:       []string{"sandbox", "restore", "sbx-1", "--snapshot", "snap-1"},
			handle:     answer(200, `{"sandbox_id":"sbx-1","snapshot_id":"snap-1","node_id":"local"}`),
			wantReqs:   []string{`POST /sandboxes/sbx-1/restore?snapshot_id=snap-1 {}`},
			wantStdout: "restored sbx-1 from snap-1\n",
		},
		{
			name:       "restore the server's pick",
			args:       []string{"sandbox", "restore", "sbx-1"},
			handle:     answer(200, `{"sandbox_id":"sbx-1","snapshot_id":"snap-9","node_id":"local"}`),
			wantReqs:   []string{`POST /sandboxes/sbx-1/restore {}`},
			wantStdout: "restored sbx-1 from snap-9\n",
		},
		{
			name:       "restore fork",
			args:       []string{"sandbox", "restore", "--fork", "sbx-1"},
			handle:     answer(201, `{"sandbox_id":"sbx-2","snapshot_id":"snap-1","node_id":"local"}`),
			wantReqs:   []string{`POST /sandboxes/sbx-1/restore?fork=true {}`},
			wantStdout: "sbx-2\n",
		},
		{
			name:       "restore with another sandbox's snapshot",
			args:       []string{"sandbox", "restore", "sbx-1", "--snapshot", "snap-b"},
			handle:     answer(404, `{"message":"snapshot snap-b of sandbox sbx-1: snapshot not found","code":"snapshot_not_found"}`),
			wantReqs:   []string{`POST /sandboxes/sbx-1/restore?snapshot_id=snap-b {}`},
			wantStderr: "declaw sandbox restore: snapshot snap-b of sandbox sbx-1: snapshot not found (404 snapshot_not_found)\n",
			wantCode:   1,
		},
		{
			name:       "restore needs an id",
			args:       []string{"sandbox", "restore"},
			wantStderr: "want 1 argument",
			wantCode:   2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t, tt.handle)
			stdout, stderr, code := runCLI(t, f, strings.NewReader(""), nil, tt.args...)
			if code != tt.wantCode {
				t.Errorf("run(%q) = exit %d, want %d; stderr: %s", tt.args, code, tt.wantCode, stderr)
			}
			if stdout != tt.wantStdout {
				t.Errorf("run(%q) stdout:\n%s\nwant:\n%s", tt.args, stdout, tt.wantStdout)
			}
			if tt.wantStderr == "" && stderr != "" || !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("run(%q) stderr = %q, want it to contain %q", tt.args, stderr, tt.wantStderr)
			}
			if got := f.requestLines(); strings.Join(got, "\n") != strings.Join(tt.wantReqs, "\n") {
				t.Errorf("run(%q) requests:\n%s\nwant:\n%s", tt.args, strings.Join(got, "\n"), strings.Join(tt.wantReqs, "\n"))
			}
		})
	}
}
