package sqlite

import (
	"path/filepath"
	"testing"

	"github.com/declaw/declaw/internal/store"
	"github.com/declaw/declaw/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t testing.TB) store.Store {
		s, err := Open(filepath.Join(t.TempDir(), "declaw.db"))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(tb testing.TB) store.Store {
		s, err := Open(filepath.Join(tb.TempDir(), "declaw.db"))
		if err != nil {
			tb.Fatalf("Open: %v", err)
		}
		return s
	})
}
