package egress

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/declaw/declaw/internal/network"
)

// registry maps a sandbox's guest address to its identity and policy, and
// tracks the sandbox's admitted connections so a policy change can cut them.
type registry struct {
	mu sync.Mutex
	m  map[netip.Addr]*entry // +checklocks:mu
}

type entry struct {
	id       string
	policy   network.Parsed        // +checklocks:registry.mu
	content  *contentState         // +checklocks:registry.mu; nil = no content scanning
	sessions map[*session]struct{} // +checklocks:registry.mu; admitted
	open     int                   // +checklocks:registry.mu; accepted and not done
}

// Register associates guestIP with a sandbox and its policy. It fails with
// ErrRegistered if guestIP is registered already.
func (p *Proxy) Register(guestIP netip.Addr, sandboxID string, pol network.Parsed) error {
	r := &p.reg
	guestIP = guestIP.Unmap()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[netip.Addr]*entry)
	}
	if e, ok := r.m[guestIP]; ok {
		return fmt.Errorf("register %s for sandbox %s: held by sandbox %s: %w", guestIP, sandboxID, e.id, ErrRegistered)
	}
	r.m[guestIP] = &entry{id: sandboxID, policy: pol, sessions: map[*session]struct{}{}}
	return nil
}

// Update replaces guestIP's policy atomically: connections admitted after
// Update returns are decided by pol, and open connections whose name pol
// blocks are reset before it returns.
func (p *Proxy) Update(guestIP netip.Addr, pol network.Parsed) error {
	r := &p.reg
	guestIP = guestIP.Unmap()
	r.mu.Lock()
	e, ok := r.m[guestIP]
	if !ok {
		r.mu.Unlock()
		return fmt.Errorf("update %s: %w", guestIP, ErrNotRegistered)
	}
	e.policy = pol
	var cut []*session
	for s := range e.sessions {
		if !DecideConn(pol, s.dst.Addr(), s.host).Allow {
			cut = append(cut, s)
		}
	}
	r.mu.Unlock()
	for _, s := range cut {
		s.kill("policy update blocks the name")
	}
	p.dropPools(guestIP) // new upstream connections are dialled under pol
	return nil
}

// Unregister forgets guestIP and resets its open connections. Unknown
// addresses are ignored.
func (p *Proxy) Unregister(guestIP netip.Addr) {
	r := &p.reg
	guestIP = guestIP.Unmap()
	r.mu.Lock()
	e, ok := r.m[guestIP]
	delete(r.m, guestIP)
	var cut []*session
	if ok {
		for s := range e.sessions {
			cut = append(cut, s)
		}
	}
	r.mu.Unlock()
	for _, s := range cut {
		s.kill("sandbox unregistered")
	}
	p.dropPools(guestIP)
}

// open counts a new connection from src against its sandbox's limit. It
// returns the sandbox id, whether src is registered, and whether the
// connection fits under max; when both hold, s must be passed to release.
func (r *registry) open(src netip.Addr, s *session, max int) (id string, known, fits bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[src]
	if !ok {
		return "", false, false
	}
	if e.open >= max {
		return e.id, true, false
	}
	e.open++
	s.counted = e
	return e.id, true, true
}

// admit decides s.host on src's current policy and, if allowed, tracks s
// under the entry, all under one lock so an Update cannot slip between.
func (r *registry) admit(src netip.Addr, s *session) (id string, pol network.Parsed, v ConnVerdict, cs *contentState, known bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[src]
	if !ok {
		return "", network.Parsed{}, ConnVerdict{Verdict: Verdict{Reason: "unknown source"}}, nil, false
	}
	v = DecideConn(e.policy, s.dst.Addr(), s.host)
	if v.Allow {
		e.sessions[s] = struct{}{}
		s.entry = e
	}
	return e.id, e.policy, v, e.content, true
}

// current returns src's sandbox id, policy and content state now.
func (r *registry) current(src netip.Addr) (id string, pol network.Parsed, cs *contentState, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[src]
	if !ok {
		return "", network.Parsed{}, nil, false
	}
	return e.id, e.policy, e.content, true
}

// setContent replaces src's content state.
func (r *registry) setContent(src netip.Addr, cs *contentState) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[src]
	if !ok {
		return fmt.Errorf("set content %s: %w", src, ErrNotRegistered)
	}
	e.content = cs
	return nil
}

func (r *registry) release(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.entry != nil {
		delete(s.entry.sessions, s)
	}
	if s.counted != nil {
		s.counted.open--
	}
}
