package sandbox

import (
	"errors"
	"fmt"
)

// Sentinel errors callers branch on (the api package maps them to statuses).
var (
	ErrNotFound        = errors.New("sandbox not found")
	ErrKilled          = errors.New("sandbox was killed")
	ErrPaused          = errors.New("sandbox is paused")
	ErrTemplateUnknown = errors.New("template not found")
	ErrUnavailable     = errors.New("sandbox is not reachable")
)

// InvalidError is a bad-input error whose text is safe to show users.
type InvalidError struct {
	Field string
	Msg   string
}

func (e *InvalidError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return fmt.Sprintf("%s: %s", e.Field, e.Msg)
}

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// StateError reports an operation not allowed in the sandbox's current state.
type StateError struct {
	ID, Op, State string
}

func (e *StateError) Error() string {
	return fmt.Sprintf("cannot %s sandbox %s in state %s", e.Op, e.ID, e.State)
}
