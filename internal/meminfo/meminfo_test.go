package meminfo

import (
	"os"
	"path/filepath"
	"testing"
)

func TestField(t *testing.T) {
	p := filepath.Join(t.TempDir(), "meminfo")
	data := "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   20480000 kB\nHugePages_Total:       0\nBad:   x kB\n"
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	old := path
	path = p
	t.Cleanup(func() { path = old })

	for key, want := range map[string]int64{"MemTotal": 24576000 << 10, "MemAvailable": 20480000 << 10, "HugePages_Total": 0} {
		got, err := Field(key)
		if err != nil || got != want {
			t.Errorf("Field(%q) = %d, %v; want %d", key, got, err, want)
		}
	}
	if got, err := Available(); err != nil || got != 20480000<<10 {
		t.Errorf("Available() = %d, %v", got, err)
	}
	for _, key := range []string{"Missing", "Bad", "Mem"} {
		if got, err := Field(key); err == nil {
			t.Errorf("Field(%q) = %d, want an error", key, got)
		}
	}
}

func TestHost(t *testing.T) {
	if _, err := os.Stat("/proc/meminfo"); err != nil {
		t.Fatalf("this test needs Linux's /proc/meminfo: %v", err)
	}
	if got, err := Available(); err != nil || got <= 0 {
		t.Fatalf("Available() = %d, %v; want a positive figure", got, err)
	}
}
