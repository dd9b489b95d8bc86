package sandbox

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/limits"
	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/store"
)

// TestOOMThenExit: the runtime reports an OOM kill and then the sandbox's
// exit; the sandbox is freed, says oom and when in its info, and its audit
// trail has sandbox.oom and sandbox.killed (reason oom). Its memory is
// given back to admission.
func TestOOMThenExit(t *testing.T) {
	var adm *limits.Admission
	h := newHarness(t, func(h *harness) {
		lc, _ := limits.Config{ReserveMB: 1024}.Normalize()
		var err error
		if adm, err = limits.NewAdmission(lc, 1024+4096); err != nil {
			t.Fatal(err)
		}
		h.cfg.Limits, h.cfg.Admission = lc, adm
	})
	mem := int64(256)
	info, _ := h.create(t, CreateRequest{Template: "base", Resources: limits.Request{MemoryMB: &mem}})
	id := info.SandboxID
	if info.Resources == nil || info.Resources.MemoryMB != 256 || info.Resources.VCPUs != 2 || info.Resources.DiskMB != 2048 {
		t.Fatalf("created resources = %+v, want 256 MiB, 2 vCPUs, 2048 MiB disk", info.Resources)
	}
	if used, _ := adm.Usage(); used != 256 {
		t.Fatalf("committed = %d MiB, want 256", used)
	}
	at := time.Now().UTC().Truncate(time.Millisecond)
	h.rt.Emit(sandboxrt.Event{ID: id, Kind: sandboxrt.EventOOM, Time: at, Detail: "test oom"})
	got, err := h.m.Get(t.Context(), id)
	if err != nil || got.OOMKills != 1 || got.LastOOMAt == nil || !got.LastOOMAt.Equal(at) || got.State != StateRunning {
		t.Fatalf("after the OOM event Get = %+v, %v; want running, oom_kills 1, last_oom_at %v", got, err, at)
	}
	h.rt.Exit(id)
	h.rt.Emit(sandboxrt.Event{ID: id, Kind: sandboxrt.EventExit, Time: time.Now(), Detail: "exit status 137"})
	deadline := time.Now().Add(5 * time.Second)
	for got.State != StateKilled && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		got, _ = h.m.Get(t.Context(), id)
	}
	if got.State != StateKilled || got.EndReason != "oom" || got.OOMKills != 1 {
		t.Fatalf("after the exit Get = %+v; want killed, end_reason oom", got)
	}
	for end := time.Now().Add(5 * time.Second); len(h.rt.IDs()) > 0 && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	if ids := h.rt.IDs(); len(ids) != 0 {
		t.Errorf("runtime still holds %v", ids)
	}
	if used, _ := adm.Usage(); used != 0 {
		t.Errorf("committed after the OOM exit = %d MiB, want 0", used)
	}
	evs, _ := h.st.ListAudit(t.Context(), store.AuditQuery{SandboxID: id, Types: []string{"sandbox.oom", "sandbox.killed"}})
	var types []string
	for _, e := range evs {
		types = append(types, e.Type+" "+string(e.Data))
	}
	if len(evs) != 2 || evs[0].Type != "sandbox.oom" || evs[1].Type != "sandbox.killed" || !strings.Contains(string(evs[1].Data), `"reason":"oom (exit status 137)"`) {
		t.Errorf("audit = %q; want sandbox.oom then sandbox.killed with reason oom", types)
	}
}

// TestExitWithoutOOM: a sandbox that stops on its own is freed with end_reason exited.
func TestExitWithoutOOM(t *testing.T) {
	h := newHarness(t)
	info, _ := h.create(t, CreateRequest{Template: "base"})
	h.rt.Exit(info.SandboxID)
	h.rt.Emit(sandboxrt.Event{ID: info.SandboxID, Kind: sandboxrt.EventExit, Time: time.Now()})
	var got *Info
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if got, _ = h.m.Get(t.Context(), info.SandboxID); got.State == StateKilled {
			break
		}
	}
	if got.State != StateKilled || got.EndReason != "exited" || got.OOMKills != 0 {
		t.Fatalf("Get = %+v; want killed, end_reason exited, no OOM", got)
	}
	// An event for an id nobody knows is ignored.
	h.rt.Emit(sandboxrt.Event{ID: "sbx-nope", Kind: sandboxrt.EventOOM})
	h.rt.Emit(sandboxrt.Event{ID: "sbx-nope", Kind: sandboxrt.EventExit})
}

