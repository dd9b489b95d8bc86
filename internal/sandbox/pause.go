package sandbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/store"
)

// ErrNotSupported is returned (wrapped) for what the runtime cannot do.
var ErrNotSupported = errors.New("not supported by this runtime")

// Pause freezes a running sandbox: its processes stop and use no CPU, its
// memory, files and network policy stay. A paused sandbox does not count
// against its timeout. Pausing a paused sandbox is a no-op.
func (m *Manager) Pause(ctx context.Context, id string) error { return m.setPaused(ctx, id, true) }

// Resume continues a paused sandbox; its timeout runs again with what was
// left of it when it was paused (a full timeout if the timeout paused it).
// Resuming a running sandbox is a no-op.
func (m *Manager) Resume(ctx context.Context, id string) error { return m.setPaused(ctx, id, false) }

func (m *Manager) setPaused(ctx context.Context, id string, pause bool) error {
	op, want, event := "resume", StateRunning, "sandbox.resumed"
	if pause {
		op, want, event = "pause", StatePaused, "sandbox.paused"
	}
	p, ok := m.cfg.Runtime.(sandboxrt.Pauser)
	if !ok {
		return fmt.Errorf("%s sandbox %s: runtime %s: %w", op, id, m.cfg.Runtime.Name(), ErrNotSupported)
	}
	inst, err := m.live(ctx, id, op)
	if err != nil {
		return err
	}
	if inst.dying.Load() {
		return fmt.Errorf("sandbox %s: %w", id, ErrKilled)
	}
	inst.mu.Lock()
	defer inst.mu.Unlock()
	switch inst.state {
	case StateKilled:
		return fmt.Errorf("sandbox %s: %w", id, ErrKilled)
	case want:
		return nil
	}
	if pause {
		err = p.Pause(ctx, id)
	} else {
		err = p.Resume(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("%s sandbox %s: %w", op, id, err)
	}
	inst.state = want
	if !inst.endAt.IsZero() {
		if pause {
			inst.left = max(time.Until(inst.endAt), 0)
		} else {
			left := inst.left
			if left < time.Second {
				// Paused by its timeout (on_timeout: pause): a resume starts
				// a full timeout again rather than pausing at once.
				left = inst.timeout
			}
			inst.endAt = time.Now().UTC().Add(left)
		}
	}
	m.armTimer(inst) // stopped while paused
	endAt := inst.endAt
	if _, err := m.cfg.Store.UpdateSandbox(ctx, id, func(s *store.Sandbox) error {
		s.State, s.EndAt = want, endAt
		return nil
	}); err != nil {
		return err
	}
	m.audit(ctx, id, event, nil)
	return nil
}
