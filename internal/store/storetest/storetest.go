// Package storetest is the conformance suite every store.Store backend
// runs (sqlite, postgres): one contract, one set of tests, so a second
// backend behaves like the first down to ordering, cursors and errors.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/store"
)

// Opener returns a new, empty store for one test or benchmark; the suite
// closes it.
type Opener func(tb testing.TB) store.Store

// Run runs the whole suite against the stores open returns.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"SandboxRoundTrip", testSandboxRoundTrip},
		{"SandboxErrors", testSandboxErrors},
		{"UpdateSandbox", testUpdateSandbox},
		{"UpdateSandboxConcurrent", testUpdateSandboxConcurrent},
		{"ListSandboxes", testListSandboxes},
		{"ListSandboxesMetadata", testListSandboxesMetadata},
		{"ListSandboxesPaging", testListSandboxesPaging},
		{"Idempotency", testIdempotency},
		{"IdempotencyConcurrent", testIdempotencyConcurrent},
		{"APIKeys", testAPIKeys},
		{"Teams", testTeams},
		{"TeamAPIKeys", testTeamAPIKeys},
		{"SandboxTeams", testSandboxTeams},
		{"Audit", testAudit},
		{"AuditTypes", testAuditTypes},
		{"AuditPaging", testAuditPaging},
		{"AuditConcurrentAppend", testAuditConcurrentAppend},
		{"PruneAudit", testPruneAudit},
		{"Snapshots", testSnapshots},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// base is a fixed time with nanoseconds, so precision loss shows.
var base = time.Date(2026, 11, 20, 10, 0, 0, 123456789, time.UTC)

// sameTime reports whether got is want to the microsecond (the contract's
// precision) and in UTC (or both are zero).
func sameTime(got, want time.Time) bool {
	if want.IsZero() || got.IsZero() {
		return want.IsZero() && got.IsZero()
	}
	d := got.Sub(want)
	return d > -time.Microsecond && d < time.Microsecond && got.Location() == time.UTC
}

func ids(sbs []*store.Sandbox) []string {
	out := []string{}
	for _, sb := range sbs {
		out = append(out, sb.ID)
	}
	return out
}

func mustCreate(t *testing.T, s store.Store, sb *store.Sandbox) {
	t.Helper()
	if err := s.CreateSandbox(t.Context(), sb); err != nil {
		t.Fatalf("CreateSandbox(%s): %v", sb.ID, err)
	}
}

// equalSandbox compares two sandboxes field by field; "" when equal.
func diffSandbox(got, want *store.Sandbox) string {
	switch {
	case got.ID != want.ID || got.TemplateID != want.TemplateID || got.State != want.State ||
		got.Timeout != want.Timeout || got.GuestIP != want.GuestIP || got.Runtime != want.Runtime:
		return fmt.Sprintf("scalars: got %+v, want %+v", got, want)
	case !maps.Equal(got.Metadata, want.Metadata) || len(got.Metadata) != len(want.Metadata):
		return fmt.Sprintf("metadata: got %q, want %q", got.Metadata, want.Metadata)
	case !maps.Equal(got.Envs, want.Envs):
		return fmt.Sprintf("envs: got %q, want %q", got.Envs, want.Envs)
	case !sameTime(got.StartedAt, want.StartedAt) || !sameTime(got.EndAt, want.EndAt) || !sameTime(got.KilledAt, want.KilledAt):
		return fmt.Sprintf("times: got %v/%v/%v, want %v/%v/%v", got.StartedAt, got.EndAt, got.KilledAt, want.StartedAt, want.EndAt, want.KilledAt)
	case string(got.Security) != string(want.Security) || string(got.Network) != string(want.Network) || string(got.Lifecycle) != string(want.Lifecycle) ||
		string(got.Resources) != string(want.Resources):
		return fmt.Sprintf("json: got %s|%s|%s|%s, want %s|%s|%s|%s", got.Security, got.Network, got.Lifecycle, got.Resources, want.Security, want.Network, want.Lifecycle, want.Resources)
	}
	return ""
}

func testSandboxRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	full := &store.Sandbox{
		ID: "sbx-full", TemplateID: "python", State: "running",
		Metadata: map[string]string{"owner": "alice", "a.b": "dotted", `q"uote`: `va'l"ue`, "ünï": "çødé ✓", "nul": "a\x00b", "empty": ""},
		Envs:     map[string]string{"FOO": "bar", "TOKEN": "***", "MULTI": "line1\nline2"},
		Timeout:  300, StartedAt: base, EndAt: base.Add(300 * time.Second),
		// Spacing and key order are kept: the API returns these as stored.
		Security:  json.RawMessage(`{"pii": {"enabled":true},  "a":1}`),
		Network:   json.RawMessage(`{"allow_out":["example.com"],"deny_out":["0.0.0.0/0"]}`),
		Lifecycle: json.RawMessage(`{"on_timeout":"kill"}`),
		Resources: json.RawMessage(`{"vcpus":2,"memory_mb":512,"oom_kills":1}`),
		GuestIP:   "10.200.0.2", Runtime: "gvisor",
	}
	minimal := &store.Sandbox{ID: "sbx-min", TemplateID: "base", State: "killed", StartedAt: base.Add(time.Minute), KilledAt: base.Add(2 * time.Minute)}
	for _, sb := range []*store.Sandbox{full, minimal} {
		mustCreate(t, s, sb)
		got, err := s.GetSandbox(ctx, sb.ID)
		if err != nil {
			t.Fatalf("GetSandbox(%s): %v", sb.ID, err)
		}
		if d := diffSandbox(got, sb); d != "" {
			t.Errorf("GetSandbox(%s) differs from what was created: %s", sb.ID, d)
		}
	}
	// A sandbox created without maps comes back with empty, usable ones.
	got, _ := s.GetSandbox(ctx, "sbx-min")
	if got == nil || got.Metadata == nil || got.Envs == nil || got.Security != nil || !got.EndAt.IsZero() {
		t.Errorf("GetSandbox(sbx-min) = %+v; want non-nil empty maps, nil JSON, zero EndAt", got)
	}
}

