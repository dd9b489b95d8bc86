package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/declaw/declaw/internal/sandbox"
	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/sandboxrt/gvisor"
	"github.com/declaw/declaw/internal/template"
	"github.com/declaw/declaw/internal/template/build"
)

// newBuildRuntime returns the runtime template build sandboxes run on:
// runsc without its overlay, so a step's writes reach the layer directory
// (an overlayfs mount on the host) under the sandbox's root. Its state and
// cgroups are apart from the sandboxes' own.
func newBuildRuntime(cfg Config) (sandboxrt.Runtime, error) {
	return gvisor.New(gvisor.Config{
		Runsc: cfg.Runsc, Platform: cfg.Platform, OverlayFlag: "--overlay2=none",
		StateDir: filepath.Join(cfg.StateDir, "gvisor-build"), CgroupParent: "declaw-build", Logf: cfg.Logf,
	})
}

// buildRunner runs template build steps in build sandboxes of the orchestrator.
type buildRunner struct{ m *sandbox.Manager }

func (r buildRunner) StartBuild(ctx context.Context, rootfs string, res build.Resources) (build.Sandbox, error) {
	b, err := r.m.StartBuild(ctx, rootfs, sandboxrt.Resources{CPUs: float64(res.CPUCount), MemoryMB: int64(res.MemoryMB)})
	if err != nil {
		return nil, err
	}
	return buildSandbox{b}, nil
}

type buildSandbox struct{ b *sandbox.BuildSandbox }

func (s buildSandbox) Run(ctx context.Context, r build.RunRequest, out io.Writer) (int, error) {
	return s.b.Run(ctx, r.Cmd, r.User, r.Cwd, r.Envs, out)
}

func (s buildSandbox) Close(ctx context.Context) error { return s.b.Close(ctx) }

// templateConfig gives the orchestrator what a custom template asks of its sandboxes.
func (a templatesAdapter) Config(ctx context.Context, name string) (sandbox.TemplateConfig, error) {
	t, err := a.m.Resolve(name)
	if errors.Is(err, template.ErrUnknownTemplate) {
		return sandbox.TemplateConfig{}, fmt.Errorf("template %q: %w", name, sandbox.ErrTemplateUnknown)
	}
	if err != nil {
		// A built-in not built yet: RootFS builds it.
		return sandbox.TemplateConfig{Name: name, Envs: template.BuiltinEnvs(name)}, nil
	}
	tc := sandbox.TemplateConfig{Name: t.Name, ID: t.ID, Envs: template.BuiltinEnvs(t.Name)}
	if rt := t.Runtime; rt != nil {
		tc.Envs, tc.Workdir, tc.User, tc.StartCmd = rt.Envs, rt.Workdir, rt.User, rt.StartCmd
		if r := rt.Ready; r != nil {
			tc.Ready = &sandbox.ReadyCheck{Cmd: r.Cmd, Port: r.Port, URL: r.URL, Timeout: r.Timeout}
		}
	}
	if c := t.Custom; c != nil {
		tc.CPUCount, tc.MemoryMB, tc.DiskMB = c.CPUCount, c.MemoryMB, c.DiskMB
	}
	return tc, nil
}

var _ sandbox.TemplateConfigs = templatesAdapter{}

// startBuilds sets up the template build service (after the orchestrator,
// whose sandboxes run the steps) and cleans up interrupted builds.
func (s *Server) startBuilds() error {
	b, err := build.NewBuilder(build.Config{
		Templates: s.templates, Runner: buildRunner{s.manager}, InsecureRegistries: s.cfg.InsecureRegistries, Logf: s.cfg.Logf,
	})
	if err != nil {
		return err
	}
	s.builds = build.NewService(build.ServiceConfig{
		Builder: b, Templates: s.templates, InUse: s.manager.TemplateUsers, Logf: s.cfg.Logf,
		AfterBuild: func(ctx context.Context, t template.Template) error {
			// The microVM runtime boots from an ext4 image of the template.
			if im, ok := s.runtime.(interface {
				EnsureImage(ctx context.Context, rootfs string) (string, error)
			}); ok {
				if _, err := im.EnsureImage(ctx, t.RootFS); err != nil {
					return fmt.Errorf("microvm image: %w", err)
				}
			}
			return nil
		},
	})
	s.builds.Recover()
	return nil
}
