package envd

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// sseWriter writes server-sent events, flushing after each.
type sseWriter struct {
	w       http.ResponseWriter
	flusher http.Flusher
	failed  bool
}

func newSSEWriter(w http.ResponseWriter, f http.Flusher) *sseWriter {
	return &sseWriter{w: w, flusher: f}
}

func (s *sseWriter) header() {
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
	s.flusher.Flush()
}

// event writes one event; it reports false once a write failed.
func (s *sseWriter) event(name string, data any) bool {
	if s.failed {
		return false
	}
	b, err := json.Marshal(data)
	if err != nil {
		s.failed = true
		return false
	}
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", name, b); err != nil {
		s.failed = true
		return false
	}
	s.flusher.Flush()
	return true
}

// eventID writes one event with an SSE id (the entry id it carries).
func (s *sseWriter) eventID(name string, id uint64, data any) bool {
	if s.failed {
		return false
	}
	b, err := json.Marshal(data)
	if err != nil {
		s.failed = true
		return false
	}
	if _, err := fmt.Fprintf(s.w, "id: %d\nevent: %s\ndata: %s\n\n", id, name, b); err != nil {
		s.failed = true
		return false
	}
	s.flusher.Flush()
	return true
}

// comment writes an SSE comment line (ignored by clients), e.g. a keepalive.
func (s *sseWriter) comment(text string) bool {
	if s.failed {
		return false
	}
	if _, err := fmt.Fprintf(s.w, ": %s\n\n", text); err != nil {
		s.failed = true
		return false
	}
	s.flusher.Flush()
	return true
}
