package envd

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/declaw/declaw/internal/envd/process"
)

// followBatch is how many entries are taken from a Log at once.
const followBatch = 64

// followLog delivers the entries of log after cursor to emit, in order,
// until the log is closed (it returns true) or ctx ends or emit or gap
// fails (false). Before entries it calls gap once for each stretch of
// output after the reader's position that the log's cap dropped, so a
// reader never skips output silently. Without a hold it never holds up
// the producer: a slow reader only falls behind (and then gets a gap).
// With one (the stream that started the process, see process.Hold), it
// advances the hold past each entry once emit delivered it, so the
// producer waits for this reader instead of dropping output.
func followLog(ctx context.Context, log *process.Log, cursor uint64, hold *process.Hold, emit func(process.Entry) bool, gap func(after uint64) bool) bool {
	var reported uint64
	for {
		entries, dropped, changed, closed := log.Read(cursor, followBatch)
		if dropped > cursor && dropped > reported {
			reported = dropped
			if !gap(cursor) {
				return false
			}
		}
		for _, e := range entries {
			cursor = e.ID
			if !emit(e) {
				return false
			}
			hold.Advance(e.ID)
		}
		if len(entries) > 0 {
			continue
		}
		if closed {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// gapMessage explains a "gap" event.
func gapMessage(after uint64) string {
	return fmt.Sprintf("output after entry %d was dropped: the process wrote more than the per-stream buffer holds before it was delivered", after)
}

// resumeCursor reads where a stream resumes: ?last_entry_id=N, else the
// SSE Last-Event-ID header. ok is false when neither is given.
func resumeCursor(r *http.Request) (cursor uint64, ok bool, err error) {
	v := r.URL.Query().Get("last_entry_id")
	if v == "" {
		v = r.Header.Get("Last-Event-ID")
	}
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, badInput("invalid last_entry_id %q", v)
	}
	return n, true, nil
}

// waitDone waits until h's result is final; false if ctx ended first.
func waitDone(ctx context.Context, h *process.Handler) bool {
	select {
	case <-h.Done():
		return true
	case <-ctx.Done():
		return false
	}
}
