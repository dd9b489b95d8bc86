package watch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func newWatcher(t *testing.T, m *Manager, dir string, recursive bool) *Watcher {
	t.Helper()
	w, err := m.Watch(dir, recursive)
	if err != nil {
		t.Fatalf("Watch(%s, %v): %v", dir, recursive, err)
	}
	t.Cleanup(w.close)
	return w
}

func TestReadBuffer(t *testing.T) {
	m := NewManager(Config{Buffer: 4})
	w := newWatcher(t, m, t.TempDir(), false)
	w.mu.Lock()
	for i := range 10 {
		w.appendLocked(Event{Type: Create, Path: filepath.Join(w.root, fmt.Sprint(i))})
	}
	w.mu.Unlock()
	// 10 appended with a buffer of 4, halved when full: the 9th append
	// keeps 7, 8, so 7..10 remain.
	tests := []struct {
		after    uint64
		max      int
		wantIDs  string
		wantLost bool
	}{
		{0, 0, "7 8 9 10 ", true},
		{5, 0, "7 8 9 10 ", true},
		{6, 0, "7 8 9 10 ", false},
		{8, 1, "9 ", false},
		{10, 0, "", false},
		{99, 0, "", false},
	}
	for _, tt := range tests {
		evs, lost, _, closed := w.Read(tt.after, tt.max)
		got := ""
		for _, e := range evs {
			got += fmt.Sprint(e.ID) + " "
		}
		if got != tt.wantIDs || lost != tt.wantLost || closed {
			t.Errorf("Read(%d, %d) = %q lost %v closed %v, want %q lost %v", tt.after, tt.max, got, lost, closed, tt.wantIDs, tt.wantLost)
		}
	}
	evs, _, _, _ := w.Read(9, 0)
	if len(evs) != 1 || evs[0].Name != "9" {
		t.Errorf("event 10 = %+v, want name 9 (relative to the root)", evs)
	}
}

func TestDirBudget(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a/b", "c"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := NewManager(Config{MaxDirs: 4, MaxWatchers: 2})
	if _, err := m.Watch(filepath.Join(dir, "nope"), false); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Watch(missing) = %v, want ErrNotExist", err)
	}
	if _, err := m.Watch(filepath.Join(dir, "c"), false); err != nil {
		t.Fatal(err)
	}
	// 4 directories (dir, a, a/b, c) + the 1 used > 4.
	if _, err := m.Watch(dir, true); !errors.Is(err, ErrLimit) {
		t.Fatalf("Watch over the dir budget = %v, want ErrLimit", err)
	}
	if m.Len() != 1 || m.dirs != 1 {
		t.Errorf("after a refused watch: %d watchers, %d dirs; want 1, 1", m.Len(), m.dirs)
	}
	w, err := m.Watch(filepath.Join(dir, "a"), true)
	if err != nil {
		t.Fatal(err)
	}
	if m.dirs != 3 {
		t.Errorf("dirs = %d, want 3", m.dirs)
	}
	if _, err := m.Watch(dir, false); !errors.Is(err, ErrLimit) {
		t.Errorf("third watcher = %v, want ErrLimit", err)
	}
	if err := m.Remove(w.ID()); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(w.ID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove = %v, want ErrNotFound", err)
	}
	if _, _, _, closed := w.Read(0, 0); !closed || m.dirs != 1 {
		t.Errorf("after Remove: closed %v, dirs %d; want true, 1", closed, m.dirs)
	}
	m.Close()
	if m.Len() != 0 || m.dirs != 0 {
		t.Errorf("after Close: %d watchers, %d dirs", m.Len(), m.dirs)
	}
}

func TestIdleExpiry(t *testing.T) {
	m := NewManager(Config{IdleTimeout: 50 * time.Millisecond})
	w := newWatcher(t, m, t.TempDir(), false)
	unsub := w.Subscribe()
	time.Sleep(150 * time.Millisecond)
	if _, err := m.Get(w.ID()); err != nil {
		t.Fatalf("a watcher with a subscriber expired: %v", err)
	}
	unsub()
	unsub() // idempotent
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := m.Get(w.ID()); errors.Is(err, ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watcher did not expire without subscribers")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
