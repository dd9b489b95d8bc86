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
	"github.com/declaw/declaw/internal/template"
	"github.com/declaw/declaw/internal/template/build"
	"github.com/declaw/declaw/internal/tenancy"
)

// ownedRoute says how to find the owning team of the resource named by a
// route's path: every route whose pattern path is Prefix or lies under it
// is checked by auth before its handler runs. A resource of another team
// is answered exactly like an unknown id (404, the same message and code),
// so ids do not leak across teams. Custom templates and their builds are
// team-owned (built-in templates are every team's), and so are volumes; vault
// secrets add their entry here when they become team-owned.
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
		{Prefix: "/templates/builds/{build_id}", Param: "build_id", Owner: s.buildTeam, NotFound: buildNotFound},
		{Prefix: "/templates/{id}", Param: "id", Owner: s.templateTeam, NotFound: templateNotFound},
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

func buildNotFound(id string) error { return fmt.Errorf("build %s: %w", id, build.ErrBuildNotFound) }

func templateNotFound(id string) error {
	return fmt.Errorf("template %s: %w", id, template.ErrUnknownTemplate)
}

// buildTeam returns the team that started build id. Without template
// builds on this server it returns the caller's team: the handler answers.
func (s *Server) buildTeam(ctx context.Context, id string) (string, error) {
	if s.cfg.Builds == nil {
		return tenancy.TeamOf(ctx), nil
	}
	st, err := s.cfg.Builds.Get(id, 1<<30)
	if err != nil {
		return "", err
	}
	return tenancy.Owner(st.TeamID), nil
}

// templateTeam returns the team owning the template named by id (its
// template_id or alias). Built-in templates belong to every team: it
// returns the caller's.
func (s *Server) templateTeam(ctx context.Context, id string) (string, error) {
	if s.cfg.Templates == nil || template.IsBuiltin(id) {
		return tenancy.TeamOf(ctx), nil
	}
	t, err := s.cfg.Templates.Resolve(id)
	if err != nil {
		return "", err
	}
	if team := build.TemplateTeam(t); team != "" {
		return team, nil
	}
	return tenancy.TeamOf(ctx), nil
}

// templateVisible reports whether ctx's caller may see and use t.
func templateVisible(ctx context.Context, t template.Template) bool {
	team := build.TemplateTeam(t)
	return team == "" || tenancy.Visible(ctx, team)
}

// visibleTemplate returns nil when ctx's caller may use the template
// called name in a create, else the error of an unknown template.
func (s *Server) visibleTemplate(ctx context.Context, name string) error {
	if s.cfg.Templates == nil || name == "" || template.IsBuiltin(name) {
		return nil
	}
	t, err := s.cfg.Templates.Resolve(name)
	if err != nil || templateVisible(ctx, t) {
		return nil // unknown names: the orchestrator answers as it does
	}
	return fmt.Errorf("template %q: %w", name, sandbox.ErrTemplateUnknown)
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
