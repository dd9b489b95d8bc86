package sandbox

import (
	"context"
	"errors"
	"sync"
)

// cleanup is a stack of undo functions registered as resources are
// acquired. Run executes them once, in reverse order, under a context that
// is not cancelled with the caller's, and joins their errors.
type cleanup struct {
	mu    sync.Mutex
	fns   []func(context.Context) error
	ran   bool
	names []string
}

func (c *cleanup) add(name string, fn func(context.Context) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fns = append(c.fns, fn)
	c.names = append(c.names, name)
}

func (c *cleanup) run(ctx context.Context) error {
	c.mu.Lock()
	if c.ran {
		c.mu.Unlock()
		return nil
	}
	c.ran = true
	fns := c.fns
	c.mu.Unlock()
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for i := len(fns) - 1; i >= 0; i-- {
		if err := fns[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
