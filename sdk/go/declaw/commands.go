package declaw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"strconv"
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
	return readCommandStream(resp.Body, fn)
}

// readCommandStream reads command events from an SSE body up to the
// terminal event (see RunStream).
func readCommandStream(body io.Reader, fn func(CommandEvent) error) (*CommandEvent, error) {
	sse := NewSSEReader(body)
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

// StreamCommand runs a foreground command like RunStream and yields its
// events as they arrive: start, stdout and stderr chunks, and the final
// exit event. A failure (an *Error, a *CommandError such as a timeout,
// ErrNoExit) is yielded once as the error, and ends the sequence.
// Breaking out of the loop disconnects, which kills the command.
func (c *Client) StreamCommand(ctx context.Context, id string, req CommandRequest) iter.Seq2[CommandEvent, error] {
	return func(yield func(CommandEvent, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stopped := false
		last, err := c.RunStream(ctx, id, req, func(ev CommandEvent) error {
			if ev.Type == "exit" {
				return nil // yielded below, once the stream is known to be complete
			}
			if !yield(ev, nil) {
				stopped = true
				return errStopped
			}
			return nil
		})
		if stopped {
			return
		}
		if err != nil {
			yield(CommandEvent{}, err)
			return
		}
		yield(*last, nil)
	}
}

var errStopped = errors.New("stopped by the caller")

// StartCommand starts a background command and returns its pid at once.
// With req.Stdin its stdin stays open for SendStdin. Follow it with
// ConnectCommand, collect it with WaitCommand, end it with KillCommand.
func (c *Client) StartCommand(ctx context.Context, id string, req CommandRequest) (int, error) {
	req.Background = true
	var out struct {
		Pid int `json:"pid"`
	}
	if err := c.call(ctx, request{method: http.MethodPost, path: sandboxPath(id, "/commands"), json: req}, &out); err != nil {
		return 0, err
	}
	if out.Pid <= 0 {
		return 0, fmt.Errorf("POST /commands: answer without a pid")
	}
	return out.Pid, nil
}

func commandPath(id string, pid int, suffix string) string {
	return sandboxPath(id, "/commands/"+strconv.Itoa(pid)+suffix)
}

// WaitCommand waits until the process ends and returns its result; it
// waits as long as ctx allows. A non-zero exit code is not an error.
func (c *Client) WaitCommand(ctx context.Context, id string, pid int) (*CommandResult, error) {
	var res CommandResult
	if err := c.call(ctx, request{method: http.MethodGet, path: commandPath(id, pid, "/wait")}, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// ConnectCommand follows a running (or recently finished) process, e.g. a
// background command started by StartCommand or another client: fn gets
// the output retained from the start, then the live output; the exit
// event is returned as by RunStream. Disconnecting (cancelling ctx, or fn
// returning an error) leaves the process running.
func (c *Client) ConnectCommand(ctx context.Context, id string, pid int, fn func(CommandEvent) error) (*CommandEvent, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: commandPath(id, pid, "/stream"), accept: "text/event-stream"})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return readCommandStream(resp.Body, fn)
}

// SendStdin writes data (text; invalid UTF-8 becomes U+FFFD on the wire)
// to the stdin of a process started with Stdin set.
func (c *Client) SendStdin(ctx context.Context, id string, pid int, data string) error {
	return c.call(ctx, request{method: http.MethodPost, path: commandPath(id, pid, "/stdin"), json: map[string]string{"data": data}}, nil)
}

// KillCommand kills the process and its descendants (SIGKILL to the
// whole tree, the only signal the API sends). killed is false when the
// process had already ended or is unknown (404), as in the Python SDK.
func (c *Client) KillCommand(ctx context.Context, id string, pid int) (killed bool, err error) {
	var out struct {
		Killed bool `json:"killed"`
	}
	err = c.call(ctx, request{method: http.MethodDelete, path: commandPath(id, pid, "")}, &out)
	var apiErr *Error
	if errors.As(err, &apiErr) && apiErr.Code == "process_not_found" {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return out.Killed, nil
}

// Process is a running process of a sandbox (GET /commands).
type Process struct {
	Pid   int               `json:"pid"`
	Cmd   string            `json:"cmd"`
	IsPty bool              `json:"is_pty"`
	Envs  map[string]string `json:"envs,omitempty"`
	Tag   string            `json:"tag,omitempty"`
	Cwd   string            `json:"cwd,omitempty"`
}

// ListCommands lists the sandbox's running processes started through the
// API (commands, PTYs, stdio sessions).
func (c *Client) ListCommands(ctx context.Context, id string) ([]Process, error) {
	var raw json.RawMessage
	if err := c.call(ctx, request{method: http.MethodGet, path: sandboxPath(id, "/commands")}, &raw); err != nil {
		return nil, err
	}
	var ps []Process
	var err error
	if len(raw) > 0 && raw[0] == '{' { // {"processes": [...]} is accepted too
		var w struct {
			Processes []Process `json:"processes"`
		}
		err = json.Unmarshal(raw, &w)
		ps = w.Processes
	} else {
		err = json.Unmarshal(raw, &ps)
	}
	if err != nil {
		return nil, fmt.Errorf("GET /commands: decode answer: %w", err)
	}
	if ps == nil {
		ps = []Process{}
	}
	return ps, nil
}
