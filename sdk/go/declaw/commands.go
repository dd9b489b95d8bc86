package declaw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// CommandRequest is POST /sandboxes/{id}/commands and /commands/stream.
type CommandRequest struct {
	Cmd        string            `json:"cmd"` // run with bash -c (sh if there is no bash)
	Background bool              `json:"background,omitempty"`
	User       string            `json:"user,omitempty"` // default root
	Cwd        string            `json:"cwd,omitempty"`  // default the user's home
	Envs       map[string]string `json:"envs,omitempty"`
	Timeout    *float64          `json:"timeout,omitempty"` // seconds; nil: 60; 0: none
	Stdin      bool              `json:"stdin,omitempty"`
	Tag        string            `json:"tag,omitempty"`
}

// CommandResult is the result of a finished command.
type CommandResult struct {
	Pid      int    `json:"pid"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exit_code"`
	Error    string `json:"error,omitempty"`
}

// RunCommand runs a foreground command and returns its result; a
// non-zero exit code is not an error.
func (c *Client) RunCommand(ctx context.Context, id string, req CommandRequest) (*CommandResult, error) {
	req.Background = false
	var res CommandResult
	if err := c.call(ctx, request{method: http.MethodPost, path: sandboxPath(id, "/commands"), json: req}, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// CommandEvent is one event of POST /commands/stream: start {pid},
// stdout|stderr {data}, then exactly one of exit {exit_code, error?} and
// error {error, code?}.
type CommandEvent struct {
	Type     string `json:"type"`
	Stream   string `json:"stream,omitempty"`
	Pid      int    `json:"pid,omitempty"`
	Data     string `json:"data,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Error    string `json:"error,omitempty"`
	Code     string `json:"code,omitempty"`
}

// CommandError is a stream that ended with an "error" event (for example
// the command timed out and was killed).
type CommandError struct {
	Message string
	Code    string
}

func (e *CommandError) Error() string { return e.Message }

// Timeout reports whether the command was killed for its timeout.
func (e *CommandError) Timeout() bool {
	return e.Code == "timeout" || strings.Contains(e.Message, "timed out")
}

// ErrNoExit is returned when a stream ends without its terminal event.
var ErrNoExit = errors.New("the stream ended before the process exited")

// RunStream runs a command and calls fn with each event as it arrives
// (start, stdout, stderr and the final exit). It returns the exit event,
// a *CommandError for an "error" event, an *Error when the API refused the
// command, or fn's error. Cancelling ctx disconnects, which kills the
// command.
func (c *Client) RunStream(ctx context.Context, id string, req CommandRequest, fn func(CommandEvent) error) (*CommandEvent, error) {
	body := struct {
		CommandRequest
		Stream bool `json:"stream"`
	}{req, true}
	body.Background = false
	resp, err := c.send(ctx, request{method: http.MethodPost, path: sandboxPath(id, "/commands/stream"), json: body, accept: "text/event-stream"})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sse := NewSSEReader(resp.Body)
	for {
		raw, err := sse.Next()
		if err == io.EOF {
			return nil, ErrNoExit
		}
		if err != nil {
			return nil, fmt.Errorf("command stream: %w", err)
		}
		var ev CommandEvent
		if strings.TrimSpace(raw.Data) != "" {
			if err := json.Unmarshal([]byte(raw.Data), &ev); err != nil {
				return nil, fmt.Errorf("command stream: event %q: %w", raw.Name, err)
			}
		}
		if ev.Type == "" {
			ev.Type = ev.Stream
		}
		if ev.Type == "" {
			ev.Type = raw.Name
		}
		if ev.Type == "error" {
			msg := ev.Error
			if msg == "" {
				msg = "command failed"
			}
			return nil, &CommandError{Message: msg, Code: ev.Code}
		}
		if fn != nil {
			if err := fn(ev); err != nil {
				return nil, err
			}
		}
		if ev.Type == "exit" {
			if ev.ExitCode == nil {
				return nil, fmt.Errorf("command stream: exit event without exit_code: %s", raw.Data)
			}
			return &ev, nil
		}
	}
}
