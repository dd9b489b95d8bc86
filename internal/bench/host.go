package bench

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/declaw/declaw/internal/meminfo"
)

// Machine describes the host the figures were measured on.
type Machine struct {
	NProc        int     `json:"nproc"`
	MemTotalMiB  float64 `json:"mem_total_mib"`
	Kernel       string  `json:"kernel"`
	RunscVersion string  `json:"runsc_version"`
	GoVersion    string  `json:"go_version"`
	// LoadAvgStart and LoadAvgEnd are /proc/loadavg's 1, 5 and 15 minute
	// figures when the run began and ended: other work on the host skews
	// every latency (the ratios less, since baselines share the load).
	LoadAvgStart [3]float64 `json:"loadavg_start"`
	LoadAvgEnd   [3]float64 `json:"loadavg_end"`
}

// LoadAvg reads /proc/loadavg (zeros if unreadable).
func LoadAvg() [3]float64 {
	var l [3]float64
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Sscanf(string(b), "%f %f %f", &l[0], &l[1], &l[2])
	}
	return l
}

// ReadMachine collects the machine facts (runsc: the binary the baseline runs).
func ReadMachine(ctx context.Context, runsc string) Machine {
	m := Machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version(), LoadAvgStart: LoadAvg()}
	if b, err := meminfo.Field("MemTotal"); err == nil {
		m.MemTotalMiB = math.Round(float64(b)/(1<<20)*10) / 10
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if runsc == "" {
		runsc = "runsc"
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(cctx, runsc, "--version").Output(); err == nil {
		first, _, _ := strings.Cut(string(out), "\n")
		m.RunscVersion = strings.TrimSpace(strings.TrimPrefix(first, "runsc version "))
	}
	return m
}

// safeBuffer is a bytes.Buffer safe for the concurrent writes of a
// command's stdout and stderr copiers.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}
