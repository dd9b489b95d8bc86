package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/declaw/declaw/internal/limits"
	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/store"
)

// ResourceInfo is what the API shows of a sandbox's limits.
type ResourceInfo struct {
	VCPUs    float64 `json:"vcpus"`
	MemoryMB int64   `json:"memory_mb"`
	DiskMB   int64   `json:"disk_mb"`
	Pids     int64   `json:"pids"`
}

func resourceInfo(r sandboxrt.Resources) *ResourceInfo {
	return &ResourceInfo{VCPUs: r.CPUs, MemoryMB: r.MemoryMB, DiskMB: r.DiskMB, Pids: r.Pids}
}

// resourceRecord is the JSON kept in store.Sandbox.Resources.
type resourceRecord struct {
	ResourceInfo
	OOMKills  int        `json:"oom_kills,omitempty"`
	LastOOMAt *time.Time `json:"last_oom_at,omitempty"`
	EndReason string     `json:"end_reason,omitempty"`
}

// updateResourceRecord applies fn to the record in raw (empty: a new one).
func updateResourceRecord(raw json.RawMessage, fn func(*resourceRecord)) json.RawMessage {
	var r resourceRecord
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &r)
	}
	fn(&r)
	b, err := json.Marshal(r)
	if err != nil {
		return raw
	}
	return b
}

// endReason turns a kill reason as logged ("api (async)", "timeout", ...)
// into the short word get_info shows.
func endReason(reason string) string {
	word, _, _ := strings.Cut(reason, " ")
	return word
}

// resources resolves the limits of a sandbox of template: req, else the
// template's own values, else the server defaults, within the maxima.
func (m *Manager) resources(ctx context.Context, template string, req limits.Request) (sandboxrt.Resources, error) {
	var tc TemplateConfig
	if tcs, ok := m.cfg.Templates.(TemplateConfigs); ok {
		var err error
		if tc, err = tcs.Config(ctx, template); err != nil {
			return sandboxrt.Resources{}, err
		}
	}
	return m.cfg.Limits.Resolve(tc.resources(), req)
}

// resources are the template's own resource values (zero: none).
func (tc TemplateConfig) resources() sandboxrt.Resources {
	return sandboxrt.Resources{CPUs: float64(tc.CPUCount), MemoryMB: int64(tc.MemoryMB), DiskMB: int64(tc.DiskMB)}
}

// Capacity reports the host memory committed to sandboxes (live and
// pooled) and what may be committed at most, in MiB; 0, 0 without
// admission control.
func (m *Manager) Capacity() (committedMB, capacityMB int64) {
	if m.cfg.Admission == nil {
		return 0, 0
	}
	return m.cfg.Admission.Usage()
}

// runtimeEvent handles what the runtime reports of a sandbox on its own.
func (m *Manager) runtimeEvent(ev sandboxrt.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	inst := m.lookup(ev.ID)
	if inst == nil {
		// A pooled sandbox (no user yet) that died is replaced.
		if ev.Kind == sandboxrt.EventExit {
			go func() {
				defer cancel()
				if m.pool.drop(ctx, ev.ID) {
					m.cfg.Logf("warm pool: sandbox %s stopped on its own (%s); replacing it", ev.ID, ev.Detail)
				}
			}()
			return
		}
		cancel()
		return
	}
	switch ev.Kind {
	case sandboxrt.EventOOM:
		defer cancel()
		at := ev.Time
		if at.IsZero() {
			at = time.Now().UTC()
		}
		inst.mu.Lock()
		inst.lastOOM = at
		mem := inst.res.MemoryMB
		inst.mu.Unlock()
		m.cfg.Logf("sandbox %s: out of memory at its %d MiB limit: %s", ev.ID, mem, ev.Detail)
		if _, err := m.cfg.Store.UpdateSandbox(ctx, ev.ID, func(s *store.Sandbox) error {
			s.Resources = updateResourceRecord(s.Resources, func(r *resourceRecord) {
				r.OOMKills++
				r.LastOOMAt = &at
			})
			return nil
		}); err != nil && !errors.Is(err, store.ErrNotFound) {
			m.cfg.Logf("sandbox %s: record oom: %v", ev.ID, err)
		}
		m.audit(ctx, ev.ID, "sandbox.oom", map[string]any{"time": at, "memory_mb": mem, "detail": ev.Detail})
	case sandboxrt.EventExit:
		// The sandbox is gone: free what it held and say why.
		inst.mu.Lock()
		reason := "exited"
		if !inst.lastOOM.IsZero() && time.Since(inst.lastOOM) < time.Minute {
			reason = "oom"
		}
		inst.mu.Unlock()
		go func() {
			defer cancel()
			m.cfg.Logf("sandbox %s: stopped on its own (%s): %s", ev.ID, reason, ev.Detail)
			if _, err := m.kill(ctx, ev.ID, fmt.Sprintf("%s (%s)", reason, ev.Detail)); err != nil && !errors.Is(err, ErrNotFound) {
				m.cfg.Logf("sandbox %s: free after exit: %v", ev.ID, err)
			}
		}()
	default:
		cancel()
	}
}