func testSandboxErrors(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreate(t, s, &store.Sandbox{ID: "sbx-a", TemplateID: "base", State: "running", StartedAt: base})
	err := s.CreateSandbox(ctx, &store.Sandbox{ID: "sbx-a", TemplateID: "other", State: "paused", StartedAt: base})
	if !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateSandbox(duplicate) = %v; want ErrExists", err)
	}
	if got, _ := s.GetSandbox(ctx, "sbx-a"); got == nil || got.TemplateID != "base" {
		t.Errorf("after a refused duplicate, GetSandbox(sbx-a) = %+v; want the first one", got)
	}
	for _, id := range []string{"nope", "", "sbx-a' OR '1'='1", "SBX-A"} {
		if _, err := s.GetSandbox(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetSandbox(%q) = %v; want ErrNotFound", id, err)
		}
	}
	called := false
	_, err = s.UpdateSandbox(ctx, "nope", func(*store.Sandbox) error { called = true; return nil })
	if !errors.Is(err, store.ErrNotFound) || called {
		t.Errorf("UpdateSandbox(nope) = %v (fn called: %v); want ErrNotFound without calling fn", err, called)
	}
}

func testUpdateSandbox(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreate(t, s, &store.Sandbox{ID: "sbx-u", TemplateID: "base", State: "running", StartedAt: base, Metadata: map[string]string{"k": "v"}})
	want := &store.Sandbox{ID: "sbx-u", TemplateID: "python", State: "paused", StartedAt: base, EndAt: base.Add(time.Hour),
		KilledAt: base.Add(2 * time.Hour), Timeout: 3600, Metadata: map[string]string{"k2": "v2"}, Envs: map[string]string{"E": "1"},
		Security: json.RawMessage(`{"x":1}`), Network: json.RawMessage(`{}`), Lifecycle: json.RawMessage(`[]`), GuestIP: "10.0.0.9", Runtime: "microvm",
		Resources: json.RawMessage(`{"end_reason":"oom"}`)}
	got, err := s.UpdateSandbox(ctx, "sbx-u", func(sb *store.Sandbox) error {
		if sb.Metadata["k"] != "v" {
			return fmt.Errorf("fn got metadata %v; want k=v", sb.Metadata)
		}
		id := sb.ID
		*sb = *want
		sb.ID = id
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateSandbox: %v", err)
	}
	if d := diffSandbox(got, want); d != "" {
		t.Errorf("UpdateSandbox returned %s", d)
	}
	stored, _ := s.GetSandbox(ctx, "sbx-u")
	if stored == nil || diffSandbox(stored, want) != "" {
		t.Errorf("after UpdateSandbox, GetSandbox differs: %s", diffSandbox(stored, want))
	}
	// An error from fn aborts: nothing is written.
	boom := errors.New("boom")
	_, err = s.UpdateSandbox(ctx, "sbx-u", func(sb *store.Sandbox) error { sb.State = "killed"; return boom })
	if !errors.Is(err, boom) {
		t.Errorf("UpdateSandbox(fn fails) = %v; want fn's error", err)
	}
	if stored, _ := s.GetSandbox(ctx, "sbx-u"); stored == nil || stored.State != "paused" {
		t.Errorf("after a failed UpdateSandbox, state = %+v; want paused", stored)
	}
	// Clearing optional fields clears them.
	got, err = s.UpdateSandbox(ctx, "sbx-u", func(sb *store.Sandbox) error {
		sb.Security, sb.Metadata, sb.KilledAt = nil, nil, time.Time{}
		return nil
	})
	if err != nil || got.Security != nil || len(got.Metadata) != 0 || !got.KilledAt.IsZero() {
		t.Errorf("UpdateSandbox(clear) = %+v, %v", got, err)
	}
	if stored, _ := s.GetSandbox(ctx, "sbx-u"); stored == nil || stored.Security != nil || len(stored.Metadata) != 0 || !stored.KilledAt.IsZero() {
		t.Errorf("after clearing, GetSandbox = %+v", stored)
	}
}

// testUpdateSandboxConcurrent checks that read-modify-write is atomic:
// concurrent increments all land.
func testUpdateSandboxConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreate(t, s, &store.Sandbox{ID: "sbx-c", TemplateID: "base", State: "running", StartedAt: base})
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := s.UpdateSandbox(ctx, "sbx-c", func(sb *store.Sandbox) error { sb.Timeout++; return nil })
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent UpdateSandbox: %v", err)
		}
	}
	if got, _ := s.GetSandbox(ctx, "sbx-c"); got == nil || got.Timeout != n {
		t.Errorf("after %d concurrent increments, Timeout = %+v; want %d", n, got, n)
	}
}

