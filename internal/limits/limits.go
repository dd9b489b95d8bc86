// Package limits decides how much of the host a sandbox may use: the
// resources it gets (the server's defaults, a template's own values and a
// create's overrides, each within the server's maxima) and whether the host
// has room for it at all (admission against host memory).
//
// It is pure policy: drivers enforce the numbers (cgroups, guest memory,
// disk layers), the orchestrator asks this package before it boots anything.
package limits

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/declaw/declaw/internal/sandboxrt"
)

// Defaults a user gets when nothing else is said (E2B starts sandboxes with
// 2 vCPUs and 512 MiB too).
const (
	DefaultCPUs     = 2
	DefaultMemoryMB = 512
	DefaultDiskMB   = 2048
	DefaultPids     = 1024
)

// Maxima a create may ask for unless the server is configured otherwise.
const (
	DefaultMaxCPUs     = 8
	DefaultMaxMemoryMB = 8192
	DefaultMaxDiskMB   = 20480
	DefaultMaxPids     = 16384
)

// Minima below which a sandbox cannot run its runtime and envd.
const (
	MinCPUs     = 0.1
	MinMemoryMB = 128
	MinDiskMB   = 16
	MinPids     = 32
)

// Config is the server-wide resource policy. The zero value means the
// documented defaults (see Normalize).
type Config struct {
	Defaults sandboxrt.Resources // what a sandbox gets when its template and create name nothing
	Max      sandboxrt.Resources // what a template or create may ask for at most
	// ReserveMB is host memory never committed to sandboxes (the host, the
	// server, page cache). 0: max(1 GiB, 10% of the host's memory).
	ReserveMB int64
	// Overcommit scales what may be committed: sandboxes' memory limits may
	// add up to (host memory - reserve) * Overcommit. 0: 1 (no overcommit,
	// so no sequence of creates can make the host swap or OOM).
	Overcommit float64
	// OverheadMB is host memory a sandbox uses outside its memory limit
	// (runtime processes outside its cgroup, a VM monitor's own memory); it
	// is committed with the limit.
	OverheadMB int64
}

// Normalize fills zero fields with the defaults and checks the result.
func (c Config) Normalize() (Config, error) {
	d, m := &c.Defaults, &c.Max
	fill := func(v *int64, def int64) {
		if *v == 0 {
			*v = def
		}
	}
	if d.CPUs == 0 {
		d.CPUs = DefaultCPUs
	}
	fill(&d.MemoryMB, DefaultMemoryMB)
	fill(&d.DiskMB, DefaultDiskMB)
	fill(&d.Pids, DefaultPids)
	if m.CPUs == 0 {
		m.CPUs = max(DefaultMaxCPUs, d.CPUs)
	}
	fill(&m.MemoryMB, max(DefaultMaxMemoryMB, d.MemoryMB))
	fill(&m.DiskMB, max(DefaultMaxDiskMB, d.DiskMB))
	fill(&m.Pids, max(DefaultMaxPids, d.Pids))
	if c.Overcommit == 0 {
		c.Overcommit = 1
	}
	var errs []error
	check := func(name string, def, mx, min float64) {
		switch {
		case def < min || math.IsNaN(def):
			errs = append(errs, fmt.Errorf("default %s %s: must be at least %s", name, fmtNum(def), fmtNum(min)))
		case mx < def || math.IsNaN(mx):
			errs = append(errs, fmt.Errorf("maximum %s %s: must be at least the default %s", name, fmtNum(mx), fmtNum(def)))
		}
	}
	check("cpu count", d.CPUs, m.CPUs, MinCPUs)
	check("memory MiB", float64(d.MemoryMB), float64(m.MemoryMB), MinMemoryMB)
	check("disk MiB", float64(d.DiskMB), float64(m.DiskMB), MinDiskMB)
	check("pids", float64(d.Pids), float64(m.Pids), MinPids)
	if c.ReserveMB < 0 {
		errs = append(errs, fmt.Errorf("memory reserve %d MiB: must be >= 0", c.ReserveMB))
	}
	if !(c.Overcommit > 0 && c.Overcommit <= 100) {
		errs = append(errs, fmt.Errorf("memory overcommit %v: must be in (0, 100]", c.Overcommit))
	}
	if c.OverheadMB < 0 {
		errs = append(errs, fmt.Errorf("overhead %d MiB: must be >= 0", c.OverheadMB))
	}
	return c, errors.Join(errs...)
}

func fmtNum(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// Request is what a create asks for; nil fields are not asked for.
type Request struct {
	CPUs     *float64
	MemoryMB *int64
	DiskMB   *int64
}

// Error is a resource request the server refuses; its text is safe to
// show users. Code is "limit_exceeded" past a maximum, "invalid_argument"
// otherwise.
type Error struct {
	Field string // cpu_count, memory_mb, disk_mb (or template.<field> for a template's value)
	Code  string
	Msg   string
}

func (e *Error) Error() string { return e.Field + ": " + e.Msg }

// Resolve returns the resources of a sandbox: for each field the create's
// value, else the template's (tmpl, zero = none), else the server default.
// Values past the maxima or below the minima are an *Error.
func (c Config) Resolve(tmpl sandboxrt.Resources, req Request) (sandboxrt.Resources, error) {
	out := c.Defaults
	type field struct {
		name     string
		req      *float64
		tmpl     float64
		def, max float64
		min      float64
		integer  bool
		set      func(float64)
	}
	f64 := func(p *int64) *float64 {
		if p == nil {
			return nil
		}
		v := float64(*p)
		return &v
	}
	fields := []field{
		{"cpu_count", req.CPUs, tmpl.CPUs, c.Defaults.CPUs, c.Max.CPUs, MinCPUs, false, func(v float64) { out.CPUs = v }},
		{"memory_mb", f64(req.MemoryMB), float64(tmpl.MemoryMB), float64(c.Defaults.MemoryMB), float64(c.Max.MemoryMB), MinMemoryMB, true, func(v float64) { out.MemoryMB = int64(v) }},
		{"disk_mb", f64(req.DiskMB), float64(tmpl.DiskMB), float64(c.Defaults.DiskMB), float64(c.Max.DiskMB), MinDiskMB, true, func(v float64) { out.DiskMB = int64(v) }},
	}
	for _, f := range fields {
		v, name := f.def, f.name
		switch {
		case f.req != nil:
			v = *f.req
		case f.tmpl > 0:
			v, name = f.tmpl, "template."+f.name
		}
		switch {
		case math.IsNaN(v) || math.IsInf(v, 0):
			return sandboxrt.Resources{}, &Error{Field: name, Code: "invalid_argument", Msg: "must be a number"}
		case v < f.min:
			return sandboxrt.Resources{}, &Error{Field: name, Code: "invalid_argument", Msg: fmt.Sprintf("%s is below the minimum %s", fmtNum(v), fmtNum(f.min))}
		case v > f.max:
			return sandboxrt.Resources{}, &Error{Field: name, Code: "limit_exceeded", Msg: fmt.Sprintf("%s is over this server's maximum %s", fmtNum(v), fmtNum(f.max))}
		case f.integer && v != math.Trunc(v):
			return sandboxrt.Resources{}, &Error{Field: name, Code: "invalid_argument", Msg: fmt.Sprintf("%s is not a whole number", fmtNum(v))}
		}
		f.set(v)
	}
	// Threads and processes scale with the CPUs a sandbox has, but the
	// default is generous for any build or test suite; it is not per create.
	if tmpl.Pids > 0 {
		out.Pids = min(tmpl.Pids, c.Max.Pids)
	}
	return out, nil
}
