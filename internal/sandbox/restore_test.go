package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/limits"
	"github.com/declaw/declaw/internal/policy"
	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/store"
)

func TestPickSnapshot(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	sn := func(id, source string, minutes int) *store.Snapshot {
		return &store.Snapshot{ID: id, Source: source, CreatedAt: t0.Add(time.Duration(minutes) * time.Minute)}
	}
	tests := []struct {
		name string
		list []*store.Snapshot
		want string
	}{
		{"empty", nil, ""},
		{"one manual", []*store.Snapshot{sn("m1", "manual", 1)}, "m1"},
		{"newest manual", []*store.Snapshot{sn("m1", "manual", 1), sn("m3", "manual", 3), sn("m2", "manual", 2)}, "m3"},
		{"periodic beats newer manual", []*store.Snapshot{sn("m9", "manual", 9), sn("p1", "periodic", 1)}, "p1"},
		{"pause beats newer periodic and manual", []*store.Snapshot{sn("m9", "manual", 9), sn("p8", "periodic", 8), sn("s1", "pause", 1)}, "s1"},
		{"newest pause", []*store.Snapshot{sn("s1", "pause", 1), sn("s2", "pause", 2), sn("p9", "periodic", 9)}, "s2"},
		{"unknown source ranks last", []*store.Snapshot{sn("x9", "other", 9), sn("m1", "manual", 1)}, "m1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PickSnapshot(tt.list)
			var id string
			if got != nil {
				id = got.ID
			}
			if id != tt.want {
				t.Errorf("PickSnapshot = %q, want %q", id, tt.want)
			}
		})
	}
}

// restoreEvents returns the data of sandbox id's vm_restore events.
func (h *harness) restoreEvents(t *testing.T, id string) []map[string]any {
	t.Helper()
	evs, err := h.st.ListAudit(t.Context(), store.AuditQuery{SandboxID: id, Types: []string{"vm_restore"}})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	var out []map[string]any
	for _, ev := range evs {
		var d map[string]any
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatalf("vm_restore data %s: %v", ev.Data, err)
		}
		out = append(out, d)
	}
	return out
}

// snapshotWith writes files into sandbox id and snapshots it.
func (h *harness) snapshotWith(t *testing.T, id string, files map[string]string) *store.Snapshot {
	t.Helper()
	for p, c := range files {
		h.envd.write(id, p, c)
	}
	sn, err := h.m.Snapshot(t.Context(), id, false)
	if err != nil {
		t.Fatalf("Snapshot(%s): %v", id, err)
	}
	return sn
}

