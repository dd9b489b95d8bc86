package declaw

import (
	"context"
	"iter"
)

// AllSandboxes yields the sandboxes q selects, page after page (q.Limit
// is the page size), until the last page or an error, which is yielded
// once and ends the sequence.
func (c *Client) AllSandboxes(ctx context.Context, q ListQuery) iter.Seq2[Sandbox, error] {
	return func(yield func(Sandbox, error) bool) {
		for {
			page, err := c.ListSandboxes(ctx, q)
			if err != nil {
				yield(Sandbox{}, err)
				return
			}
			for _, sb := range page.Sandboxes {
				if !yield(sb, nil) {
					return
				}
			}
			if page.NextToken == "" || page.NextToken == q.NextToken {
				return
			}
			q.NextToken = page.NextToken
		}
	}
}

// AllAuditEvents yields a sandbox's audit events that q selects, oldest
// first, page after page, until the last page or an error, which is
// yielded once and ends the sequence.
func (c *Client) AllAuditEvents(ctx context.Context, id string, q AuditQuery) iter.Seq2[AuditEvent, error] {
	return func(yield func(AuditEvent, error) bool) {
		for {
			page, err := c.Audit(ctx, id, q)
			if err != nil {
				yield(AuditEvent{}, err)
				return
			}
			for _, ev := range page.Events {
				if !yield(ev, nil) {
					return
				}
			}
			if page.NextCursor == "" || page.NextCursor == q.Cursor {
				return
			}
			q.Cursor = page.NextCursor
		}
	}
}
