package gvisor

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/declaw/declaw/internal/sandboxrt"
)

// The OCI runtime spec subset runsc needs. Hand-written so the module does
// not depend on github.com/opencontainers/runtime-spec; field names and JSON
// tags follow runtime-spec v1.0.2.
type ociSpec struct {
	Version  string     `json:"ociVersion"`
	Process  ociProcess `json:"process"`
	Root     ociRoot    `json:"root"`
	Hostname string     `json:"hostname,omitempty"`
	Mounts   []ociMount `json:"mounts"`
	Linux    ociLinux   `json:"linux"`
}

type ociProcess struct {
	Terminal        bool        `json:"terminal"`
	User            ociUser     `json:"user"`
	Args            []string    `json:"args"`
	Env             []string    `json:"env"`
	Cwd             string      `json:"cwd"`
	Capabilities    *ociCaps    `json:"capabilities,omitempty"`
	Rlimits         []ociRlimit `json:"rlimits,omitempty"`
	NoNewPrivileges bool        `json:"noNewPrivileges"`
}

type ociUser struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

type ociCaps struct {
	Bounding    []string `json:"bounding"`
	Effective   []string `json:"effective"`
	Inheritable []string `json:"inheritable"`
	Permitted   []string `json:"permitted"`
	Ambient     []string `json:"ambient"`
}

type ociRlimit struct {
	Type string `json:"type"`
	Hard uint64 `json:"hard"`
	Soft uint64 `json:"soft"`
}

type ociRoot struct {
	Path     string `json:"path"`
	Readonly bool   `json:"readonly"`
}

type ociMount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Source      string   `json:"source"`
	Options     []string `json:"options,omitempty"`
}

type ociLinux struct {
	Resources   *ociResources  `json:"resources,omitempty"`
	CgroupsPath string         `json:"cgroupsPath,omitempty"`
	Namespaces  []ociNamespace `json:"namespaces"`
}

type ociNamespace struct {
	Type string `json:"type"`
}

type ociResources struct {
	Memory *ociMemory `json:"memory,omitempty"`
	CPU    *ociCPU    `json:"cpu,omitempty"`
	Pids   *ociPids   `json:"pids,omitempty"`
}

type ociMemory struct {
	Limit int64 `json:"limit"`
}

type ociCPU struct {
	Quota  int64  `json:"quota"`
	Period uint64 `json:"period"`
}

type ociPids struct {
	Limit int64 `json:"limit"`
}

// DefaultCapabilities is the capability set of the sandbox's root user:
// Docker's default set. It lets package managers, chown, ping and servers on
// low ports work inside the sandbox, and leaves out SYS_ADMIN, NET_ADMIN,
// SYS_PTRACE and the like. gVisor implements these inside its own kernel;
// none of them is a host capability.
var DefaultCapabilities = []string{
	"CAP_AUDIT_WRITE",
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FOWNER",
	"CAP_FSETID",
	"CAP_KILL",
	"CAP_MKNOD",
	"CAP_NET_BIND_SERVICE",
	"CAP_NET_RAW",
	"CAP_SETFCAP",
	"CAP_SETGID",
	"CAP_SETPCAP",
	"CAP_SETUID",
	"CAP_SYS_CHROOT",
}

// cpuPeriod is the CFS period used to express fractional CPU limits.
const cpuPeriod = 100_000

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// buildSpec turns a sandbox Spec into the OCI spec given to runsc. It is
// pure so the mapping can be tested without root.
//
// The spec deliberately lists no network namespace: runsc runs with
// --network=host inside the slot's netns, and a "network" entry would give
// the sandbox a fresh, empty netns instead (see ARCHITECTURE §2).
func buildSpec(s sandboxrt.Spec, res sandboxrt.Resources, cgroupsPath string) (ociSpec, error) {
	if len(s.Init) == 0 {
		return ociSpec{}, fmt.Errorf("sandbox %s: empty init argv", s.ID)
	}
	env := slices.Clone(s.Env)
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
		env = append(env, defaultPath)
	}
	caps := slices.Clone(DefaultCapabilities)
	spec := ociSpec{
		Version: "1.0.2",
		Process: ociProcess{
			User: ociUser{UID: 0, GID: 0},
			Args: slices.Clone(s.Init),
			Env:  env,
			Cwd:  "/",
			Capabilities: &ociCaps{
				Bounding:    caps,
				Effective:   caps,
				Inheritable: []string{},
				Permitted:   caps,
				Ambient:     []string{},
			},
			Rlimits: []ociRlimit{{Type: "RLIMIT_NOFILE", Hard: 1 << 20, Soft: 1 << 20}},
		},
		// Not read-only: runsc (2022) then refuses writes even under
		// --overlay. The overlay keeps the template untouched: the gofer
		// serves it read-only and writes land in the sandbox's memory.
		Root:     ociRoot{Path: s.RootFS, Readonly: false},
		Hostname: s.Hostname,
		Mounts: []ociMount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: ociLinux{
			CgroupsPath: cgroupsPath,
			Namespaces: []ociNamespace{
				{Type: "pid"}, {Type: "ipc"}, {Type: "uts"}, {Type: "mount"},
			},
		},
	}
	for _, m := range s.Mounts {
		if m.Source == "" || !path.IsAbs(m.Target) {
			return ociSpec{}, fmt.Errorf("sandbox %s: bad mount %q -> %q: need a source and an absolute target", s.ID, m.Source, m.Target)
		}
		opts := []string{"rbind"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		spec.Mounts = append(spec.Mounts, ociMount{Destination: path.Clean(m.Target), Type: "bind", Source: m.Source, Options: opts})
	}
	r := &ociResources{}
	if res.MemoryMB > 0 {
		r.Memory = &ociMemory{Limit: res.MemoryMB << 20}
	}
	if res.CPUs > 0 {
		r.CPU = &ociCPU{Quota: int64(res.CPUs * cpuPeriod), Period: cpuPeriod}
	}
	if res.Pids > 0 {
		// Inside: RLIMIT_NPROC, which gVisor enforces per user with a clean
		// EAGAIN from fork/clone. Outside: a host pids cgroup as a backstop
		// only, since hitting it makes the sentry fail to create a thread and
		// die (measured with runsc ptrace: ~6 host tasks per guest process).
		spec.Process.Rlimits = append(spec.Process.Rlimits, ociRlimit{Type: "RLIMIT_NPROC", Hard: uint64(res.Pids), Soft: uint64(res.Pids)})
		r.Pids = &ociPids{Limit: hostPidsLimit(res.Pids)}
	}
	if r.Memory != nil || r.CPU != nil || r.Pids != nil {
		spec.Linux.Resources = r
	}
	return spec, nil
}

// mergeResources fills the zero fields of r from def.
func mergeResources(r, def sandboxrt.Resources) sandboxrt.Resources {
	if r.CPUs <= 0 {
		r.CPUs = def.CPUs
	}
	if r.MemoryMB <= 0 {
		r.MemoryMB = def.MemoryMB
	}
	if r.Pids <= 0 {
		r.Pids = def.Pids
	}
	if r.DiskMB <= 0 {
		r.DiskMB = def.DiskMB
	}
	return r
}

// hostPidsLimit is the host pids cgroup limit for a sandbox allowed guest
// guest processes: the sentry's own threads plus, on the ptrace platform,
// a stub process and tracer threads per guest task.
func hostPidsLimit(guest int64) int64 {
	return 256 + 8*guest
}
