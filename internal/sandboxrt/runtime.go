// Package sandboxrt defines the seam between the orchestrator and the
// isolation technology that runs a sandbox (gVisor, microVM, ...).
//
// A driver runs one "init" process (envd) inside an isolated root
// filesystem, joined to a network namespace that the network package
// prepared. It knows nothing about commands, files or policy: everything
// above PID 1 goes through envd.
package sandboxrt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"time"
)

// ErrNotFound is returned (wrapped) when a sandbox id is unknown to the driver.
var ErrNotFound = errors.New("sandbox not found in runtime")

// Mount is a bind mount of a host path into the sandbox. The target should
// exist in the template (drivers may refuse to create it there), and writes
// through a writable mount may stay inside the sandbox (gvisor's overlay).
type Mount struct {
	Source   string // host path (file or directory)
	Target   string // path inside the sandbox
	ReadOnly bool
}

// Resources are the limits applied to the whole sandbox. Zero means "driver
// default" (and, where the driver has none, unlimited); the orchestrator
// always fills them (package limits), so zero only reaches a driver in tests.
type Resources struct {
	CPUs     float64 // number of CPUs (may be fractional)
	MemoryMB int64   // all memory of the sandbox, the runtime's own share included
	Pids     int64   // processes and threads inside
	DiskMB   int64   // writable root filesystem: what the sandbox may write over its template
}

var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidID reports whether id is a valid Spec.ID: lower-case letters,
// digits and dashes, starting with a letter or digit, at most 63
// characters (it names files, cgroups and containers in every driver).
func ValidID(id string) bool { return idRE.MatchString(id) }

// Spec describes a sandbox to start. It is immutable once passed to Start.
type Spec struct {
	ID        string   // unique, see ValidID; also the driver's container id
	RootFS    string   // template root filesystem directory; never written to
	NetNSPath string   // network namespace to run in, e.g. /var/run/netns/declaw-3
	Hostname  string   // hostname inside the sandbox
	Init      []string // argv of PID 1 (envd)
	Env       []string // environment of PID 1 only ("K=V")
	Mounts    []Mount  // extra bind mounts (envd binary, resolv.conf, CA, ...)
	Resources Resources
}

// State is the runtime's view of one sandbox.
type State string

const (
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateStopped State = "stopped"
)

// Stats is one resource usage sample. Limits are 0 where unknown.
type Stats struct {
	Time             time.Time
	CPUUsageNanos    uint64 // cumulative CPU time
	MemoryBytes      uint64
	MemoryLimitBytes uint64
	DiskBytes        uint64 // written to the root filesystem's writable layer
	DiskLimitBytes   uint64
}

// Event is something that happened to a sandbox on its own, reported by
// drivers that implement Notifier.
type Event struct {
	ID   string
	Kind EventKind
	Time time.Time
	// Detail is a short, user-safe description (e.g. "memory limit 512 MiB reached").
	Detail string
}

// EventKind is what happened.
type EventKind string

const (
	// EventOOM: the sandbox reached its memory limit and a process was
	// killed for it (inside the guest, or the whole sandbox).
	EventOOM EventKind = "oom"
	// EventExit: the sandbox stopped without being destroyed (PID 1 or the
	// runtime process died).
	EventExit EventKind = "exit"
)

// Notifier is implemented by drivers that report Events. Notify sets the
// one callback (call it before the first Start); it is called from the
// driver's goroutines and must not block for long.
type Notifier interface {
	Notify(fn func(Event))
}

// Runtime runs sandboxes. Implementations are safe for concurrent use on
// different ids; calls for the same id are serialised by the caller.
type Runtime interface {
	// Name is the driver name ("gvisor", "microvm").
	Name() string
	// Start creates and starts the sandbox. It returns once PID 1 has been
	// started (not necessarily once envd answers). On error nothing is left behind.
	Start(ctx context.Context, spec Spec) error
	// Destroy kills every process of the sandbox and frees everything the
	// driver allocated for it. Destroying an unknown or already destroyed id is not an error.
	Destroy(ctx context.Context, id string) error
	// State reports the sandbox state; ErrNotFound if unknown.
	State(ctx context.Context, id string) (State, error)
	// Stats samples resource usage.
	Stats(ctx context.Context, id string) (Stats, error)
	// Cleanup destroys every sandbox this driver instance owns, including
	// leftovers of a previous process that crashed (called at server start and stop).
	Cleanup(ctx context.Context) error
}

// Pauser is implemented by drivers that can freeze and thaw a sandbox.
type Pauser interface {
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
}

// WriteJSON writes v, indented, to path with mode 0600: the per-sandbox
// records and specs a runtime keeps in its state dir.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// ReadJSON reads the JSON file at path into v. A missing file is the
// os.ReadFile error, unwrapped (errors.Is(err, fs.ErrNotExist) holds).
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	return nil
}
