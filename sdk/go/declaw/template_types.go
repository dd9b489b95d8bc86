package declaw

import (
	"encoding/json"
	"time"
)

// TemplateBuildRequest is the body of POST /templates/build (the official
// SDK's shape); pass it to BuildTemplate.
type TemplateBuildRequest struct {
	Template TemplateSpec `json:"template"`
	Alias    string       `json:"alias,omitempty"` // the name sandboxes are created from
	// Defaults for the template's sandboxes (0: the server's).
	CPUCount int `json:"cpu_count,omitempty"`
	MemoryMB int `json:"memory_mb,omitempty"`
	DiskMB   int `json:"disk_mb,omitempty"`
	// Background answers at once (202, status "building"); follow the
	// build with FollowBuild or Build.
	Background bool `json:"background,omitempty"`
	Force      bool `json:"force,omitempty"` // rebuild even when the cache has it
}

// TemplateSpec says how to build a template: from a base and steps, or
// from a Dockerfile (docs/templates.md).
type TemplateSpec struct {
	BaseImage   string            `json:"base_image,omitempty"` // built-in or built template, or an image reference; default base
	AptPackages []string          `json:"apt_packages,omitempty"`
	RunCmds     []string          `json:"run_cmds,omitempty"`
	Copies      []TemplateCopy    `json:"copies,omitempty"` // from the build context
	Envs        map[string]string `json:"envs,omitempty"`
	Workdir     string            `json:"workdir,omitempty"`
	User        string            `json:"user,omitempty"`
	StartCmd    string            `json:"start_cmd,omitempty"` // started in every new sandbox
	ReadyCheck  *ReadyCheck       `json:"ready_check,omitempty"`
	Dockerfile  string            `json:"dockerfile,omitempty"` // instead of the fields above
}

// TemplateCopy copies Src (relative to the build context) to Dst.
type TemplateCopy struct {
	Src  string `json:"src"`
	Dst  string `json:"dst"`
	Mode *int   `json:"mode,omitempty"` // permission bits, e.g. 0o755
}

// ReadyCheck says when a template's start command is ready; exactly one
// of Cmd (exits 0), Port (accepts TCP) and URL (answers below 500).
type ReadyCheck struct {
	Cmd     string `json:"cmd,omitempty"`
	Port    int    `json:"port,omitempty"`
	URL     string `json:"url,omitempty"`
	Timeout int    `json:"timeout,omitempty"` // seconds; 0: the server's (60)
}

// TemplateInfo is a template as GET /templates shows it.
type TemplateInfo struct {
	TemplateID string            `json:"template_id"`
	Alias      string            `json:"alias"`
	Aliases    []string          `json:"aliases"`
	Builtin    bool              `json:"builtin"`
	Status     string            `json:"status"`
	CreatedAt  time.Time         `json:"created_at"`
	BuildID    string            `json:"build_id,omitempty"`
	SizeBytes  int64             `json:"size_bytes"`
	Base       string            `json:"base,omitempty"`
	StartCmd   string            `json:"start_cmd,omitempty"`
	ReadyCheck *ReadyCheck       `json:"ready_check,omitempty"`
	Envs       map[string]string `json:"envs,omitempty"`
	Workdir    string            `json:"workdir,omitempty"`
	User       string            `json:"user,omitempty"`
	CPUCount   int               `json:"cpu_count,omitempty"`
	MemoryMB   int               `json:"memory_mb,omitempty"`
	DiskMB     int               `json:"disk_mb,omitempty"`
	InUse      int               `json:"in_use"` // live sandboxes using it

	// Raw is the template as the server sent it.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes the fields and keeps the raw object in Raw.
func (t *TemplateInfo) UnmarshalJSON(b []byte) error {
	type plain TemplateInfo
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*t = TemplateInfo(p)
	t.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// MarshalJSON writes Raw when set, so a listed template prints as the
// server sent it.
func (t TemplateInfo) MarshalJSON() ([]byte, error) {
	if len(t.Raw) > 0 {
		return t.Raw, nil
	}
	type plain TemplateInfo
	return json.Marshal(plain(t))
}
