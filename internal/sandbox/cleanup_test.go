package sandbox

import (
	"context"
	"errors"
	"slices"
	"testing"
)

func TestCleanupStack(t *testing.T) {
	var (
		c     cleanup
		order []string
		errA  = errors.New("a failed")
		errC  = errors.New("c failed")
	)
	for _, name := range []string{"a", "b", "c"} {
		c.add(name, func(ctx context.Context) error {
			if ctx.Err() != nil {
				t.Errorf("undo %s ran with a cancelled context: %v", name, ctx.Err())
			}
			order = append(order, name)
			switch name {
			case "a":
				return errA
			case "c":
				return errC
			}
			return nil
		})
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := c.run(ctx)
	if want := []string{"c", "b", "a"}; !slices.Equal(order, want) {
		t.Errorf("run order = %v, want %v", order, want)
	}
	if !errors.Is(err, errA) || !errors.Is(err, errC) {
		t.Errorf("run error = %v, want both %v and %v joined", err, errA, errC)
	}
	if err := c.run(t.Context()); err != nil || len(order) != 3 {
		t.Errorf("second run = %v after %d undos, want nil and no undo run again", err, len(order))
	}

	var empty cleanup
	if err := empty.run(t.Context()); err != nil {
		t.Errorf("run of an empty stack = %v, want nil", err)
	}
}