func testListSandboxes(t *testing.T, s store.Store) {
	ctx := t.Context()
	states := []string{"running", "killed", "running", "paused", "running"}
	for i, st := range states {
		mustCreate(t, s, &store.Sandbox{ID: fmt.Sprintf("sbx-%d", i), TemplateID: "base", State: st, StartedAt: base})
	}
	for _, tc := range []struct {
		states []string
		want   []string
	}{
		{nil, []string{"sbx-0", "sbx-1", "sbx-2", "sbx-3", "sbx-4"}},
		{[]string{"running"}, []string{"sbx-0", "sbx-2", "sbx-4"}},
		{[]string{"paused", "killed"}, []string{"sbx-1", "sbx-3"}},
		{[]string{"nosuch"}, []string{}},
	} {
		got, next, err := s.ListSandboxes(ctx, store.SandboxFilter{States: tc.states})
		if err != nil || !slices.Equal(ids(got), tc.want) || next != "" {
			t.Errorf("ListSandboxes(states %v) = %v next %q, %v; want %v in creation order, no cursor", tc.states, ids(got), next, err, tc.want)
		}
	}
}

func testListSandboxesMetadata(t *testing.T, s store.Store) {
	ctx := t.Context()
	metas := []map[string]string{
		{"team": "x", "n": "0", "a.b": "1", `q"k`: "v"},
		{"team": "x", "n": "1", "nul": "a\x00b", "$.n": "0"},
		{"team": "y", "n": "2", "ünï": "çødé", "pct": "%"},
		nil,
		// Values that spell out other pairs must not match them.
		{"x": `a","team":"x`, "y": `{"team":"x"}`, "z": `\",\"team\":\"x\"}`},
	}
	for i, m := range metas {
		mustCreate(t, s, &store.Sandbox{ID: fmt.Sprintf("sbx-m%d", i), TemplateID: "base", State: "running", StartedAt: base, Metadata: m})
	}
	for _, tc := range []struct {
		meta map[string]string
		want []string
	}{
		{map[string]string{"team": "x"}, []string{"sbx-m0", "sbx-m1"}},
		{map[string]string{"team": "x", "n": "1"}, []string{"sbx-m1"}},
		{map[string]string{"team": "y", "n": "1"}, []string{}},
		{map[string]string{"a.b": "1"}, []string{"sbx-m0"}},
		{map[string]string{`q"k`: "v"}, []string{"sbx-m0"}},
		{map[string]string{"$.n": "0"}, []string{"sbx-m1"}}, // a key, not a JSON path
		{map[string]string{"nul": "a\x00b"}, []string{"sbx-m1"}},
		{map[string]string{"ünï": "çødé"}, []string{"sbx-m2"}},
		{map[string]string{"pct": "%"}, []string{"sbx-m2"}},
		{map[string]string{"pct": "_"}, []string{}},  // no LIKE wildcards
		{map[string]string{"team": "X"}, []string{}}, // case matters
		{map[string]string{"missing": ""}, []string{}},
	} {
		got, _, err := s.ListSandboxes(ctx, store.SandboxFilter{Metadata: tc.meta})
		if err != nil || !slices.Equal(ids(got), tc.want) {
			t.Errorf("ListSandboxes(metadata %q) = %v, %v; want %v", tc.meta, ids(got), err, tc.want)
		}
	}
	got, _, err := s.ListSandboxes(ctx, store.SandboxFilter{States: []string{"running"}, Metadata: map[string]string{"team": "y"}})
	if err != nil || !slices.Equal(ids(got), []string{"sbx-m2"}) {
		t.Errorf("ListSandboxes(running, team=y) = %v, %v; want [sbx-m2]", ids(got), err)
	}
}

func testListSandboxesPaging(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Ids out of lexical order: pages follow creation, not id order.
	var want []string
	for i := range store.DefaultLimit + 5 {
		id := fmt.Sprintf("sbx-%03d", (i*37)%1000)
		want = append(want, id)
		mustCreate(t, s, &store.Sandbox{ID: id, TemplateID: "base", State: "running", StartedAt: base})
	}
	got, next, err := s.ListSandboxes(ctx, store.SandboxFilter{})
	if err != nil || len(got) != store.DefaultLimit || next != want[store.DefaultLimit-1] {
		t.Fatalf("ListSandboxes(no limit) = %d sandboxes, next %q, %v; want %d and next %q", len(got), next, err, store.DefaultLimit, want[store.DefaultLimit-1])
	}
	var all []string
	after := ""
	for page := 0; ; page++ {
		got, next, err := s.ListSandboxes(ctx, store.SandboxFilter{Limit: 7, After: after})
		if err != nil {
			t.Fatalf("ListSandboxes(page %d): %v", page, err)
		}
		all = append(all, ids(got)...)
		if next == "" {
			break
		}
		if len(got) != 7 || next != got[len(got)-1].ID || page > 100 {
			t.Fatalf("page %d = %d sandboxes, next %q; want 7, next = the last id", page, len(got), next)
		}
		after = next
	}
	if !slices.Equal(all, want) {
		t.Errorf("paging by 7 gave %d ids %v...; want the %d in creation order", len(all), all[:min(5, len(all))], len(want))
	}
	// An exactly full last page has no cursor.
	got, next, err = s.ListSandboxes(ctx, store.SandboxFilter{Limit: 5, After: want[len(want)-6]})
	if err != nil || len(got) != 5 || next != "" {
		t.Errorf("last full page = %v next %q, %v; want 5 and no cursor", ids(got), next, err)
	}
	if got, _, err := s.ListSandboxes(ctx, store.SandboxFilter{After: "unknown"}); err != nil || len(got) != 0 {
		t.Errorf("ListSandboxes(After unknown) = %v, %v; want none", ids(got), err)
	}
}

