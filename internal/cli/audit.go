package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/declaw/declaw/sdk/go/declaw"
)

// runAudit runs "declaw audit ID": a sandbox's audit trail, oldest first;
// with --follow it then polls for new events until interrupted.
func runAudit(e *env, globals, args []string) int {
	c := e.newClientCmd("declaw audit", globals)
	c.fs.Usage = func() {
		fmt.Fprint(e.stderr, "Usage: declaw audit ID [--type T]... [--since TIME] [--until TIME] [--limit N] [--follow]\n\nFlags:\n")
		c.fs.PrintDefaults()
	}
	var types listFlag
	c.fs.Var(&types, "type", "event types, comma-separated; a type matches its sub-types (sandbox matches sandbox.created); repeatable")
	since := c.fs.String("since", "", "only events at or after `TIME`: RFC 3339, unix seconds, or a duration ago (10m)")
	until := c.fs.String("until", "", "only events at or before `TIME` (as --since)")
	limit := c.fs.Int("limit", 0, "print at most N events (0: all); with --follow, the page size of each poll")
	follow := c.fs.Bool("follow", false, "keep polling for new events until interrupted")
	c.fs.BoolVar(follow, "f", false, "same as --follow")
	interval := c.fs.Duration("interval", time.Second, "poll interval of --follow")
	pos, _, _, ok := c.parse(args, 1, 1)
	if !ok {
		return 2
	}
	now := time.Now()
	q := declaw.AuditQuery{Types: types}
	var err error
	if q.Since, err = parseWhen(*since, now); err != nil {
		c.usagef("--since: %v", err)
		return 2
	}
	if q.Until, err = parseWhen(*until, now); err != nil {
		c.usagef("--until: %v", err)
		return 2
	}
	if *limit < 0 || *limit > 1000 && *follow {
		c.usagef("--limit must be >= 0 (at most 1000 with --follow)")
		return 2
	}
	if *interval <= 0 {
		c.usagef("--interval must be positive")
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	if *follow {
		q.Limit = *limit
		return c.auditFollow(ctx, cl, pos[0], q, *interval)
	}
	return c.auditList(ctx, cl, pos[0], q, *limit)
}

// auditList prints the events matching q, at most limit (0: all), paging
// through the trail.
func (c *clientCmd) auditList(ctx context.Context, cl *declaw.Client, id string, q declaw.AuditQuery, limit int) int {
	var all []declaw.AuditEvent
	for {
		q.Limit = 0
		if limit > 0 {
			q.Limit = min(limit-len(all), 1000)
		}
		page, err := cl.Audit(ctx, id, q)
		if err != nil {
			return c.fail(err)
		}
		all = append(all, page.Events...)
		if page.NextCursor == "" || len(page.Events) == 0 || limit > 0 && len(all) >= limit {
			break
		}
		q.Cursor = page.NextCursor
	}
	if c.opts.json {
		raws := make([]json.RawMessage, len(all))
		for i, ev := range all {
			raws[i] = ev.Raw
		}
		c.printJSON(raws)
		return 0
	}
	for _, ev := range all {
		c.printEvent(ev)
	}
	return 0
}

// auditFollow prints the events matching q, then polls every interval for
// newer ones (continuing from the last event seen) until ctx ends.
func (c *clientCmd) auditFollow(ctx context.Context, cl *declaw.Client, id string, q declaw.AuditQuery, interval time.Duration) int {
	for {
		page, err := cl.Audit(ctx, id, q)
		if err != nil {
			if ctx.Err() != nil {
				return 0
			}
			return c.fail(err)
		}
		for _, ev := range page.Events {
			if c.opts.json {
				c.printRaw(ev.Raw) // one event per line
			} else {
				c.printEvent(ev)
			}
		}
		if n := len(page.Events); n > 0 {
			q.Cursor = page.NextCursor
			if q.Cursor == "" {
				q.Cursor = page.Events[n-1].Cursor()
			}
		}
		if page.NextCursor != "" {
			continue // a full page: there may be more right now
		}
		if !sleepCtx(ctx, interval) {
			return 0
		}
	}
}

// printEvent prints one event as "TIME  TYPE  DATA".
func (c *clientCmd) printEvent(ev declaw.AuditEvent) {
	data := ""
	if len(ev.Data) > 0 && string(ev.Data) != "null" {
		var b bytes.Buffer
		if err := json.Compact(&b, ev.Data); err == nil {
			data = b.String()
		} else {
			data = string(ev.Data)
		}
	}
	fmt.Fprintf(c.e.stdout, "%s  %-20s  %s\n", ev.Timestamp.UTC().Format("2006-01-02T15:04:05.000Z07:00"), ev.Type, data)
}

// parseWhen parses an RFC 3339 time, unix seconds, or a duration before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Unix(0, int64(secs*1e9)), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time, unix seconds or a duration", s)
}

// sleepCtx sleeps for d; it returns false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
