package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type snapshotInfo struct {
	SnapshotID string `json:"snapshot_id"`
	SandboxID  string `json:"sandbox_id"`
	Kind       string `json:"kind"`
	Source     string `json:"source"`
	SizeBytes  int64  `json:"size_bytes"`
}

type restoreAnswer struct {
	SandboxID  string `json:"sandbox_id"`
	SnapshotID string `json:"snapshot_id"`
	NodeID     string `json:"node_id"`
}

// listedIDs returns the ids GET /sandboxes lists (running and paused).
func (s *server) listedIDs() []string {
	s.t.Helper()
	var list struct {
		Sandboxes []info `json:"sandboxes"`
	}
	s.must(200, "GET", "/sandboxes", nil, &list)
	var ids []string
	for _, sb := range list.Sandboxes {
		ids = append(ids, sb.SandboxID)
	}
	return ids
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// writeFile writes a text file through the files API.
func (s *server) writeFile(id, path, content string) {
	s.t.Helper()
	s.must(200, "POST", "/sandboxes/"+id+"/files", map[string]any{"path": path, "data": content, "username": "user"}, nil)
}

// TestSnapshotRestore is the official SDK's sequence over raw HTTP: write
// v1, snapshot, write v2 and a second file, restore(id, snapshot_id): the
// same sandbox is back at v1, the second file is gone, what ran in it was
// stopped, and its settings and audit trail are kept.
func TestSnapshotRestore(t *testing.T) {
	s := startServer(t)
	id := s.create(map[string]any{"timeout": 600, "metadata": map[string]string{"app": "snap"}, "envs": map[string]string{"MODE": "x"},
		"network": map[string]any{"deny_out": []string{"203.0.113.0/24"}}})
	base := "/sandboxes/" + id
	s.writeFile(id, "/home/user/proj/a.txt", "v1")
	s.run(id, "echo keep > /tmp/t.txt; rm /etc/motd") // deleted from the template before the snapshot
	var sn snapshotInfo
	s.must(201, "POST", base+"/snapshot", nil, &sn)
	if sn.SandboxID != id || sn.Kind != "filesystem" || sn.Source != "manual" || sn.SizeBytes <= 0 {
		t.Fatalf("snapshot = %+v", sn)
	}
	if code, b := s.do("POST", base+"/snapshot", map[string]any{"memory": true}); code != 409 {
		t.Fatalf("memory snapshot: %d %s, want 409", code, b)
	}
	s.writeFile(id, "/home/user/proj/a.txt", "v2")
	s.writeFile(id, "/home/user/proj/b.txt", "written after the snapshot")
	bg := s.run(id, "sleep 600", "background", true)

	var got restoreAnswer
	s.must(200, "POST", base+"/restore?snapshot_id="+sn.SnapshotID, nil, &got)
	if got.SandboxID != id || got.SnapshotID != sn.SnapshotID || got.NodeID == "" {
		t.Fatalf("restore = %+v, want sandbox_id %s, snapshot_id %s and a node_id", got, id, sn.SnapshotID)
	}
	res := s.run(id, `cat /home/user/proj/a.txt; echo; test -e /home/user/proj/b.txt && echo b-still-there; cat /tmp/t.txt; echo $MODE; stat -c %U /home/user/proj/a.txt; pgrep -x sleep || echo no-sleep; test -e /etc/motd && echo motd-is-back`)
	if res.Stdout != "v1\nkeep\nx\nuser\nno-sleep\n" {
		t.Fatalf("after restore: %+v", res)
	}
	var procs []map[string]any
	s.must(200, "GET", base+"/commands", nil, &procs)
	if hasPid(procs, bg.Pid) {
		t.Errorf("background command %d still listed after the restore: %v", bg.Pid, procs)
	}
	var got2 struct {
		info
		Network json.RawMessage `json:"network"`
	}
	s.must(200, "GET", base, nil, &got2)
	if got2.State != "running" || got2.Metadata["app"] != "snap" || got2.Timeout != 600 || !strings.Contains(string(got2.Network), "203.0.113.0/24") {
		t.Fatalf("sandbox after restore = %+v", got2)
	}
	if ids := s.listedIDs(); count(ids, id) != 1 || len(ids) != 1 {
		t.Fatalf("listed after restore: %v, want %s once", ids, id)
	}
	var audit struct {
		Events []struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		} `json:"events"`
	}
	s.must(200, "GET", base+"/audit?type=vm_restore,sandbox", nil, &audit)
	var types []string
	for _, ev := range audit.Events {
		types = append(types, ev.Type)
	}
	if strings.Join(types, ",") != "sandbox.created,sandbox.snapshot,vm_restore" {
		t.Errorf("audit types = %v, want the trail kept and one vm_restore", types)
	}

	// A snapshot taken after the restore holds the restored files.
	s.writeFile(id, "/home/user/proj/c.txt", "c")
	var sn2 snapshotInfo
	s.must(201, "POST", base+"/snapshot", nil, &sn2)
	s.writeFile(id, "/home/user/proj/a.txt", "v3")

	// Killed sandboxes come back under their id; without snapshot_id the
	// newest snapshot is used.
	s.must(200, "DELETE", base, nil, nil)
	s.must(200, "POST", base+"/restore", nil, &got)
	if got.SandboxID != id || got.SnapshotID != sn2.SnapshotID {
		t.Fatalf("restore of the killed sandbox = %+v, want %s from %s", got, id, sn2.SnapshotID)
	}
	if res := s.run(id, "cat /home/user/proj/a.txt /home/user/proj/c.txt; echo; echo $MODE"); res.Stdout != "v1c\nx\n" {
		t.Fatalf("restored killed sandbox: %+v", res)
	}
	if ids := s.listedIDs(); count(ids, id) != 1 {
		t.Fatalf("listed: %v, want %s once", ids, id)
	}

	// Another sandbox's snapshot is not found; fork=true makes a copy.
	other := s.create(nil)
	if code, b := s.do("POST", "/sandboxes/"+other+"/restore?snapshot_id="+sn.SnapshotID, nil); code != 404 || !strings.Contains(string(b), "snapshot_not_found") {
		t.Fatalf("restore with another sandbox's snapshot: %d %s, want 404 snapshot_not_found", code, b)
	}
	var fork restoreAnswer
	s.must(201, "POST", base+"/restore?fork=true&snapshot_id="+sn.SnapshotID, nil, &fork)
	t.Cleanup(func() { s.do("DELETE", "/sandboxes/"+fork.SandboxID, nil) })
	if fork.SandboxID == id || fork.SandboxID == other {
		t.Fatalf("fork = %+v, want a new sandbox", fork)
	}
	if res := s.run(fork.SandboxID, "cat /home/user/proj/a.txt; echo; test -e /home/user/proj/c.txt || echo no-c; test -e /etc/motd && echo motd-is-back"); res.Stdout != "v1\nno-c\n" {
		t.Fatalf("fork: %+v", res)
	}
	if res := s.run(id, "cat /home/user/proj/a.txt"); res.Stdout != "v1" {
		t.Fatalf("original after the fork: %+v", res)
	}

	// The CLI does the same.
	s.writeFile(id, "/home/user/proj/a.txt", "cli")
	if out := s.mustCLI("", "sandbox", "restore", id, "--snapshot", sn.SnapshotID); out != "restored "+id+" from "+sn.SnapshotID+"\n" {
		t.Fatalf("declaw sandbox restore: %q", out)
	}
	if out := s.mustCLI("", "sandbox", "exec", id, "--", "cat", "/home/user/proj/a.txt"); out != "v1" {
		t.Fatalf("after the CLI restore: %q", out)
	}
	if out := s.mustCLI("", "sandbox", "snapshots", id); !strings.Contains(out, sn.SnapshotID) || !strings.Contains(out, sn2.SnapshotID) {
		t.Fatalf("declaw sandbox snapshots: %q", out)
	}

	// Snapshots outlive their sandbox and are deleted idempotently.
	s.must(200, "DELETE", base, nil, nil)
	var list struct {
		Snapshots []snapshotInfo `json:"snapshots"`
	}
	s.must(200, "GET", base+"/snapshots", nil, &list)
	if len(list.Snapshots) != 2 || list.Snapshots[0].SnapshotID != sn2.SnapshotID {
		t.Fatalf("snapshots = %+v", list)
	}
	var del struct {
		Deleted bool `json:"deleted"`
	}
	for _, x := range []string{sn.SnapshotID, sn2.SnapshotID} {
		s.must(200, "DELETE", base+"/snapshots/"+x, nil, &del)
		if !del.Deleted {
			t.Fatal("delete: deleted=false")
		}
	}
	s.must(200, "DELETE", base+"/snapshots/"+sn.SnapshotID, nil, &del)
	if del.Deleted {
		t.Fatal("second delete: deleted=true")
	}
	if code, _ := s.do("POST", base+"/restore", nil); code != 404 {
		t.Fatalf("restore without snapshots: %d, want 404", code)
	}
}

