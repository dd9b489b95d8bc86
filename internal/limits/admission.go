package limits

import (
	"errors"
	"fmt"
	"sync"

	"github.com/declaw/declaw/internal/meminfo"
)

// ErrNoCapacity is wrapped by *CapacityError: the host has no room for
// another sandbox of that size right now.
var ErrNoCapacity = errors.New("not enough host memory for another sandbox")

// CapacityError says why a sandbox was not admitted; its text is safe to
// show users.
type CapacityError struct {
	WantMB      int64 // what the sandbox would commit (limit + overhead)
	CommittedMB int64 // already committed to sandboxes
	CapacityMB  int64 // what may be committed at most
	AvailableMB int64 // host MemAvailable when that was the reason, else 0
}

func (e *CapacityError) Error() string {
	if e.AvailableMB > 0 {
		return fmt.Sprintf("%v: it needs %d MiB, the host has %d MiB available and keeps a reserve", ErrNoCapacity, e.WantMB, e.AvailableMB)
	}
	return fmt.Sprintf("%v: it needs %d MiB, %d of %d MiB are committed to sandboxes", ErrNoCapacity, e.WantMB, e.CommittedMB, e.CapacityMB)
}

func (e *CapacityError) Unwrap() error { return ErrNoCapacity }

// Admission keeps the books of host memory committed to sandboxes (live
// and warm-pool ones alike) and refuses a sandbox that would pass the
// capacity. Safe for concurrent use.
type Admission struct {
	capacityMB int64
	reserveMB  int64
	overheadMB int64
	available  func() (int64, error) // host MemAvailable in bytes

	mu        sync.Mutex
	committed map[string]int64
	total     int64
}

// NewAdmission returns the books for c (normalised) on a host with
// hostMB of memory (0: read MemTotal).
func NewAdmission(c Config, hostMB int64) (*Admission, error) {
	if hostMB <= 0 {
		b, err := meminfo.Field("MemTotal")
		if err != nil {
			return nil, fmt.Errorf("admission: host memory: %w", err)
		}
		hostMB = b >> 20
	}
	reserve := c.ReserveMB
	if reserve == 0 {
		reserve = DefaultReserveMB(hostMB)
	}
	capacity := int64(float64(hostMB-reserve) * c.Overcommit)
	if capacity <= 0 {
		return nil, fmt.Errorf("admission: a reserve of %d MiB leaves nothing of the host's %d MiB for sandboxes", reserve, hostMB)
	}
	return &Admission{
		capacityMB: capacity, reserveMB: reserve, overheadMB: c.OverheadMB,
		available: meminfo.Available, committed: map[string]int64{},
	}, nil
}

// DefaultReserveMB is the reserve when none is configured: 10% of the
// host's memory, at least 1 GiB.
func DefaultReserveMB(hostMB int64) int64 { return max(1024, hostMB/10) }

// Admit commits memoryMB (plus the per-sandbox overhead) for sandbox id,
// or returns a *CapacityError. Admitting an id twice replaces its entry.
func (a *Admission) Admit(id string, memoryMB int64) error {
	want := memoryMB + a.overheadMB
	a.mu.Lock()
	defer a.mu.Unlock()
	total := a.total - a.committed[id] + want
	if total > a.capacityMB {
		return &CapacityError{WantMB: want, CommittedMB: a.total - a.committed[id], CapacityMB: a.capacityMB}
	}
	// The books assume sandboxes are the host's only big consumer; when
	// something else took the memory, do not pile a sandbox on top.
	if a.available != nil {
		if avail, err := a.available(); err == nil && avail>>20 < want+a.reserveMB/2 {
			return &CapacityError{WantMB: want, CommittedMB: a.total, CapacityMB: a.capacityMB, AvailableMB: avail >> 20}
		}
	}
	a.total = total
	a.committed[id] = want
	return nil
}

// Release frees what id committed (nothing if it committed nothing).
func (a *Admission) Release(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total -= a.committed[id]
	delete(a.committed, id)
}

// Usage reports the memory committed to sandboxes and the capacity, in MiB.
func (a *Admission) Usage() (committedMB, capacityMB int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total, a.capacityMB
}
