package declaw

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestSnapshotsAndRestore(t *testing.T) {
	var got []string // method path?query body
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.EscapedPath()+"?"+r.URL.RawQuery+" "+string(b))
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == "POST" && r.URL.Path == "/sandboxes/sbx-1/snapshot":
			w.WriteHeader(201)
			json.NewEncoder(w).Encode(map[string]any{"snapshot_id": "snap-1", "sandbox_id": "sbx-1", "source": "manual", "kind": "filesystem", "size_bytes": 3})
		case r.Method == "GET" && r.URL.Path == "/sandboxes/sbx-1/snapshots":
			w.Write([]byte(`{"snapshots":[{"snapshot_id":"snap-1"}]}`))
		case r.Method == "DELETE":
			w.Write([]byte(`{"deleted":true}`))
		case r.URL.Path == "/sandboxes/sbx-1/restore" && r.URL.Query().Get("fork") == "true":
			w.WriteHeader(201)
			w.Write([]byte(`{"sandbox_id":"sbx-2","snapshot_id":"snap-1","node_id":"local","sandbox":{"sandbox_id":"sbx-2","state":"running"}}`))
		case r.URL.Path == "/sandboxes/sbx-1/restore":
			w.Write([]byte(`{"sandbox_id":"sbx-1","snapshot_id":"snap-1","node_id":"local"}`))
		case r.URL.Path == "/sandboxes/sbx-9/restore":
			w.WriteHeader(404)
			w.Write([]byte(`{"message":"snapshot snap-x of sandbox sbx-9: snapshot not found","code":"snapshot_not_found"}`))
		default:
			w.WriteHeader(500)
		}
	}))
	defer srv.Close()
	c, err := New(Config{APIURL: srv.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	sn, err := c.CreateSnapshot(ctx, "sbx-1")
	if err != nil || sn.SnapshotID != "snap-1" || sn.SizeBytes != 3 {
		t.Fatalf("CreateSnapshot = %+v, %v", sn, err)
	}
	list, err := c.ListSnapshots(ctx, "sbx-1")
	if err != nil || len(list) != 1 {
		t.Fatalf("ListSnapshots = %+v, %v", list, err)
	}
	if ok, err := c.DeleteSnapshot(ctx, "sbx-1", "snap/1"); !ok || err != nil {
		t.Fatalf("DeleteSnapshot = %v, %v", ok, err)
	}
	r, err := c.Restore(ctx, "sbx-1", RestoreOptions{SnapshotID: "snap-1"})
	if err != nil || r.SandboxID != "sbx-1" || r.SnapshotID != "snap-1" || r.NodeID != "local" {
		t.Fatalf("Restore = %+v, %v", r, err)
	}
	r, err = c.Restore(ctx, "sbx-1", RestoreOptions{Fork: true})
	if err != nil || r.SandboxID != "sbx-2" || r.Sandbox.State != "running" {
		t.Fatalf("Restore fork = %+v, %v", r, err)
	}
	_, err = c.Restore(ctx, "sbx-9", RestoreOptions{SnapshotID: "snap-x"})
	if e, ok := err.(*Error); !ok || e.Status != 404 || e.Code != "snapshot_not_found" {
		t.Fatalf("Restore of a missing snapshot: %v, want *Error 404 snapshot_not_found", err)
	}
	want := []string{
		"POST /sandboxes/sbx-1/snapshot? {}",
		"GET /sandboxes/sbx-1/snapshots? ",
		"DELETE /sandboxes/sbx-1/snapshots/snap%2F1? ",
		"POST /sandboxes/sbx-1/restore?snapshot_id=snap-1 {}",
		"POST /sandboxes/sbx-1/restore?fork=true {}",
		"POST /sandboxes/sbx-9/restore?snapshot_id=snap-x {}",
	}
	if len(got) != len(want) {
		t.Fatalf("requests = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d = %q, want %q", i, got[i], want[i])
		}
	}
}