// TestRestoreStopsRunningCommand: a restore while a foreground command
// runs ends that command's request and leaves a working sandbox.
func TestRestoreStopsRunningCommand(t *testing.T) {
	s := startServer(t)
	id := s.create(nil)
	base := "/sandboxes/" + id
	s.writeFile(id, "/home/user/a.txt", "v1")
	var sn snapshotInfo
	s.must(201, "POST", base+"/snapshot", nil, &sn)
	s.writeFile(id, "/home/user/a.txt", "v2")
	done := make(chan int, 1)
	go func() {
		code, _ := s.do("POST", base+"/commands", map[string]any{"cmd": "sleep 120; echo finished > /home/user/late.txt", "timeout": 0})
		done <- code
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var procs []map[string]any
		s.must(200, "GET", base+"/commands", nil, &procs)
		if len(procs) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the command never showed up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.must(200, "POST", base+"/restore?snapshot_id="+sn.SnapshotID, nil, nil)
	select {
	case code := <-done:
		if code == 200 {
			t.Errorf("the command cut by the restore answered 200")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the running command's request did not end after the restore")
	}
	if res := s.run(id, "cat /home/user/a.txt; echo; test -e /home/user/late.txt || echo no-late; pgrep -x sleep || echo no-sleep"); res.Stdout != "v1\nno-late\nno-sleep\n" {
		t.Fatalf("after restore: %+v", res)
	}

	// A paused sandbox is restored too, and runs afterwards.
	s.writeFile(id, "/home/user/a.txt", "v3")
	s.must(200, "POST", base+"/pause", nil, nil)
	s.must(200, "POST", base+"/restore", nil, nil)
	var st struct {
		State string `json:"state"`
	}
	s.must(200, "GET", base+"/status", nil, &st)
	if st.State != "running" {
		t.Fatalf("state after restoring a paused sandbox = %s", st.State)
	}
	if res := s.run(id, "cat /home/user/a.txt"); res.Stdout != "v1" {
		t.Fatalf("after restoring a paused sandbox: %+v", res)
	}
}

// TestRestoreRacesKill restores and kills one sandbox at the same time,
// with sync and async kills: one wins cleanly (the state matches what
// runs) and, once the server stops, nothing is left: no runsc container,
// netns, veth, nftables table or mount.
func TestRestoreRacesKill(t *testing.T) {
	s := startServer(t)
	id := s.create(nil)
	base := "/sandboxes/" + id
	s.writeFile(id, "/home/user/a.txt", "v1")
	var sn snapshotInfo
	s.must(201, "POST", base+"/snapshot", nil, &sn)
	for round := range 4 {
		kill := base
		if round%2 == 1 {
			kill += "?async=true"
		}
		var wg sync.WaitGroup
		var restoreCode, killCode int
		var restoreBody []byte
		wg.Add(2)
		go func() {
			defer wg.Done()
			restoreCode, restoreBody = s.do("POST", base+"/restore?snapshot_id="+sn.SnapshotID, nil)
		}()
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(round) * 150 * time.Millisecond)
			killCode, _ = s.do("DELETE", kill, nil)
		}()
		wg.Wait()
		if (restoreCode != 200 && restoreCode != 410) || (killCode != 200 && killCode != 202) {
			t.Fatalf("round %d: restore %d %s, kill %d", round, restoreCode, restoreBody, killCode)
		}
		state := ""
		for deadline := time.Now().Add(60 * time.Second); ; {
			var st struct {
				State string `json:"state"`
			}
			s.must(200, "GET", base+"/status", nil, &st)
			state = st.State
			// An async kill finishes in the background.
			if state == "killed" && len(sandboxProcs(s.stateDir)) > 0 && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			break
		}
		procs := sandboxProcs(s.stateDir)
		t.Logf("round %d: restore %d, kill %d, state %s, runsc processes %d", round, restoreCode, killCode, state, len(procs))
		switch state {
		case "running":
			if res := s.run(id, "cat /home/user/a.txt"); res.Stdout != "v1" {
				t.Fatalf("round %d: running sandbox reads %+v", round, res)
			}
			if ids := s.listedIDs(); count(ids, id) != 1 {
				t.Fatalf("round %d: listed %v", round, ids)
			}
		case "killed":
			if len(procs) > 0 {
				t.Fatalf("round %d: killed, but runsc processes remain: %v", round, procs)
			}
		default:
			t.Fatalf("round %d: state %q", round, state)
		}
	}
	s.do("DELETE", base, nil)
	s.stop() // checks netns, veths, nftables tables and runsc processes
	if b, err := os.ReadFile("/proc/self/mounts"); err != nil || bytes.Contains(b, []byte(s.stateDir)) {
		t.Errorf("mounts under the state dir left behind (%v):\n%s", err, b)
	}
	// The runtimes' per-sandbox state: bundles and runsc state (gvisor), VM dirs (microvm).
	for _, dir := range []string{"gvisor/bundles", "gvisor/runsc", "microvm/vms", "run"} {
		if ents, err := os.ReadDir(filepath.Join(s.stateDir, dir)); err == nil {
			for _, e := range ents {
				if strings.Contains(e.Name(), "sbx-") {
					t.Errorf("runtime state left behind: %s/%s", dir, e.Name())
				}
			}
		}
	}
}

