package envd

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/declaw/declaw/internal/envd/watch"
	"github.com/declaw/declaw/internal/envdapi"
)

// watchKeepalive is how often an idle watch stream gets an SSE comment,
// so proxies do not close it.
const watchKeepalive = 15 * time.Second

// handleWatchCreate is POST /files/watch: start watching a directory.
func (s *Server) handleWatchCreate(w http.ResponseWriter, r *http.Request) {
	var req envdapi.WatchRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	wt, err := s.startWatch(req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, envdapi.WatchStarted{WatcherID: wt.ID()})
}

func (s *Server) startWatch(req envdapi.WatchRequest) (*watch.Watcher, error) {
	t, err := s.resolve(req.Path, req.Username)
	if err != nil {
		return nil, err
	}
	return s.watches.Watch(t.path, req.Recursive)
}

// handleWatchDelete is DELETE /files/watch/{watcher_id}.
func (s *Server) handleWatchDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.watches.Remove(r.PathValue("watcher_id")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleWatchStream is GET /files/watch/{watcher_id}/stream[?last_event_id=N].
func (s *Server) handleWatchStream(w http.ResponseWriter, r *http.Request) {
	wt, err := s.watches.Get(r.PathValue("watcher_id"))
	if err != nil {
		writeError(w, err)
		return
	}
	s.streamWatch(w, r, wt)
}

// handleWatchOnce is GET /files/watch?path=&recursive=&username=: a
// watcher that lives as long as this stream.
func (s *Server) handleWatchOnce(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := envdapi.WatchRequest{Path: q.Get("path"), Username: q.Get("username")}
	if v := q.Get("recursive"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, badInput("invalid recursive %q", v))
			return
		}
		req.Recursive = b
	}
	wt, err := s.startWatch(req)
	if err != nil {
		writeError(w, err)
		return
	}
	defer s.watches.Remove(wt.ID())
	s.streamWatch(w, r, wt)
}

// streamWatch sends "start" {watcher_id} once the directory is watched,
// then the watcher's buffered events after last_event_id (all by default)
// and live ones, until the client leaves or the watcher is deleted.
func (s *Server) streamWatch(w http.ResponseWriter, r *http.Request, wt *watch.Watcher) {
	v := r.URL.Query().Get("last_event_id")
	if v == "" {
		v = r.Header.Get("Last-Event-ID")
	}
	var cursor uint64
	if v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, badInput("invalid last_event_id %q", v))
			return
		}
		cursor = n
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, errors.New("streaming unsupported by the connection"))
		return
	}
	defer wt.Subscribe()()
	sse := newSSEWriter(w, flusher)
	sse.header()
	if !sse.event("start", envdapi.WatchEvent{Type: "start", WatcherID: wt.ID(), Path: wt.Root(), Timestamp: timestamp(time.Now())}) {
		return
	}
	followWatch(r.Context(), sse, wt, cursor)
}

func followWatch(ctx context.Context, sse *sseWriter, wt *watch.Watcher, cursor uint64) {
	keepalive := time.NewTicker(watchKeepalive)
	defer keepalive.Stop()
	for {
		events, lost, changed, closed := wt.Read(cursor, 256)
		if lost && !sse.event("gap", envdapi.WatchEvent{Type: watch.Gap, Timestamp: timestamp(time.Now()),
			Error: "events were dropped from the watcher's buffer before they were delivered"}) {
			return
		}
		for _, e := range events {
			cursor = e.ID
			ev := envdapi.WatchEvent{Type: e.Type, Path: e.Path, Name: e.Name, IsDir: e.IsDir, Timestamp: timestamp(e.Time), EventID: e.ID, Error: e.Err}
			if !sse.eventID(e.Type, e.ID, ev) {
				return
			}
		}
		if len(events) > 0 {
			continue
		}
		if closed {
			return
		}
		select {
		case <-changed:
		case <-keepalive.C:
			if !sse.comment("keepalive") {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

func timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
