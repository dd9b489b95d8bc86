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
func (m *Manager) Pause(ctx context.Context, id string) error {
	p, ok := m.cfg.Runtime.(sandboxrt.Pauser)
	if !ok {
		return fmt.Errorf("pause sandbox %s: runtime %s: %w", id, m.cfg.Runtime.Name(), ErrNotSupported)
	}
	inst, err := m.live(ctx, id, "pause")
	if err != nil {
		return err
	}
	inst.mu.Lock()
	defer inst.mu.Unlock()
	switch {
	case inst.state == StateKilled || inst.dying.Load():
		return fmt.Errorf("sandbox %s: %w", id, ErrKilled)
	case inst.state == StatePaused:
		return nil
	}
	if err := p.Pause(ctx, id); err != nil {
		return fmt.Errorf("pause sandbox %s: %w", id, err)
	}
	inst.state = StatePaused
	if !inst.endAt.IsZero() {
		inst.left = max(time.Until(inst.endAt), 0)
	}
	m.armTimer(inst) // stops it while paused
	if _, err := m.cfg.Store.UpdateSandbox(ctx, id, func(s *store.Sandbox) error {
		s.State = StatePaused
		return nil
	}); err != nil {
		return err
	}
	m.audit(ctx, id, "sandbox.paused", nil)
	return nil
}

// Resume continues a paused sandbox; its timeout runs again with what was
// left of it when it was paused. Resuming a running sandbox is a no-op.
func (m *Manager) Resume(ctx context.Context, id string) error {
	p, ok := m.cfg.Runtime.(sandboxrt.Pauser)
	if !ok {
		return fmt.Errorf("resume sandbox %s: runtime %s: %w", id, m.cfg.Runtime.Name(), ErrNotSupported)
	}
	inst, err := m.live(ctx, id, "resume")
	if err != nil {
		return err
	}
	inst.mu.Lock()
	defer inst.mu.Unlock()
	switch {
	case inst.state == StateKilled || inst.dying.Load():
		return fmt.Errorf("sandbox %s: %w", id, ErrKilled)
	case inst.state == StateRunning:
		return nil
	}
	if err := p.Resume(ctx, id); err != nil {
		return fmt.Errorf("resume sandbox %s: %w", id, err)
	}
	inst.state = StateRunning
	if !inst.endAt.IsZero() {
		left := inst.left
		if left < time.Second {
			// Paused by its timeout (on_timeout: pause): a resume starts a
			// full timeout again rather than pausing at once.
			left = inst.timeout
		}
		inst.endAt = time.Now().UTC().Add(left)
	}
	m.armTimer(inst)
	endAt := inst.endAt
	if _, err := m.cfg.Store.UpdateSandbox(ctx, id, func(s *store.Sandbox) error {
		s.State, s.EndAt = StateRunning, endAt
		return nil
	}); err != nil {
		return err
	}
	m.audit(ctx, id, "sandbox.resumed", nil)
	return nil
}