// restoreScript is the official SDK's restore sequence through our Python
// SDK, sync and async, and a restore right after an (async) kill.
const restoreScript = `
import asyncio
from declaw import Sandbox, AsyncSandbox, NotFoundException

def check(cond, msg):
    if not cond:
        raise AssertionError(msg)

sbx = Sandbox.create(template="python", timeout=300, metadata={"suite": "restore-e2e"}, envs={"MODE": "x"})
sid = sbx.sandbox_id
try:
    sbx.files.write("/home/user/notes.txt", "v1")
    snap = sbx.snapshot()
    sbx.files.write("/home/user/notes.txt", "v2")
    sbx.files.write("/home/user/second.txt", "later")
    restored = Sandbox.restore(sid, snapshot_id=snap.snapshot_id)
    check(restored.sandbox_id == sid, "restore answered another id %r" % restored.sandbox_id)
    check(restored.files.read("/home/user/notes.txt") == "v1", "restored content")
    check(not restored.files.exists("/home/user/second.txt"), "second file survived the restore")
    check(restored.commands.run("echo $MODE").stdout == "x\n", "envs after restore")
    check(sbx.files.read("/home/user/notes.txt") == "v1", "the old handle does not see the restore")
    ids = [s.sandbox_id for s in Sandbox.list(query={"metadata": {"suite": "restore-e2e"}}).sandboxes]
    check(ids == [sid], "listed %r" % ids)
    check(restored.restored_from == snap.snapshot_id, "restored_from %r" % restored.restored_from)

    sbx.files.write("/home/user/notes.txt", "v3")
    again = sbx.restore()              # instance form, newest snapshot
    check(again.sandbox_id == sid and again.files.read("/home/user/notes.txt") == "v1", "instance restore")

    sbx.kill()                         # async by default
    back = Sandbox.restore(sid)
    check(back.sandbox_id == sid and back.is_running(), "restore after kill")
    check(back.files.read("/home/user/notes.txt") == "v1", "content after restoring a killed sandbox")

    other = Sandbox.create(template="python", timeout=120)
    try:
        try:
            Sandbox.restore(other.sandbox_id, snapshot_id=snap.snapshot_id)
            raise AssertionError("restore with another sandbox's snapshot did not raise")
        except NotFoundException:
            pass
    finally:
        other.kill()

    fork = Sandbox.restore(sid, snapshot_id=snap.snapshot_id, fork=True)
    try:
        check(fork.sandbox_id != sid and fork.files.read("/home/user/notes.txt") == "v1", "fork")
    finally:
        fork.kill()

    async def main():
        a = await AsyncSandbox.connect(sid)
        await a.write_file("/home/user/notes.txt", "async-v2")
        r = await AsyncSandbox.restore(sid, snapshot_id=snap.snapshot_id)
        check(r.sandbox_id == sid, "async restore id")
        check(await r.read_file("/home/user/notes.txt") == "v1", "async restored content")
        r2 = await a.restore(snap.snapshot_id)
        check(r2.sandbox_id == sid, "async instance restore id")
    asyncio.run(main())
finally:
    Sandbox.kill(sid)
print("RESTORE-E2E-OK")
`

func TestPythonSDKRestore(t *testing.T) {
	s := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := s.pythonCmd(ctx, restoreScript)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil || !strings.Contains(out.String(), "RESTORE-E2E-OK") {
		t.Fatalf("SDK restore script failed: %v\n%s", err, out.String())
	}
}
