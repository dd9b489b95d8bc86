package flowlog

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/declaw/declaw/internal/testenv"
)

// TestListenLifecycle checks binding and stopping in a test namespace (the
// events themselves are tested through network's real rules, in
// internal/network/audit_linux_test.go).
func TestListenLifecycle(t *testing.T) {
	n := testenv.NewNet(t)
	if _, err := Listen(t.Context(), Config{NetNS: n.Host.Path, OnEvent: func(Event) {}}); err == nil {
		t.Error("Listen with group 0 succeeded")
	}
	if _, err := Listen(t.Context(), Config{Group: 3, NetNS: n.Host.Path}); err == nil {
		t.Error("Listen without OnEvent succeeded")
	}
	if _, err := Listen(t.Context(), Config{Group: 3, NetNS: "/nonexistent", OnEvent: func(Event) {}}); err == nil {
		t.Error("Listen in a missing namespace succeeded")
	}

	ctx, cancel := context.WithCancel(t.Context())
	l, err := Listen(ctx, Config{Group: 3, NetNS: n.Host.Path, OnEvent: func(Event) {}, Logf: t.Logf})
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	// A group has one listener per namespace.
	if l2, err := Listen(t.Context(), Config{Group: 3, NetNS: n.Host.Path, OnEvent: func(Event) {}}); !errors.Is(err, unix.EPERM) {
		if err == nil {
			l2.Close()
		}
		t.Errorf("second Listen on group 3: %v, want EPERM (the kernel's answer for a group bound by another socket)", err)
	}
	// Cancelling ctx stops the listener and releases the group.
	cancel()
	done := make(chan error, 1)
	go func() { done <- l.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return within 5s")
	}
	l, err = Listen(t.Context(), Config{Group: 3, NetNS: n.Host.Path, OnEvent: func(Event) {}})
	if err != nil {
		t.Fatalf("Listen after the first listener stopped: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
