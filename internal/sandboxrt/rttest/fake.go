package rttest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/declaw/declaw/internal/sandboxrt"
)

// Fake is an in-memory sandboxrt.Runtime and sandboxrt.Pauser for tests of
// the code above the runtime (orchestrator, API). It runs nothing: it keeps
// the specs it was given and the state transitions the contract promises.
// The zero value is ready to use and safe for concurrent use.
type Fake struct {
	// StartErr, if set, is called by Start; a non-nil result fails the start
	// (nothing is kept, as the contract requires).
	StartErr func(spec sandboxrt.Spec) error

	mu        sync.Mutex
	sandboxes map[string]*fakeSandbox
	starts    int
	destroys  int
	notify    func(sandboxrt.Event)
}

type fakeSandbox struct {
	spec    sandboxrt.Spec
	state   sandboxrt.State
	started time.Time
}

// Name implements sandboxrt.Runtime.
func (f *Fake) Name() string { return "fake" }

// Start implements sandboxrt.Runtime.
func (f *Fake) Start(ctx context.Context, spec sandboxrt.Spec) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if spec.ID == "" || len(spec.Init) == 0 {
		return fmt.Errorf("fake: start: spec needs an id and an init argv")
	}
	if f.StartErr != nil {
		if err := f.StartErr(spec); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sandboxes == nil {
		f.sandboxes = map[string]*fakeSandbox{}
	}
	if _, ok := f.sandboxes[spec.ID]; ok {
		return fmt.Errorf("fake: start %s: sandbox already exists", spec.ID)
	}
	spec.Init = slices.Clone(spec.Init)
	spec.Env = slices.Clone(spec.Env)
	spec.Mounts = slices.Clone(spec.Mounts)
	f.sandboxes[spec.ID] = &fakeSandbox{spec: spec, state: sandboxrt.StateRunning, started: time.Now()}
	f.starts++
	return nil
}

// Destroy implements sandboxrt.Runtime.
func (f *Fake) Destroy(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sandboxes[id]; ok {
		delete(f.sandboxes, id)
		f.destroys++
	}
	return nil
}

func (f *Fake) get(id string) (*fakeSandbox, error) {
	sb, ok := f.sandboxes[id]
	if !ok {
		return nil, fmt.Errorf("fake: %s: %w", id, sandboxrt.ErrNotFound)
	}
	return sb, nil
}

// State implements sandboxrt.Runtime.
func (f *Fake) State(ctx context.Context, id string) (sandboxrt.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, err := f.get(id)
	if err != nil {
		return "", err
	}
	return sb.state, nil
}

// Stats implements sandboxrt.Runtime: CPU time grows with wall time while
// running; memory is a constant 32 MiB.
func (f *Fake) Stats(ctx context.Context, id string) (sandboxrt.Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, err := f.get(id)
	if err != nil {
		return sandboxrt.Stats{}, err
	}
	now := time.Now()
	return sandboxrt.Stats{Time: now, CPUUsageNanos: uint64(now.Sub(sb.started)) / 100, MemoryBytes: 32 << 20}, nil
}

// Cleanup implements sandboxrt.Runtime.
func (f *Fake) Cleanup(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.destroys += len(f.sandboxes)
	clear(f.sandboxes)
	return nil
}

// Pause implements sandboxrt.Pauser.
func (f *Fake) Pause(ctx context.Context, id string) error {
	return f.transition(id, "pause", sandboxrt.StateRunning, sandboxrt.StatePaused)
}

// Resume implements sandboxrt.Pauser.
func (f *Fake) Resume(ctx context.Context, id string) error {
	return f.transition(id, "resume", sandboxrt.StatePaused, sandboxrt.StateRunning)
}

func (f *Fake) transition(id, verb string, from, to sandboxrt.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, err := f.get(id)
	if err != nil {
		return err
	}
	if sb.state != from {
		return fmt.Errorf("fake: cannot %s sandbox %s in state %s", verb, id, sb.state)
	}
	sb.state = to
	return nil
}

// Exit simulates PID 1 of sandbox id exiting on its own: it becomes stopped.
func (f *Fake) Exit(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, err := f.get(id)
	if err != nil {
		return err
	}
	sb.state = sandboxrt.StateStopped
	return nil
}

// Notify implements sandboxrt.Notifier.
func (f *Fake) Notify(fn func(sandboxrt.Event)) {
	f.mu.Lock()
	f.notify = fn
	f.mu.Unlock()
}

// Emit reports ev to the Notify callback, as a driver would (an OOM kill,
// an exit: call Exit first for the state to match).
func (f *Fake) Emit(ev sandboxrt.Event) {
	f.mu.Lock()
	fn := f.notify
	f.mu.Unlock()
	if fn != nil {
		fn(ev)
	}
}

// Spec returns the spec sandbox id was started with.
func (f *Fake) Spec(id string) (sandboxrt.Spec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sandboxes[id]
	if !ok {
		return sandboxrt.Spec{}, false
	}
	return sb.spec, true
}

// IDs returns the ids of the sandboxes the fake holds, sorted.
func (f *Fake) IDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.sandboxes))
	for id := range f.sandboxes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Counts returns how many starts succeeded and how many sandboxes were destroyed.
func (f *Fake) Counts() (starts, destroys int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts, f.destroys
}

var (
	_ sandboxrt.Runtime  = (*Fake)(nil)
	_ sandboxrt.Pauser   = (*Fake)(nil)
	_ sandboxrt.Notifier = (*Fake)(nil)
)
