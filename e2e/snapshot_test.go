package e2e

import (
	"testing"
)

func TestSnapshotRestore(t *testing.T) {
	s := startServer(t)
	id := s.create(map[string]any{"metadata": map[string]string{"app": "snap"}, "envs": map[string]string{"MODE": "x"}})
	base := "/sandboxes/" + id
	s.run(id, "mkdir -p /home/user/proj && echo v1 > /home/user/proj/a.txt && chown -R user:user /home/user/proj && pip --version >/dev/null 2>&1; echo keep > /tmp/t.txt")
	var sn struct {
		SnapshotID string `json:"snapshot_id"`
		SandboxID  string `json:"sandbox_id"`
		Kind       string `json:"kind"`
		SizeBytes  int64  `json:"size_bytes"`
	}
	s.must(201, "POST", base+"/snapshot", nil, &sn)
	if sn.SandboxID != id || sn.Kind != "filesystem" || sn.SizeBytes <= 0 {
		t.Fatalf("snapshot = %+v", sn)
	}
	if code, b := s.do("POST", base+"/snapshot", map[string]any{"memory": true}); code != 409 {
		t.Fatalf("memory snapshot: %d %s, want 409", code, b)
	}
	s.run(id, "echo v2 > /home/user/proj/a.txt")
	s.must(200, "DELETE", base, nil, nil) // snapshots outlive their sandbox

	var list struct {
		Snapshots []struct {
			SnapshotID string `json:"snapshot_id"`
		} `json:"snapshots"`
	}
	s.must(200, "GET", base+"/snapshots", nil, &list)
	if len(list.Snapshots) != 1 || list.Snapshots[0].SnapshotID != sn.SnapshotID {
		t.Fatalf("snapshots = %+v", list)
	}
	var restored struct {
		SandboxID  string `json:"sandbox_id"`
		SnapshotID string `json:"snapshot_id"`
	}
	s.must(201, "POST", base+"/restore?snapshot_id="+sn.SnapshotID, nil, &restored)
	t.Cleanup(func() { s.do("DELETE", "/sandboxes/"+restored.SandboxID, nil) })
	if restored.SandboxID == id || restored.SnapshotID != sn.SnapshotID {
		t.Fatalf("restore = %+v", restored)
	}
	res := s.run(restored.SandboxID, `cat /home/user/proj/a.txt /tmp/t.txt; echo $MODE; python3 -c 'import os,pwd; print(pwd.getpwuid(os.stat("/home/user/proj/a.txt").st_uid).pw_name)'`)
	if res.Stdout != "v1\nkeep\nx\nuser\n" {
		t.Fatalf("restored sandbox: %+v", res)
	}
	var got info
	s.must(200, "GET", "/sandboxes/"+restored.SandboxID, nil, &got)
	if got.Metadata["app"] != "snap" {
		t.Fatalf("restored metadata = %v", got.Metadata)
	}
	var del struct {
		Deleted bool `json:"deleted"`
	}
	s.must(200, "DELETE", base+"/snapshots/"+sn.SnapshotID, nil, &del)
	if !del.Deleted {
		t.Fatal("delete: deleted=false")
	}
	s.must(200, "DELETE", base+"/snapshots/"+sn.SnapshotID, nil, &del)
	if del.Deleted {
		t.Fatal("second delete: deleted=true")
	}
	if code, _ := s.do("POST", base+"/restore", nil); code != 404 {
		t.Fatalf("restore without snapshots: %d, want 404", code)
	}
}