func testIdempotency(t *testing.T, s store.Store) {
	ctx := t.Context()
	before := time.Now().Add(-time.Second)
	rec, err := s.BeginIdempotent(ctx, store.Idempotency{Key: "k", BodyHash: "h1"})
	if err != nil || rec.Key != "k" || rec.BodyHash != "h1" || rec.Response != nil {
		t.Fatalf("BeginIdempotent = %+v, %v", rec, err)
	}
	rec, err = s.BeginIdempotent(ctx, store.Idempotency{Key: "k", BodyHash: "h2"})
	if !errors.Is(err, store.ErrExists) || rec == nil || rec.BodyHash != "h1" || rec.Response != nil || rec.SandboxID != "" {
		t.Fatalf("second BeginIdempotent = %+v, %v; want the in-progress record h1 and ErrExists", rec, err)
	}
	if rec.CreatedAt.Before(before) || rec.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("CreatedAt = %v; want about now", rec.CreatedAt)
	}
	resp := []byte(`{"sandboxID":"sbx-1","bytes":"` + "\x01\xff" + `"}`)
	if err := s.FinishIdempotent(ctx, "k", "sbx-1", resp); err != nil {
		t.Fatalf("FinishIdempotent: %v", err)
	}
	rec, err = s.BeginIdempotent(ctx, store.Idempotency{Key: "k", BodyHash: "h1"})
	if !errors.Is(err, store.ErrExists) || rec.SandboxID != "sbx-1" || string(rec.Response) != string(resp) {
		t.Fatalf("after FinishIdempotent = %+v, %v; want sbx-1 and the response byte for byte", rec, err)
	}
	if err := s.FinishIdempotent(ctx, "k", "", nil); err != nil {
		t.Fatalf("FinishIdempotent(nil): %v", err)
	}
	if _, err := s.BeginIdempotent(ctx, store.Idempotency{Key: "k", BodyHash: "h3"}); err != nil {
		t.Fatalf("BeginIdempotent after a forgotten key: %v", err)
	}
	// Keys are compared exactly.
	for _, k := range []string{"K", "k ", "ключ-✓"} {
		if _, err := s.BeginIdempotent(ctx, store.Idempotency{Key: k, BodyHash: "h"}); err != nil {
			t.Errorf("BeginIdempotent(%q): %v; want a new record", k, err)
		}
	}
	if err := s.FinishIdempotent(ctx, "never-begun", "sbx", []byte("{}")); err != nil {
		t.Errorf("FinishIdempotent(unknown key) = %v; want nil", err)
	}
}

func testIdempotencyConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	const n = 10
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		won     int
		failure error
	)
	for i := range n {
		wg.Go(func() {
			_, err := s.BeginIdempotent(ctx, store.Idempotency{Key: "race", BodyHash: fmt.Sprint(i)})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case !errors.Is(err, store.ErrExists):
				failure = err
			}
		})
	}
	wg.Wait()
	if won != 1 || failure != nil {
		t.Errorf("%d concurrent BeginIdempotent: %d won, error %v; want exactly one winner, the rest ErrExists", n, won, failure)
	}
}

func testAPIKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	if n, err := s.CountAPIKeys(ctx); err != nil || n != 0 {
		t.Fatalf("CountAPIKeys(empty) = %d, %v", n, err)
	}
	for _, k := range []struct{ hash, name string }{{"hash1", "configured"}, {"hash2", "generated"}, {"hash1", "again"}} {
		if err := s.AddAPIKey(ctx, k.hash, k.name); err != nil {
			t.Fatalf("AddAPIKey(%s): %v", k.hash, err)
		}
	}
	if n, err := s.CountAPIKeys(ctx); err != nil || n != 2 {
		t.Errorf("CountAPIKeys = %d, %v; want 2 (adding a key twice keeps one)", n, err)
	}
	for hash, want := range map[string]bool{"hash1": true, "hash2": true, "hash3": false, "HASH1": false, "": false, "hash1' OR '1'='1": false} {
		if ok, err := s.HasAPIKey(ctx, hash); err != nil || ok != want {
			t.Errorf("HasAPIKey(%q) = %v, %v; want %v", hash, ok, err, want)
		}
	}
}

func appendAudit(t *testing.T, s store.Store, evs ...store.AuditEvent) {
	t.Helper()
	if err := s.AppendAudit(t.Context(), evs...); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
}

