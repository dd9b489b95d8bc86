package declaw

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// StdioRequest is POST /sandboxes/{id}/stdio: a process whose stdin is a
// pipe that stays open, for binary input, until CloseStdin.
type StdioRequest struct {
	Cmd     string            `json:"cmd"` // run with bash -c (sh without bash)
	User    string            `json:"user,omitempty"`
	Envs    map[string]string `json:"envs,omitempty"`
	Cwd     string            `json:"cwd,omitempty"`
	Timeout *float64          `json:"timeout,omitempty"` // seconds; nil or 0: none
	Tag     string            `json:"tag,omitempty"`
}

// StdioSession is a process started by StartStdio. Its methods may be
// called from several goroutines (e.g. one writing, one reading Output).
type StdioSession struct {
	c         *Client
	sandboxID string
	CmdID     string // names the session in the /stdio/{cmd_id} routes
	Pid       int
}

// StdioEvent is one event of a stdio session's output: "stdout" or
// "stderr" (Data holds the bytes), "gap" (output was dropped before it
// could be delivered), then "exit" (ExitCode, Error).
type StdioEvent struct {
	Type     string
	Data     []byte
	EntryID  uint64
	ExitCode int
	Error    string
	Code     string
}

// StartStdio starts a process with an open stdin pipe.
func (c *Client) StartStdio(ctx context.Context, id string, req StdioRequest) (*StdioSession, error) {
	var out struct {
		CmdID string `json:"cmd_id"`
		Pid   int    `json:"pid"`
	}
	if err := c.call(ctx, request{method: http.MethodPost, path: sandboxPath(id, "/stdio"), json: req}, &out); err != nil {
		return nil, err
	}
	if out.CmdID == "" {
		return nil, errors.New("POST /stdio: answer without a cmd_id")
	}
	return &StdioSession{c: c, sandboxID: id, CmdID: out.CmdID, Pid: out.Pid}, nil
}

func (s *StdioSession) path(suffix string) string {
	return sandboxPath(s.sandboxID, "/stdio/"+url.PathEscape(s.CmdID)+suffix)
}

// Write sends p, any bytes, to the process's stdin.
func (s *StdioSession) Write(ctx context.Context, p []byte) error {
	return s.c.call(ctx, request{method: http.MethodPost, path: s.path("/stdin"),
		json: map[string]string{"data": base64.StdEncoding.EncodeToString(p)}}, nil)
}

// CloseStdin closes the process's stdin (it reads EOF).
func (s *StdioSession) CloseStdin(ctx context.Context) error {
	return s.c.call(ctx, request{method: http.MethodPost, path: s.path("/stdin/close"), json: struct{}{}}, nil)
}

// Kill kills the process tree; killed is false when it had already ended
// or is unknown.
func (s *StdioSession) Kill(ctx context.Context) (killed bool, err error) {
	var out struct {
		Killed bool `json:"killed"`
	}
	err = s.c.call(ctx, request{method: http.MethodDelete, path: s.path("")}, &out)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return out.Killed, err
}

// Output yields the process's output from its start (what was retained)
// and then live, up to and including the "exit" event. A dropped
// connection is resumed after the last entry seen, nothing lost or
// repeated; an API error (e.g. the session is gone) is yielded and ends
// the sequence. Leaving the loop disconnects; the process keeps running.
func (s *StdioSession) Output(ctx context.Context) iter.Seq2[StdioEvent, error] {
	return func(yield func(StdioEvent, error) bool) {
		var last uint64
		failures := 0
		for {
			q := ""
			if last > 0 {
				q = query("last_entry_id", strconv.FormatUint(last, 10))
			}
			resp, err := s.c.send(ctx, request{method: http.MethodGet, path: s.path("/stream"), query: q, accept: "text/event-stream"})
			if err != nil {
				var apiErr *Error
				failures++
				if ctx.Err() != nil || errors.As(err, &apiErr) || failures > 5 {
					yield(StdioEvent{}, err)
					return
				}
				if !sleepCtx(ctx, time.Duration(failures)*200*time.Millisecond) {
					yield(StdioEvent{}, ctx.Err())
					return
				}
				continue
			}
			done, err := s.readOutput(resp.Body, &last, &failures, yield)
			resp.Body.Close()
			if done {
				return
			}
			if ctx.Err() != nil {
				yield(StdioEvent{}, ctx.Err())
				return
			}
			// a dropped stream: resume after last, unless it keeps failing
			failures++
			if failures > 5 {
				yield(StdioEvent{}, fmt.Errorf("stdio stream: %w", err))
				return
			}
			if !sleepCtx(ctx, time.Duration(failures)*200*time.Millisecond) {
				yield(StdioEvent{}, ctx.Err())
				return
			}
		}
	}
}

// readOutput reads one connection's events; done is true when the
// sequence is over (exit, a bad event, or the caller stopped).
func (s *StdioSession) readOutput(body io.Reader, last *uint64, failures *int, yield func(StdioEvent, error) bool) (done bool, err error) {
	sse := NewSSEReader(body)
	for {
		raw, err := sse.Next()
		if err == io.EOF {
			return false, ErrNoExit
		}
		if err != nil {
			return false, err
		}
		var j struct {
			Type     string `json:"type"`
			Stream   string `json:"stream"`
			Data     string `json:"data"`
			EntryID  uint64 `json:"entry_id"`
			ExitCode *int   `json:"exit_code"`
			Error    string `json:"error"`
			Code     string `json:"code"`
		}
		if strings.TrimSpace(raw.Data) != "" {
			if err := json.Unmarshal([]byte(raw.Data), &j); err != nil {
				yield(StdioEvent{}, fmt.Errorf("stdio stream: event %q: %w", raw.Name, err))
				return true, nil
			}
		}
		if j.Type == "" {
			j.Type = j.Stream
		}
		if j.Type == "" {
			j.Type = raw.Name
		}
		ev := StdioEvent{Type: j.Type, EntryID: j.EntryID, Error: j.Error, Code: j.Code}
		switch j.Type {
		case "stdout", "stderr":
			if j.EntryID != 0 && j.EntryID <= *last {
				continue
			}
			b, err := base64.StdEncoding.DecodeString(j.Data)
			if err != nil {
				b, err = base64.RawStdEncoding.DecodeString(j.Data)
			}
			if err != nil {
				yield(StdioEvent{}, fmt.Errorf("stdio stream: data is not base64: %w", err))
				return true, nil
			}
			ev.Data = b
			if j.EntryID != 0 {
				*last = j.EntryID
			}
		case "exit":
			ev.ExitCode = -1
			if j.ExitCode != nil {
				ev.ExitCode = *j.ExitCode
			}
			yield(ev, nil)
			return true, nil
		case "error":
			yield(StdioEvent{}, &CommandError{Message: j.Error, Code: j.Code})
			return true, nil
		case "gap":
		default:
			continue
		}
		*failures = 0
		if !yield(ev, nil) {
			return true, nil
		}
	}
}
