package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/limits"
	"github.com/declaw/declaw/internal/network"
	"github.com/declaw/declaw/internal/policy"
	"github.com/declaw/declaw/internal/store"
)

// Restore brings a sandbox back to one of its snapshots, in place: the
// same sandbox id, the filesystem of the snapshot (files written since are
// gone, its own files are back), everything that ran in it stopped, and
// its policy, metadata, envs, timeout and audit trail kept.
//
// The runtime container is replaced: a live sandbox (running or paused)
// keeps its network slot, policy enforcement and envs, and its container
// is destroyed and started again from the template, with the snapshot
// extracted before envd's /init and before any request reaches it (API
// calls for the sandbox wait until the restore is done). A killed sandbox
// comes back under its id in a new slot; env values that were masked in
// its record are not restored (they are never stored in clear), and the
// audit event names them. Its timeout starts again from now in both cases.
//
// snapID "" picks the sandbox's most recent snapshot, preferring the
// sources pause > periodic > manual (PickSnapshot). A snapshot of another
// sandbox is ErrSnapshotNotFound. If the restore fails after the old
// container was stopped, the sandbox is killed (it can be restored again).
// A kill that lands during a restore wins: the restore answers ErrKilled.
func (m *Manager) Restore(ctx context.Context, id, snapID string) (_ *Info, token string, _ *store.Snapshot, err error) {
	if _, err := m.cfg.Store.GetSandbox(ctx, id); errors.Is(err, store.ErrNotFound) {
		return nil, "", nil, fmt.Errorf("sandbox %s: %w", id, ErrNotFound)
	} else if err != nil {
		return nil, "", nil, err
	}
	sn, archive, err := m.openSnapshot(ctx, id, snapID)
	if err != nil {
		return nil, "", nil, err
	}
	defer archive.Close()
	unlock, err := m.lockRestore(ctx, id)
	if err != nil {
		return nil, "", nil, err
	}
	defer unlock()
	for {
		inst := m.lookup(id)
		if inst == nil {
			return m.restoreKilled(ctx, id, sn, archive)
		}
		if !inst.dying.Load() {
			inst.mu.Lock()
			if inst.state != StateKilled && !inst.dying.Load() {
				info, err := m.restoreLive(ctx, inst, sn, archive)
				inst.mu.Unlock()
				if err != nil {
					return nil, "", nil, err
				}
				return info, inst.token, sn, nil
			}
			inst.mu.Unlock()
		}
		// Being killed: wait until it is gone, then restore it as killed.
		select {
		case <-inst.gone:
		case <-ctx.Done():
			return nil, "", nil, fmt.Errorf("restore sandbox %s: waiting for its kill to finish: %w", id, ctx.Err())
		}
	}
}