func TestRestoreInPlace(t *testing.T) {
	h := newHarness(t)
	info, tok := h.create(t, CreateRequest{Template: "python", Timeout: intp(600), Metadata: map[string]string{"app": "x"},
		Envs: map[string]string{"MODE": "dev", "API_KEY": "sk-secret-1234"}})
	id := info.SandboxID
	sn := h.snapshotWith(t, id, map[string]string{"/home/user/a.txt": "v1"})
	h.envd.write(id, "/home/user/a.txt", "v2")
	h.envd.write(id, "/home/user/b.txt", "after")
	acquires, _, _ := h.net.counts()
	firstInit := h.envd.initCalls()[0]
	before := h.record(t, id)

	got, gotTok, gotSn, err := h.m.Restore(t.Context(), id, sn.ID)
	if err != nil {
		t.Fatalf("Restore(%s, %s): %v", id, sn.ID, err)
	}
	if got.SandboxID != id || gotSn.ID != sn.ID || gotTok != tok {
		t.Errorf("Restore = (%s, token %q, %s), want (%s, the same token, %s)", got.SandboxID, gotTok, gotSn.ID, id, sn.ID)
	}
	if fs := h.envd.fs(id); !maps.Equal(fs, map[string]string{"/home/user/a.txt": "v1"}) {
		t.Errorf("files after restore = %v, want only a.txt = v1", fs)
	}
	if starts, destroys := h.rt.Counts(); starts != 2 || destroys != 1 {
		t.Errorf("runtime starts, destroys = %d, %d; want 2, 1 (the container replaced)", starts, destroys)
	}
	if a, _, held := h.net.counts(); a != acquires || held != 1 {
		t.Errorf("network acquires = %d, held = %d; want %d (the slot kept), 1", a, held, acquires)
	}
	inits := h.envd.initCalls()
	if len(inits) != 2 || !maps.Equal(inits[1].Envs, firstInit.Envs) || inits[1].Hostname != id {
		t.Errorf("inits = %+v, want the first one sent again (envs %v, hostname %s)", inits, firstInit.Envs, id)
	}
	// The snapshot is extracted before /init (which installs the CA last).
	paths := h.envd.callPaths()
	put, lastInit := slices.Index(paths, "PUT /snapshot"), -1
	for i, p := range paths {
		if p == "POST /init" {
			lastInit = i
		}
	}
	if put < 0 || lastInit < put {
		t.Errorf("envd calls = %v, want PUT /snapshot before the last POST /init", paths)
	}
	rec := h.record(t, id)
	if rec.State != StateRunning || rec.Timeout != 600 || rec.Metadata["app"] != "x" || !maps.Equal(rec.Envs, before.Envs) {
		t.Errorf("record after restore = %+v, want running with timeout, metadata and envs kept (%v)", rec, before.Envs)
	}
	if rec.EndAt.Before(time.Now().Add(590*time.Second)) || !rec.StartedAt.After(before.StartedAt) {
		t.Errorf("record times: started %v (before %v), end %v; want a new start and a full timeout from now", rec.StartedAt, before.StartedAt, rec.EndAt)
	}
	if tgt, err := h.m.Envd(t.Context(), id); err != nil || tgt.Token != tok {
		t.Errorf("Envd after restore = %+v, %v; want the same token", tgt, err)
	}
	list, _, err := h.m.List(t.Context(), ListFilter{})
	if err != nil || len(list) != 1 || list[0].SandboxID != id {
		t.Errorf("List = %v, %v; want only %s", list, err, id)
	}
	evs := h.restoreEvents(t, id)
	if len(evs) != 1 || evs[0]["snapshot_id"] != sn.ID || evs[0]["from_state"] != StateRunning || evs[0]["source"] != "manual" {
		t.Errorf("vm_restore events = %v, want one for %s from running", evs, sn.ID)
	}
	// Masking still works: the secret is known to the restored sandbox.
	if got := string(h.m.MaskSecrets(id, []byte("key sk-secret-1234"))); got != "key ***" {
		t.Errorf("MaskSecrets after restore = %q", got)
	}
	// A snapshot taken after the restore holds the restored files.
	sn2 := h.snapshotWith(t, id, map[string]string{"/c": "3"})
	b, err := os.ReadFile(sn2.Path)
	if err != nil || string(b) != `{"/c":"3","/home/user/a.txt":"v1"}` {
		t.Errorf("second snapshot = %s, %v", b, err)
	}
	if _, err := h.m.Kill(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	h.assertFreed(t)
}

func TestRestorePaused(t *testing.T) {
	h := newHarness(t)
	info, _ := h.create(t, CreateRequest{})
	id := info.SandboxID
	sn := h.snapshotWith(t, id, map[string]string{"/a": "1"})
	h.envd.write(id, "/a", "2")
	if err := h.m.Pause(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := h.m.Restore(t.Context(), id, ""); err != nil {
		t.Fatalf("Restore of a paused sandbox: %v", err)
	}
	if st, err := h.rt.State(t.Context(), id); err != nil || st != sandboxrt.StateRunning {
		t.Errorf("runtime state = %v, %v; want running", st, err)
	}
	if rec := h.record(t, id); rec.State != StateRunning {
		t.Errorf("state = %s, want running", rec.State)
	}
	if fs := h.envd.fs(id); fs["/a"] != "1" {
		t.Errorf("files = %v, want /a = 1", fs)
	}
	if evs := h.restoreEvents(t, id); len(evs) != 1 || evs[0]["from_state"] != StatePaused || evs[0]["snapshot_id"] != sn.ID {
		t.Errorf("vm_restore events = %v", evs)
	}
	if _, err := h.m.Kill(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	h.assertFreed(t)
}

func TestRestoreKilled(t *testing.T) {
	h := newHarness(t)
	sec := policy.Default()
	info, _ := h.create(t, CreateRequest{Timeout: intp(120), Metadata: map[string]string{"k": "v"}, Security: sec,
		Envs: map[string]string{"MODE": "dev", "GITHUB_TOKEN": "ghp_0123456789"}})
	id := info.SandboxID
	h.snapshotWith(t, id, map[string]string{"/work/a": "v1"})
	if _, err := h.m.Kill(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.Envd(t.Context(), id); !errors.Is(err, ErrKilled) {
		t.Fatalf("Envd after kill: %v, want ErrKilled", err)
	}
	got, tok, _, err := h.m.Restore(t.Context(), id, "")
	if err != nil {
		t.Fatalf("Restore of a killed sandbox: %v", err)
	}
	if got.SandboxID != id || got.State != StateRunning || got.KilledAt != nil || got.Metadata["k"] != "v" || got.Timeout != 120 {
		t.Errorf("restored info = %+v, want %s running again with its metadata and timeout", got, id)
	}
	if tgt, err := h.m.Envd(t.Context(), id); err != nil || tgt.Token != tok {
		t.Errorf("Envd after restore = %+v, %v", tgt, err)
	}
	if fs := h.envd.fs(id); !maps.Equal(fs, map[string]string{"/work/a": "v1"}) {
		t.Errorf("files = %v", fs)
	}
	inits := h.envd.initCalls()
	last := inits[len(inits)-1]
	if !maps.Equal(last.Envs, map[string]string{"MODE": "dev"}) {
		t.Errorf("envs after restoring a killed sandbox = %v, want MODE only (the masked value is not stored)", last.Envs)
	}
	if rec := h.record(t, id); rec.Envs["GITHUB_TOKEN"] != "***" || !rec.KilledAt.IsZero() {
		t.Errorf("record = %+v, want the masked env still listed and no kill time", rec)
	}
	evs := h.restoreEvents(t, id)
	if len(evs) != 1 || evs[0]["from_state"] != StateKilled || !slices.Equal(anyStrings(evs[0]["envs_not_restored"]), []string{"GITHUB_TOKEN"}) {
		t.Errorf("vm_restore events = %v", evs)
	}
	list, _, _ := h.m.List(t.Context(), ListFilter{})
	if len(list) != 1 || list[0].SandboxID != id {
		t.Errorf("List = %v, want only %s", list, id)
	}
	if _, err := h.m.Kill(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	h.assertFreed(t)
}

func anyStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func TestRestoreErrors(t *testing.T) {
	h := newHarness(t)
	a, _ := h.create(t, CreateRequest{})
	b, _ := h.create(t, CreateRequest{})
	if _, _, _, err := h.m.Restore(t.Context(), a.SandboxID, ""); !errors.Is(err, ErrSnapshotNotFound) {
		t.Errorf("Restore without snapshots: %v, want ErrSnapshotNotFound", err)
	}
	snB := h.snapshotWith(t, b.SandboxID, map[string]string{"/b": "b"})
	if _, _, _, err := h.m.Restore(t.Context(), a.SandboxID, snB.ID); !errors.Is(err, ErrSnapshotNotFound) {
		t.Errorf("Restore with another sandbox's snapshot: %v, want ErrSnapshotNotFound", err)
	}
	if _, _, _, err := h.m.Restore(t.Context(), a.SandboxID, "snap-nope"); !errors.Is(err, ErrSnapshotNotFound) {
		t.Errorf("Restore with an unknown snapshot: %v, want ErrSnapshotNotFound", err)
	}
	if _, _, _, err := h.m.Restore(t.Context(), "sbx-nope", snB.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Restore of an unknown sandbox: %v, want ErrNotFound", err)
	}
	// A deleted snapshot is gone for restores too.
	if ok, err := h.m.DeleteSnapshot(t.Context(), b.SandboxID, snB.ID); !ok || err != nil {
		t.Fatalf("DeleteSnapshot: %v, %v", ok, err)
	}
	if _, _, _, err := h.m.Restore(t.Context(), b.SandboxID, snB.ID); !errors.Is(err, ErrSnapshotNotFound) {
		t.Errorf("Restore with a deleted snapshot: %v, want ErrSnapshotNotFound", err)
	}
	// Nothing was touched.
	if starts, destroys := h.rt.Counts(); starts != 2 || destroys != 0 {
		t.Errorf("runtime starts, destroys = %d, %d; want 2, 0", starts, destroys)
	}
}

func TestRestorePicksBySource(t *testing.T) {
	h := newHarness(t)
	info, _ := h.create(t, CreateRequest{})
	id := info.SandboxID
	manual := h.snapshotWith(t, id, map[string]string{"/f": "manual-old"})
	// A periodic snapshot, older than a newer manual one.
	periodicPath := filepath.Join(h.cfg.StateDir, "snapshots", "snap-periodic.tar.gz")
	if err := os.WriteFile(periodicPath, []byte(`{"/f":"periodic"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.st.CreateSnapshot(t.Context(), &store.Snapshot{ID: "snap-periodic", SandboxID: id, Source: "periodic", Kind: "filesystem",
		CreatedAt: manual.CreatedAt.Add(time.Millisecond), Path: periodicPath}); err != nil {
		t.Fatal(err)
	}
	h.snapshotWith(t, id, map[string]string{"/f": "manual-new"})
	_, _, sn, err := h.m.Restore(t.Context(), id, "")
	if err != nil {
		t.Fatal(err)
	}
	if sn.ID != "snap-periodic" || h.envd.fs(id)["/f"] != "periodic" {
		t.Errorf("restored %s with files %v, want the periodic snapshot", sn.ID, h.envd.fs(id))
	}
}

func TestRestoreFailureKills(t *testing.T) {
	h := newHarness(t)
	info, _ := h.create(t, CreateRequest{})
	id := info.SandboxID
	sn := h.snapshotWith(t, id, map[string]string{"/a": "1"})
	h.envd.mu.Lock()
	h.envd.putStatus = 500
	h.envd.mu.Unlock()
	if _, _, _, err := h.m.Restore(t.Context(), id, sn.ID); err == nil {
		t.Fatal("Restore with a failing extraction succeeded")
	}
	if rec := h.record(t, id); rec.State != StateKilled {
		t.Errorf("state after a failed restore = %s, want killed", rec.State)
	}
	h.assertFreed(t)
	// It can be restored again once extraction works.
	h.envd.mu.Lock()
	h.envd.putStatus = 0
	h.envd.mu.Unlock()
	if _, _, _, err := h.m.Restore(t.Context(), id, sn.ID); err != nil {
		t.Fatalf("Restore after the failure: %v", err)
	}
	if fs := h.envd.fs(id); fs["/a"] != "1" {
		t.Errorf("files = %v", fs)
	}
	if _, err := h.m.Kill(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	h.assertFreed(t)
}

func TestFork(t *testing.T) {
	h := newHarness(t)
	info, _ := h.create(t, CreateRequest{Metadata: map[string]string{"app": "y"}, Envs: map[string]string{"MODE": "x"}})
	id := info.SandboxID
	sn := h.snapshotWith(t, id, map[string]string{"/a": "v1"})
	h.envd.write(id, "/a", "v2")
	fork, _, _, err := h.m.Fork(t.Context(), id, sn.ID)
	if err != nil {
		t.Fatalf("Fork: %v", err)
	}
	if fork.SandboxID == id || fork.Metadata["app"] != "y" {
		t.Errorf("fork = %+v, want a new sandbox with the metadata", fork)
	}
	if a, b := h.envd.fs(id)["/a"], h.envd.fs(fork.SandboxID)["/a"]; a != "v2" || b != "v1" {
		t.Errorf("original /a = %q, fork /a = %q; want v2, v1", a, b)
	}
	if evs := h.restoreEvents(t, fork.SandboxID); len(evs) != 1 || evs[0]["forked_from"] != id {
		t.Errorf("fork vm_restore events = %v", evs)
	}
	if evs := h.restoreEvents(t, id); len(evs) != 0 {
		t.Errorf("original vm_restore events = %v, want none", evs)
	}
	created, err := h.st.ListAudit(t.Context(), store.AuditQuery{SandboxID: fork.SandboxID, Types: []string{"sandbox.created"}})
	if err != nil || len(created) != 1 || !strings.Contains(string(created[0].Data), sn.ID) {
		t.Errorf("fork sandbox.created events = %v, %v; want one naming %s", created, err, sn.ID)
	}
}

// TestForkUsesWarmPool: a fork is a new sandbox, so it may take a booted
// one from the warm pool; the snapshot's files are still in place.
func TestForkUsesWarmPool(t *testing.T) {
	h := newHarness(t, func(h *harness) { h.cfg.WarmPool = map[string]int{"base": 1} })
	waitFor(t, 5*time.Second, "the pool to fill", func() bool { return h.m.PoolSizes()["base"] == 1 })
	info, _ := h.create(t, CreateRequest{})
	sn := h.snapshotWith(t, info.SandboxID, map[string]string{"/a": "v1"})
	waitFor(t, 5*time.Second, "the pool to refill", func() bool { return h.m.PoolSizes()["base"] == 1 })
	fork, _, _, err := h.m.Fork(t.Context(), info.SandboxID, sn.ID)
	if err != nil {
		t.Fatal(err)
	}
	if h.envd.fs(fork.SandboxID)["/a"] != "v1" {
		t.Errorf("fork files = %v", h.envd.fs(fork.SandboxID))
	}
	created, _ := h.st.ListAudit(t.Context(), store.AuditQuery{SandboxID: fork.SandboxID, Types: []string{"sandbox.created"}})
	if len(created) != 1 || !strings.Contains(string(created[0].Data), `"warm":true`) {
		t.Errorf("fork sandbox.created = %v, want warm", created)
	}
}

// TestRestoreRacesKill runs restores against sync and async kills of the
// same sandbox, started together or while the restore is extracting: the
// record always matches what runs, and once everything is killed nothing
// is held.
func TestRestoreRacesKill(t *testing.T) {
	h := newHarness(t)
	info, _ := h.create(t, CreateRequest{})
	id := info.SandboxID
	sn := h.snapshotWith(t, id, map[string]string{"/a": "1"})
	outcomes := map[string]int{}
	for i := range 24 {
		async, midway := i%2 == 1, i%4 >= 2
		if midway && h.record(t, id).State == StateKilled {
			if _, _, _, err := h.m.Restore(t.Context(), id, sn.ID); err != nil {
				t.Fatalf("round %d: revive: %v", i, err)
			}
		}
		var gate chan struct{}
		if midway {
			gate = make(chan struct{})
			h.envd.mu.Lock()
			h.envd.putGate = gate
			h.envd.mu.Unlock()
		}
		puts := strings.Count(strings.Join(h.envd.callPaths(), ","), "PUT /snapshot")
		var wg sync.WaitGroup
		var restoreErr error
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, _, _, restoreErr = h.m.Restore(t.Context(), id, sn.ID)
		}()
		go func() {
			defer wg.Done()
			if midway {
				waitFor(t, 5*time.Second, "the restore to extract", func() bool {
					return strings.Count(strings.Join(h.envd.callPaths(), ","), "PUT /snapshot") > puts
				})
			}
			killed := make(chan struct{})
			go func() {
				defer close(killed)
				if async {
					h.m.KillAsync(t.Context(), id)
				} else {
					h.m.Kill(t.Context(), id) // waits for the restore
				}
			}()
			if midway {
				time.Sleep(20 * time.Millisecond) // let the kill start
				h.envd.mu.Lock()
				h.envd.putGate = nil
				h.envd.mu.Unlock()
				close(gate)
			}
			<-killed
		}()
		wg.Wait()
		if restoreErr != nil && !errors.Is(restoreErr, ErrKilled) {
			t.Fatalf("round %d: Restore: %v, want success or ErrKilled", i, restoreErr)
		}
		waitFor(t, 5*time.Second, "an async kill to finish", func() bool {
			inst := h.m.lookup(id)
			return inst == nil || !inst.dying.Load()
		})
		rec := h.record(t, id)
		_, rtErr := h.rt.State(t.Context(), id)
		live := h.m.lookup(id) != nil
		_, dirErr := os.Stat(filepath.Join(h.runDir, id))
		if (rec.State == StateRunning) != (dirErr == nil) {
			t.Fatalf("round %d: record %s, run dir: %v", i, rec.State, dirErr)
		}
		outcomes[rec.State]++
		switch rec.State {
		case StateRunning:
			if !live || rtErr != nil {
				t.Fatalf("round %d: record running, instance live %v, runtime %v", i, live, rtErr)
			}
			if fs := h.envd.fs(id); fs["/a"] != "1" {
				t.Fatalf("round %d: running with files %v", i, fs)
			}
		case StateKilled:
			if live || !errors.Is(rtErr, sandboxrt.ErrNotFound) {
				t.Fatalf("round %d: record killed, instance live %v, runtime %v", i, live, rtErr)
			}
		default:
			t.Fatalf("round %d: state %s", i, rec.State)
		}
		if midway && rec.State != StateKilled {
			t.Fatalf("round %d: a kill during the restore left the sandbox %s, want killed", i, rec.State)
		}
		if midway && async && !errors.Is(restoreErr, ErrKilled) {
			t.Fatalf("round %d: Restore during an async kill: %v, want ErrKilled", i, restoreErr)
		}
	}
	t.Logf("outcomes: %v", outcomes)
	if _, err := h.m.Kill(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	h.assertFreed(t)
}

// TestShutdownWaitsForAsyncKill: an async kill that won over a restore is
// still freeing the sandbox when the server shuts down; Shutdown returns
// only once it is done, so nothing (container, slot, run dir) is left.
func TestShutdownWaitsForAsyncKill(t *testing.T) {
	h := newHarness(t)
	info, _ := h.create(t, CreateRequest{})
	id := info.SandboxID
	sn := h.snapshotWith(t, id, map[string]string{"/a": "1"})
	put := make(chan struct{})
	h.envd.mu.Lock()
	h.envd.putGate = put
	h.envd.mu.Unlock()
	restored := make(chan error, 1)
	go func() {
		_, _, _, err := h.m.Restore(t.Context(), id, sn.ID)
		restored <- err
	}()
	waitFor(t, 5*time.Second, "the restore to extract", func() bool {
		return strings.Contains(strings.Join(h.envd.callPaths(), ","), "PUT /snapshot")
	})
	if err := h.m.KillAsync(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	release := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(release) // before the harness's Shutdown, if the test fails
	h.rt.gate = gate   // the async kill's destroy waits
	close(put)
	if err := <-restored; !errors.Is(err, ErrKilled) {
		t.Fatalf("Restore during an async kill: %v, want ErrKilled", err)
	}
	done := make(chan error, 1)
	go func() { done <- h.m.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while an async kill was still freeing the sandbox", err)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	h.rt.gate = nil
	h.assertFreed(t)
}

// TestRestoreWaitsForAsyncKill: a restore right after an async kill (the
// official SDK's kill is async) waits for the teardown and brings the
// sandbox back.
func TestRestoreWaitsForAsyncKill(t *testing.T) {
	h := newHarness(t)
	info, _ := h.create(t, CreateRequest{})
	id := info.SandboxID
	sn := h.snapshotWith(t, id, map[string]string{"/a": "1"})
	h.rt.gate = make(chan struct{})
	if err := h.m.KillAsync(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, _, err := h.m.Restore(context.Background(), id, sn.ID)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Restore returned (%v) while the kill was still tearing down", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(h.rt.gate)
	if err := <-done; err != nil {
		t.Fatalf("Restore after an async kill: %v", err)
	}
	h.rt.gate = nil
	if rec := h.record(t, id); rec.State != StateRunning {
		t.Errorf("state = %s, want running", rec.State)
	}
	if _, err := h.m.Kill(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	h.assertFreed(t)
}

// TestConcurrentRestores: two restores of one sandbox run one after the
// other; both succeed and one container runs.
func TestConcurrentRestores(t *testing.T) {
	h := newHarness(t)
	info, _ := h.create(t, CreateRequest{})
	id := info.SandboxID
	sn := h.snapshotWith(t, id, map[string]string{"/a": "1"})
	if _, err := h.m.Kill(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, _, errs[i] = h.m.Restore(t.Context(), id, sn.ID)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("restore %d: %v", i, err)
		}
	}
	if ids := h.rt.IDs(); !slices.Equal(ids, []string{id}) {
		t.Errorf("runtime holds %v, want [%s]", ids, id)
	}
	if _, err := h.m.Kill(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	h.assertFreed(t)
}

// TestRestoreKeepsResources: a restored sandbox has the limits it had, in
// place or once killed, and is no longer marked as ended.
func TestRestoreKeepsResources(t *testing.T) {
	h := newHarness(t)
	cpus, mem := 1.5, int64(768)
	info, _ := h.create(t, CreateRequest{Resources: limits.Request{CPUs: &cpus, MemoryMB: &mem}})
	id := info.SandboxID
	want, _ := h.rt.Spec(id)
	sn := h.snapshotWith(t, id, map[string]string{"/a": "1"})
	check := func(when string) {
		t.Helper()
		spec, ok := h.rt.Spec(id)
		if !ok || spec.Resources != want.Resources {
			t.Errorf("%s: runtime resources = %+v, %v; want %+v", when, spec.Resources, ok, want.Resources)
		}
		got, err := h.m.Get(t.Context(), id)
		if err != nil || got.Resources == nil || got.Resources.VCPUs != cpus || got.Resources.MemoryMB != mem || got.EndReason != "" {
			t.Errorf("%s: info = %+v, %v; want %v CPUs, %d MiB, no end reason", when, got, err, cpus, mem)
		}
	}
	if _, _, _, err := h.m.Restore(t.Context(), id, sn.ID); err != nil {
		t.Fatal(err)
	}
	check("in place")
	if _, err := h.m.Kill(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := h.m.Restore(t.Context(), id, sn.ID); err != nil {
		t.Fatal(err)
	}
	check("after a kill")
	fork, _, _, err := h.m.Fork(t.Context(), id, sn.ID)
	if err != nil {
		t.Fatal(err)
	}
	if spec, _ := h.rt.Spec(fork.SandboxID); spec.Resources != want.Resources {
		t.Errorf("fork resources = %+v, want %+v", spec.Resources, want.Resources)
	}
}
