package declaw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FilesystemEvent is one event of a directory watch.
type FilesystemEvent struct {
	// Type is create, write, remove, rename or chmod; or "gap" (events
	// were lost: the kernel's queue or the watcher's buffer overflowed) or
	// "error" (Error says what), which the watch survives.
	Type      string
	Path      string // absolute
	Name      string // relative to the watched directory
	IsDir     bool
	Timestamp time.Time
	EventID   uint64
	Error     string
}

// WatchOptions are the settings of WatchDir.
type WatchOptions struct {
	Recursive bool   // watch subdirectories too, including ones created later
	User      string // resolves a relative path; default root
}

// Watcher follows the changes in a directory of a sandbox. Read them with
// Events; Stop deletes the watcher. A Watcher is used by one goroutine at
// a time, except Stop, which may be called from any.
type Watcher struct {
	c         *Client
	sandboxID string
	id        string
	ctx       context.Context
	cancel    context.CancelFunc
	mu        sync.Mutex
	body      io.ReadCloser // the stream opened by WatchDir; nil once Events took it
	stopOnce  sync.Once
	stopErr   error
}

// WatchDir starts watching the directory path (POST /files/watch) and
// opens the event stream at once, so every change after WatchDir returns
// is delivered. ctx bounds the whole watch, not only this call. A missing
// directory is ErrNotFound; too many watchers is ErrConflict (watch_limit).
func (c *Client) WatchDir(ctx context.Context, id, path string, opts WatchOptions) (*Watcher, error) {
	body := map[string]any{"path": path, "recursive": opts.Recursive}
	if opts.User != "" {
		body["username"] = opts.User
	}
	var started struct {
		WatcherID string `json:"watcher_id"`
	}
	if err := c.call(ctx, request{method: http.MethodPost, path: sandboxPath(id, "/files/watch"), json: body}, &started); err != nil {
		return nil, err
	}
	if started.WatcherID == "" {
		return nil, errors.New("POST /files/watch: answer without a watcher_id")
	}
	w := &Watcher{c: c, sandboxID: id, id: started.WatcherID}
	w.ctx, w.cancel = context.WithCancel(ctx)
	b, err := w.open(0)
	if err != nil {
		w.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	w.body = b
	return w, nil
}

// ID is the watcher's id.
func (w *Watcher) ID() string { return w.id }

func (w *Watcher) path(suffix string) string {
	return sandboxPath(w.sandboxID, "/files/watch/"+url.PathEscape(w.id)+suffix)
}

func (w *Watcher) open(after uint64) (io.ReadCloser, error) {
	q := ""
	if after > 0 {
		q = query("last_event_id", strconv.FormatUint(after, 10))
	}
	resp, err := w.c.send(w.ctx, request{method: http.MethodGet, path: w.path("/stream"), query: q, accept: "text/event-stream"})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Events yields the changes as they happen, in order, until Stop, the
// watch's context ends, or the sandbox goes (then the last yield carries
// the error). A dropped connection is resumed after the last event seen,
// so none is lost or repeated; after 5 failed reconnects in a row the
// error is yielded. Stop and a cancelled context end the sequence without
// an error.
func (w *Watcher) Events() iter.Seq2[FilesystemEvent, error] {
	return func(yield func(FilesystemEvent, error) bool) {
		w.mu.Lock()
		body := w.body
		w.body = nil
		w.mu.Unlock()
		var last uint64
		failures := 0
		for {
			if body == nil {
				b, err := w.open(last)
				if err != nil {
					if w.ctx.Err() != nil {
						return
					}
					var apiErr *Error
					failures++
					if errors.As(err, &apiErr) || failures > 5 {
						yield(FilesystemEvent{}, fmt.Errorf("watch %s: %w", w.id, err))
						return
					}
					if !sleepCtx(w.ctx, time.Duration(failures)*200*time.Millisecond) {
						return
					}
					continue
				}
				body = b
			}
			sse := NewSSEReader(body)
			for {
				raw, err := sse.Next()
				if err == io.EOF { // the server ended the stream: the watcher was deleted
					body.Close()
					return
				}
				if err != nil {
					body.Close()
					body = nil
					if w.ctx.Err() != nil {
						return
					}
					break // reconnect after last
				}
				ev, ok, err := parseWatchEvent(raw)
				if err != nil {
					body.Close()
					yield(FilesystemEvent{}, err)
					return
				}
				if !ok {
					continue
				}
				if ev.EventID != 0 {
					if ev.EventID <= last {
						continue
					}
					last = ev.EventID
				}
				failures = 0
				if !yield(ev, nil) {
					body.Close()
					return
				}
			}
		}
	}
}

// parseWatchEvent decodes one SSE event; ok is false for "start" and
// events without a type.
func parseWatchEvent(raw Event) (FilesystemEvent, bool, error) {
	var j struct {
		Type      string `json:"type"`
		Path      string `json:"path"`
		Name      string `json:"name"`
		IsDir     bool   `json:"is_dir"`
		Timestamp string `json:"timestamp"`
		EventID   uint64 `json:"event_id"`
		Error     string `json:"error"`
	}
	if strings.TrimSpace(raw.Data) != "" {
		if err := json.Unmarshal([]byte(raw.Data), &j); err != nil {
			return FilesystemEvent{}, false, fmt.Errorf("watch stream: event %q: %w", raw.Name, err)
		}
	}
	if j.Type == "" {
		j.Type = raw.Name
	}
	if j.Type == "" || j.Type == "start" {
		return FilesystemEvent{}, false, nil
	}
	if j.EventID == 0 && raw.ID != "" {
		j.EventID, _ = strconv.ParseUint(raw.ID, 10, 64)
	}
	ev := FilesystemEvent{Type: j.Type, Path: j.Path, Name: j.Name, IsDir: j.IsDir, EventID: j.EventID, Error: j.Error}
	if j.Timestamp != "" {
		ev.Timestamp, _ = time.Parse(time.RFC3339Nano, j.Timestamp)
	}
	return ev, true, nil
}

// Stop deletes the watcher (DELETE /files/watch/{id}; an already deleted
// one is fine) and ends Events. It is idempotent.
func (w *Watcher) Stop(ctx context.Context) error {
	w.stopOnce.Do(func() {
		err := w.c.call(ctx, request{method: http.MethodDelete, path: w.path("")}, nil)
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrSandboxKilled) {
			err = nil
		}
		w.stopErr = err
		w.cancel() // ends a stream Events is reading
		w.mu.Lock()
		if w.body != nil {
			w.body.Close()
			w.body = nil
		}
		w.mu.Unlock()
	})
	return w.stopErr
}