func types(evs []store.AuditEvent) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func testAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	if err := s.AppendAudit(ctx); err != nil {
		t.Fatalf("AppendAudit(nothing): %v", err)
	}
	now := time.Now()
	t2, t1 := now.Add(-2*time.Hour), now.Add(-time.Hour) // t1 has nanoseconds
	appendAudit(t, s,
		store.AuditEvent{SandboxID: "a", Time: t2, Type: "sandbox.created", Data: json.RawMessage(`{"template": "python",  "n":1}`)},
		store.AuditEvent{SandboxID: "a", Time: t1, Type: "egress.blocked", Data: json.RawMessage(`{"dst":"1.1.1.1:80"}`)},
		store.AuditEvent{SandboxID: "b", Type: "sandbox.created"})
	all, err := s.ListAudit(ctx, store.AuditQuery{})
	if err != nil || len(all) != 3 {
		t.Fatalf("ListAudit(all) = %+v, %v; want 3 events", all, err)
	}
	if !slices.Equal(types(all), []string{"sandbox.created", "egress.blocked", "sandbox.created"}) || all[0].ID >= all[1].ID || all[1].ID >= all[2].ID {
		t.Errorf("ListAudit(all) = %+v; want append order with growing ids", all)
	}
	if e := all[0]; e.SandboxID != "a" || !sameTime(e.Time, t2) || string(e.Data) != `{"template": "python",  "n":1}` {
		t.Errorf("event 0 = %+v; want sandbox a at %v with its data byte for byte", e, t2)
	}
	if e := all[2]; e.Data != nil || !e.Time.After(t1) || time.Since(e.Time) > time.Minute {
		t.Errorf("event without time or data = %+v; want time about now, nil data", e)
	}
	for _, tc := range []struct {
		q    store.AuditQuery
		want []string
	}{
		{store.AuditQuery{SandboxID: "a"}, []string{"sandbox.created", "egress.blocked"}},
		{store.AuditQuery{SandboxID: "c"}, []string{}},
		{store.AuditQuery{SandboxID: "a", Since: t1}, []string{"egress.blocked"}},
		{store.AuditQuery{Since: t1.Add(time.Millisecond)}, []string{"sandbox.created"}},
		{store.AuditQuery{Until: t1}, []string{"sandbox.created", "egress.blocked"}},
		{store.AuditQuery{Until: t1.Add(-time.Millisecond)}, []string{"sandbox.created"}},
		{store.AuditQuery{Since: t2.Add(time.Second), Until: t1.Add(time.Second)}, []string{"egress.blocked"}},
		{store.AuditQuery{Limit: 1}, []string{"sandbox.created"}},
		{store.AuditQuery{AfterID: all[0].ID, Limit: 1}, []string{"egress.blocked"}},
		{store.AuditQuery{AfterID: all[2].ID}, []string{}},
	} {
		got, err := s.ListAudit(ctx, tc.q)
		if err != nil || !slices.Equal(types(got), tc.want) {
			t.Errorf("ListAudit(%+v) = %v, %v; want %v", tc.q, types(got), err, tc.want)
		}
	}
}

func testAuditTypes(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, typ := range []string{"egress", "egress.blocked", "egress.allowed", "egressx", "egress_blocked", "EGRESS.blocked", "dns.query", "pii.redacted", "a%b", "a%b.c", "axb.c"} {
		appendAudit(t, s, store.AuditEvent{SandboxID: "s", Type: typ})
	}
	for _, tc := range []struct {
		types []string
		want  []string
	}{
		{[]string{"egress"}, []string{"egress", "egress.blocked", "egress.allowed"}},
		{[]string{"egress.blocked"}, []string{"egress.blocked"}},
		{[]string{"dns", "pii"}, []string{"dns.query", "pii.redacted"}},
		{[]string{"egress_"}, []string{}},
		{[]string{"a%b"}, []string{"a%b", "a%b.c"}},
		{[]string{"eg"}, []string{}},
	} {
		got, err := s.ListAudit(ctx, store.AuditQuery{SandboxID: "s", Types: tc.types})
		if err != nil || !slices.Equal(types(got), tc.want) {
			t.Errorf("ListAudit(types %q) = %v, %v; want %v", tc.types, types(got), err, tc.want)
		}
	}
}

func testAuditPaging(t *testing.T, s store.Store) {
	ctx := t.Context()
	const n = store.DefaultLimit + 20
	for i := range n {
		appendAudit(t, s, store.AuditEvent{SandboxID: "p", Type: fmt.Sprintf("e.%d", i)})
	}
	got, err := s.ListAudit(ctx, store.AuditQuery{SandboxID: "p"})
	if err != nil || len(got) != store.DefaultLimit {
		t.Fatalf("ListAudit(no limit) = %d events, %v; want %d", len(got), err, store.DefaultLimit)
	}
	var seen []string
	var after int64
	for range n {
		got, err := s.ListAudit(ctx, store.AuditQuery{SandboxID: "p", AfterID: after, Limit: 30})
		if err != nil {
			t.Fatalf("ListAudit(after %d): %v", after, err)
		}
		if len(got) == 0 {
			break
		}
		seen = append(seen, types(got)...)
		after = got[len(got)-1].ID
	}
	if len(seen) != n || seen[0] != "e.0" || seen[n-1] != fmt.Sprintf("e.%d", n-1) {
		t.Errorf("paging with AfterID saw %d events; want all %d in order", len(seen), n)
	}
}

