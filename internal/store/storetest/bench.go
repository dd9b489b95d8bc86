package storetest

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/store"
)

// Bench measures the calls the server makes most, on the stores open
// returns: each backend runs it from its own Benchmark function, so
// `go test -bench . ./internal/store/...` puts them side by side.
func Bench(b *testing.B, open Opener) {
	fresh := func(b *testing.B) store.Store {
		s := open(b)
		b.Cleanup(func() { s.Close() })
		return s
	}
	b.Run("CreateSandbox", func(b *testing.B) {
		s := fresh(b)
		for i := 0; b.Loop(); i++ {
			if err := s.CreateSandbox(b.Context(), benchSandbox(i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("GetSandbox", func(b *testing.B) {
		s := fresh(b)
		if err := s.CreateSandbox(b.Context(), benchSandbox(0)); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := s.GetSandbox(b.Context(), "sbx-bench-0"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("UpdateSandbox", func(b *testing.B) {
		s := fresh(b)
		if err := s.CreateSandbox(b.Context(), benchSandbox(0)); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := s.UpdateSandbox(b.Context(), "sbx-bench-0", func(sb *store.Sandbox) error { sb.Timeout++; return nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ListSandboxesByMetadata1000", func(b *testing.B) {
		s := fresh(b)
		for i := range 1000 {
			if err := s.CreateSandbox(b.Context(), benchSandbox(i)); err != nil {
				b.Fatal(err)
			}
		}
		for b.Loop() {
			got, _, err := s.ListSandboxes(b.Context(), store.SandboxFilter{States: []string{"running"}, Metadata: map[string]string{"n": "500"}})
			if err != nil || len(got) != 1 {
				b.Fatalf("ListSandboxes = %d, %v", len(got), err)
			}
		}
	})
	b.Run("AppendAudit", func(b *testing.B) {
		s := fresh(b)
		for b.Loop() {
			if err := s.AppendAudit(b.Context(), benchEvent("sbx-bench")); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Eight writers, each appending to a sandbox of its own (the server's
	// case: many sandboxes, each with its own stream of events).
	b.Run("AppendAuditParallel", func(b *testing.B) {
		s := fresh(b)
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			sandbox := fmt.Sprintf("sbx-bench-%d", benchSeq.Add(1))
			for pb.Next() {
				if err := s.AppendAudit(b.Context(), benchEvent(sandbox)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("LookupAPIKey", func(b *testing.B) {
		s := fresh(b)
		if err := s.AddAPIKey(b.Context(), "bench-hash", "bench"); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := s.LookupAPIKey(b.Context(), "bench-hash"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchSandbox(i int) *store.Sandbox {
	return &store.Sandbox{ID: fmt.Sprintf("sbx-bench-%d", i), TemplateID: "python", State: "running", StartedAt: time.Now(),
		EndAt: time.Now().Add(5 * time.Minute), Timeout: 300, Metadata: map[string]string{"n": fmt.Sprint(i), "owner": "bench"},
		Envs: map[string]string{"A": "1"}, Network: json.RawMessage(`{"deny_out":["0.0.0.0/0"]}`), GuestIP: "10.200.0.2", Runtime: "gvisor"}
}

var benchSeq atomic.Int64

func benchEvent(sandbox string) store.AuditEvent {
	return store.AuditEvent{SandboxID: sandbox, Type: "command.run", Data: json.RawMessage(fmt.Sprintf(`{"cmd":"echo %d"}`, benchSeq.Add(1)))}
}
