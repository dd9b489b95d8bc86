package declaw

import (
	"errors"
	"net/http"
)

// Sentinel errors for the conditions callers branch on. An *Error (and a
// *CommandError) matches them with errors.Is:
//
//	if errors.Is(err, declaw.ErrNotFound) { ... }
//
// The API's {"message","code"} stays available with errors.As:
//
//	var apiErr *declaw.Error
//	if errors.As(err, &apiErr) && apiErr.Code == "sandbox_not_found" { ... }
var (
	// ErrInvalidArgument: 400, 413, 422 (a bad field, body, policy or limit).
	ErrInvalidArgument = errors.New("declaw: invalid argument")
	// ErrUnauthorized: 401, the API key is missing, invalid or revoked.
	ErrUnauthorized = errors.New("declaw: unauthorized")
	// ErrForbidden: 403 (an admin key is needed, or the sandbox's file
	// system refused the operation).
	ErrForbidden = errors.New("declaw: forbidden")
	// ErrNotFound: 404, no such sandbox, process, file, snapshot, template,
	// team or key (another team's resources are not found either).
	ErrNotFound = errors.New("declaw: not found")
	// ErrTimeout: 408 (a foreground command or a wait timed out) and a
	// command stream that ended with a timeout error.
	ErrTimeout = errors.New("declaw: timeout")
	// ErrConflict: 409 (the sandbox is paused, a create with this
	// idempotency key is running, stdin unavailable, already exists, ...).
	ErrConflict = errors.New("declaw: conflict")
	// ErrSandboxKilled: 410, the sandbox was killed.
	ErrSandboxKilled = errors.New("declaw: sandbox killed")
	// ErrRateLimited: 429.
	ErrRateLimited = errors.New("declaw: rate limited")
	// ErrUnavailable: 503 (e.g. the host has no memory for the create).
	ErrUnavailable = errors.New("declaw: unavailable")
	// ErrNotEnoughSpace: 507, the sandbox's disk is full.
	ErrNotEnoughSpace = errors.New("declaw: not enough space")
)

// Is makes errors.Is(err, ErrNotFound) and the other sentinels match the
// error's HTTP status; Code refines the message, not the class.
func (e *Error) Is(target error) bool {
	return target != nil && statusSentinel(e.Status) == target
}

func statusSentinel(status int) error {
	switch status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return ErrInvalidArgument
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return ErrForbidden
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return ErrTimeout
	case http.StatusConflict:
		return ErrConflict
	case http.StatusGone:
		return ErrSandboxKilled
	case http.StatusTooManyRequests:
		return ErrRateLimited
	case http.StatusServiceUnavailable:
		return ErrUnavailable
	case http.StatusInsufficientStorage:
		return ErrNotEnoughSpace
	}
	return nil
}

// Is makes a stream that ended with a timeout match ErrTimeout.
func (e *CommandError) Is(target error) bool {
	return target == ErrTimeout && e.Timeout()
}

// IsNotFound reports whether err is an API 404; it is errors.Is(err, ErrNotFound).
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
