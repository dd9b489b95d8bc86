package sandbox

import (
	"context"
	"time"
)

// Metric is one resource usage sample of a sandbox.
type Metric struct {
	Timestamp       time.Time `json:"timestamp"`
	CPUUsagePercent float64   `json:"cpu_usage_percent"` // of one CPU, over the interval before the sample
	MemoryUsageMB   float64   `json:"memory_usage_mb"`
	// Usage against the limits: CPUCount is the sandbox's vCPUs (so
	// cpu_usage_percent can reach 100 * cpu_count); the limits are 0 when
	// the runtime cannot tell.
	CPUCount      float64 `json:"cpu_count,omitempty"`
	MemoryLimitMB float64 `json:"memory_limit_mb,omitempty"`
	DiskUsageMB   float64 `json:"disk_usage_mb"`
	DiskLimitMB   float64 `json:"disk_limit_mb,omitempty"`
}

// metricRing keeps the last samples of one sandbox and the cumulative CPU
// time of the previous one. It is guarded by the instance's mutex.
type metricRing struct {
	samples []Metric
	lastCPU uint64
	lastAt  time.Time
}

// metricsKept bounds the history: one hour at the default interval.
const metricsKept = 720

// MetricsInterval is how often running sandboxes are sampled.
const MetricsInterval = 5 * time.Second

func (r *metricRing) add(at time.Time, cpuNanos, memBytes uint64) {
	m := Metric{Timestamp: at.UTC(), MemoryUsageMB: float64(memBytes) / (1 << 20)}
	if !r.lastAt.IsZero() && cpuNanos >= r.lastCPU {
		if d := at.Sub(r.lastAt); d > 0 {
			m.CPUUsagePercent = 100 * float64(cpuNanos-r.lastCPU) / float64(d.Nanoseconds())
		}
	}
	r.lastCPU, r.lastAt = cpuNanos, at
	if len(r.samples) == metricsKept {
		copy(r.samples, r.samples[1:])
		r.samples = r.samples[:metricsKept-1]
	}
	r.samples = append(r.samples, m)
}

// sample takes one sample of a running sandbox.
func (m *Manager) sample(ctx context.Context, inst *instance) {
	if !inst.mu.TryLock() {
		return // a lifecycle operation (a restore takes seconds) is under way: skip it this round
	}
	running := inst.state == StateRunning && !inst.dying.Load()
	inst.mu.Unlock()
	if !running {
		return
	}
	st, err := m.cfg.Runtime.Stats(ctx, inst.id)
	if err != nil {
		return
	}
	at := st.Time
	if at.IsZero() {
		at = time.Now()
	}
	const mb = 1 << 20
	inst.mu.Lock()
	defer inst.mu.Unlock()
	inst.metrics.add(at, st.CPUUsageNanos, st.MemoryBytes)
	last := &inst.metrics.samples[len(inst.metrics.samples)-1]
	last.CPUCount = inst.res.CPUs
	last.MemoryLimitMB = float64(st.MemoryLimitBytes) / mb
	if last.MemoryLimitMB == 0 {
		last.MemoryLimitMB = float64(inst.res.MemoryMB)
	}
	last.DiskUsageMB = float64(st.DiskBytes) / mb
	last.DiskLimitMB = float64(st.DiskLimitBytes) / mb
}

// sampleLoop samples every live sandbox every MetricsInterval until ctx ends.
func (m *Manager) sampleLoop(ctx context.Context) {
	t := time.NewTicker(MetricsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		insts := make([]*instance, 0, len(m.instances))
		for _, inst := range m.instances {
			insts = append(insts, inst)
		}
		m.mu.Unlock()
		for _, inst := range insts {
			m.sample(ctx, inst)
		}
	}
}

// Metrics returns the samples of a live sandbox between start and end
// (zero = unbounded), taking a fresh one first.
func (m *Manager) Metrics(ctx context.Context, id string, start, end time.Time) ([]Metric, error) {
	inst, err := m.live(ctx, id, "read the metrics of")
	if err != nil {
		return nil, err
	}
	m.sample(ctx, inst)
	inst.mu.Lock()
	defer inst.mu.Unlock()
	out := []Metric{}
	for _, s := range inst.metrics.samples {
		if (!start.IsZero() && s.Timestamp.Before(start)) || (!end.IsZero() && s.Timestamp.After(end)) {
			continue
		}
		out = append(out, s)
	}
	return out, nil
}
