package cli

import (
	"strings"
	"testing"
)

// TestServerRejectsBadFlags: the server refuses bad settings before it
// touches anything (no state dir, no network), with exit code 2.
func TestServerRejectsBadFlags(t *testing.T) {
	for _, c := range []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string
	}{
		{"zero max idle", nil, []string{"server", "--warm-pool-max-idle", "0s"}, "--warm-pool-max-idle 0s: must be positive"},
		{"negative max idle", nil, []string{"server", "--warm-pool-max-idle=-1m"}, "must be positive"},
		{"bad max idle env", map[string]string{"DECLAW_WARM_POOL_MAX_IDLE": "soon"}, []string{"server"}, `DECLAW_WARM_POOL_MAX_IDLE="soon"`},
		{"bad warm pool", nil, []string{"server", "--warm-pool", "python=-1"}, "--warm-pool"},
		{"default over max", nil, []string{"server", "--memory-mb", "4096", "--max-memory-mb", "1024"}, "maximum memory MiB 1024: must be at least the default 4096"},
		{"memory below minimum", nil, []string{"server", "--memory-mb", "16"}, "default memory MiB 16: must be at least 128"},
		{"zero cpus", nil, []string{"server", "--cpu-count", "0"}, "--cpu-count 0: must be positive"},
		{"bad memory env", map[string]string{"DECLAW_MEMORY_MB": "lots"}, []string{"server"}, `DECLAW_MEMORY_MB="lots": want a whole number`},
		{"bad overcommit env", map[string]string{"DECLAW_MEMORY_OVERCOMMIT": "x"}, []string{"server"}, `DECLAW_MEMORY_OVERCOMMIT="x"`},
		{"negative reserve", nil, []string{"server", "--memory-reserve-mb", "-1"}, "memory reserve -1 MiB"},
		{"env default over flag max", map[string]string{"DECLAW_DISK_MB": "50000"}, []string{"server"}, "maximum disk MiB 20480"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, code := runCLI(t, nil, nil, c.env, c.args...)
			if code != 2 || !strings.Contains(stderr, c.wantErr) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, c.wantErr)
			}
		})
	}
}
