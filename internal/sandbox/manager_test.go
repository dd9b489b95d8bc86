package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/network"
	"github.com/declaw/declaw/internal/policy"
	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/store"
)

func TestCreate(t *testing.T) {
	h := newHarness(t)
	pol := network.Policy{AllowOut: []string{"example.com"}, DenyOut: []string{"0.0.0.0/0"}}
	envs := map[string]string{"OPENAI_API_KEY": "sk-real", "db_password": "hunter2", "PLAIN": "visible"}
	before := time.Now()
	info, tok, err := h.m.Create(t.Context(), CreateRequest{
		Template: "python", Timeout: intp(120), Metadata: map[string]string{"owner": "t"}, Envs: envs, Network: pol,
	})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	id := info.SandboxID
	if !strings.HasPrefix(id, "sbx-") || tok == "" {
		t.Fatalf("Create = id %q, token %q; want sbx-* and a token", id, tok)
	}
	if info.State != StateRunning || info.TemplateID != "python" || info.Timeout != 120 || info.GuestIP != "127.0.0.1" || info.Runtime != "fake" {
		t.Errorf("Create info = %+v, want running python, timeout 120, guest 127.0.0.1, runtime fake", info)
	}
	if info.EndAt == nil || info.EndAt.Before(before.Add(119*time.Second)) || info.EndAt.After(time.Now().Add(121*time.Second)) {
		t.Errorf("Create info.EndAt = %v, want about now+120s", info.EndAt)
	}

	// Network: one slot, the policy applied as given, DNS served on the host side.
	if acq, rel, held := h.net.counts(); acq != 1 || rel != 0 || held != 1 {
		t.Errorf("network acquires/releases/held = %d/%d/%d, want 1/0/1", acq, rel, held)
	}
	if got := h.net.policies(); len(got) != 1 || !reflect.DeepEqual(got[0], pol) {
		t.Errorf("network.Apply policies = %+v, want [%+v]", got, pol)
	}
	h.dns.mu.Lock()
	served := h.dns.serving[netip.MustParseAddr("127.0.0.2")]
	h.dns.mu.Unlock()
	if served != id {
		t.Errorf("dns serving 127.0.0.2 for %q, want %q", served, id)
	}

	// Runtime spec.
	spec, ok := h.rt.Spec(id)
	if !ok {
		t.Fatalf("runtime has no sandbox %s; ids %v", id, h.rt.IDs())
	}
	if spec.RootFS != filepath.Join(filepath.Dir(h.runDir), "python") || spec.Hostname != id || spec.NetNSPath != "/var/run/netns/fake-s1" {
		t.Errorf("spec = rootfs %q hostname %q netns %q; want the python template, %s, /var/run/netns/fake-s1", spec.RootFS, spec.Hostname, spec.NetNSPath, id)
	}
	if !slices.Contains(spec.Env, envdapi.AccessTokenEnv+"="+tok) {
		t.Errorf("spec.Env = %q, want %s=<token returned by Create>", spec.Env, envdapi.AccessTokenEnv)
	}
	for _, kv := range spec.Env {
		if strings.Contains(kv, "sk-real") {
			t.Errorf("spec.Env has the user env %q; user envs go through /init only", kv)
		}
	}
	runDir := filepath.Join(h.runDir, id)
	wantMounts := []sandboxrt.Mount{
		{Source: "/opt/declaw/envd", Target: "/usr/local/bin/envd", ReadOnly: true},
		{Source: filepath.Join(runDir, "resolv.conf"), Target: "/etc/resolv.conf", ReadOnly: true},
		{Source: filepath.Join(runDir, "hosts"), Target: "/etc/hosts", ReadOnly: true},
		{Source: filepath.Join(runDir, "hostname"), Target: "/etc/hostname", ReadOnly: true},
	}
	for _, m := range wantMounts {
		if !slices.Contains(spec.Mounts, m) {
			t.Errorf("spec.Mounts = %+v, missing %+v", spec.Mounts, m)
		}
	}
	for name, want := range map[string]string{"resolv.conf": "nameserver 127.0.0.2\n", "hosts": "127.0.0.1\t" + id + "\n", "hostname": id + "\n"} {
		b, err := os.ReadFile(filepath.Join(runDir, name))
		if err != nil {
			t.Errorf("read run file %s: %v", name, err)
			continue
		}
		if !strings.Contains(string(b), want) {
			t.Errorf("run file %s = %q, want it to contain %q", name, b, want)
		}
	}

	// envd got the real values; the store and the API only masked ones.
	inits := h.envd.initCalls()
	if len(inits) != 1 || !reflect.DeepEqual(inits[0].Envs, envs) || inits[0].Hostname != id {
		t.Errorf("envd /init calls = %+v, want one with envs %v and hostname %s", inits, envs, id)
	}
	wantMasked := map[string]string{"OPENAI_API_KEY": "***", "db_password": "***", "PLAIN": "visible"}
	if !reflect.DeepEqual(info.Envs, wantMasked) {
		t.Errorf("Create info.Envs = %v, want %v", info.Envs, wantMasked)
	}
	rec := h.record(t, id)
	if !reflect.DeepEqual(rec.Envs, wantMasked) {
		t.Errorf("store record Envs = %v, want %v", rec.Envs, wantMasked)
	}
	if rec.State != StateRunning || rec.Metadata["owner"] != "t" || rec.EndAt.IsZero() || !rec.KilledAt.IsZero() {
		t.Errorf("store record = %+v, want running, metadata owner=t, end_at set, not killed", rec)
	}
	var gotNet network.Policy
	if err := json.Unmarshal(rec.Network, &gotNet); err != nil || !reflect.DeepEqual(gotNet, pol) {
		t.Errorf("store record Network = %s (%v), want %+v", rec.Network, err, pol)
	}
	if len(rec.Security) == 0 {
		t.Errorf("store record Security is empty, want the default policy")
	}
	evs, err := h.st.ListAudit(t.Context(), store.AuditQuery{SandboxID: id, Types: []string{"sandbox.created"}})
	if err != nil || len(evs) != 1 {
		t.Errorf("audit sandbox.created events = %v (%v), want 1", evs, err)
	}

	tgt, err := h.m.Envd(t.Context(), id)
	if err != nil {
		t.Fatalf("Envd(%s): %v", id, err)
	}
	if want := fmt.Sprintf("127.0.0.1:%d", h.envd.port()); tgt.BaseURL.Host != want || tgt.BaseURL.Scheme != "http" || tgt.Token != tok {
		t.Errorf("Envd(%s) = %v token %q, want http://%s token %q", id, tgt.BaseURL, tgt.Token, want, tok)
	}
}

