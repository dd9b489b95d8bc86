package api

import (
	"net/http"
	"testing"
)

type restoreResp struct {
	SandboxID       string         `json:"sandbox_id"`
	SnapshotID      string         `json:"snapshot_id"`
	NodeID          string         `json:"node_id"`
	EnvdAccessToken string         `json:"envd_access_token"`
	Sandbox         map[string]any `json:"sandbox"`
}

func TestRestoreEndpoint(t *testing.T) {
	h := newHarness(t)
	a := h.create(t, map[string]any{"metadata": map[string]string{"app": "r"}})
	b := h.create(t, map[string]any{})
	snap := func(id string) string {
		t.Helper()
		resp, body := h.do(t, "POST", "/sandboxes/"+id+"/snapshot", map[string]any{})
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST snapshot: %d %s", resp.StatusCode, body)
		}
		return decode[struct {
			SnapshotID string `json:"snapshot_id"`
		}](t, "POST snapshot", body).SnapshotID
	}
	snA, snB := snap(a.SandboxID), snap(b.SandboxID)

	// In place: the same id, 200, Declaw's answer.
	resp, body := h.do(t, "POST", "/sandboxes/"+a.SandboxID+"/restore?snapshot_id="+snA, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("restore: %d %s, want 200", resp.StatusCode, body)
	}
	got := decode[restoreResp](t, "restore", body)
	if got.SandboxID != a.SandboxID || got.SnapshotID != snA || got.NodeID == "" || got.Sandbox["state"] != "running" {
		t.Errorf("restore answer = %s, want sandbox_id %s, snapshot_id %s, a node_id and the running sandbox", body, a.SandboxID, snA)
	}
	// Without snapshot_id: the sandbox's only snapshot.
	resp, body = h.do(t, "POST", "/sandboxes/"+a.SandboxID+"/restore", nil)
	if resp.StatusCode != http.StatusOK || decode[restoreResp](t, "restore", body).SnapshotID != snA {
		t.Errorf("restore without snapshot_id: %d %s", resp.StatusCode, body)
	}
	resp, body = h.do(t, "GET", "/sandboxes", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /sandboxes: %d %s", resp.StatusCode, body)
	}
	list := decode[struct {
		Sandboxes []createResp `json:"sandboxes"`
	}](t, "GET /sandboxes", body)
	if len(list.Sandboxes) != 2 {
		t.Errorf("list after restores = %s, want the two sandboxes", body)
	}

	// Another sandbox's snapshot, unknown ones, unknown sandboxes.
	resp, body = h.do(t, "POST", "/sandboxes/"+a.SandboxID+"/restore?snapshot_id="+snB, nil)
	wantError(t, "restore with another sandbox's snapshot", resp, body, http.StatusNotFound, "snapshot_not_found")
	resp, body = h.do(t, "POST", "/sandboxes/"+a.SandboxID+"/restore?snapshot_id=snap-nope", nil)
	wantError(t, "restore with an unknown snapshot", resp, body, http.StatusNotFound, "snapshot_not_found")
	resp, body = h.do(t, "POST", "/sandboxes/sbx-nope/restore", nil)
	wantError(t, "restore of an unknown sandbox", resp, body, http.StatusNotFound, "sandbox_not_found")
	resp, body = h.do(t, "POST", "/sandboxes/"+a.SandboxID+"/restore?fork=perhaps", nil)
	wantError(t, "restore with a bad fork", resp, body, http.StatusBadRequest, "invalid_argument")

	// A killed sandbox comes back under its id.
	if resp, body := h.do(t, "DELETE", "/sandboxes/"+b.SandboxID, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("kill: %d %s", resp.StatusCode, body)
	}
	resp, body = h.do(t, "POST", "/sandboxes/"+b.SandboxID+"/restore", nil)
	if resp.StatusCode != http.StatusOK || decode[restoreResp](t, "restore killed", body).SandboxID != b.SandboxID {
		t.Fatalf("restore of a killed sandbox: %d %s", resp.StatusCode, body)
	}
	resp, body = h.do(t, "GET", "/sandboxes/"+b.SandboxID+"/status", nil)
	if st := decode[map[string]any](t, "status", body); resp.StatusCode != http.StatusOK || st["state"] != "running" {
		t.Errorf("status after restoring a killed sandbox = %s", body)
	}

	// fork=true: a new sandbox, 201.
	resp, body = h.do(t, "POST", "/sandboxes/"+a.SandboxID+"/restore?fork=true&snapshot_id="+snA, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("fork: %d %s, want 201", resp.StatusCode, body)
	}
	fork := decode[restoreResp](t, "fork", body)
	if fork.SandboxID == a.SandboxID || fork.SnapshotID != snA || fork.EnvdAccessToken == "" {
		t.Errorf("fork answer = %s, want a new sandbox", body)
	}
	if md, _ := fork.Sandbox["metadata"].(map[string]any); md["app"] != "r" {
		t.Errorf("fork metadata = %v, want the original's", fork.Sandbox["metadata"])
	}
}
