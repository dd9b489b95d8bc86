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
	} {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, code := runCLI(t, nil, nil, c.env, c.args...)
			if code != 2 || !strings.Contains(stderr, c.wantErr) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, c.wantErr)
			}
		})
	}
}
