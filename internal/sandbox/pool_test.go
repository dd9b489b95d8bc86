package sandbox

import (
	"errors"
	"testing"
	"time"
)

func TestWarmPool(t *testing.T) {
	h := newHarness(t, func(h *harness) { h.cfg.WarmPool = map[string]int{"base": 1} })
	waitFor(t, 5*time.Second, "the pool to boot one base sandbox", func() bool { return h.m.PoolSizes()["base"] == 1 })
	pooled := h.rt.IDs()
	if len(pooled) != 1 {
		t.Fatalf("runtime ids with a pool of 1 = %v, want 1", pooled)
	}
	if infos, _, err := h.m.List(t.Context(), ListFilter{}); err != nil || len(infos) != 0 {
		t.Errorf("List with only a pooled sandbox = %d, %v; want none (pooled sandboxes are not users')", len(infos), err)
	}
	if got := h.net.policies(); len(got) != 0 {
		t.Errorf("network.Apply before any claim = %+v, want no calls", got)
	}
	if serves, _ := h.dns.counts(); serves != 0 {
		t.Errorf("dns serves before any claim = %d, want 0", serves)
	}

	info, tok := h.create(t, CreateRequest{Envs: map[string]string{"A": "b"}})
	if info.SandboxID != pooled[0] {
		t.Errorf("Create(base) = %s, want the pooled sandbox %s", info.SandboxID, pooled[0])
	}
	if tgt, err := h.m.Envd(t.Context(), info.SandboxID); err != nil || tgt.Token != tok {
		t.Errorf("Envd(claimed) = %+v, %v; want the token Create returned", tgt, err)
	}
	if inits := h.envd.initCalls(); len(inits) != 1 || inits[0].Envs["A"] != "b" {
		t.Errorf("envd /init calls = %+v, want one with the create's envs", inits)
	}
	if serves, _ := h.dns.counts(); serves != 1 || len(h.net.policies()) != 1 {
		t.Errorf("after a claim: dns serves %d, network applies %d; want 1, 1", serves, len(h.net.policies()))
	}
	waitFor(t, 5*time.Second, "the pool to refill", func() bool { return h.m.PoolSizes()["base"] == 1 })

	cold, _ := h.create(t, CreateRequest{Template: "python"})
	if cold.SandboxID == pooled[0] {
		t.Errorf("Create(python) claimed the base pool's sandbox")
	}

	if err := h.m.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	h.assertFreed(t)
	if n := h.m.PoolSizes()["base"]; n != 0 {
		t.Errorf("PoolSizes after Shutdown = %d, want 0", n)
	}
}

func TestWarmPoolClaimFailureFreesIt(t *testing.T) {
	h := newHarness(t, func(h *harness) { h.cfg.WarmPool = map[string]int{"base": 1} })
	waitFor(t, 5*time.Second, "the pool to boot one base sandbox", func() bool { return h.m.PoolSizes()["base"] == 1 })
	pooled := h.rt.IDs()[0]
	h.net.mu.Lock()
	h.net.ApplyErr = errors.New("nft boom")
	h.net.mu.Unlock()
	if _, _, err := h.m.Create(t.Context(), CreateRequest{}); err == nil {
		t.Fatalf("Create with a failing network.Apply = nil error, want one")
	}
	waitFor(t, 5*time.Second, "the failed claim to destroy "+pooled, func() bool {
		_, ok := h.rt.Spec(pooled)
		return !ok
	})
	h.assertNoRecords(t)
	if err := h.m.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	h.assertFreed(t)
}

// TestWarmPoolRecyclesIdle: a pooled sandbox older than WarmPoolMaxIdle is
// destroyed and replaced by a freshly booted one.
func TestWarmPoolRecyclesIdle(t *testing.T) {
	h := newHarness(t, func(h *harness) {
		h.cfg.WarmPool = map[string]int{"base": 1}
		h.cfg.WarmPoolMaxIdle = 300 * time.Millisecond
	})
	waitFor(t, 5*time.Second, "the pool to boot one base sandbox", func() bool { return h.m.PoolSizes()["base"] == 1 })
	first := h.rt.IDs()
	if len(first) != 1 {
		t.Fatalf("runtime ids with a pool of 1 = %v, want 1", first)
	}
	waitFor(t, 5*time.Second, "the idle pooled sandbox to be replaced", func() bool {
		ids := h.rt.IDs()
		return len(ids) == 1 && ids[0] != first[0] && h.m.PoolSizes()["base"] == 1
	})
	if err := h.m.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	h.assertFreed(t)
}
