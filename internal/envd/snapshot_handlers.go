package envd

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/declaw/declaw/internal/envd/snapshot"
)

// handleSnapshotGet serves GET /snapshot[?since=UNIX_NANOS]: a gzipped tar
// of what changed in the sandbox's filesystem since then, by default since
// a second before envd started. The default is read on the sandbox's own
// clock, like the file times it is compared with: a microVM's clock may lag
// the host's by its boot time. Server use only (not forwarded from the
// public API).
func (s *Server) handleSnapshotGet(w http.ResponseWriter, r *http.Request) {
	since := s.started.Add(-time.Second)
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			writeError(w, badInput("since must be unix nanoseconds"))
			return
		}
		since = time.Unix(0, n)
	}
	w.Header().Set("Content-Type", "application/gzip")
	if err := snapshot.Write(w, s.cfg.FSRoot, since, snapshot.Skipped); err != nil {
		// Headers are gone: break the stream so the server sees a failure.
		s.cfg.Logf("snapshot: %v", err)
		panic(http.ErrAbortHandler)
	}
}

// handleSnapshotPut serves PUT /snapshot: extract a snapshot taken by
// GET /snapshot into this sandbox's filesystem.
func (s *Server) handleSnapshotPut(w http.ResponseWriter, r *http.Request) {
	err := snapshot.Restore(r.Body, s.cfg.FSRoot, snapshot.Skipped)
	if errors.Is(err, snapshot.ErrPartial) {
		s.cfg.Logf("snapshot: %v", err)
		err = nil
	}
	if err != nil {
		if errors.Is(err, snapshot.ErrBadArchive) {
			err = badInput("%v", err)
		}
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
