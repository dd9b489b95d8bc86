package declaw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Sandbox is the sandbox object of GET /sandboxes/{id} (and of create,
// list and timeout answers).
type Sandbox struct {
	SandboxID  string            `json:"sandbox_id"`
	TemplateID string            `json:"template_id"`
	Alias      string            `json:"alias,omitempty"`
	State      string            `json:"state"` // running, paused or killed
	Metadata   map[string]string `json:"metadata"`
	Envs       map[string]string `json:"envs,omitempty"` // secret-looking values are masked by the server
	Timeout    int               `json:"timeout"`
	StartedAt  time.Time         `json:"started_at"`
	EndAt      *time.Time        `json:"end_at"` // nil: no timeout
	KilledAt   *time.Time        `json:"killed_at,omitempty"`
	GuestIP    string            `json:"guest_ip,omitempty"`
	EnvdPort   int               `json:"envd_port,omitempty"`
	Runtime    string            `json:"runtime,omitempty"`
	Network    json.RawMessage   `json:"network,omitempty"`
	// Resources are the sandbox's limits; OOMKills and LastOOMAt say how
	// often and when it reached its memory limit; EndReason why a killed
	// sandbox ended ("api", "timeout", "oom", "exited", ...).
	Resources *Resources `json:"resources,omitempty"`
	OOMKills  int        `json:"oom_kills,omitempty"`
	LastOOMAt *time.Time `json:"last_oom_at,omitempty"`
	EndReason string     `json:"end_reason,omitempty"`

	// Raw is the object as the server sent it, with the fields this type
	// does not name (on create: envd_access_token, sandbox_domain).
	Raw json.RawMessage `json:"-"`
}

// Resources are a sandbox's limits: vCPUs, memory (MiB, everything in the
// sandbox), writable disk (MiB over its template) and processes.
type Resources struct {
	VCPUs    float64 `json:"vcpus"`
	MemoryMB int64   `json:"memory_mb"`
	DiskMB   int64   `json:"disk_mb"`
	Pids     int64   `json:"pids"`
}

// UnmarshalJSON decodes the fields and keeps the raw object in Raw.
func (s *Sandbox) UnmarshalJSON(b []byte) error {
	type plain Sandbox
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*s = Sandbox(p)
	s.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// Network is the egress policy of a sandbox: entries are IPs, CIDRs,
// domains, "*.domain" or "*"; allow wins over deny.
type Network struct {
	AllowOut []string `json:"allow_out,omitempty"`
	DenyOut  []string `json:"deny_out,omitempty"`
}

// CreateRequest is POST /sandboxes. Nil and empty fields are left out and
// get the server's defaults (template base, timeout 300 s).
type CreateRequest struct {
	Template string            `json:"template,omitempty"`
	Timeout  *int              `json:"timeout,omitempty"` // seconds; 0 = never
	Metadata map[string]string `json:"metadata,omitempty"`
	Envs     map[string]string `json:"envs,omitempty"`
	Network  *Network          `json:"network,omitempty"`
	// AllowInternetAccess false denies all egress (deny_out 0.0.0.0/0)
	// unless Network is set; nil: allowed.
	AllowInternetAccess *bool `json:"allow_internet_access,omitempty"`
	// Security is the sandbox's security policy: a *SecurityPolicy, or
	// its JSON as a json.RawMessage (an object, or {"policy_json": "..."}).
	Security any `json:"security,omitempty"`
	// Lifecycle is validated and stored; a sandbox is killed at its timeout.
	Lifecycle *Lifecycle `json:"lifecycle,omitempty"`
	// Resources within the server's maxima; nil: the template's, else the server's defaults.
	CPUCount *float64 `json:"cpu_count,omitempty"`
	MemoryMB *int64   `json:"memory_mb,omitempty"`
	DiskMB   *int64   `json:"disk_mb,omitempty"`
	// Volumes are unpacked into the sandbox before the create answers.
	Volumes []VolumeAttachment `json:"volumes,omitempty"`
	// IdempotencyKey is sent as Idempotency-Key, and reused when the
	// create is retried; empty: a random one.
	IdempotencyKey string `json:"-"`
}

// CreateSandbox creates a sandbox; it answers once commands can run. A
// create still running under the same key (409 idempotency_in_progress)
// is waited for, honouring Retry-After.
func (c *Client) CreateSandbox(ctx context.Context, req CreateRequest) (*Sandbox, error) {
	key := req.IdempotencyKey
	if key == "" {
		key = newIdempotencyKey()
	}
	for attempt := 1; ; attempt++ {
		var sb Sandbox
		err := c.call(ctx, request{method: http.MethodPost, path: "/sandboxes", json: req,
			header: http.Header{"Idempotency-Key": {key}}}, &sb)
		var e *Error
		if errors.As(err, &e) && e.Status == http.StatusConflict && e.Code == "idempotency_in_progress" && attempt < 10 {
			wait := min(max(e.RetryAfter, time.Second), 60*time.Second)
			if sleepCtx(ctx, wait) {
				continue
			}
			return nil, ctx.Err()
		}
		if err != nil {
			return nil, err
		}
		return &sb, nil
	}
}

// ListQuery filters GET /sandboxes.
type ListQuery struct {
	States    []string          // running, paused, killed; none: running and paused
	Metadata  map[string]string // every pair must match
	Limit     int               // page size, 1..1000; 0: the server's default (100)
	NextToken string
}

// ListPage is one page of sandboxes.
type ListPage struct {
	Sandboxes []Sandbox `json:"sandboxes"`
	NextToken string    `json:"next_token"` // empty on the last page
}

// ListSandboxes returns one page of sandboxes, in creation order.
func (c *Client) ListSandboxes(ctx context.Context, q ListQuery) (*ListPage, error) {
	var kv []string
	if len(q.Metadata) > 0 {
		keys := make([]string, 0, len(q.Metadata))
		for k := range q.Metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var pairs []string
		for _, k := range keys {
			pairs = append(pairs, query(k, q.Metadata[k]))
		}
		kv = append(kv, "metadata", strings.Join(pairs, "&"))
	}
	for _, s := range q.States {
		kv = append(kv, "state", s)
	}
	if q.Limit > 0 {
		kv = append(kv, "limit", strconv.Itoa(q.Limit))
	}
	kv = append(kv, "next_token", q.NextToken)
	var raw json.RawMessage
	if err := c.call(ctx, request{method: http.MethodGet, path: "/sandboxes", query: query(kv...)}, &raw); err != nil {
		return nil, err
	}
	var page struct {
		Sandboxes []Sandbox `json:"sandboxes"`
		NextToken *string   `json:"next_token"`
	}
	if len(raw) > 0 && raw[0] == '[' { // a bare list is accepted, as by the SDK
		if err := json.Unmarshal(raw, &page.Sandboxes); err != nil {
			return nil, fmt.Errorf("GET /sandboxes: decode answer: %w", err)
		}
	} else if err := json.Unmarshal(raw, &page); err != nil {
		return nil, fmt.Errorf("GET /sandboxes: decode answer: %w", err)
	}
	out := &ListPage{Sandboxes: page.Sandboxes}
	if page.NextToken != nil {
		out.NextToken = *page.NextToken
	}
	if out.Sandboxes == nil {
		out.Sandboxes = []Sandbox{}
	}
	return out, nil
}

// GetSandbox describes one sandbox, killed ones included.
func (c *Client) GetSandbox(ctx context.Context, id string) (*Sandbox, error) {
	var sb Sandbox
	if err := c.call(ctx, request{method: http.MethodGet, path: sandboxPath(id, "")}, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}

// KillSandbox kills a sandbox and waits for it; killed is false when it
// was already killed.
func (c *Client) KillSandbox(ctx context.Context, id string) (killed bool, err error) {
	var out struct {
		Killed bool `json:"killed"`
	}
	if err := c.call(ctx, request{method: http.MethodDelete, path: sandboxPath(id, "")}, &out); err != nil {
		return false, err
	}
	return out.Killed, nil
}

// Status is GET /sandboxes/{id}/status.
type Status struct {
	IsRunning bool   `json:"is_running"`
	State     string `json:"state"`
}

// SandboxStatus returns whether the sandbox runs.
func (c *Client) SandboxStatus(ctx context.Context, id string) (*Status, error) {
	var st Status
	if err := c.call(ctx, request{method: http.MethodGet, path: sandboxPath(id, "/status")}, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// SetTimeout sets the sandbox's timeout to seconds from now (0: never) and
// returns the sandbox.
func (c *Client) SetTimeout(ctx context.Context, id string, seconds int) (*Sandbox, error) {
	var raw json.RawMessage
	err := c.call(ctx, request{method: http.MethodPatch, path: sandboxPath(id, "/timeout"),
		json: map[string]int{"timeout": seconds}}, &raw)
	if err != nil {
		return nil, err
	}
	var sb Sandbox
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &sb); err != nil {
			return nil, fmt.Errorf("PATCH /timeout: decode answer: %w", err)
		}
	}
	return &sb, nil
}

// Pause freezes the sandbox (POST /sandboxes/{id}/pause) and returns the
// server's answer (JSON, possibly empty).
func (c *Client) Pause(ctx context.Context, id string) (json.RawMessage, error) {
	var raw json.RawMessage
	err := c.call(ctx, request{method: http.MethodPost, path: sandboxPath(id, "/pause"), json: struct{}{}}, &raw)
	return raw, err
}

// Resume continues a paused sandbox (POST /sandboxes/{id}/resume); a
// non-nil timeout resets its timeout in seconds.
func (c *Client) Resume(ctx context.Context, id string, timeout *int) (json.RawMessage, error) {
	body := map[string]any{}
	if timeout != nil {
		body["timeout"] = *timeout
	}
	var raw json.RawMessage
	err := c.call(ctx, request{method: http.MethodPost, path: sandboxPath(id, "/resume"), json: body}, &raw)
	return raw, err
}

// Lifecycle is what happens at the timeout (the hosted API's field).
type Lifecycle struct {
	OnTimeout  string `json:"on_timeout,omitempty"` // kill or pause
	AutoResume bool   `json:"auto_resume,omitempty"`
}

// Connect returns a running sandbox by id, resuming it if it is paused,
// and, when timeout is non-nil, sets its timeout to that many seconds
// from now (the Python SDK's Sandbox.connect).
func (c *Client) Connect(ctx context.Context, id string, timeout *int) (*Sandbox, error) {
	sb, err := c.GetSandbox(ctx, id)
	if err != nil {
		return nil, err
	}
	switch sb.State {
	case "killed":
		return nil, &Error{Status: http.StatusGone, Code: "sandbox_killed", Message: "sandbox " + id + " was killed"}
	case "paused":
		if _, err := c.Resume(ctx, id, timeout); err != nil {
			return nil, err
		}
		return c.GetSandbox(ctx, id)
	}
	if timeout != nil {
		return c.SetTimeout(ctx, id, *timeout)
	}
	return sb, nil
}

// Metric is one resource usage sample of a sandbox.
type Metric struct {
	Timestamp       time.Time `json:"timestamp"`
	CPUUsagePercent float64   `json:"cpu_usage_percent"` // of one CPU: up to 100 * CPUCount
	MemoryUsageMB   float64   `json:"memory_usage_mb"`
	DiskUsageMB     float64   `json:"disk_usage_mb"`
	// The limits; 0 when the runtime cannot tell.
	CPUCount      float64 `json:"cpu_count,omitempty"`
	MemoryLimitMB float64 `json:"memory_limit_mb,omitempty"`
	DiskLimitMB   float64 `json:"disk_limit_mb,omitempty"`
}

// Metrics returns the sandbox's resource samples, oldest first, between
// start and end (zero: unbounded).
func (c *Client) Metrics(ctx context.Context, id string, start, end time.Time) ([]Metric, error) {
	var s, e string
	if !start.IsZero() {
		s = start.UTC().Format(time.RFC3339Nano)
	}
	if !end.IsZero() {
		e = end.UTC().Format(time.RFC3339Nano)
	}
	var raw json.RawMessage
	err := c.call(ctx, request{method: http.MethodGet, path: sandboxPath(id, "/metrics"), query: query("start", s, "end", e)}, &raw)
	if err != nil {
		return nil, err
	}
	var ms []Metric
	switch {
	case len(raw) > 0 && raw[0] == '{': // {"metrics": [...]} or one object
		var w struct {
			Metrics []Metric `json:"metrics"`
		}
		if err = json.Unmarshal(raw, &w); err == nil && w.Metrics != nil {
			ms = w.Metrics
		} else {
			var m Metric
			if err = json.Unmarshal(raw, &m); err == nil {
				ms = []Metric{m}
			}
		}
	case len(raw) > 0:
		err = json.Unmarshal(raw, &ms)
	}
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: decode answer: %w", err)
	}
	if ms == nil {
		ms = []Metric{}
	}
	return ms, nil
}

// UpdateNetwork replaces the sandbox's egress policy at once (PUT
// /sandboxes/{id}/network): open connections the new policy denies are
// cut. It returns the sandbox.
func (c *Client) UpdateNetwork(ctx context.Context, id string, n Network) (*Sandbox, error) {
	var sb Sandbox
	if err := c.call(ctx, request{method: http.MethodPut, path: sandboxPath(id, "/network"), json: n}, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}

// KillResult is the outcome for one id of KillMany.
type KillResult struct {
	Killed bool   `json:"killed"`
	Queued bool   `json:"queued"`
	Error  string `json:"error,omitempty"`
}

// KillMany kills several sandboxes and waits for them.
func (c *Client) KillMany(ctx context.Context, ids []string) (map[string]KillResult, error) {
	var out struct {
		Results map[string]KillResult `json:"results"`
	}
	if err := c.call(ctx, request{method: http.MethodPost, path: "/sandboxes/kill-many", json: map[string][]string{"sandbox_ids": ids}}, &out); err != nil {
		return nil, err
	}
	return out.Results, nil
}