func TestCreateDefaults(t *testing.T) {
	h := newHarness(t)
	info, _ := h.create(t, CreateRequest{})
	if info.TemplateID != "base" || info.Timeout != int(DefaultTimeout/time.Second) || info.EndAt == nil {
		t.Errorf("Create({}) = template %q timeout %d end_at %v; want base, %d, set", info.TemplateID, info.Timeout, info.EndAt, int(DefaultTimeout/time.Second))
	}
	if len(info.Envs) != 0 || info.Metadata == nil {
		t.Errorf("Create({}) envs = %v metadata = %v, want no envs and a non-nil metadata map", info.Envs, info.Metadata)
	}
	info, _ = h.create(t, CreateRequest{Timeout: intp(0)})
	if info.EndAt != nil || info.Timeout != 0 {
		t.Errorf("Create(timeout 0) end_at = %v timeout %d, want nil, 0 (never expires)", info.EndAt, info.Timeout)
	}
}

func TestCreateInvalid(t *testing.T) {
	tests := []struct {
		name      string
		req       CreateRequest
		wantField string // *InvalidError field; "" = ErrTemplateUnknown
	}{
		{"negative timeout", CreateRequest{Timeout: intp(-1)}, "timeout"},
		{"timeout too long", CreateRequest{Timeout: intp(int(MaxTimeout/time.Second) + 1)}, "timeout"},
		{"empty env name", CreateRequest{Envs: map[string]string{"": "x"}}, "envs"},
		{"env name with =", CreateRequest{Envs: map[string]string{"A=B": "x"}}, "envs"},
		{"env name with NUL", CreateRequest{Envs: map[string]string{"A\x00": "x"}}, "envs"},
		{"env value with NUL", CreateRequest{Envs: map[string]string{"A": "x\x00y"}}, "envs"},
		{"bad allow_out entry", CreateRequest{Network: network.Policy{AllowOut: []string{"10.0.0.0/33"}}}, "network"},
		{"bad deny_out entry", CreateRequest{Network: network.Policy{DenyOut: []string{"not a host!"}}}, "network"},
		{"unknown template", CreateRequest{Template: "nope"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			info, tok, err := h.m.Create(t.Context(), tt.req)
			if err == nil {
				t.Fatalf("Create(%+v) = %+v, %q, nil; want an error", tt.req, info, tok)
			}
			if tt.wantField == "" {
				if !errors.Is(err, ErrTemplateUnknown) {
					t.Errorf("Create(%+v) error = %v, want ErrTemplateUnknown", tt.req, err)
				}
			} else {
				var inv *InvalidError
				if !errors.As(err, &inv) || inv.Field != tt.wantField {
					t.Errorf("Create(%+v) error = %#v, want *InvalidError for field %q", tt.req, err, tt.wantField)
				}
			}
			if acq, _, _ := h.net.counts(); acq != 0 {
				t.Errorf("network slots acquired = %d, want 0", acq)
			}
			if starts, _ := h.rt.Counts(); starts != 0 {
				t.Errorf("runtime starts = %d, want 0", starts)
			}
			if serves, _ := h.dns.counts(); serves != 0 {
				t.Errorf("dns serves = %d, want 0", serves)
			}
			h.assertFreed(t)
			h.assertNoRecords(t)
		})
	}
}

