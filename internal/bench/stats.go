package bench

import (
	"math"
	"slices"
	"time"
)

// Summary is the distribution of a set of latency samples, in milliseconds.
// The zero value means "no samples".
type Summary struct {
	N   int     `json:"n"`
	Min float64 `json:"min_ms"`
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// Summarize sorts a copy of samples and returns their nearest-rank
// percentiles: Pp is the smallest sample with at least p% of the samples
// at or below it (so P50 of 1..4 is 2 and P99 of fewer than 100 samples
// is the maximum).
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	return Summary{
		N:   len(s),
		Min: ms(s[0]),
		P50: ms(Percentile(s, 50)),
		P95: ms(Percentile(s, 95)),
		P99: ms(Percentile(s, 99)),
		Max: ms(s[len(s)-1]),
	}
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, which must be sorted ascending and not empty.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Ratio returns a/b, or 0 when either is not positive (no figure rather
// than a meaningless or infinite one).
func Ratio(a, b float64) float64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return a / b
}

// MBPerSec is the throughput of moving size bytes in d, in MB/s (10^6 bytes), 0 for d <= 0.
func MBPerSec(size int64, d time.Duration) float64 {
	if d <= 0 || size <= 0 {
		return 0
	}
	return float64(size) / 1e6 / d.Seconds()
}

// ms converts d to milliseconds, keeping microsecond precision.
func ms(d time.Duration) float64 {
	return math.Round(float64(d.Microseconds())) / 1000
}
