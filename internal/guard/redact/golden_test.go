package redact_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/declaw/declaw/internal/guard/redact"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestGoldenChat redacts testdata/chat.json and compares the body and the
// rehydration map with the golden files (go test -update rewrites them).
func TestGoldenChat(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "chat.json"))
	if err != nil {
		t.Fatal(err)
	}
	r := redact.New()
	out, err := r.JSON(in, detect)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := json.MarshalIndent(r.Map(), "", "  ")
	got := map[string][]byte{"chat.redacted.json": out, "chat.map.json": append(m, '\n')}
	for name, data := range got {
		path := filepath.Join("testdata", name)
		if *update {
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -update)", err)
		}
		if !bytes.Equal(data, want) {
			t.Errorf("%s differs from golden:\n got %s\nwant %s", name, data, want)
		}
	}
	if !json.Valid(out) {
		t.Error("redacted body is not valid JSON")
	}
}
