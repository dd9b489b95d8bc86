package pii_test

import (
	"testing"

	"github.com/declaw/declaw/internal/guard/guardtest"
	"github.com/declaw/declaw/internal/guard/pii"
)

// BenchmarkScanChat1MiB measures PII + secrets (all default types,
// including api_key) over a raw 1 MiB JSON chat request.
func BenchmarkScanChat1MiB(b *testing.B) {
	body := string(guardtest.ChatRequest(1 << 20))
	s := &pii.Scanner{}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	n := 0
	cpu := guardtest.CPUThroughput()
	for b.Loop() {
		n = len(s.Scan(body, nil))
	}
	b.ReportMetric(cpu(int64(len(body)), b.N), "MB/cpu-s")
	b.ReportMetric(float64(n), "spans")
}

func BenchmarkScanChat1MiBByType(b *testing.B) {
	body := string(guardtest.ChatRequest(1 << 20))
	s := &pii.Scanner{}
	for _, t := range pii.DefaultTypes {
		b.Run(string(t), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			cpu := guardtest.CPUThroughput()
			for b.Loop() {
				s.Scan(body, []pii.Type{t})
			}
			b.ReportMetric(cpu(int64(len(body)), b.N), "MB/cpu-s")
		})
	}
}
