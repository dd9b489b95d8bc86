package rttest

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/declaw/declaw/internal/sandboxrt"
)

func TestFake(t *testing.T) {
	ctx := context.Background()
	var f Fake
	spec := sandboxrt.Spec{ID: "a", Init: []string{"/envd"}, Env: []string{"X=1"}}
	if err := f.Start(ctx, spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	spec.Env[0] = "X=changed" // the fake keeps its own copy
	if got, _ := f.Spec("a"); got.Env[0] != "X=1" {
		t.Errorf("Spec(a).Env = %q, want the copy taken at Start", got.Env)
	}
	if err := f.Start(ctx, spec); err == nil {
		t.Errorf("second Start(a) succeeded")
	}
	if st, err := f.State(ctx, "a"); err != nil || st != sandboxrt.StateRunning {
		t.Errorf("State(a) = %q, %v; want running", st, err)
	}
	if err := f.Resume(ctx, "a"); err == nil {
		t.Errorf("Resume of a running sandbox succeeded")
	}
	if err := f.Pause(ctx, "a"); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if st, _ := f.State(ctx, "a"); st != sandboxrt.StatePaused {
		t.Errorf("State after Pause = %q", st)
	}
	if err := f.Resume(ctx, "a"); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if err := f.Exit("a"); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.State(ctx, "a"); st != sandboxrt.StateStopped {
		t.Errorf("State after Exit = %q, want stopped", st)
	}
	if _, err := f.Stats(ctx, "a"); err != nil {
		t.Errorf("Stats: %v", err)
	}
	for _, call := range []func() error{
		func() error { _, err := f.State(ctx, "nope"); return err },
		func() error { _, err := f.Stats(ctx, "nope"); return err },
		func() error { return f.Pause(ctx, "nope") },
	} {
		if err := call(); !errors.Is(err, sandboxrt.ErrNotFound) {
			t.Errorf("unknown id: err = %v, want ErrNotFound", err)
		}
	}
	if err := f.Destroy(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := f.Destroy(ctx, "a"); err != nil {
		t.Errorf("second Destroy = %v, want nil", err)
	}

	boom := errors.New("boom")
	f.StartErr = func(s sandboxrt.Spec) error {
		if s.ID == "bad" {
			return boom
		}
		return nil
	}
	if err := f.Start(ctx, sandboxrt.Spec{ID: "bad", Init: []string{"/envd"}}); !errors.Is(err, boom) {
		t.Errorf("Start(bad) = %v, want the injected error", err)
	}
	for _, id := range []string{"c", "b"} {
		if err := f.Start(ctx, sandboxrt.Spec{ID: id, Init: []string{"/envd"}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.IDs(); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("IDs = %q, want [b c] (failed start kept nothing)", got)
	}
	if err := f.Cleanup(ctx); err != nil || len(f.IDs()) != 0 {
		t.Errorf("Cleanup = %v, left %q", err, f.IDs())
	}
	if s, d := f.Counts(); s != 3 || d != 3 {
		t.Errorf("Counts = %d starts, %d destroys; want 3, 3", s, d)
	}
}