// Regression: time.Duration(timeout)*time.Second overflows for timeouts
// above ~9.2e9 seconds; the limit must be checked before converting, or
// the sandbox gets a negative timeout (never expires, or killed at once).
func TestTimeoutOverflow(t *testing.T) {
	h := newHarness(t)
	const huge = 10_000_000_000 // seconds; *time.Second wraps to a negative Duration
	_, _, err := h.m.Create(t.Context(), CreateRequest{Timeout: intp(huge)})
	var inv *InvalidError
	if !errors.As(err, &inv) || inv.Field != "timeout" {
		t.Errorf("Create(timeout %d) error = %v, want *InvalidError for timeout", huge, err)
	}
	info, _ := h.create(t, CreateRequest{})
	err = h.m.SetTimeout(t.Context(), info.SandboxID, huge)
	if !errors.As(err, &inv) || inv.Field != "timeout" {
		t.Errorf("SetTimeout(%d) error = %v, want *InvalidError for timeout", huge, err)
	}
	time.Sleep(100 * time.Millisecond)
	if got, _ := h.m.Get(t.Context(), info.SandboxID); got.State != StateRunning {
		t.Errorf("after SetTimeout(%d) state = %s, want running", huge, got.State)
	}
}

func (h *harness) assertNoRecords(t *testing.T) {
	t.Helper()
	recs, _, err := h.st.ListSandboxes(t.Context(), store.SandboxFilter{})
	if err != nil {
		t.Fatalf("ListSandboxes: %v", err)
	}
	if len(recs) != 0 {
		t.Errorf("store holds %d sandbox records (first %s), want none", len(recs), recs[0].ID)
	}
}

func TestCreateFailureCleansUp(t *testing.T) {
	tests := []struct {
		name string
		edit func(*harness)
		want string // substring of the error
	}{
		{"network apply error", func(h *harness) { h.net.ApplyErr = errors.New("nft boom") }, "nft boom"},
		{"dns serve error", func(h *harness) { h.dns.ServeErr = errors.New("dns boom") }, "dns boom"},
		{"runtime start error", func(h *harness) {
			h.rt.StartErr = func(sandboxrt.Spec) error { return errors.New("runsc boom") }
		}, "runsc boom"},
		{"envd never healthy", func(h *harness) {
			h.envd.unhealthy = true
			h.cfg.EnvdReady = 200 * time.Millisecond
		}, "did not become ready"},
		{"envd init 500", func(h *harness) { h.envd.initStatus = 500 }, "init envd"},
	}
	undoOf := map[string]string{"network.acquire": "network.release", "dns.serve": "dns.stop", "runtime.start": "runtime.destroy"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.edit)
			info, _, err := h.m.Create(t.Context(), CreateRequest{Envs: map[string]string{"A": "b"}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Create = %+v, %v; want an error containing %q", info, err, tt.want)
			}
			h.assertFreed(t)
			h.assertNoRecords(t)
			// Every acquired resource is undone once, in reverse order.
			evs := h.log.list()
			var acquired, undone []string
			for _, ev := range evs {
				if u, ok := undoOf[ev]; ok {
					acquired = append(acquired, u)
				} else if slices.Contains([]string{"network.release", "dns.stop", "runtime.destroy"}, ev) {
					undone = append(undone, ev)
				}
			}
			slices.Reverse(acquired)
			if !slices.Equal(undone, acquired) {
				t.Errorf("undos = %v (all events %v), want %v (acquisitions in reverse)", undone, evs, acquired)
			}
		})
	}
}