// Fork starts a NEW sandbox from a snapshot of sandbox id (the copy
// Restore used to make): same template, metadata, timeout, envs (masked
// values excepted), security and network policy, with the snapshot's files
// in place before it is handed out. Sandbox id is left as it is.
func (m *Manager) Fork(ctx context.Context, id, snapID string) (*Info, string, *store.Snapshot, error) {
	src, err := m.cfg.Store.GetSandbox(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, "", nil, fmt.Errorf("sandbox %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, "", nil, err
	}
	sn, archive, err := m.openSnapshot(ctx, id, snapID)
	if err != nil {
		return nil, "", nil, err
	}
	defer archive.Close()
	req, dropped, err := requestFrom(src)
	if err != nil {
		return nil, "", nil, err
	}
	info, token, err := m.create(ctx, req, &fromSnapshot{snap: sn, archive: archive})
	if err != nil {
		return nil, "", nil, err
	}
	m.audit(ctx, info.SandboxID, "vm_restore", restoreEvent(sn, "new", dropped, map[string]any{"forked_from": id}))
	return info, token, sn, nil
}

// snapshotRank orders snapshot sources for a restore without a snapshot id.
var snapshotRank = map[string]int{"pause": 3, "periodic": 2, "manual": 1}

// PickSnapshot returns the snapshot a restore without a snapshot id uses:
// of the sources pause > periodic > manual, the best one present, and of
// that source the most recent. list may be in any order; nil if empty.
func PickSnapshot(list []*store.Snapshot) *store.Snapshot {
	var best *store.Snapshot
	for _, sn := range list {
		switch {
		case best == nil:
			best = sn
		case snapshotRank[sn.Source] != snapshotRank[best.Source]:
			if snapshotRank[sn.Source] > snapshotRank[best.Source] {
				best = sn
			}
		case sn.CreatedAt.After(best.CreatedAt):
			best = sn
		}
	}
	return best
}

// openSnapshot finds the snapshot to restore (snapID, or PickSnapshot of
// the sandbox's) and opens its archive, so that deleting the snapshot
// meanwhile cannot break a restore under way.
func (m *Manager) openSnapshot(ctx context.Context, id, snapID string) (*store.Snapshot, *os.File, error) {
	var sn *store.Snapshot
	if snapID == "" {
		list, err := m.cfg.Store.ListSnapshots(ctx, id)
		if err != nil {
			return nil, nil, err
		}
		if sn = PickSnapshot(list); sn == nil {
			return nil, nil, fmt.Errorf("sandbox %s has no snapshot: %w", id, ErrSnapshotNotFound)
		}
	} else {
		var err error
		sn, err = m.cfg.Store.GetSnapshot(ctx, snapID)
		if errors.Is(err, store.ErrNotFound) || err == nil && sn.SandboxID != id {
			return nil, nil, fmt.Errorf("snapshot %s of sandbox %s: %w", snapID, id, ErrSnapshotNotFound)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	f, err := os.Open(sn.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("snapshot %s of sandbox %s: %w", sn.ID, id, ErrSnapshotNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open snapshot %s: %w", sn.ID, err)
	}
	return sn, f, nil
}

// lockRestore serialises the restores of one sandbox id.
func (m *Manager) lockRestore(ctx context.Context, id string) (unlock func(), err error) {
	for {
		m.mu.Lock()
		busy, ok := m.restoring[id]
		if !ok {
			if m.restoring == nil {
				m.restoring = map[string]chan struct{}{}
			}
			done := make(chan struct{})
			m.restoring[id] = done
			m.mu.Unlock()
			return func() {
				m.mu.Lock()
				delete(m.restoring, id)
				m.mu.Unlock()
				close(done)
			}, nil
		}
		m.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, fmt.Errorf("restore sandbox %s: waiting for another restore of it: %w", id, ctx.Err())
		}
	}
}

// restoreLive restores a running or paused sandbox in place. The caller
// holds inst.mu (so no request reaches envd until it is done) and the
// restore lock of the id.
func (m *Manager) restoreLive(ctx context.Context, inst *instance, sn *store.Snapshot, archive *os.File) (*Info, error) {
	id, fromState, start := inst.id, inst.state, time.Now().UTC()
	fail := func(step string, err error) (*Info, error) {
		err = fmt.Errorf("restore sandbox %s from snapshot %s: %s: %w", id, sn.ID, step, err)
		m.cfg.Logf("sandbox %s: %v; killing it", id, err)
		m.audit(ctx, id, "vm_restore_failed", map[string]any{"snapshot_id": sn.ID, "step": step})
		if _, kerr := m.killLocked(ctx, inst, "restore failed"); kerr != nil {
			m.cfg.Logf("sandbox %s: kill after failed restore: %v", id, kerr)
		}
		return nil, err
	}
	if inst.timer != nil {
		inst.timer.Stop()
		inst.timer = nil
	}
	// Stop everything that runs in it: the container goes, the network
	// slot and its policy, DNS, egress and content registrations stay.
	if err := m.cfg.Runtime.Destroy(ctx, id); err != nil {
		return fail("stop the old container", err)
	}
	inst.state = StateRunning // a paused sandbox is paused no more
	if err := m.cfg.Runtime.Start(ctx, inst.spec); err != nil {
		return fail("start the container", err)
	}
	// Kept-alive connections went to the old envd.
	if tr, ok := m.client.Transport.(interface{ CloseIdleConnections() }); ok {
		tr.CloseIdleConnections()
	}
	if err := m.waitEnvd(ctx, inst); err != nil {
		return fail("wait for envd", err)
	}
	if err := m.putSnapshot(ctx, inst, archive); err != nil {
		return fail("extract the snapshot", err)
	}
	if err := m.envdJSON(ctx, inst, http.MethodPost, "/init", inst.init, nil); err != nil {
		return fail("init envd", err)
	}
	inst.endAt = time.Time{}
	if inst.timeout > 0 {
		inst.endAt = time.Now().UTC().Add(inst.timeout)
	}
	endAt := inst.endAt
	rec, err := m.cfg.Store.UpdateSandbox(ctx, id, func(s *store.Sandbox) error {
		if inst.dying.Load() { // an async kill was accepted meanwhile: it wins
			return fmt.Errorf("restore sandbox %s: %w", id, ErrKilled)
		}
		s.State, s.StartedAt, s.EndAt = StateRunning, start, endAt
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrKilled) {
			return nil, err // the async kill frees the new container
		}
		return fail("record the restore", err)
	}
	m.armTimer(inst)
	m.cfg.Logf("sandbox %s: restored in place from snapshot %s in %v (was %s)", id, sn.ID, time.Since(start).Round(time.Millisecond), fromState)
	m.audit(ctx, id, "vm_restore", restoreEvent(sn, fromState, nil, map[string]any{"duration_ms": time.Since(start).Milliseconds()}))
	return infoFrom(rec), nil
}

// restoreKilled brings a killed sandbox back under its id: a new slot and
// container, the snapshot's files, its stored policy and settings.
func (m *Manager) restoreKilled(ctx context.Context, id string, sn *store.Snapshot, archive *os.File) (*Info, string, *store.Snapshot, error) {
	prev, err := m.cfg.Store.GetSandbox(ctx, id)
	if err != nil {
		return nil, "", nil, fmt.Errorf("restore sandbox %s: %w", id, err)
	}
	if prev.State != StateKilled {
		// In the store as live but not on this server (left by another one).
		return nil, "", nil, fmt.Errorf("restore sandbox %s: %w", id, ErrUnavailable)
	}
	req, dropped, err := requestFrom(prev)
	if err != nil {
		return nil, "", nil, err
	}
	start := time.Now()
	info, token, err := m.create(ctx, req, &fromSnapshot{snap: sn, archive: archive, prev: prev})
	if err != nil {
		return nil, "", nil, err
	}
	m.audit(ctx, id, "vm_restore", restoreEvent(sn, StateKilled, dropped, map[string]any{"duration_ms": time.Since(start).Milliseconds()}))
	return info, token, sn, nil
}

// fromSnapshot is what create needs to start a sandbox from a snapshot.
type fromSnapshot struct {
	snap    *store.Snapshot
	archive *os.File
	prev    *store.Sandbox // the killed sandbox brought back; nil: a new sandbox
}

func (f *fromSnapshot) sandboxID() string {
	if f == nil || f.prev == nil {
		return ""
	}
	return f.prev.ID
}

func (f *fromSnapshot) prevRecord() *store.Sandbox {
	if f == nil {
		return nil
	}
	return f.prev
}

// revive records that the killed sandbox rec.ID lives again, with the
// runtime fields of rec (state, times, address, runtime); its settings
// (metadata, envs, policies, timeout) stay as stored.
func (m *Manager) revive(ctx context.Context, rec *store.Sandbox) (*store.Sandbox, error) {
	out, err := m.cfg.Store.UpdateSandbox(ctx, rec.ID, func(s *store.Sandbox) error {
		if s.State != StateKilled {
			return &StateError{ID: rec.ID, Op: "restore", State: s.State}
		}
		s.State, s.StartedAt, s.EndAt, s.KilledAt = rec.State, rec.StartedAt, rec.EndAt, time.Time{}
		s.GuestIP, s.Runtime = rec.GuestIP, rec.Runtime
		var now resourceRecord
		_ = json.Unmarshal(rec.Resources, &now)
		s.Resources = updateResourceRecord(s.Resources, func(r *resourceRecord) {
			r.ResourceInfo, r.EndReason = now.ResourceInfo, "" // OOM counts stay
		})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("restore sandbox %s: %w", rec.ID, err)
	}
	return out, nil
}

// requestFrom rebuilds the create request of a stored sandbox, with the
// limits it had. Masked env values ("***" in the record) cannot be rebuilt:
// their names are returned.
func requestFrom(rec *store.Sandbox) (CreateRequest, []string, error) {
	req := CreateRequest{TeamID: rec.TeamID, Template: rec.TemplateID, Metadata: rec.Metadata, Lifecycle: rec.Lifecycle}
	timeout := max(rec.Timeout, 0)
	req.Timeout = &timeout
	var dropped []string
	req.Envs = map[string]string{}
	for k, v := range rec.Envs {
		if v == "***" {
			dropped = append(dropped, k)
			continue
		}
		req.Envs[k] = v
	}
	sort.Strings(dropped)
	if len(rec.Security) > 0 && string(rec.Security) != "null" {
		sec, err := policy.Parse(rec.Security)
		if err != nil {
			return req, nil, fmt.Errorf("restore sandbox %s: stored policy: %w", rec.ID, err)
		}
		req.Security = sec
	}
	if len(rec.Network) > 0 && string(rec.Network) != "null" {
		var np network.Policy
		if err := json.Unmarshal(rec.Network, &np); err != nil {
			return req, nil, fmt.Errorf("restore sandbox %s: stored network policy: %w", rec.ID, err)
		}
		req.Network = np
	}
	// The same limits as the original (the server's maxima permitting).
	if len(rec.Resources) > 0 {
		var rr resourceRecord
		if err := json.Unmarshal(rec.Resources, &rr); err == nil && rr.MemoryMB > 0 {
			req.Resources = limits.Request{CPUs: &rr.VCPUs, MemoryMB: &rr.MemoryMB, DiskMB: &rr.DiskMB}
		}
	}
	return req, dropped, nil
}

// restoreEvent is the data of a vm_restore audit event.
func restoreEvent(sn *store.Snapshot, fromState string, dropped []string, extra map[string]any) map[string]any {
	ev := map[string]any{"snapshot_id": sn.ID, "source": sn.Source, "from_state": fromState}
	if len(dropped) > 0 {
		ev["envs_not_restored"] = slices.Clone(dropped)
	}
	for k, v := range extra {
		ev[k] = v
	}
	return ev
}

// putSnapshot extracts a snapshot archive into the sandbox (envd's PUT /snapshot).
func (m *Manager) putSnapshot(ctx context.Context, inst *instance, archive *os.File) error {
	fi, err := archive.Stat()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, inst.base.String()+"/snapshot", io.NewSectionReader(archive, 0, fi.Size()))
	if err != nil {
		return err
	}
	req.ContentLength = fi.Size()
	req.Header.Set(envdapi.AccessTokenHeader, inst.token)
	req.Header.Set("Content-Type", "application/gzip")
	resp, err := m.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("envd answered %s: %s", resp.Status, b)
	}
	return nil
}
