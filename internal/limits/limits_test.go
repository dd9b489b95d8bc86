package limits

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/declaw/declaw/internal/sandboxrt"
)

func ptr[T any](v T) *T { return &v }

func TestNormalizeDefaults(t *testing.T) {
	c, err := Config{}.Normalize()
	if err != nil {
		t.Fatalf("Normalize(zero): %v", err)
	}
	want := sandboxrt.Resources{CPUs: 2, MemoryMB: 512, DiskMB: 2048, Pids: 1024}
	if c.Defaults != want {
		t.Errorf("Defaults = %+v, want %+v", c.Defaults, want)
	}
	if c.Max.MemoryMB != DefaultMaxMemoryMB || c.Max.CPUs != DefaultMaxCPUs || c.Overcommit != 1 {
		t.Errorf("Max = %+v overcommit %v, want the documented maxima and 1", c.Max, c.Overcommit)
	}
	// A default above the built-in maximum raises the maximum with it.
	c, err = Config{Defaults: sandboxrt.Resources{MemoryMB: 16384}}.Normalize()
	if err != nil || c.Max.MemoryMB != 16384 {
		t.Errorf("Normalize(default 16384 MiB) = max %d, %v; want max 16384, nil", c.Max.MemoryMB, err)
	}
}

func TestNormalizeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		want string
	}{
		{"default over max", Config{Defaults: sandboxrt.Resources{MemoryMB: 1024}, Max: sandboxrt.Resources{MemoryMB: 512}}, "maximum memory MiB 512: must be at least the default 1024"},
		{"memory below min", Config{Defaults: sandboxrt.Resources{MemoryMB: 16}}, "default memory MiB 16: must be at least 128"},
		{"negative cpus", Config{Defaults: sandboxrt.Resources{CPUs: -1}}, "default cpu count -1"},
		{"negative reserve", Config{ReserveMB: -5}, "memory reserve -5 MiB"},
		{"overcommit", Config{Overcommit: -1}, "memory overcommit -1"},
		{"pids", Config{Defaults: sandboxrt.Resources{Pids: 2}}, "default pids 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.c.Normalize()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Normalize(%+v) = %v, want an error containing %q", tc.c, err, tc.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	c, err := Config{Max: sandboxrt.Resources{CPUs: 4, MemoryMB: 4096, DiskMB: 8192}}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		tmpl      sandboxrt.Resources
		req       Request
		want      sandboxrt.Resources
		wantField string
		wantCode  string
	}{
		{name: "defaults", want: sandboxrt.Resources{CPUs: 2, MemoryMB: 512, DiskMB: 2048, Pids: 1024}},
		{name: "template values", tmpl: sandboxrt.Resources{CPUs: 1, MemoryMB: 1024, DiskMB: 4096},
			want: sandboxrt.Resources{CPUs: 1, MemoryMB: 1024, DiskMB: 4096, Pids: 1024}},
		{name: "create overrides template", tmpl: sandboxrt.Resources{CPUs: 1, MemoryMB: 1024},
			req:  Request{CPUs: ptr(0.5), MemoryMB: ptr[int64](256), DiskMB: ptr[int64](100)},
			want: sandboxrt.Resources{CPUs: 0.5, MemoryMB: 256, DiskMB: 100, Pids: 1024}},
		{name: "at the maxima", req: Request{CPUs: ptr(4.0), MemoryMB: ptr[int64](4096), DiskMB: ptr[int64](8192)},
			want: sandboxrt.Resources{CPUs: 4, MemoryMB: 4096, DiskMB: 8192, Pids: 1024}},
		{name: "memory over max", req: Request{MemoryMB: ptr[int64](4097)}, wantField: "memory_mb", wantCode: "limit_exceeded"},
		{name: "cpus over max", req: Request{CPUs: ptr(4.5)}, wantField: "cpu_count", wantCode: "limit_exceeded"},
		{name: "disk over max", req: Request{DiskMB: ptr[int64](1 << 20)}, wantField: "disk_mb", wantCode: "limit_exceeded"},
		{name: "template over max", tmpl: sandboxrt.Resources{MemoryMB: 9000}, wantField: "template.memory_mb", wantCode: "limit_exceeded"},
		{name: "memory zero", req: Request{MemoryMB: ptr[int64](0)}, wantField: "memory_mb", wantCode: "invalid_argument"},
		{name: "memory negative", req: Request{MemoryMB: ptr[int64](-1)}, wantField: "memory_mb", wantCode: "invalid_argument"},
		{name: "cpus zero", req: Request{CPUs: ptr(0.0)}, wantField: "cpu_count", wantCode: "invalid_argument"},
		{name: "disk tiny", req: Request{DiskMB: ptr[int64](1)}, wantField: "disk_mb", wantCode: "invalid_argument"},
		{name: "template pids kept within max", tmpl: sandboxrt.Resources{Pids: 1 << 30},
			want: sandboxrt.Resources{CPUs: 2, MemoryMB: 512, DiskMB: 2048, Pids: DefaultMaxPids}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Resolve(tc.tmpl, tc.req)
			if tc.wantField != "" {
				var le *Error
				if !errors.As(err, &le) || le.Field != tc.wantField || le.Code != tc.wantCode {
					t.Fatalf("Resolve(%+v, %+v) = %+v, %v; want *Error field %s code %s", tc.tmpl, tc.req, got, err, tc.wantField, tc.wantCode)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Resolve(%+v, %+v) = %+v, %v; want %+v", tc.tmpl, tc.req, got, err, tc.want)
			}
		})
	}
}