func TestCreateCancelledStillCleansUp(t *testing.T) {
	h := newHarness(t, func(h *harness) { h.envd.unhealthy = true })
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
	defer cancel()
	if _, _, err := h.m.Create(ctx, CreateRequest{}); err == nil {
		t.Fatalf("Create with a context that expires while envd is unhealthy = nil error, want one")
	}
	h.assertFreed(t)
	h.assertNoRecords(t)
}

func TestKill(t *testing.T) {
	h := newHarness(t)
	info, _ := h.create(t, CreateRequest{})
	keep, _ := h.create(t, CreateRequest{})
	id := info.SandboxID

	killed, err := h.m.Kill(t.Context(), id)
	if err != nil || !killed {
		t.Fatalf("Kill(%s) = %v, %v; want true, nil", id, killed, err)
	}
	if ids := h.rt.IDs(); !slices.Equal(ids, []string{keep.SandboxID}) {
		t.Errorf("runtime ids after Kill = %v, want only %s", ids, keep.SandboxID)
	}
	if acq, rel, held := h.net.counts(); acq != 2 || rel != 1 || held != 1 {
		t.Errorf("network acquires/releases/held = %d/%d/%d, want 2/1/1", acq, rel, held)
	}
	if _, stops := h.dns.counts(); stops != 1 {
		t.Errorf("dns stops = %d, want 1", stops)
	}
	if _, err := os.Stat(filepath.Join(h.runDir, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run dir of %s: stat err = %v, want not exist", id, err)
	}
	rec := h.record(t, id)
	if rec.State != StateKilled || rec.KilledAt.IsZero() {
		t.Errorf("record after Kill = state %s killed_at %v, want killed, set", rec.State, rec.KilledAt)
	}
	got, err := h.m.Get(t.Context(), id)
	if err != nil || got.State != StateKilled || got.KilledAt == nil {
		t.Errorf("Get after Kill = %+v, %v; want killed with killed_at", got, err)
	}

	killed, err = h.m.Kill(t.Context(), id)
	if err != nil || killed {
		t.Errorf("second Kill(%s) = %v, %v; want false, nil", id, killed, err)
	}
	if _, err := h.m.Kill(t.Context(), "sbx-unknown"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Kill(unknown) error = %v, want ErrNotFound", err)
	}
	evs, _ := h.st.ListAudit(t.Context(), store.AuditQuery{SandboxID: id, Types: []string{"sandbox.killed"}})
	if len(evs) != 1 || !strings.Contains(string(evs[0].Data), `"api"`) {
		t.Errorf("audit sandbox.killed = %+v, want one with reason api", evs)
	}
	if running, err := h.m.IsRunning(t.Context(), id); err != nil || running {
		t.Errorf("IsRunning(killed) = %v, %v; want false, nil", running, err)
	}
	if running, err := h.m.IsRunning(t.Context(), keep.SandboxID); err != nil || !running {
		t.Errorf("IsRunning(live) = %v, %v; want true, nil", running, err)
	}
}

func TestKillAsync(t *testing.T) {
	gate := make(chan struct{})
	h := newHarness(t, func(h *harness) { h.rt.gate = gate })
	info, _ := h.create(t, CreateRequest{})
	id := info.SandboxID

	if err := h.m.KillAsync(t.Context(), id); err != nil {
		t.Fatalf("KillAsync(%s): %v", id, err)
	}
	// Killed at once, though the runtime has not been destroyed yet.
	if got, err := h.m.Get(t.Context(), id); err != nil || got.State != StateKilled {
		t.Errorf("Get right after KillAsync = %+v, %v; want state killed", got, err)
	}
	if ids := h.rt.IDs(); len(ids) != 1 {
		t.Errorf("runtime ids while the destroy is held = %v, want the sandbox still there", ids)
	}
	if err := h.m.KillAsync(t.Context(), id); err != nil {
		t.Errorf("second KillAsync = %v, want nil", err)
	}
	if killed, err := h.m.Kill(t.Context(), id); err != nil || killed {
		t.Errorf("Kill during an async kill = %v, %v; want false, nil", killed, err)
	}
	close(gate)
	waitFor(t, 5*time.Second, "async kill to free the sandbox", func() bool {
		_, rel, _ := h.net.counts()
		return len(h.rt.IDs()) == 0 && rel == 1
	})
	waitFor(t, 5*time.Second, "instance to be forgotten", func() bool { return h.m.lookup(id) == nil })
	h.assertFreed(t)
	evs, _ := h.st.ListAudit(t.Context(), store.AuditQuery{SandboxID: id, Types: []string{"sandbox.killed"}})
	if len(evs) != 1 {
		t.Errorf("audit sandbox.killed events = %d, want 1", len(evs))
	}
	if _, err := h.m.Envd(t.Context(), id); !errors.Is(err, ErrKilled) {
		t.Errorf("Envd after an async kill error = %v, want ErrKilled", err)
	}
	if err := h.m.KillAsync(t.Context(), "sbx-unknown"); !errors.Is(err, ErrNotFound) {
		t.Errorf("KillAsync(unknown) error = %v, want ErrNotFound", err)
	}
}

// While an async kill frees a sandbox (the runtime destroy can take
// seconds), calls that only need to learn "killed" must not wait for it.
func TestKillAsyncDoesNotBlockCallers(t *testing.T) {
	gate := make(chan struct{})
	h := newHarness(t, func(h *harness) { h.rt.gate = gate })
	info, _ := h.create(t, CreateRequest{})
	id := info.SandboxID
	if err := h.m.KillAsync(t.Context(), id); err != nil {
		t.Fatalf("KillAsync(%s): %v", id, err)
	}
	defer close(gate)
	// Let the background kill take the instance lock.
	waitFor(t, 5*time.Second, "the async kill to reach the runtime", func() bool {
		locked := !h.m.lookup(id).mu.TryLock()
		if !locked {
			h.m.lookup(id).mu.Unlock()
		}
		return locked
	})
	calls := []struct {
		name string
		call func() error
	}{
		{"Envd", func() error { _, err := h.m.Envd(context.Background(), id); return err }},
		{"UpdateNetwork", func() error { _, err := h.m.UpdateNetwork(context.Background(), id, network.Policy{}); return err }},
		{"SetTimeout", func() error { return h.m.SetTimeout(context.Background(), id, 60) }},
	}
	for _, c := range calls {
		done := make(chan error, 1)
		go func() { done <- c.call() }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrKilled) {
				t.Errorf("%s during an async kill error = %v, want ErrKilled", c.name, err)
			}
		case <-time.After(time.Second):
			t.Errorf("%s during an async kill still blocked after 1 s, want ErrKilled at once", c.name)
		}
	}
}

