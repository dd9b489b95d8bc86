package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/network"
	"github.com/declaw/declaw/internal/sandboxrt"
)

// BuildSandbox is a sandbox a template build runs one step in: its root
// is a writable host directory (Config.BuildRuntime writes through to
// it), its network is under the default policy like any new sandbox's,
// and it belongs to no user (no store record, not listed).
type BuildSandbox struct {
	m    *Manager
	inst *instance
}

// StartBuild boots a build sandbox on rootfs, which must hold the mount
// points every template has (envd, resolv.conf, hosts, hostname).
func (m *Manager) StartBuild(ctx context.Context, rootfs string, res sandboxrt.Resources) (_ *BuildSandbox, err error) {
	if m.cfg.BuildRuntime == nil {
		return nil, fmt.Errorf("template builds: %w (no build runtime)", ErrNotSupported)
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("build sandbox: %w", ErrUnavailable)
	}
	// The server's defaults, capped by its maxima, like any sandbox's; no
	// disk of its own: a build step writes through to its layer, whose
	// size the builder checks (disk_mb).
	if res.CPUs == 0 {
		res.CPUs = m.cfg.Limits.Defaults.CPUs
	}
	if res.MemoryMB == 0 {
		res.MemoryMB = m.cfg.Limits.Defaults.MemoryMB
	}
	res.CPUs, res.MemoryMB = min(res.CPUs, m.cfg.Limits.Max.CPUs), min(res.MemoryMB, m.cfg.Limits.Max.MemoryMB)
	res.Pids, res.DiskMB = m.cfg.Limits.Defaults.Pids, 0
	inst, err := m.bootOn(ctx, m.cfg.BuildRuntime, "", "bld-", "", rootfs, res)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			inst.undo.run(context.WithoutCancel(ctx))
		}
	}()
	var pol network.Policy // the default: internet allowed, host and metadata blocked
	parsed, err := network.ParsePolicy(pol)
	if err != nil {
		return nil, err
	}
	if err := m.claimHost(ctx, inst, CreateRequest{Network: pol}, parsed); err != nil {
		return nil, err
	}
	if err := m.envdJSON(ctx, inst, http.MethodPost, "/init", envdapi.InitRequest{Hostname: "build"}, nil); err != nil {
		return nil, fmt.Errorf("build sandbox %s: init envd: %w", inst.id, err)
	}
	m.cfg.Logf("sandbox %s: build sandbox on %s", inst.id, rootfs)
	return &BuildSandbox{m: m, inst: inst}, nil
}

// Run runs cmd (with bash, else sh) and copies its output to out as it
// comes. A non-zero exit is returned, not an error.
func (b *BuildSandbox) Run(ctx context.Context, cmd, user, cwd string, envs map[string]string, out io.Writer) (int, error) {
	zero := 0.0
	req := envdapi.CommandRequest{Cmd: cmd, User: user, Cwd: cwd, Envs: envs, Timeout: &zero}
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, b.inst.base.String()+"/commands/stream", strings.NewReader(string(body)))
	if err != nil {
		return -1, err
	}
	hreq.Header.Set(envdapi.AccessTokenHeader, b.inst.token)
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := b.m.client.Do(hreq)
	if err != nil {
		return -1, fmt.Errorf("run in build sandbox: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e envdapi.Error
		json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
		return -1, fmt.Errorf("run in build sandbox: %s: %s", resp.Status, e.Message)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data:")
		if !ok {
			continue
		}
		var ev envdapi.StreamEvent
		if json.Unmarshal([]byte(strings.TrimSpace(data)), &ev) != nil {
			continue
		}
		switch ev.Type {
		case "stdout", "stderr":
			io.WriteString(out, ev.Data)
		case "exit":
			if ev.ExitCode != nil {
				return *ev.ExitCode, nil
			}
			return -1, errors.New("run in build sandbox: exit without a code")
		case "error":
			return -1, fmt.Errorf("run in build sandbox: %s", ev.Error)
		}
	}
	if err := sc.Err(); err != nil {
		return -1, fmt.Errorf("run in build sandbox: %w", err)
	}
	return -1, errors.New("run in build sandbox: the output stream ended without an exit code")
}

// Close destroys the build sandbox.
func (b *BuildSandbox) Close(ctx context.Context) error {
	return b.inst.undo.run(ctx)
}

// TemplateUsers counts the live sandboxes started from the template called name.
func (m *Manager) TemplateUsers(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, inst := range m.instances {
		if inst.template == name && !inst.dying.Load() {
			n++
		}
	}
	return n
}

// KillTemplateUsers kills the live sandboxes started from the template
// called name and returns how many it killed.
func (m *Manager) KillTemplateUsers(ctx context.Context, name string) int {
	m.mu.Lock()
	var ids []string
	for id, inst := range m.instances {
		if inst.template == name {
			ids = append(ids, id)
		}
	}
	m.mu.Unlock()
	n := 0
	for _, id := range ids {
		if ok, _ := m.kill(ctx, id, "template deleted"); ok {
			n++
		}
	}
	return n
}
