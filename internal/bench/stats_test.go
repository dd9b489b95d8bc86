package bench

import (
	"context"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func msd(v ...float64) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x * float64(time.Millisecond))
	}
	return out
}

func TestSummarize(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(100 - i) // 100..1, unsorted
	}
	tests := []struct {
		name string
		in   []time.Duration
		want Summary
	}{
		{"none", nil, Summary{}},
		{"one", msd(7), Summary{N: 1, Min: 7, P50: 7, P95: 7, P99: 7, Max: 7}},
		{"four unsorted", msd(4, 1, 3, 2), Summary{N: 4, Min: 1, P50: 2, P95: 4, P99: 4, Max: 4}},
		{"five", msd(10, 20, 30, 40, 50), Summary{N: 5, Min: 10, P50: 30, P95: 50, P99: 50, Max: 50}},
		{"hundred", msd(hundred...), Summary{N: 100, Min: 1, P50: 50, P95: 95, P99: 99, Max: 100}},
		{"microseconds kept", []time.Duration{1500 * time.Microsecond}, Summary{N: 1, Min: 1.5, P50: 1.5, P95: 1.5, P99: 1.5, Max: 1.5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Summarize(tt.in); got != tt.want {
				t.Errorf("Summarize(%v) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestSummarizeDoesNotReorderInput(t *testing.T) {
	in := msd(3, 1, 2)
	Summarize(in)
	if in[0] != 3*time.Millisecond || in[1] != time.Millisecond {
		t.Errorf("Summarize sorted its input: %v", in)
	}
}

func TestPercentile(t *testing.T) {
	s := msd(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	for _, tt := range []struct {
		p    float64
		want float64
	}{{1, 1}, {10, 1}, {11, 2}, {50, 5}, {51, 6}, {90, 9}, {95, 10}, {99, 10}, {100, 10}, {0, 1}} {
		if got := Percentile(s, tt.p); got != time.Duration(tt.want*float64(time.Millisecond)) {
			t.Errorf("Percentile(1..10 ms, %v) = %v, want %vms", tt.p, got, tt.want)
		}
	}
}

func TestRatio(t *testing.T) {
	for _, tt := range []struct{ a, b, want float64 }{
		{50, 250, 0.2}, {3, 1, 3}, {1, 0, 0}, {0, 1, 0}, {-1, 2, 0}, {2, -1, 0},
	} {
		if got := Ratio(tt.a, tt.b); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("Ratio(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestCompare(t *testing.T) {
	c := Compare(Summary{N: 3, P50: 50, P95: 100, P99: 150}, "raw", Summary{N: 3, P50: 200, P95: 250, P99: 0})
	want := Ratios{P50: 0.25, P95: 0.4, P99: 0}
	if c.Ratio != want || c.BaselineName != "raw" {
		t.Errorf("Compare ratios = %+v (%q), want %+v (\"raw\")", c.Ratio, c.BaselineName, want)
	}
}

func TestMBPerSec(t *testing.T) {
	for _, tt := range []struct {
		size int64
		d    time.Duration
		want float64
	}{
		{10 << 20, time.Second, 10.48576}, {1000, time.Millisecond, 1}, {1 << 10, 0, 0}, {0, time.Second, 0},
	} {
		if got := MBPerSec(tt.size, tt.d); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("MBPerSec(%d, %v) = %v, want %v", tt.size, tt.d, got, tt.want)
		}
	}
}

func TestMedian3(t *testing.T) {
	for _, v := range [][4]int64{{1, 2, 3, 2}, {3, 2, 1, 2}, {2, 3, 1, 2}, {5, 5, 1, 5}, {1, 3, 2, 2}} {
		if got := median3(v[0], v[1], v[2]); got != v[3] {
			t.Errorf("median3(%d, %d, %d) = %d, want %d", v[0], v[1], v[2], got, v[3])
		}
	}
}

// TestShellChain runs the shell-start chain on this host and checks that
// it starts the shell the given number of times and times them.
func TestShellChain(t *testing.T) {
	const n = 5
	lat, err := NativeShellStart(context.Background(), 2, n)
	if err != nil {
		t.Fatal(err)
	}
	if len(lat) != 2 || lat[0] <= 0 || lat[1] <= 0 {
		t.Fatalf("per-start times = %v, want 2 positive", lat)
	}
	// The chain really execs n more shells: count them with a trace file.
	dir := t.TempDir()
	cmd := "export LOG=" + dir + "/starts; " + strings.Replace(ShellChain("/bin/bash", n), `-c 'if`, `-c 'echo x >> "$LOG"; if`, 1)
	if out, err := exec.Command("/bin/bash", "-c", cmd).Output(); err != nil {
		t.Fatalf("chain: %v", err)
	} else if _, err := ShellStarts(string(out), n); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(dir + "/starts")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(data), "x"); got != n+1 {
		t.Fatalf("shell started %d times, want %d", got, n+1)
	}
	for _, bad := range []string{"", "x y", "5 4", "7"} {
		if _, err := ShellStarts(bad, n); err == nil {
			t.Errorf("ShellStarts(%q) = nil error", bad)
		}
	}
}