func TestTimeoutKills(t *testing.T) {
	h := newHarness(t)
	info, _ := h.create(t, CreateRequest{Timeout: intp(1)})
	id := info.SandboxID
	waitFor(t, 5*time.Second, "the 1 s timeout to kill "+id, func() bool {
		return h.record(t, id).State == StateKilled
	})
	waitFor(t, 5*time.Second, "resources to be freed", func() bool { return len(h.rt.IDs()) == 0 })
	h.assertFreed(t)
	evs, _ := h.st.ListAudit(t.Context(), store.AuditQuery{SandboxID: id, Types: []string{"sandbox.killed"}})
	if len(evs) != 1 || !strings.Contains(string(evs[0].Data), "timeout") {
		t.Errorf("audit sandbox.killed = %+v, want one with reason timeout", evs)
	}
}

func TestSetTimeout(t *testing.T) {
	t.Run("rearm", func(t *testing.T) {
		h := newHarness(t)
		info, _ := h.create(t, CreateRequest{Timeout: intp(0)})
		id := info.SandboxID
		if err := h.m.SetTimeout(t.Context(), id, 1); err != nil {
			t.Fatalf("SetTimeout(%s, 1): %v", id, err)
		}
		rec := h.record(t, id)
		if rec.Timeout != 1 || rec.EndAt.IsZero() || time.Until(rec.EndAt) > time.Second {
			t.Errorf("record after SetTimeout(1) = timeout %d end_at %v, want 1, within 1 s", rec.Timeout, rec.EndAt)
		}
		waitFor(t, 5*time.Second, "the re-armed timeout to kill "+id, func() bool {
			return h.record(t, id).State == StateKilled
		})
	})
	t.Run("disable", func(t *testing.T) {
		h := newHarness(t)
		info, _ := h.create(t, CreateRequest{Timeout: intp(1)})
		id := info.SandboxID
		if err := h.m.SetTimeout(t.Context(), id, 0); err != nil {
			t.Fatalf("SetTimeout(%s, 0): %v", id, err)
		}
		got, err := h.m.Get(t.Context(), id)
		if err != nil || got.EndAt != nil || got.Timeout != 0 {
			t.Fatalf("Get after SetTimeout(0) = %+v, %v; want end_at nil, timeout 0", got, err)
		}
		time.Sleep(1500 * time.Millisecond)
		if got := h.record(t, id); got.State != StateRunning {
			t.Errorf("state 1.5 s after disabling a 1 s timeout = %s, want running", got.State)
		}
	})
	t.Run("errors", func(t *testing.T) {
		h := newHarness(t)
		info, _ := h.create(t, CreateRequest{})
		dead, _ := h.create(t, CreateRequest{})
		if _, err := h.m.Kill(t.Context(), dead.SandboxID); err != nil {
			t.Fatalf("Kill: %v", err)
		}
		var inv *InvalidError
		tests := []struct {
			id      string
			timeout int
			check   func(error) bool
			want    string
		}{
			{info.SandboxID, -1, func(err error) bool { return errors.As(err, &inv) }, "*InvalidError"},
			{info.SandboxID, int(MaxTimeout/time.Second) + 1, func(err error) bool { return errors.As(err, &inv) }, "*InvalidError"},
			{"sbx-unknown", 10, func(err error) bool { return errors.Is(err, ErrNotFound) }, "ErrNotFound"},
			{dead.SandboxID, 10, func(err error) bool { return errors.Is(err, ErrKilled) }, "ErrKilled"},
		}
		for _, tt := range tests {
			if err := h.m.SetTimeout(t.Context(), tt.id, tt.timeout); !tt.check(err) {
				t.Errorf("SetTimeout(%s, %d) error = %v, want %s", tt.id, tt.timeout, err, tt.want)
			}
		}
	})
}