// testAuditConcurrentAppend tails the audit with AfterID while several
// writers append: the tail must see every event exactly once.
func testAuditConcurrentAppend(t *testing.T, s store.Store) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	const writers, each = 4, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := s.AppendAudit(ctx, store.AuditEvent{SandboxID: "t", Type: fmt.Sprintf("w%d.%d", w, i)}); err != nil {
					t.Errorf("AppendAudit: %v", err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	seen := map[string]int{}
	var after int64
	for finished := false; ; {
		select {
		case <-done:
			finished = true
		default:
		}
		got, err := s.ListAudit(ctx, store.AuditQuery{SandboxID: "t", AfterID: after})
		if err != nil {
			t.Fatalf("ListAudit: %v", err)
		}
		for _, e := range got {
			seen[e.Type]++
			after = e.ID
		}
		if finished && len(got) == 0 {
			break
		}
	}
	if len(seen) != writers*each {
		t.Errorf("tail saw %d distinct events; want %d", len(seen), writers*each)
	}
	for typ, c := range seen {
		if c != 1 {
			t.Errorf("tail saw %s %d times", typ, c)
		}
	}
}

func testPruneAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	old, cut := base.Add(-48*time.Hour), base.Add(-24*time.Hour)
	appendAudit(t, s,
		store.AuditEvent{SandboxID: "a", Time: old, Type: "x.old"},
		store.AuditEvent{SandboxID: "a", Time: base, Type: "x.new"},
		store.AuditEvent{SandboxID: "b", Time: old, Type: "x.old"},
		store.AuditEvent{SandboxID: "b", Time: cut, Type: "x.cut"}, // at the cut: kept
		store.AuditEvent{SandboxID: "c", Time: old, Type: "x.old"})
	if n, err := s.PruneAudit(ctx, "a", cut); err != nil || n != 1 {
		t.Errorf("PruneAudit(a) = %d, %v; want 1", n, err)
	}
	if n, err := s.PruneAudit(ctx, "a", cut); err != nil || n != 0 {
		t.Errorf("PruneAudit(a) again = %d, %v; want 0", n, err)
	}
	if got, _ := s.ListAudit(ctx, store.AuditQuery{SandboxID: "b"}); len(got) != 2 {
		t.Errorf("PruneAudit(a) touched b: %v", types(got))
	}
	if n, err := s.PruneAudit(ctx, "", cut); err != nil || n != 2 {
		t.Errorf("PruneAudit(all) = %d, %v; want 2", n, err)
	}
	got, _ := s.ListAudit(ctx, store.AuditQuery{})
	if !slices.Equal(types(got), []string{"x.new", "x.cut"}) {
		t.Errorf("after pruning = %v; want x.new, x.cut", types(got))
	}
}

func testSnapshots(t *testing.T, s store.Store) {
	ctx := t.Context()
	if list, err := s.ListSnapshots(ctx, "sbx-a"); err != nil || list == nil || len(list) != 0 {
		t.Errorf("ListSnapshots(none) = %#v, %v; want an empty, non-nil list", list, err)
	}
	want := map[string]*store.Snapshot{}
	for i, id := range []string{"snap-1", "snap-0", "snap-2"} {
		sn := &store.Snapshot{ID: id, SandboxID: "sbx-a", TemplateID: "python", Source: "manual", Kind: "filesystem",
			CreatedAt: base.Add(time.Duration(i) * time.Minute), SizeBytes: int64(i+10) << 30, Path: "/x/" + id + ".tar"}
		if err := s.CreateSnapshot(ctx, sn); err != nil {
			t.Fatalf("CreateSnapshot(%s): %v", id, err)
		}
		want[id] = sn
	}
	if err := s.CreateSnapshot(ctx, &store.Snapshot{ID: "snap-x", SandboxID: "sbx-b", TemplateID: "base", Source: "pause", Kind: "filesystem", CreatedAt: base}); err != nil {
		t.Fatalf("CreateSnapshot(snap-x): %v", err)
	}
	if err := s.CreateSnapshot(ctx, &store.Snapshot{ID: "snap-1", SandboxID: "sbx-b", Source: "manual", Kind: "filesystem"}); !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateSnapshot(duplicate) = %v; want ErrExists", err)
	}
	list, err := s.ListSnapshots(ctx, "sbx-a")
	if err != nil || len(list) != 3 || list[0].ID != "snap-2" || list[1].ID != "snap-0" || list[2].ID != "snap-1" {
		t.Fatalf("ListSnapshots(sbx-a) = %+v, %v; want snap-2, snap-0, snap-1 (newest first)", list, err)
	}
	for _, got := range list {
		w := want[got.ID]
		if got.SandboxID != w.SandboxID || got.TemplateID != w.TemplateID || got.Source != w.Source || got.Kind != w.Kind ||
			got.SizeBytes != w.SizeBytes || got.Path != w.Path || !sameTime(got.CreatedAt, w.CreatedAt) {
			t.Errorf("snapshot %s = %+v; want %+v", got.ID, got, w)
		}
	}
	if got, err := s.GetSnapshot(ctx, "snap-1"); err != nil || got.Path != "/x/snap-1.tar" || got.SizeBytes != 10<<30 {
		t.Errorf("GetSnapshot(snap-1) = %+v, %v", got, err)
	}
	if ok, err := s.DeleteSnapshot(ctx, "snap-1"); !ok || err != nil {
		t.Errorf("DeleteSnapshot(snap-1) = %v, %v; want true", ok, err)
	}
	if ok, err := s.DeleteSnapshot(ctx, "snap-1"); ok || err != nil {
		t.Errorf("DeleteSnapshot(snap-1) again = %v, %v; want false", ok, err)
	}
	if _, err := s.GetSnapshot(ctx, "snap-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetSnapshot(deleted) = %v; want ErrNotFound", err)
	}
	if list, _ := s.ListSnapshots(ctx, "sbx-b"); len(list) != 1 || list[0].ID != "snap-x" {
		t.Errorf("ListSnapshots(sbx-b) = %+v; want snap-x", list)
	}
}

