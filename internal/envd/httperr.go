package envd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"syscall"

	"github.com/declaw/declaw/internal/envd/filesystem"
	"github.com/declaw/declaw/internal/envd/process"
	"github.com/declaw/declaw/internal/envd/sysuser"
	"github.com/declaw/declaw/internal/envd/watch"
	"github.com/declaw/declaw/internal/envdapi"
)

// errBadInput marks malformed requests found by this package.
var errBadInput = errors.New("bad request")

func badInput(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadInput, fmt.Sprintf(format, args...))
}

// errorStatus is the one mapping of errors to HTTP status and code.
func errorStatus(err error) (int, string) {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, "body_too_large"
	case errors.Is(err, sysuser.ErrUnknownUser):
		return http.StatusBadRequest, "unknown_user"
	case errors.Is(err, process.ErrNotFound), errors.Is(err, errNotPty), errors.Is(err, errNotStdio):
		return http.StatusNotFound, "process_not_found"
	case errors.Is(err, process.ErrNoStdin), errors.Is(err, process.ErrStdinClosed):
		return http.StatusConflict, "stdin_unavailable"
	case errors.Is(err, process.ErrNotPty):
		return http.StatusBadRequest, "not_pty"
	case errors.Is(err, watch.ErrNotFound):
		return http.StatusNotFound, "watcher_not_found"
	case errors.Is(err, watch.ErrLimit):
		return http.StatusConflict, "watch_limit"
	case errors.Is(err, watch.ErrNotDir):
		return http.StatusBadRequest, "not_directory"
	case errors.Is(err, process.ErrStdinBlocked):
		return http.StatusConflict, "stdin_full"
	case errors.Is(err, errBadInput), errors.Is(err, process.ErrBadRequest), errors.Is(err, filesystem.ErrBadRequest):
		return http.StatusBadRequest, "bad_request"
	case errors.Is(err, filesystem.ErrIsDir):
		return http.StatusBadRequest, "is_directory"
	case errors.Is(err, filesystem.ErrNotDir):
		return http.StatusBadRequest, "not_directory"
	case errors.Is(err, fs.ErrNotExist):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, fs.ErrExist):
		return http.StatusConflict, "already_exists"
	case errors.Is(err, fs.ErrPermission):
		return http.StatusForbidden, "permission_denied"
	case errors.Is(err, syscall.EROFS):
		return http.StatusForbidden, "read_only_file_system"
	}
	return http.StatusInternalServerError, "internal"
}

func writeError(w http.ResponseWriter, err error) {
	status, code := errorStatus(err)
	writeJSON(w, status, envdapi.Error{Message: err.Error(), Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"message":"encode response","code":"internal"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// decodeJSON decodes a JSON body of at most envdapi.MaxJSONBody bytes.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := readJSONBody(w, r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return badInput("empty JSON body")
	}
	return unmarshal(body, v)
}

// readJSONBody reads a body of at most envdapi.MaxJSONBody bytes.
func readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, envdapi.MaxJSONBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, fmt.Errorf("JSON body larger than %d bytes: %w", envdapi.MaxJSONBody, err)
		}
		return nil, badInput("read body: %v", err)
	}
	return body, nil
}

func unmarshal(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return badInput("invalid JSON body: %v", err)
	}
	return nil
}
