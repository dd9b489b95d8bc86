package declaw

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// PtySize is a terminal size in cells.
type PtySize struct {
	Cols uint16 `json:"cols"`
	Rows uint16 `json:"rows"`
}

// PtyRequest is POST /sandboxes/{id}/pty.
type PtyRequest struct {
	Size    PtySize           `json:"size"`
	User    string            `json:"user,omitempty"`    // default root
	Cwd     string            `json:"cwd,omitempty"`     // default the user's home
	Envs    map[string]string `json:"envs,omitempty"`    // TERM defaults to xterm-256color
	Timeout *float64          `json:"timeout,omitempty"` // seconds; nil: 3600; 0: none
	Cmd     string            `json:"cmd,omitempty"`     // default an interactive shell
	Tag     string            `json:"tag,omitempty"`
}

// CreatePty starts a process on a new pseudo-terminal and returns its pid.
// Its output is only seen by streams opened afterwards (no scrollback).
func (c *Client) CreatePty(ctx context.Context, id string, req PtyRequest) (int, error) {
	var out struct {
		Pid int `json:"pid"`
	}
	if err := c.call(ctx, request{method: http.MethodPost, path: sandboxPath(id, "/pty"), json: req}, &out); err != nil {
		return 0, err
	}
	return out.Pid, nil
}

func ptyPath(id string, pid int, suffix string) string {
	return sandboxPath(id, "/pty/"+strconv.Itoa(pid)+suffix)
}

// PtyEvent is one event of a PTY stream: "data" (terminal output) or the
// final "exit".
type PtyEvent struct {
	Type     string
	Data     []byte
	ExitCode int
	Error    string
}

// PtyStream follows the output of a PTY process.
type PtyStream struct {
	body io.ReadCloser
	sse  *SSEReader
}

// StreamPty opens the output stream of a PTY process; it returns once the
// server answered, so output produced from then on is delivered.
func (c *Client) StreamPty(ctx context.Context, id string, pid int) (*PtyStream, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: ptyPath(id, pid, "/stream"), accept: "text/event-stream"})
	if err != nil {
		return nil, err
	}
	return &PtyStream{body: resp.Body, sse: NewSSEReader(resp.Body)}, nil
}

// Next returns the next event; "exit" is the last one. A stream that ends
// before the exit event returns ErrNoExit.
func (s *PtyStream) Next() (PtyEvent, error) {
	for {
		raw, err := s.sse.Next()
		if err == io.EOF {
			return PtyEvent{}, ErrNoExit
		}
		if err != nil {
			return PtyEvent{}, fmt.Errorf("pty stream: %w", err)
		}
		var ev struct {
			Type     string `json:"type"`
			Data     string `json:"data"`
			ExitCode *int   `json:"exit_code"`
			Error    string `json:"error"`
		}
		if strings.TrimSpace(raw.Data) != "" {
			if err := json.Unmarshal([]byte(raw.Data), &ev); err != nil {
				return PtyEvent{}, fmt.Errorf("pty stream: event %q: %w", raw.Name, err)
			}
		}
		if ev.Type == "" {
			ev.Type = raw.Name
		}
		switch ev.Type {
		case "data":
			b, err := base64.StdEncoding.DecodeString(ev.Data)
			if err != nil {
				return PtyEvent{}, fmt.Errorf("pty stream: data is not base64: %w", err)
			}
			return PtyEvent{Type: "data", Data: b}, nil
		case "exit":
			out := PtyEvent{Type: "exit", ExitCode: -1, Error: ev.Error}
			if ev.ExitCode != nil {
				out.ExitCode = *ev.ExitCode
			}
			return out, nil
		case "error":
			return PtyEvent{}, &CommandError{Message: ev.Error}
		}
		// unknown events are skipped
	}
}

// Close ends the stream; the process keeps running.
func (s *PtyStream) Close() error { return s.body.Close() }

// SendPtyInput types data (text; invalid UTF-8 becomes U+FFFD on the wire)
// into the terminal.
func (c *Client) SendPtyInput(ctx context.Context, id string, pid int, data string) error {
	return c.call(ctx, request{method: http.MethodPost, path: ptyPath(id, pid, "/stdin"), json: map[string]string{"data": data}}, nil)
}

// ResizePty sets the terminal size.
func (c *Client) ResizePty(ctx context.Context, id string, pid int, size PtySize) error {
	return c.call(ctx, request{method: http.MethodPatch, path: ptyPath(id, pid, ""), json: map[string]PtySize{"size": size}}, nil)
}

// KillPty kills the PTY process and its descendants; killed is false when
// it had already ended.
func (c *Client) KillPty(ctx context.Context, id string, pid int) (killed bool, err error) {
	var out struct {
		Killed bool `json:"killed"`
	}
	if err := c.call(ctx, request{method: http.MethodDelete, path: ptyPath(id, pid, "")}, &out); err != nil {
		return false, err
	}
	return out.Killed, nil
}