// TestPoolObeysAdmission: the warm pool boots only what admission lets it,
// and a create that does not fit is refused with a CapacityError.
func TestPoolObeysAdmission(t *testing.T) {
	var adm *limits.Admission
	h := newHarness(t, func(h *harness) {
		lc, _ := limits.Config{ReserveMB: 1024}.Normalize()
		var err error
		// Room for two 512 MiB sandboxes.
		if adm, err = limits.NewAdmission(lc, 1024+1100); err != nil {
			t.Fatal(err)
		}
		h.cfg.Limits, h.cfg.Admission = lc, adm
		h.cfg.WarmPool = map[string]int{"base": 5}
	})
	for end := time.Now().Add(5 * time.Second); h.m.PoolSizes()["base"] < 2 && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if n := h.m.PoolSizes()["base"]; n != 2 {
		t.Fatalf("pool holds %d sandboxes, want the 2 that fit", n)
	}
	// A create takes a pooled one (no new commitment) ...
	info, _ := h.create(t, CreateRequest{Template: "base"})
	if used, _ := adm.Usage(); used != 1024 {
		t.Fatalf("committed = %d, want 1024", used)
	}
	// ... one asking for other resources must boot, and does not fit.
	mem := int64(600)
	if _, _, err := h.m.Create(t.Context(), CreateRequest{Template: "base", Resources: limits.Request{MemoryMB: &mem}}); err == nil || !strings.Contains(err.Error(), "not enough host memory") {
		t.Fatalf("Create(600 MiB) with no room = %v, want a capacity error", err)
	}
	if _, err := h.m.Kill(t.Context(), info.SandboxID); err != nil {
		t.Fatal(err)
	}
	// Killing gives the memory back and the pool fills the room again.
	for end := time.Now().Add(5 * time.Second); h.m.PoolSizes()["base"] < 2 && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	if n := h.m.PoolSizes()["base"]; n != 2 {
		t.Errorf("after the kill the pool holds %d, want 2", n)
	}
}

// sizedTemplates is a template store whose "big" template asks for its own resources.
type sizedTemplates struct {
	fakeTemplates
	tc TemplateConfig
}

func (s *sizedTemplates) Config(ctx context.Context, name string) (TemplateConfig, error) {
	if name == "python" {
		return s.tc, nil
	}
	return TemplateConfig{Name: name}, nil
}

// TestTemplateResources: a template's cpu_count, memory_mb and disk_mb are
// its sandboxes' defaults, a create overrides them, and a template past the
// server's maxima fails its creates with a limits error naming it.
func TestTemplateResources(t *testing.T) {
	var st *sizedTemplates
	h := newHarness(t, func(h *harness) {
		st = &sizedTemplates{fakeTemplates: *h.cfg.Templates.(*fakeTemplates), tc: TemplateConfig{Name: "python", CPUCount: 1, MemoryMB: 1024, DiskMB: 4096}}
		h.cfg.Templates = st
	})
	info, _ := h.create(t, CreateRequest{Template: "python"})
	if spec, _ := h.rt.Spec(info.SandboxID); spec.Resources != (sandboxrt.Resources{CPUs: 1, MemoryMB: 1024, DiskMB: 4096, Pids: limits.DefaultPids}) {
		t.Errorf("template resources: runtime got %+v", spec.Resources)
	}
	mem := int64(256)
	info, _ = h.create(t, CreateRequest{Template: "python", Resources: limits.Request{MemoryMB: &mem}})
	if spec, _ := h.rt.Spec(info.SandboxID); spec.Resources.MemoryMB != 256 || spec.Resources.DiskMB != 4096 {
		t.Errorf("create over template: runtime got %+v, want 256 MiB and the template's 4096 MiB disk", spec.Resources)
	}
	info, _ = h.create(t, CreateRequest{Template: "base"})
	if spec, _ := h.rt.Spec(info.SandboxID); spec.Resources.MemoryMB != limits.DefaultMemoryMB {
		t.Errorf("a template without values: runtime got %+v, want the defaults", spec.Resources)
	}
	st.tc.MemoryMB = 1 << 20
	_, _, err := h.m.Create(t.Context(), CreateRequest{Template: "python"})
	var le *limits.Error
	if !errors.As(err, &le) || le.Field != "template.memory_mb" || le.Code != "limit_exceeded" {
		t.Errorf("Create from a template past the maximum = %v, want a limits.Error on template.memory_mb", err)
	}
}