func TestEnvdStates(t *testing.T) {
	h := newHarness(t)
	live, tok := h.create(t, CreateRequest{})
	paused, _ := h.create(t, CreateRequest{})
	dead, _ := h.create(t, CreateRequest{})
	if _, err := h.m.Kill(t.Context(), dead.SandboxID); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	inst := h.m.lookup(paused.SandboxID)
	inst.mu.Lock()
	inst.state = StatePaused
	inst.mu.Unlock()

	if tgt, err := h.m.Envd(t.Context(), live.SandboxID); err != nil || tgt.Token != tok {
		t.Errorf("Envd(running) = %+v, %v; want its token, nil", tgt, err)
	}
	tests := []struct {
		id   string
		want error
	}{
		{paused.SandboxID, ErrPaused},
		{dead.SandboxID, ErrKilled},
		{"sbx-unknown", ErrNotFound},
	}
	for _, tt := range tests {
		if tgt, err := h.m.Envd(t.Context(), tt.id); !errors.Is(err, tt.want) {
			t.Errorf("Envd(%s) = %+v, %v; want error %v", tt.id, tgt, err, tt.want)
		}
	}
	// A record that is live in the store but unknown in memory is unavailable.
	if err := h.st.CreateSandbox(t.Context(), &store.Sandbox{ID: "sbx-orphan", TemplateID: "base", State: StateRunning, StartedAt: time.Now()}); err != nil {
		t.Fatalf("CreateSandbox: %v", err)
	}
	if _, err := h.m.Envd(t.Context(), "sbx-orphan"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Envd(orphan record) error = %v, want ErrUnavailable", err)
	}
}

