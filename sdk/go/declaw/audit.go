package declaw

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// AuditEvent is one event of a sandbox's audit trail.
type AuditEvent struct {
	ID        int64           `json:"id"`
	SandboxID string          `json:"sandbox_id"`
	Timestamp time.Time       `json:"timestamp"`
	Type      string          `json:"type"` // e.g. sandbox.created, egress.blocked
	Data      json.RawMessage `json:"data,omitempty"`

	// Raw is the event as the server sent it.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes the fields and keeps the raw object in Raw.
func (e *AuditEvent) UnmarshalJSON(b []byte) error {
	type plain AuditEvent
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*e = AuditEvent(p)
	e.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// AuditQuery selects audit events; zero values select all.
type AuditQuery struct {
	Types  []string // a type also matches its sub-types ("sandbox" matches "sandbox.created")
	Since  time.Time
	Until  time.Time
	Limit  int    // page size, 1..1000; 0: the server's default (100)
	Cursor string // a NextCursor, or AuditEvent.Cursor of the last event seen
}

// AuditPage is one page of events, oldest first.
type AuditPage struct {
	Events     []AuditEvent `json:"events"`
	NextCursor string       `json:"next_cursor"` // set when the page is full
}

// Cursor returns the cursor that continues after e (the server's cursor
// is the id of the last event returned).
func (e AuditEvent) Cursor() string { return strconv.FormatInt(e.ID, 10) }

// Audit returns one page of a sandbox's audit trail (killed sandboxes
// included).
func (c *Client) Audit(ctx context.Context, id string, q AuditQuery) (*AuditPage, error) {
	var kv []string
	for _, t := range q.Types {
		kv = append(kv, "type", t)
	}
	if !q.Since.IsZero() {
		kv = append(kv, "since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		kv = append(kv, "until", q.Until.UTC().Format(time.RFC3339Nano))
	}
	if q.Limit > 0 {
		kv = append(kv, "limit", strconv.Itoa(q.Limit))
	}
	kv = append(kv, "cursor", q.Cursor)
	var raw json.RawMessage
	if err := c.call(ctx, request{method: http.MethodGet, path: sandboxPath(id, "/audit"), query: query(kv...)}, &raw); err != nil {
		return nil, err
	}
	var page struct {
		Events     []AuditEvent `json:"events"`
		NextCursor *string      `json:"next_cursor"`
	}
	var err error
	if len(raw) > 0 && raw[0] == '[' {
		err = json.Unmarshal(raw, &page.Events)
	} else {
		err = json.Unmarshal(raw, &page)
	}
	if err != nil {
		return nil, fmt.Errorf("GET /audit: decode answer: %w", err)
	}
	out := &AuditPage{Events: page.Events}
	if out.Events == nil {
		out.Events = []AuditEvent{}
	}
	if page.NextCursor != nil {
		out.NextCursor = *page.NextCursor
	}
	return out, nil
}
