package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
)

// TemplateConfig is what a template asks of the sandboxes started from it.
type TemplateConfig struct {
	Name     string // the template's name (alias), whatever the create named it by
	ID       string // its template_id ("" for built-ins)
	Envs     map[string]string
	Workdir  string
	User     string
	StartCmd string      // started in the background at create ("" = none)
	Ready    *ReadyCheck // create returns once it passes (nil: at once)
	CPUCount int         // resources the template was built for (0 = defaults)
	MemoryMB int
	DiskMB   int // writable root of its sandboxes (0 = the default)
}

// ReadyCheck is when a start command is ready: Cmd exits 0 in the
// sandbox, Port accepts TCP on the sandbox's address, or URL (its host
// read as the sandbox when it is localhost) answers below 500. Timeout
// is in seconds (0 = DefaultReadyTimeout).
type ReadyCheck struct {
	Cmd     string
	Port    int
	URL     string
	Timeout int
}

// DefaultReadyTimeout bounds a ready check that names no timeout.
const DefaultReadyTimeout = 60 * time.Second

// TemplateConfigs is implemented by Templates that know more about a
// template than its root filesystem.
type TemplateConfigs interface {
	Config(ctx context.Context, name string) (TemplateConfig, error)
}

// NotReadyError is a start command that did not become ready; the create fails with it.
type NotReadyError struct {
	Msg    string
	Output string // the start command's last output
}

func (e *NotReadyError) Error() string {
	if e.Output == "" {
		return e.Msg
	}
	return e.Msg + "; its last output:\n" + e.Output
}

// startCommand starts the template's start command in inst and waits for
// its ready check.
func (m *Manager) startCommand(ctx context.Context, inst *instance, tc TemplateConfig) error {
	zero := 0.0
	var started envdapi.BackgroundStarted
	req := envdapi.CommandRequest{Cmd: tc.StartCmd, Background: true, User: tc.User, Cwd: tc.Workdir, Timeout: &zero, Tag: "start_cmd"}
	if err := m.envdJSON(ctx, inst, http.MethodPost, "/commands", req, &started); err != nil {
		return &NotReadyError{Msg: fmt.Sprintf("start command %q did not start: %v", tc.StartCmd, err)}
	}
	if tc.Ready == nil {
		return nil
	}
	timeout := DefaultReadyTimeout
	if tc.Ready.Timeout > 0 {
		timeout = time.Duration(tc.Ready.Timeout) * time.Second
	}
	deadline := time.Now().Add(timeout)
	delay := 50 * time.Millisecond
	for {
		exited, out := m.startOutput(ctx, inst, started.Pid)
		if exited {
			return &NotReadyError{Msg: fmt.Sprintf("start command %q exited before its ready check passed", tc.StartCmd), Output: out}
		}
		if m.readyOnce(ctx, inst, tc.Ready) {
			m.cfg.Logf("sandbox %s: start command ready", inst.id)
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return &NotReadyError{Msg: fmt.Sprintf("start command %q was not ready within %v", tc.StartCmd, timeout), Output: out}
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		if delay < time.Second {
			delay *= 2
		}
	}
}

// startOutput reports whether the process pid exited and its output so far (the tail).
func (m *Manager) startOutput(ctx context.Context, inst *instance, pid int) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, inst.base.String()+"/commands/"+strconv.Itoa(pid)+"/wait?timeout=0.01", nil)
	if err != nil {
		return false, ""
	}
	req.Header.Set(envdapi.AccessTokenHeader, inst.token)
	resp, err := m.client.Do(req)
	if err != nil {
		return false, ""
	}
	defer resp.Body.Close()
	var r envdapi.TimeoutError // the 200 result has the same fields
	json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&r)
	out := tail(r.Stdout+r.Stderr, 4000)
	return resp.StatusCode == http.StatusOK, out
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// readyOnce runs the ready check once.
func (m *Manager) readyOnce(ctx context.Context, inst *instance, r *ReadyCheck) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	switch {
	case r.Cmd != "":
		t := 5.0
		var res envdapi.CommandResult
		err := m.envdJSON(ctx, inst, http.MethodPost, "/commands", envdapi.CommandRequest{Cmd: r.Cmd, Timeout: &t}, &res)
		return err == nil && res.ExitCode == 0
	case r.Port != 0:
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(inst.slot.GuestIP.String(), strconv.Itoa(r.Port)))
		if err != nil {
			return false
		}
		c.Close()
		return true
	case r.URL != "":
		u, err := url.Parse(r.URL)
		if err != nil {
			return false
		}
		switch u.Hostname() {
		case "localhost", "127.0.0.1", "::1", "0.0.0.0", "":
			port := u.Port()
			host := inst.slot.GuestIP.String()
			if port != "" {
				host = net.JoinHostPort(host, port)
			}
			u.Host = host
		default:
			return false // only the sandbox itself is checked
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return false
		}
		c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
		resp, err := c.Do(req)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		return resp.StatusCode < 500
	}
	return false
}

// mergeEnvs returns base overlaid with over (over wins); nil if both are empty.
func mergeEnvs(base, over map[string]string) map[string]string {
	if len(base) == 0 {
		return over
	}
	out := make(map[string]string, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}