func TestRecover(t *testing.T) {
	h := newHarness(t)
	now := time.Now().UTC()
	for i, st := range []string{StateRunning, StatePaused, StateKilled, StateRunning} {
		rec := &store.Sandbox{ID: fmt.Sprintf("sbx-old%d", i), TemplateID: "base", State: st, StartedAt: now}
		if st == StateKilled {
			rec.KilledAt = now.Add(-time.Hour)
		}
		if err := h.st.CreateSandbox(t.Context(), rec); err != nil {
			t.Fatalf("CreateSandbox: %v", err)
		}
	}
	if err := h.m.Recover(t.Context()); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	for i := range 4 {
		id := fmt.Sprintf("sbx-old%d", i)
		rec := h.record(t, id)
		if rec.State != StateKilled || rec.KilledAt.IsZero() {
			t.Errorf("after Recover %s = state %s killed_at %v, want killed, set", id, rec.State, rec.KilledAt)
		}
		evs, _ := h.st.ListAudit(t.Context(), store.AuditQuery{SandboxID: id, Types: []string{"sandbox.killed"}})
		wantEvents := 1
		if i == 2 {
			wantEvents = 0 // was already killed
			if !rec.KilledAt.Equal(now.Add(-time.Hour)) {
				t.Errorf("Recover changed killed_at of an already killed sandbox: %v", rec.KilledAt)
			}
		}
		if len(evs) != wantEvents {
			t.Errorf("audit sandbox.killed for %s = %d events, want %d", id, len(evs), wantEvents)
		}
	}
	if infos, _, err := h.m.List(t.Context(), ListFilter{}); err != nil || len(infos) != 0 {
		t.Errorf("List after Recover = %d sandboxes, %v; want none live", len(infos), err)
	}
}

func TestShutdown(t *testing.T) {
	h := newHarness(t)
	var ids []string
	for range 3 {
		info, _ := h.create(t, CreateRequest{})
		ids = append(ids, info.SandboxID)
	}
	if err := h.m.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	h.assertFreed(t)
	for _, id := range ids {
		if rec := h.record(t, id); rec.State != StateKilled {
			t.Errorf("after Shutdown %s state = %s, want killed", id, rec.State)
		}
	}
	if _, _, err := h.m.Create(t.Context(), CreateRequest{}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Create after Shutdown error = %v, want ErrUnavailable", err)
	}
	if acq, _, _ := h.net.counts(); acq != 3 {
		t.Errorf("network acquires after a refused create = %d, want 3", acq)
	}
	h.assertFreed(t)
}

func TestUpdateNetwork(t *testing.T) {
	h := newHarness(t)
	info, _ := h.create(t, CreateRequest{})
	dead, _ := h.create(t, CreateRequest{})
	if _, err := h.m.Kill(t.Context(), dead.SandboxID); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	id := info.SandboxID
	pol := network.Policy{AllowOut: []string{"*.example.com", "1.2.3.4"}, DenyOut: []string{"0.0.0.0/0"}}
	got, err := h.m.UpdateNetwork(t.Context(), id, pol)
	if err != nil {
		t.Fatalf("UpdateNetwork(%s, %+v): %v", id, pol, err)
	}
	if ps := h.net.policies(); len(ps) != 3 || !reflect.DeepEqual(ps[2], pol) {
		t.Errorf("network.Apply policies = %+v, want the last to be %+v", ps, pol)
	}
	h.dns.mu.Lock()
	updates := slices.Clone(h.dns.updates)
	h.dns.mu.Unlock()
	if len(updates) != 1 || !updates[0].DenyAll || len(updates[0].AllowDomains) != 1 {
		t.Errorf("dns updates = %+v, want one with deny-all and one allowed domain", updates)
	}
	var shown network.Policy
	if err := json.Unmarshal(got.Network, &shown); err != nil || !reflect.DeepEqual(shown, pol) {
		t.Errorf("UpdateNetwork info.Network = %s, want %+v", got.Network, pol)
	}
	evs, _ := h.st.ListAudit(t.Context(), store.AuditQuery{SandboxID: id, Types: []string{"network.updated"}})
	if len(evs) != 1 {
		t.Errorf("audit network.updated events = %d, want 1", len(evs))
	}

	var inv *InvalidError
	if _, err := h.m.UpdateNetwork(t.Context(), id, network.Policy{AllowOut: []string{"300.1.1.1"}}); !errors.As(err, &inv) || inv.Field != "network" {
		t.Errorf("UpdateNetwork(bad entry) error = %v, want *InvalidError for network", err)
	}
	if _, err := h.m.UpdateNetwork(t.Context(), dead.SandboxID, pol); !errors.Is(err, ErrKilled) {
		t.Errorf("UpdateNetwork(killed) error = %v, want ErrKilled", err)
	}
	if _, err := h.m.UpdateNetwork(t.Context(), "sbx-unknown", pol); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateNetwork(unknown) error = %v, want ErrNotFound", err)
	}
	if ps := h.net.policies(); len(ps) != 3 {
		t.Errorf("network.Apply calls after rejected updates = %d, want 3", len(ps))
	}
	h.net.mu.Lock()
	h.net.ApplyErr = errors.New("nft boom")
	h.net.mu.Unlock()
	if _, err := h.m.UpdateNetwork(t.Context(), id, network.Policy{}); err == nil || !strings.Contains(err.Error(), "nft boom") {
		t.Errorf("UpdateNetwork with a failing Apply error = %v, want it to name the apply error", err)
	}
}

