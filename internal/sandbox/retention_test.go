package sandbox

import (
	"context"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/policy"
	"github.com/declaw/declaw/internal/store"
)

func TestAuditRetention(t *testing.T) {
	h := newHarness(t, func(h *harness) { h.cfg.AuditRetention = 48 * time.Hour })
	ctx := context.Background()
	sec := policy.Default()
	sec.Audit.RetentionHours = 1
	short, _ := h.create(t, CreateRequest{Template: "python", Security: sec})
	long, _ := h.create(t, CreateRequest{Template: "python"})
	now := time.Now()
	for _, id := range []string{short.SandboxID, long.SandboxID} {
		if err := h.st.AppendAudit(ctx,
			store.AuditEvent{SandboxID: id, Time: now.Add(-72 * time.Hour), Type: "test.ancient"},
			store.AuditEvent{SandboxID: id, Time: now.Add(-2 * time.Hour), Type: "test.old"},
			store.AuditEvent{SandboxID: id, Time: now, Type: "test.new"}); err != nil {
			t.Fatal(err)
		}
	}
	h.m.pruneAudit(ctx)
	types := func(id string) map[string]bool {
		evs, err := h.st.ListAudit(ctx, store.AuditQuery{SandboxID: id, Types: []string{"test"}})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, e := range evs {
			out[e.Type] = true
		}
		return out
	}
	if got := types(short.SandboxID); got["test.ancient"] || got["test.old"] || !got["test.new"] {
		t.Errorf("sandbox with retention_hours=1 kept %v, want only test.new", got)
	}
	if got := types(long.SandboxID); got["test.ancient"] || !got["test.old"] || !got["test.new"] {
		t.Errorf("sandbox under the 48h server retention kept %v, want test.old and test.new", got)
	}
}

func TestMaskSecrets(t *testing.T) {
	h := newHarness(t)
	info, _ := h.create(t, CreateRequest{Template: "python", Envs: map[string]string{
		"OPENAI_API_KEY": "sk-live-0123456789", "DB_PASSWORD": "hunter22", "GREETING": "hello-world"}})
	got := string(h.m.MaskSecrets(info.SandboxID, []byte(`{"k":"sk-live-0123456789","p":"hunter22","g":"hello-world"}`)))
	if want := `{"k":"***","p":"***","g":"hello-world"}`; got != want {
		t.Errorf("MaskSecrets = %s, want %s", got, want)
	}
	if got := string(h.m.MaskSecrets("sbx-unknown", []byte("sk-live-0123456789"))); got != "sk-live-0123456789" {
		t.Errorf("MaskSecrets of an unknown sandbox changed the text: %s", got)
	}
}

func TestAuditOffGatesCategories(t *testing.T) {
	h := newHarness(t)
	sec := policy.Default()
	sec.Audit.Enabled = false
	info, _ := h.create(t, CreateRequest{Template: "python", Security: sec})
	h.m.Audit(context.Background(), info.SandboxID, "egress.blocked", nil)
	h.m.Audit(context.Background(), info.SandboxID, "sandbox.paused", nil)
	evs, err := h.st.ListAudit(context.Background(), store.AuditQuery{SandboxID: info.SandboxID})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	for _, typ := range types {
		if typ == "egress.blocked" {
			t.Fatalf("audit off still recorded egress events: %v", types)
		}
	}
	if len(types) < 2 || types[len(types)-1] != "sandbox.paused" {
		t.Fatalf("lifecycle events must still be recorded: %v", types)
	}
}
