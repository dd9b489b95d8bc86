package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/declaw/declaw/internal/sandbox"
	"github.com/declaw/declaw/internal/store"
	"github.com/declaw/declaw/internal/tenancy"
)

// ownedRoute says how to find the owning team of the resource named by a
// route's path: every route whose pattern path is Prefix or lies under it
// is checked by auth before its handler runs. A resource of another team
// is answered exactly like an unknown id (404, the same message and code),
// so ids do not leak across teams. Templates, volumes and vault secrets
// add their entry here when they become team-owned.
type ownedRoute struct {
	Prefix string // pattern path, e.g. "/sandboxes/{id}"
	Param  string // the path value holding the id
	// Owner returns the owning team of id ("" = store.DefaultTeam), or
	// NotFound(id) when there is no such resource.
	Owner    func(ctx context.Context, id string) (string, error)
	NotFound func(id string) error
}

func (s *Server) ownedRoutes() []ownedRoute {
	return []ownedRoute{
		{Prefix: "/sandboxes/{id}", Param: "id", Owner: s.sandboxTeam, NotFound: sandboxNotFound},
		{Prefix: "/volumes/{id}", Param: "id", Owner: s.volumeTeam, NotFound: volumeNotFound},
	}
}

// checkOwner returns nil when the caller in r's context may reach the
// resource r's route names (or the route names none).
func (s *Server) checkOwner(r *http.Request) error {
	path := r.Pattern
	if _, p, ok := strings.Cut(path, " "); ok {
		path = p // "GET /sandboxes/{id}" -> "/sandboxes/{id}"
	}
	for _, o := range s.ownedRoutes() {
		if path != o.Prefix && !strings.HasPrefix(path, o.Prefix+"/") {
			continue
		}
		id := r.PathValue(o.Param)
		team, err := o.Owner(r.Context(), id)
		if err != nil {
			return err
		}
		if !tenancy.Visible(r.Context(), team) {
			return o.NotFound(id) // the very answer an unknown id gets
		}
	}
	return nil
}

func sandboxNotFound(id string) error { return fmt.Errorf("sandbox %s: %w", id, sandbox.ErrNotFound) }

// sandboxTeam returns the team owning sandbox id. A sandbox's team never
// changes, so it is cached.
func (s *Server) sandboxTeam(ctx context.Context, id string) (string, error) {
	if t, ok := s.owners.get(id); ok {
		return t, nil
	}
	if id == "" {
		return "", sandboxNotFound(id)
	}
	rec, err := s.cfg.Store.GetSandbox(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return "", sandboxNotFound(id)
	}
	if err != nil {
		return "", err
	}
	team := tenancy.Owner(rec.TeamID)
	s.owners.put(id, team)
	return team, nil
}

// ownerCache maps resource ids to their (immutable) owning team. It is
// bounded: when full it starts over, and the store answers again.
type ownerCache struct {
	mu sync.Mutex
	m  map[string]string
}

const ownerCacheMax = 1 << 16

func (c *ownerCache) get(id string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.m[id]
	return t, ok
}

func (c *ownerCache) put(id, team string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= ownerCacheMax {
		c.m = make(map[string]string)
	}
	c.m[id] = team
}

// visibleSandbox returns nil when ctx's caller may reach sandbox id, else
// the error of an unknown id (for calls that name sandboxes in their body).
func (s *Server) visibleSandbox(ctx context.Context, id string) error {
	team, err := s.sandboxTeam(ctx, id)
	if err != nil {
		return err
	}
	if !tenancy.Visible(ctx, team) {
		return sandboxNotFound(id)
	}
	return nil
}
