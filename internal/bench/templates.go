package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/declaw/declaw/sdk/go/declaw"
)

// TemplateBench is the custom template figures: a cold build of a
// three-step template on the bench's template, its cached rebuild (goal:
// under 10% of the cold build), and create + run("true") from it with no
// warm sandbox beside the same from the built-in (goal: the same).
type TemplateBench struct {
	Steps         int      `json:"steps"`
	ColdBuild     Summary  `json:"cold_build"`     // ms, every step run (force)
	CachedRebuild Summary  `json:"cached_rebuild"` // ms, every step from the cache
	RebuildRatio  float64  `json:"rebuild_ratio"`  // cached / cold at p50
	CreateCustom  Compared `json:"create_custom"`  // cold create + run(true) from it vs from the built-in
}

// buildSteps are the bench template's steps.
var buildSteps = []string{
	"mkdir -p /opt/bench && echo one > /opt/bench/1",
	"echo two > /opt/bench/2",
	"echo three > /opt/bench/3",
}

// measureTemplates fills r.Templates; builtinCold is the cold create of
// the built-in measured just before.
func (b *runner) measureTemplates(ctx context.Context, builtinCold Summary) {
	cfg := b.cfg
	var rnd [4]byte
	rand.Read(rnd[:])
	alias := "bench-" + hex.EncodeToString(rnd[:])
	defer func() {
		if err := b.t.Client.DeleteTemplate(context.WithoutCancel(ctx), alias, true); err != nil && !declaw.IsNotFound(err) {
			b.errorf("delete bench template %s: %v", alias, err)
		}
	}()
	runs := min(cfg.Runs, 3)
	if cfg.Quick {
		runs = 1
	}
	build := func(force bool) (time.Duration, bool) {
		req := map[string]any{"alias": alias, "force": force, "template": map[string]any{"base_image": cfg.Template, "run_cmds": buildSteps}}
		start := time.Now()
		st, err := b.t.Client.BuildTemplate(ctx, req, nil)
		d := time.Since(start)
		if err == nil && st.Status != "completed" {
			err = fmt.Errorf("build %s %s: %s", st.BuildID, st.Status, st.Reason)
		}
		if err != nil {
			b.errorf("template build: %v", err)
			return 0, false
		}
		return d, true
	}
	tb := &TemplateBench{Steps: len(buildSteps)}
	var cold, cached []time.Duration
	cfg.Logf("template: cold build of %d steps x%d, cached rebuild x%d", len(buildSteps), runs, runs)
	for range runs {
		if d, ok := build(true); ok {
			cold = append(cold, d)
		}
		if d, ok := build(false); ok {
			cached = append(cached, d)
		}
	}
	tb.ColdBuild, tb.CachedRebuild = Summarize(cold), Summarize(cached)
	tb.RebuildRatio = round3(Ratio(tb.CachedRebuild.P50, tb.ColdBuild.P50))
	if len(cached) == 0 {
		b.r.Templates = tb
		return
	}
	cfg.Logf("cold create + run(true) from the custom template x%d", cfg.Runs)
	var lat []time.Duration
	timeout := sandboxTimeout
	for range cfg.Runs {
		start := time.Now()
		sb, err := b.t.Client.CreateSandbox(ctx, declaw.CreateRequest{Template: alias, Timeout: &timeout, Metadata: map[string]string{"declaw-bench": "1"}})
		if err != nil {
			b.errorf("create from %s: %v", alias, err)
			continue
		}
		res, err := b.t.Client.RunCommand(ctx, sb.SandboxID, declaw.CommandRequest{Cmd: "true"})
		d := time.Since(start)
		b.killAll(ctx, []string{sb.SandboxID})
		if err != nil || res.ExitCode != 0 {
			b.errorf("first command in %s: %v", sb.SandboxID, err)
			continue
		}
		lat = append(lat, d)
	}
	tb.CreateCustom = Compare(Summarize(lat), "built-in "+cfg.Template+", cold", builtinCold)
	b.r.Templates = tb
}