func TestList(t *testing.T) {
	h := newHarness(t)
	var ids []string
	for i := range 4 {
		md := map[string]string{"team": "a", "n": fmt.Sprint(i)}
		if i%2 == 1 {
			md["team"] = "b"
		}
		info, _ := h.create(t, CreateRequest{Metadata: md})
		ids = append(ids, info.SandboxID)
	}
	if _, err := h.m.Kill(t.Context(), ids[0]); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	idsOf := func(infos []*Info) []string {
		var out []string
		for _, in := range infos {
			out = append(out, in.SandboxID)
		}
		return out
	}
	tests := []struct {
		name     string
		f        ListFilter
		want     []string
		wantNext string
	}{
		{"default excludes killed", ListFilter{}, ids[1:], ""},
		{"killed only", ListFilter{States: []string{StateKilled}}, ids[:1], ""},
		{"all states", ListFilter{States: []string{StateRunning, StateKilled}}, ids, ""},
		{"metadata", ListFilter{Metadata: map[string]string{"team": "b"}}, []string{ids[1], ids[3]}, ""},
		{"metadata and state", ListFilter{States: []string{StateKilled}, Metadata: map[string]string{"team": "a"}}, ids[:1], ""},
		{"metadata no match", ListFilter{Metadata: map[string]string{"team": "c"}}, nil, ""},
		{"page 1", ListFilter{Limit: 2}, ids[1:3], ids[2]},
		{"page 2", ListFilter{Limit: 2, Next: ids[2]}, ids[3:], ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			infos, next, err := h.m.List(t.Context(), tt.f)
			if err != nil {
				t.Fatalf("List(%+v): %v", tt.f, err)
			}
			if got := idsOf(infos); !slices.Equal(got, tt.want) || next != tt.wantNext {
				t.Errorf("List(%+v) = %v, next %q; want %v, next %q", tt.f, got, next, tt.want, tt.wantNext)
			}
		})
	}
}

func TestGetUnknown(t *testing.T) {
	h := newHarness(t)
	if _, err := h.m.Get(t.Context(), "sbx-unknown"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(unknown) error = %v, want ErrNotFound", err)
	}
	if _, err := h.m.IsRunning(t.Context(), "sbx-unknown"); !errors.Is(err, ErrNotFound) {
		t.Errorf("IsRunning(unknown) error = %v, want ErrNotFound", err)
	}
}

// A content-scanning policy sends web traffic to the egress proxy; a
// runtime network update must not drop that redirect.
func TestInterceptFollowsSecurityPolicy(t *testing.T) {
	h := newHarness(t)
	scan := policy.Default()
	scan.PII.Enabled = true
	plain, _ := h.create(t, CreateRequest{})
	scanned, _ := h.create(t, CreateRequest{Security: scan, Network: network.Policy{DenyOut: []string{"10.0.0.0/8"}}})
	ps := h.net.policies()
	if len(ps) != 2 || ps[0].Intercept || !ps[1].Intercept {
		t.Fatalf("network.Apply at create = %+v, want intercept false for the default policy, true with PII enabled", ps)
	}
	for _, tt := range []struct {
		id   string
		want bool
	}{{plain.SandboxID, false}, {scanned.SandboxID, true}} {
		if _, err := h.m.UpdateNetwork(t.Context(), tt.id, network.Policy{AllowOut: []string{"1.1.1.1"}}); err != nil {
			t.Fatalf("UpdateNetwork(%s): %v", tt.id, err)
		}
		ps := h.net.policies()
		if got := ps[len(ps)-1]; got.Intercept != tt.want || !slices.Equal(got.AllowOut, []string{"1.1.1.1"}) {
			t.Errorf("network.Apply after UpdateNetwork(%s) = %+v, want allow_out [1.1.1.1] and intercept %v", tt.id, got, tt.want)
		}
	}
}
