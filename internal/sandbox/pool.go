package sandbox

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/declaw/declaw/internal/limits"
	"github.com/declaw/declaw/internal/meminfo"
	"github.com/declaw/declaw/internal/sandboxrt"
)

// pool keeps booted sandboxes ready per template (Config.WarmPool), so a
// create only has to claim one: apply its policy, send /init and record it.
// Pooled sandboxes have never run user code and have no network (a fresh
// slot drops everything until its first policy). Booting is serial and
// stops while the host has less than MinFreeMemory available.
type pool struct {
	m       *Manager
	want    map[string]int
	maxIdle time.Duration
	kick    chan struct{}
	stop    context.CancelFunc
	done    chan struct{}

	mu    sync.Mutex
	ready map[string][]*pooled
}

type pooled struct {
	inst   *instance
	bootAt time.Time
}

// drop removes the pooled sandbox id (it died on its own) and frees it.
func (p *pool) drop(ctx context.Context, id string) bool {
	p.mu.Lock()
	var found *pooled
	for t, list := range p.ready {
		for i, it := range list {
			if it.inst.id == id {
				found = it
				p.ready[t] = append(list[:i:i], list[i+1:]...)
				break
			}
		}
	}
	p.mu.Unlock()
	if found == nil {
		return false
	}
	found.inst.undo.run(ctx)
	p.poke()
	return true
}

// MinFreeMemory is the host memory (MemAvailable) below which the pool
// stops booting sandboxes.
const MinFreeMemory = 1 << 30

func newPool(m *Manager, want map[string]int, maxIdle time.Duration) *pool {
	if maxIdle == 0 {
		maxIdle = 30 * time.Minute
	}
	p := &pool{m: m, want: want, maxIdle: maxIdle, kick: m.poolKick, ready: map[string][]*pooled{}, done: make(chan struct{})}
	if p.kick == nil {
		p.kick = make(chan struct{}, 1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.stop = cancel
	if len(want) == 0 {
		close(p.done)
		return p
	}
	go p.loop(ctx)
	p.poke()
	return p
}

func (p *pool) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// take returns a ready sandbox of template with resources res, if one is
// pooled (pooled sandboxes have their template's default resources).
func (p *pool) take(template string, res sandboxrt.Resources) (*instance, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.ready[template]
	if len(list) == 0 || list[0].inst.res != res {
		return nil, false
	}
	it := list[0]
	p.ready[template] = list[1:]
	p.poke()
	return it.inst, true
}

// sizes reports how many sandboxes are ready per template.
func (p *pool) sizes() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for t := range p.want {
		out[t] = len(p.ready[t])
	}
	return out
}

func (p *pool) loop(ctx context.Context) {
	defer close(p.done)
	// Often enough that no pooled sandbox outlives maxIdle by more than half.
	tick := time.NewTicker(min(30*time.Second, max(p.maxIdle/2, 100*time.Millisecond)))
	defer tick.Stop()
	for {
		p.recycle(ctx)
		p.fill(ctx)
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-tick.C:
		}
	}
}

// fill boots sandboxes until every template has what it wants.
func (p *pool) fill(ctx context.Context) {
	for ctx.Err() == nil {
		template := p.missing()
		if template == "" {
			return
		}
		if avail, err := meminfo.Available(); err == nil && avail < MinFreeMemory {
			p.m.cfg.Logf("warm pool: only %d MiB of memory available; not booting more", avail>>20)
			return
		}
		rootfs, err := p.m.cfg.Templates.RootFS(ctx, template)
		var res sandboxrt.Resources
		if err == nil {
			res, err = p.m.resources(ctx, template, limits.Request{})
		}
		if err == nil {
			var inst *instance
			if inst, err = p.m.boot(ctx, "", template, rootfs, res); err == nil {
				// The first command then finds the shell in the page cache
				// (~10 ms less under gVisor). A failure only costs that.
				if werr := p.m.envdJSON(ctx, inst, http.MethodPost, "/warmup", nil, nil); werr != nil {
					p.m.cfg.Logf("warm pool: sandbox %s: warm up: %v", inst.id, werr)
				}
				p.mu.Lock()
				p.ready[template] = append(p.ready[template], &pooled{inst: inst, bootAt: time.Now()})
				p.mu.Unlock()
				continue
			}
		}
		if errors.Is(err, limits.ErrNoCapacity) {
			// Creates come first: the pool fills again when they leave room.
			p.m.cfg.Logf("warm pool: not booting a %s sandbox: %v", template, err)
			return
		}
		if ctx.Err() == nil {
			p.m.cfg.Logf("warm pool: boot a %s sandbox: %v", template, err)
			select { // back off before retrying
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
		return
	}
}

func (p *pool) missing() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for t, n := range p.want {
		if len(p.ready[t]) < n {
			return t
		}
	}
	return ""
}

// recycle destroys pooled sandboxes older than maxIdle (the loop boots
// fresh ones), so the pool never hands out a long-idle sandbox.
func (p *pool) recycle(ctx context.Context) {
	var old []*pooled
	p.mu.Lock()
	for t, list := range p.ready {
		keep := list[:0]
		for _, it := range list {
			if time.Since(it.bootAt) > p.maxIdle {
				old = append(old, it)
			} else {
				keep = append(keep, it)
			}
		}
		p.ready[t] = keep
	}
	p.mu.Unlock()
	for _, it := range old {
		it.inst.undo.run(ctx)
	}
}

// close stops refilling and destroys every pooled sandbox.
func (p *pool) close(ctx context.Context) error {
	p.stop()
	<-p.done
	p.mu.Lock()
	var all []*pooled
	for _, list := range p.ready {
		all = append(all, list...)
	}
	p.ready = map[string][]*pooled{}
	p.mu.Unlock()
	var firstErr error
	for _, it := range all {
		if err := it.inst.undo.run(ctx); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// PoolSizes reports how many booted sandboxes are ready per template.
func (m *Manager) PoolSizes() map[string]int { return m.pool.sizes() }
