package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
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
	if kb, err := meminfo("MemTotal"); err == nil {
		m.MemTotalMiB = math.Round(float64(kb)/1024*10) / 10
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

// MemAvailable returns the host's MemAvailable in bytes.
func MemAvailable() (int64, error) {
	kb, err := meminfo("MemAvailable")
	return kb << 10, err
}

// meminfo returns the /proc/meminfo field key in kB.
func meminfo(key string) (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/meminfo: no %s", key)
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
