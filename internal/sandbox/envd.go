package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
)

// waitEnvd polls envd's health endpoint until it answers or EnvdReady passes.
func (m *Manager) waitEnvd(ctx context.Context, inst *instance) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.EnvdReady)
	defer cancel()
	delay := 2 * time.Millisecond
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, inst.base.String()+"/health", nil)
		resp, err := m.client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("health answered %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("envd did not become ready in %v: %v", m.cfg.EnvdReady, last)
		case <-time.After(delay):
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

// envdJSON sends a JSON request to envd and decodes the answer into out (if non-nil).
func (m *Manager) envdJSON(ctx context.Context, inst *instance, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, inst.base.String()+path, body)
	if err != nil {
		return err
	}
	req.Header.Set(envdapi.AccessTokenHeader, inst.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e envdapi.Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) == nil && e.Message != "" {
			return fmt.Errorf("envd %s %s: %s: %s", method, path, resp.Status, e.Message)
		}
		return fmt.Errorf("envd %s %s: %s", method, path, resp.Status)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	io.Copy(io.Discard, resp.Body)
	return nil
}
