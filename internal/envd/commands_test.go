package envd

import (
	"errors"
	"io/fs"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/envd/filesystem"
	"github.com/declaw/declaw/internal/envd/process"
	"github.com/declaw/declaw/internal/envd/sysuser"
)

func TestParseSeconds(t *testing.T) {
	tests := []struct {
		in      float64
		want    time.Duration
		wantErr bool
	}{
		{0, 0, false},
		{1, time.Second, false},
		{0.25, 250 * time.Millisecond, false},
		{1e-12, 1, false},
		{1e300, maxTimeout, false},
		{math.Inf(1), maxTimeout, false},
		{-1, 0, true},
		{math.NaN(), 0, true},
	}
	for _, tt := range tests {
		got, err := parseSeconds(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("parseSeconds(%v) = %v, %v, want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestErrorStatus(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{&http.MaxBytesError{Limit: 1}, 413, "body_too_large"},
		{sysuser.ErrUnknownUser, 400, "unknown_user"},
		{process.ErrNotFound, 404, "process_not_found"},
		{errNotPty, 404, "process_not_found"},
		{process.ErrNoStdin, 409, "stdin_unavailable"},
		{process.ErrStdinClosed, 409, "stdin_unavailable"},
		{process.ErrNotPty, 400, "not_pty"},
		{badInput("x"), 400, "bad_request"},
		{filesystem.ErrIsDir, 400, "is_directory"},
		{filesystem.ErrNotDir, 400, "not_directory"},
		{fs.ErrNotExist, 404, "not_found"},
		{fs.ErrExist, 409, "already_exists"},
		{fs.ErrPermission, 403, "permission_denied"},
		{errors.New("boom"), 500, "internal"},
	}
	for _, tt := range tests {
		status, code := errorStatus(tt.err)
		if status != tt.status || code != tt.code {
			t.Errorf("errorStatus(%v) = %d %q, want %d %q", tt.err, status, code, tt.status, tt.code)
		}
	}
}
