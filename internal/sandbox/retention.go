package sandbox

import (
	"context"
	"encoding/json"
	"time"

	"github.com/declaw/declaw/internal/store"
)

// DefaultAuditRetention is how long audit events are kept when neither the
// server nor the sandbox's policy says otherwise.
const DefaultAuditRetention = 7 * 24 * time.Hour

// pruneLoop deletes audit events past their retention every interval.
func (m *Manager) pruneLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		m.pruneAudit(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pruneAudit applies the server-wide retention, then each sandbox's own
// audit.retention_hours.
func (m *Manager) pruneAudit(ctx context.Context) {
	now := time.Now()
	if _, err := m.cfg.Store.PruneAudit(ctx, "", now.Add(-m.cfg.AuditRetention)); err != nil {
		m.cfg.Logf("audit retention: %v", err)
	}
	after := ""
	for ctx.Err() == nil {
		recs, next, err := m.cfg.Store.ListSandboxes(ctx, store.SandboxFilter{
			States: []string{StateRunning, StatePaused, StateKilled}, Limit: 500, After: after})
		if err != nil {
			m.cfg.Logf("audit retention: %v", err)
			return
		}
		for _, r := range recs {
			var p struct {
				Audit struct {
					RetentionHours int `json:"retention_hours"`
				} `json:"audit"`
			}
			if len(r.Security) == 0 || json.Unmarshal(r.Security, &p) != nil || p.Audit.RetentionHours <= 0 {
				continue
			}
			if _, err := m.cfg.Store.PruneAudit(ctx, r.ID, now.Add(-time.Duration(p.Audit.RetentionHours)*time.Hour)); err != nil {
				m.cfg.Logf("audit retention of %s: %v", r.ID, err)
			}
		}
		if next == "" {
			return
		}
		after = next
	}
}
