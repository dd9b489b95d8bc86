package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/declaw/declaw/internal/limits"
	"github.com/declaw/declaw/internal/policy"
	"github.com/declaw/declaw/internal/sandbox"
	"github.com/declaw/declaw/internal/template"
	"github.com/declaw/declaw/internal/template/build"
	"github.com/declaw/declaw/internal/tenancy"
	"github.com/declaw/declaw/internal/volume"
)

// Error is an API error with its HTTP status; its Message is safe to show users.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

func badRequest(code, msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: code, Message: msg}
}

// toAPIError is the one place that maps internal errors to statuses and codes.
func toAPIError(err error) *Error {
	var (
		apiErr   *Error
		invalid  *sandbox.InvalidError
		polErr   *policy.Error
		stateErr *sandbox.StateError
		maxBytes *http.MaxBytesError
		syntax   *json.SyntaxError
		typeErr  *json.UnmarshalTypeError
		inputErr *build.InputError
		notReady *sandbox.NotReadyError
		limErr   *limits.Error
		capErr   *limits.CapacityError
		volErr   *volume.InvalidError
	)
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case errors.Is(err, tenancy.ErrForbidden):
		return &Error{Status: http.StatusForbidden, Code: "forbidden", Message: err.Error()}
	case errors.As(err, &maxBytes):
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large", Message: "request body is larger than the limit"}
	case errors.As(err, &syntax), errors.As(err, &typeErr), errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("invalid_json", "malformed JSON body: "+err.Error())
	case errors.As(err, &inputErr):
		return badRequest("invalid_template", inputErr.Error())
	case errors.Is(err, template.ErrBuilding):
		return &Error{Status: http.StatusConflict, Code: "build_in_progress", Message: err.Error()}
	case errors.Is(err, template.ErrInUse):
		return &Error{Status: http.StatusConflict, Code: "template_in_use", Message: err.Error()}
	case errors.Is(err, build.ErrAliasTaken):
		return &Error{Status: http.StatusConflict, Code: "alias_taken", Message: err.Error()}
	case errors.Is(err, build.ErrBuildNotFound):
		return &Error{Status: http.StatusNotFound, Code: "build_not_found", Message: err.Error()}
	case errors.Is(err, template.ErrUnknownTemplate), errors.Is(err, template.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Code: "template_not_found", Message: err.Error()}
	case errors.As(err, &notReady):
		return &Error{Status: http.StatusConflict, Code: "template_not_ready", Message: notReady.Error()}
	case errors.As(err, &invalid):
		return badRequest("invalid_argument", invalid.Error())
	case errors.As(err, &limErr):
		return badRequest(limErr.Code, limErr.Error())
	case errors.As(err, &capErr):
		return &Error{Status: http.StatusServiceUnavailable, Code: "insufficient_capacity", Message: capErr.Error() + "; retry later or ask for less memory"}
	case errors.As(err, &polErr):
		return badRequest("invalid_policy", polErr.Error())
	case errors.As(err, &stateErr):
		return &Error{Status: http.StatusConflict, Code: "invalid_state", Message: stateErr.Error()}
	case errors.Is(err, sandbox.ErrTemplateUnknown):
		return &Error{Status: http.StatusNotFound, Code: "template_not_found", Message: err.Error()}
	case errors.Is(err, sandbox.ErrSnapshotNotFound):
		return &Error{Status: http.StatusNotFound, Code: "snapshot_not_found", Message: err.Error()}
	case errors.Is(err, volume.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Code: "volume_not_found", Message: err.Error()}
	case errors.Is(err, volume.ErrInUse):
		return &Error{Status: http.StatusConflict, Code: "volume_in_use", Message: err.Error()}
	case errors.Is(err, volume.ErrQuota):
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: "quota_exceeded", Message: err.Error()}
	case errors.As(err, &volErr):
		return badRequest("invalid_volume", volErr.Error())
	case errors.Is(err, sandbox.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Code: "sandbox_not_found", Message: err.Error()}
	case errors.Is(err, sandbox.ErrKilled):
		return &Error{Status: http.StatusGone, Code: "sandbox_killed", Message: err.Error()}
	case errors.Is(err, sandbox.ErrPaused):
		return &Error{Status: http.StatusConflict, Code: "sandbox_paused", Message: err.Error()}
	case errors.Is(err, sandbox.ErrNotSupported):
		return &Error{Status: http.StatusConflict, Code: "not_supported", Message: err.Error()}
	case errors.Is(err, sandbox.ErrUnavailable):
		return &Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: err.Error()}
	}
	return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
}

// writeError writes err as {"message","code"}; unexpected errors are logged, not shown.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := toAPIError(err)
	if e.Code == "insufficient_capacity" {
		w.Header().Set("Retry-After", "5")
	}
	if e.Status >= 500 && e.Code != "insufficient_capacity" {
		s.logf("api: %s %s: %v", r.Method, r.URL.Path, err)
	}
	writeJSON(w, e.Status, map[string]string{"message": e.Message, "code": e.Code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.Encode(v)
}