func testTeams(t *testing.T, s store.Store) {
	ctx := t.Context()
	teams, err := s.ListTeams(ctx)
	if err != nil || len(teams) != 1 || teams[0].ID != store.DefaultTeam || teams[0].Name != store.DefaultTeam {
		t.Fatalf("ListTeams(new store) = %+v, %v; want only %q", teams, err, store.DefaultTeam)
	}
	before := time.Now().Add(-time.Second)
	a := &store.Team{ID: "team-a", Name: "Team A ✓"}
	if err := s.CreateTeam(ctx, a); err != nil {
		t.Fatalf("CreateTeam(a): %v", err)
	}
	if a.CreatedAt.Before(before) {
		t.Errorf("CreateTeam set CreatedAt %v; want now", a.CreatedAt)
	}
	if err := s.CreateTeam(ctx, &store.Team{ID: "team-b", Name: "b", CreatedAt: base}); err != nil {
		t.Fatalf("CreateTeam(b): %v", err)
	}
	for _, dup := range []*store.Team{{ID: "team-a", Name: "other"}, {ID: "team-c", Name: "Team A ✓"}, {ID: store.DefaultTeam, Name: "x"}} {
		if err := s.CreateTeam(ctx, dup); !errors.Is(err, store.ErrExists) {
			t.Errorf("CreateTeam(%+v) = %v; want ErrExists", dup, err)
		}
	}
	got, err := s.GetTeam(ctx, "team-b")
	if err != nil || got.Name != "b" || !sameTime(got.CreatedAt, base) {
		t.Errorf("GetTeam(team-b) = %+v, %v", got, err)
	}
	if got, err := s.GetTeam(ctx, "team-a"); err != nil || got.Name != "Team A ✓" || !sameTime(got.CreatedAt, a.CreatedAt) {
		t.Errorf("GetTeam(team-a) = %+v, %v; want %+v", got, err, a)
	}
	if _, err := s.GetTeam(ctx, "team-c"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetTeam(unknown) = %v; want ErrNotFound", err)
	}
	teams, err = s.ListTeams(ctx)
	var names []string
	for _, tm := range teams {
		names = append(names, tm.ID)
	}
	if err != nil || !slices.Equal(names, []string{store.DefaultTeam, "team-a", "team-b"}) {
		t.Errorf("ListTeams = %v, %v; want default, team-a, team-b", names, err)
	}
}

func testTeamAPIKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, id := range []string{"team-a", "team-b"} {
		if err := s.CreateTeam(ctx, &store.Team{ID: id, Name: id}); err != nil {
			t.Fatal(err)
		}
	}
	ka := &store.APIKey{ID: store.KeyID("hash-a-0123456789abcdef"), Hash: "hash-a-0123456789abcdef", TeamID: "team-a", Name: "ci"}
	kb := &store.APIKey{ID: "key_b", Hash: "hash-b", TeamID: "team-b", Name: "admin of b", Admin: true, CreatedAt: base}
	for _, k := range []*store.APIKey{ka, kb} {
		if err := s.CreateAPIKey(ctx, k); err != nil {
			t.Fatalf("CreateAPIKey(%s): %v", k.ID, err)
		}
	}
	if ka.CreatedAt.IsZero() {
		t.Error("CreateAPIKey left CreatedAt zero; want now")
	}
	for _, bad := range []struct {
		k    *store.APIKey
		want error
	}{
		{&store.APIKey{ID: "key_x", Hash: "hash-a-0123456789abcdef", TeamID: "team-b"}, store.ErrExists},
		{&store.APIKey{ID: ka.ID, Hash: "hash-new", TeamID: "team-b"}, store.ErrExists},
		{&store.APIKey{ID: "key_y", Hash: "hash-y", TeamID: "no-such-team"}, store.ErrNotFound},
	} {
		if err := s.CreateAPIKey(ctx, bad.k); !errors.Is(err, bad.want) {
			t.Errorf("CreateAPIKey(%+v) = %v; want %v", bad.k, err, bad.want)
		}
	}
	got, err := s.LookupAPIKey(ctx, "hash-a-0123456789abcdef")
	if err != nil || got.ID != "key_hash-a-012345678" || got.TeamID != "team-a" || got.Name != "ci" || got.Admin || !got.RevokedAt.IsZero() || !sameTime(got.CreatedAt, ka.CreatedAt) {
		t.Errorf("LookupAPIKey(a) = %+v, %v; want %+v", got, err, ka)
	}
	if got, err := s.LookupAPIKey(ctx, "hash-b"); err != nil || !got.Admin || got.TeamID != "team-b" || !sameTime(got.CreatedAt, base) {
		t.Errorf("LookupAPIKey(b) = %+v, %v", got, err)
	}
	for _, h := range []string{"hash-y", "", "HASH-B"} {
		if _, err := s.LookupAPIKey(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("LookupAPIKey(%q) = %v; want ErrNotFound", h, err)
		}
	}
	// The default team's admin key, as the server stores its configured key.
	if err := s.AddAPIKey(ctx, "hash-configured", "configured"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.LookupAPIKey(ctx, "hash-configured"); err != nil || got.TeamID != store.DefaultTeam || !got.Admin || got.ID != store.KeyID("hash-configured") || got.Name != "configured" {
		t.Errorf("LookupAPIKey(AddAPIKey's) = %+v, %v; want an admin key of the default team", got, err)
	}
	keyIDs := func(team string) []string {
		keys, err := s.ListAPIKeys(ctx, team)
		if err != nil {
			t.Fatalf("ListAPIKeys(%q): %v", team, err)
		}
		out := []string{}
		for _, k := range keys {
			out = append(out, k.ID)
		}
		return out
	}
	if got := keyIDs("team-a"); !slices.Equal(got, []string{ka.ID}) {
		t.Errorf("ListAPIKeys(team-a) = %v", got)
	}
	if got := keyIDs(""); !slices.Equal(got, []string{ka.ID, "key_b", store.KeyID("hash-configured")}) {
		t.Errorf("ListAPIKeys(all) = %v; want creation order", got)
	}
	if got := keyIDs("no-such-team"); len(got) != 0 {
		t.Errorf("ListAPIKeys(unknown team) = %v", got)
	}

	// Revocation is immediate and final.
	if n, _ := s.CountAPIKeys(ctx); n != 3 {
		t.Errorf("CountAPIKeys = %d; want 3", n)
	}
	if ok, err := s.RevokeAPIKey(ctx, ka.ID); !ok || err != nil {
		t.Fatalf("RevokeAPIKey(a) = %v, %v; want true", ok, err)
	}
	if ok, err := s.RevokeAPIKey(ctx, ka.ID); ok || err != nil {
		t.Errorf("RevokeAPIKey(a) again = %v, %v; want false", ok, err)
	}
	if ok, err := s.RevokeAPIKey(ctx, "key_unknown"); ok || err != nil {
		t.Errorf("RevokeAPIKey(unknown) = %v, %v; want false", ok, err)
	}
	if _, err := s.LookupAPIKey(ctx, ka.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LookupAPIKey(revoked) = %v; want ErrNotFound", err)
	}
	if ok, err := s.HasAPIKey(ctx, ka.Hash); ok || err != nil {
		t.Errorf("HasAPIKey(revoked) = %v, %v; want false", ok, err)
	}
	if n, _ := s.CountAPIKeys(ctx); n != 2 {
		t.Errorf("CountAPIKeys after a revoke = %d; want 2", n)
	}
	keys, _ := s.ListAPIKeys(ctx, "team-a")
	if len(keys) != 1 || keys[0].RevokedAt.IsZero() || time.Since(keys[0].RevokedAt) > time.Minute {
		t.Errorf("ListAPIKeys(team-a) after revoke = %+v; want the key with RevokedAt about now", keys)
	}
	// Adding a revoked key's hash again does not bring it back.
	if err := s.AddAPIKey(ctx, ka.Hash, "again"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.HasAPIKey(ctx, ka.Hash); ok {
		t.Error("AddAPIKey revived a revoked key")
	}
	if ok, err := s.HasAPIKey(ctx, "hash-b"); !ok || err != nil {
		t.Errorf("HasAPIKey(b) = %v, %v; revoking a's key touched b's", ok, err)
	}
}

func testSandboxTeams(t *testing.T, s store.Store) {
	ctx := t.Context()
	for i, team := range []string{"team-a", "team-b", "", "team-a"} {
		mustCreate(t, s, &store.Sandbox{ID: fmt.Sprintf("sbx-t%d", i), TeamID: team, TemplateID: "base", State: "running", StartedAt: base,
			Metadata: map[string]string{"k": "v"}})
	}
	if got, err := s.GetSandbox(ctx, "sbx-t2"); err != nil || got.TeamID != store.DefaultTeam {
		t.Errorf("GetSandbox(created without team) = %+v, %v; want team %q", got, err, store.DefaultTeam)
	}
	if got, err := s.GetSandbox(ctx, "sbx-t0"); err != nil || got.TeamID != "team-a" {
		t.Errorf("GetSandbox(sbx-t0) = %+v, %v; want team-a", got, err)
	}
	for _, tc := range []struct {
		f    store.SandboxFilter
		want []string
	}{
		{store.SandboxFilter{TeamID: "team-a"}, []string{"sbx-t0", "sbx-t3"}},
		{store.SandboxFilter{TeamID: "team-b", Metadata: map[string]string{"k": "v"}, States: []string{"running"}}, []string{"sbx-t1"}},
		{store.SandboxFilter{TeamID: store.DefaultTeam}, []string{"sbx-t2"}},
		{store.SandboxFilter{TeamID: "team-c"}, []string{}},
		{store.SandboxFilter{}, []string{"sbx-t0", "sbx-t1", "sbx-t2", "sbx-t3"}},
		{store.SandboxFilter{TeamID: "team-a", Limit: 1, After: "sbx-t0"}, []string{"sbx-t3"}},
	} {
		got, _, err := s.ListSandboxes(ctx, tc.f)
		if err != nil || !slices.Equal(ids(got), tc.want) {
			t.Errorf("ListSandboxes(%+v) = %v, %v; want %v", tc.f, ids(got), err, tc.want)
		}
	}
	// The owner is fixed at create.
	got, err := s.UpdateSandbox(ctx, "sbx-t0", func(sb *store.Sandbox) error { sb.TeamID, sb.State = "team-b", "paused"; return nil })
	if err != nil || got.TeamID != "team-a" || got.State != "paused" {
		t.Errorf("UpdateSandbox(change team) = %+v, %v; want team-a kept, state changed", got, err)
	}
	if got, _ := s.GetSandbox(ctx, "sbx-t0"); got == nil || got.TeamID != "team-a" {
		t.Errorf("after UpdateSandbox, team = %+v; want team-a", got)
	}
	// Snapshots keep their team too.
	for id, team := range map[string]string{"snap-a": "team-a", "snap-d": ""} {
		if err := s.CreateSnapshot(ctx, &store.Snapshot{ID: id, TeamID: team, SandboxID: "sbx-t0", TemplateID: "base", Source: "manual", Kind: "filesystem", CreatedAt: base}); err != nil {
			t.Fatal(err)
		}
	}
	if sn, err := s.GetSnapshot(ctx, "snap-a"); err != nil || sn.TeamID != "team-a" {
		t.Errorf("GetSnapshot(snap-a) = %+v, %v; want team-a", sn, err)
	}
	if sn, err := s.GetSnapshot(ctx, "snap-d"); err != nil || sn.TeamID != store.DefaultTeam {
		t.Errorf("GetSnapshot(snap-d) = %+v, %v; want the default team", sn, err)
	}
}
