package declaw

import (
	"context"
	"encoding/json"
	"net/http"
)

// Health is GET /health: the server is up, and what it runs.
type Health struct {
	Status   string         `json:"status"`              // "ok"
	Runtime  string         `json:"runtime,omitempty"`   // gvisor or microvm
	Accel    string         `json:"accel,omitempty"`     // microvm: kvm or tcg
	WarmPool map[string]int `json:"warm_pool,omitempty"` // ready sandboxes per template
	Memory   *struct {
		CommittedMB int64 `json:"committed_mb"` // promised to running sandboxes
		CapacityMB  int64 `json:"capacity_mb"`  // what creates may commit in all
	} `json:"memory,omitempty"`

	// Raw is the answer as the server sent it.
	Raw json.RawMessage `json:"-"`
}

// Health asks whether the server is up (no key needed).
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var raw json.RawMessage
	if err := c.call(ctx, request{method: http.MethodGet, path: "/health"}, &raw); err != nil {
		return nil, err
	}
	var h Health
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, err
	}
	h.Raw = raw
	return &h, nil
}
