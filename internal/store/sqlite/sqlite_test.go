package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/store"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "declaw.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSandboxCRUDAndList(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	for i, id := range []string{"sbx-a", "sbx-b", "sbx-c"} {
		sb := &store.Sandbox{ID: id, TemplateID: "base", State: "running", StartedAt: time.Now(),
			Metadata: map[string]string{"n": string(rune('0' + i)), "team": "x"}}
		if err := s.CreateSandbox(ctx, sb); err != nil {
			t.Fatalf("CreateSandbox(%s): %v", id, err)
		}
	}
	if err := s.CreateSandbox(ctx, &store.Sandbox{ID: "sbx-a", TemplateID: "base", State: "running"}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("CreateSandbox duplicate: got %v, want ErrExists", err)
	}
	if _, err := s.GetSandbox(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetSandbox(nope): got %v, want ErrNotFound", err)
	}
	if _, err := s.UpdateSandbox(ctx, "sbx-b", func(sb *store.Sandbox) error { sb.State = "killed"; return nil }); err != nil {
		t.Fatalf("UpdateSandbox: %v", err)
	}
	got, err := s.GetSandbox(ctx, "sbx-b")
	if err != nil || got.State != "killed" || got.Metadata["n"] != "1" {
		t.Fatalf("GetSandbox(sbx-b) = %+v, %v; want state killed, metadata n=1", got, err)
	}
	running, _, err := s.ListSandboxes(ctx, store.SandboxFilter{States: []string{"running"}})
	if err != nil || len(running) != 2 || running[0].ID != "sbx-a" || running[1].ID != "sbx-c" {
		t.Fatalf("List running = %v, %v; want sbx-a, sbx-c", ids(running), err)
	}
	byMeta, _, err := s.ListSandboxes(ctx, store.SandboxFilter{Metadata: map[string]string{"n": "2"}})
	if err != nil || len(byMeta) != 1 || byMeta[0].ID != "sbx-c" {
		t.Fatalf("List metadata n=2 = %v, %v; want sbx-c", ids(byMeta), err)
	}
	page1, next, err := s.ListSandboxes(ctx, store.SandboxFilter{Limit: 2})
	if err != nil || len(page1) != 2 || next != "sbx-b" {
		t.Fatalf("page1 = %v next %q, %v", ids(page1), next, err)
	}
	page2, next2, err := s.ListSandboxes(ctx, store.SandboxFilter{Limit: 2, After: next})
	if err != nil || len(page2) != 1 || page2[0].ID != "sbx-c" || next2 != "" {
		t.Fatalf("page2 = %v next %q, %v", ids(page2), next2, err)
	}
}

func ids(sbs []*store.Sandbox) []string {
	var out []string
	for _, sb := range sbs {
		out = append(out, sb.ID)
	}
	return out
}

func TestIdempotency(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if _, err := s.BeginIdempotent(ctx, store.Idempotency{Key: "k", BodyHash: "h1"}); err != nil {
		t.Fatalf("Begin: %v", err)
	}
	rec, err := s.BeginIdempotent(ctx, store.Idempotency{Key: "k", BodyHash: "h2"})
	if !errors.Is(err, store.ErrExists) || rec.BodyHash != "h1" || rec.Response != nil {
		t.Fatalf("second Begin = %+v, %v; want in-progress record h1, ErrExists", rec, err)
	}
	if err := s.FinishIdempotent(ctx, "k", "sbx-1", []byte(`{"sandbox_id":"sbx-1"}`)); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	rec, err = s.BeginIdempotent(ctx, store.Idempotency{Key: "k", BodyHash: "h1"})
	if !errors.Is(err, store.ErrExists) || rec.SandboxID != "sbx-1" || string(rec.Response) == "" {
		t.Fatalf("after Finish = %+v, %v", rec, err)
	}
	if err := s.FinishIdempotent(ctx, "k", "", nil); err != nil {
		t.Fatalf("Finish(nil): %v", err)
	}
	if _, err := s.BeginIdempotent(ctx, store.Idempotency{Key: "k", BodyHash: "h3"}); err != nil {
		t.Fatalf("Begin after forget: %v", err)
	}
}

func TestAPIKeysAndAudit(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if err := s.AddAPIKey(ctx, "hash1", "default"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.HasAPIKey(ctx, "hash1"); !ok {
		t.Fatal("HasAPIKey(hash1) = false")
	}
	if ok, _ := s.HasAPIKey(ctx, "hash2"); ok {
		t.Fatal("HasAPIKey(hash2) = true")
	}
	t0 := time.Now().Add(-time.Hour)
	err := s.AppendAudit(ctx,
		store.AuditEvent{SandboxID: "a", Time: t0, Type: "sandbox.created"},
		store.AuditEvent{SandboxID: "a", Type: "egress.blocked", Data: []byte(`{"dst":"1.1.1.1:80"}`)},
		store.AuditEvent{SandboxID: "b", Type: "sandbox.created"})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.ListAudit(ctx, store.AuditQuery{SandboxID: "a", Types: []string{"egress"}})
	if err != nil || len(evs) != 1 || string(evs[0].Data) != `{"dst":"1.1.1.1:80"}` {
		t.Fatalf("ListAudit egress = %+v, %v", evs, err)
	}
	evs, _ = s.ListAudit(ctx, store.AuditQuery{SandboxID: "a", Since: time.Now().Add(-time.Minute)})
	if len(evs) != 1 {
		t.Fatalf("ListAudit since = %d events, want 1", len(evs))
	}
	n, err := s.PruneAudit(ctx, "a", time.Now().Add(-time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("PruneAudit = %d, %v; want 1", n, err)
	}
}

func TestSnapshots(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	for i, id := range []string{"snap-1", "snap-2"} {
		if err := s.CreateSnapshot(ctx, &store.Snapshot{ID: id, SandboxID: "sbx-a", TemplateID: "python", Source: "manual", Kind: "filesystem",
			CreatedAt: time.Now(), SizeBytes: int64(i + 10), Path: "/x/" + id}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.ListSnapshots(ctx, "sbx-a")
	if err != nil || len(list) != 2 || list[0].ID != "snap-2" || list[1].SizeBytes != 10 {
		t.Fatalf("ListSnapshots = %+v, %v; want newest first", list, err)
	}
	if got, err := s.GetSnapshot(ctx, "snap-1"); err != nil || got.Path != "/x/snap-1" {
		t.Fatalf("GetSnapshot = %+v, %v", got, err)
	}
	if ok, err := s.DeleteSnapshot(ctx, "snap-1"); !ok || err != nil {
		t.Fatalf("DeleteSnapshot = %v, %v", ok, err)
	}
	if ok, _ := s.DeleteSnapshot(ctx, "snap-1"); ok {
		t.Fatal("second DeleteSnapshot reported a deletion")
	}
	if _, err := s.GetSnapshot(ctx, "snap-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetSnapshot(deleted) = %v", err)
	}
}