func newTestAdmission(t *testing.T, c Config, hostMB, availMB int64) *Admission {
	t.Helper()
	c, err := c.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAdmission(c, hostMB)
	if err != nil {
		t.Fatal(err)
	}
	a.available = func() (int64, error) { return availMB << 20, nil }
	return a
}

func TestAdmissionArithmetic(t *testing.T) {
	// 8 GiB host, 2 GiB reserve, no overcommit: 6144 MiB for sandboxes,
	// 64 MiB overhead each: eleven 512 MiB sandboxes (11*576 = 6336 > 6144: ten).
	a := newTestAdmission(t, Config{ReserveMB: 2048, OverheadMB: 64}, 8192, 8192)
	if _, capMB := a.Usage(); capMB != 6144 {
		t.Fatalf("capacity = %d MiB, want 6144", capMB)
	}
	n := 0
	var last error
	for i := range 20 {
		if last = a.Admit("s"+string(rune('a'+i)), 512); last != nil {
			break
		}
		n++
	}
	if n != 10 {
		t.Fatalf("admitted %d sandboxes of 512+64 MiB into 6144 MiB, want 10", n)
	}
	var ce *CapacityError
	if !errors.As(last, &ce) || !errors.Is(last, ErrNoCapacity) || ce.WantMB != 576 || ce.CommittedMB != 5760 || ce.CapacityMB != 6144 {
		t.Fatalf("11th Admit = %v (%+v), want a CapacityError 576 wanted, 5760 of 6144 committed", last, ce)
	}
	// Release makes room again; releasing twice or an unknown id is harmless.
	a.Release("sa")
	a.Release("sa")
	a.Release("nope")
	if err := a.Admit("new", 512); err != nil {
		t.Fatalf("Admit after Release: %v", err)
	}
	if used, _ := a.Usage(); used != 5760 {
		t.Fatalf("committed = %d MiB, want 5760", used)
	}
	// Re-admitting an id replaces its entry (no double count).
	if err := a.Admit("new", 128); err != nil {
		t.Fatal(err)
	}
	if used, _ := a.Usage(); used != 5760-576+192 {
		t.Fatalf("committed after re-admit = %d MiB, want %d", used, 5760-576+192)
	}
}

func TestAdmissionOvercommitAndReserve(t *testing.T) {
	a := newTestAdmission(t, Config{ReserveMB: 1024, Overcommit: 2}, 4096, 4096)
	if _, capMB := a.Usage(); capMB != 6144 {
		t.Fatalf("capacity with overcommit 2 = %d, want (4096-1024)*2 = 6144", capMB)
	}
	// Default reserve: 10% of the host, at least 1 GiB.
	if got := DefaultReserveMB(4096); got != 1024 {
		t.Errorf("DefaultReserveMB(4096) = %d, want 1024", got)
	}
	if got := DefaultReserveMB(65536); got != 6553 {
		t.Errorf("DefaultReserveMB(65536) = %d, want 6553", got)
	}
	if _, err := NewAdmission(Config{ReserveMB: 4096, Overcommit: 1}, 4096); err == nil {
		t.Error("NewAdmission with reserve = host memory: want an error")
	}
}

func TestAdmissionLowAvailable(t *testing.T) {
	// The books have room but the host does not: refuse.
	a := newTestAdmission(t, Config{ReserveMB: 1024}, 16384, 800)
	err := a.Admit("x", 512)
	var ce *CapacityError
	if !errors.As(err, &ce) || ce.AvailableMB != 800 {
		t.Fatalf("Admit with 800 MiB available = %v, want a CapacityError naming 800 MiB available", err)
	}
	if used, _ := a.Usage(); used != 0 {
		t.Fatalf("a refused sandbox was committed: %d MiB", used)
	}
}

func TestAdmissionConcurrent(t *testing.T) {
	a := newTestAdmission(t, Config{ReserveMB: 1024}, 1024+100*256, 1<<20)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if a.Admit(string(rune(0x1000+i)), 256) == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ok != 100 {
		t.Fatalf("admitted %d of 300 concurrent 256 MiB sandboxes into 25600 MiB, want exactly 100", ok)
	}
}
