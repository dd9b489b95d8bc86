package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/store"
	"github.com/declaw/declaw/internal/template"
	"github.com/declaw/declaw/internal/testenv"
)

// fakeRunner runs "write PATH TEXT", "fail" and "block" commands on the
// build root directly (no sandbox): enough to drive layering, caching,
// failures and cancellation without runsc.
type fakeRunner struct{ runs int }

type fakeSandbox struct{ root string }

func (f *fakeRunner) StartBuild(ctx context.Context, rootfs string, res Resources) (Sandbox, error) {
	f.runs++
	return &fakeSandbox{root: rootfs}, nil
}

func (s *fakeSandbox) Run(ctx context.Context, r RunRequest, out io.Writer) (int, error) {
	f := strings.Fields(r.Cmd)
	switch f[0] {
	case "write":
		fmt.Fprintf(out, "writing %s\n", f[1])
		return 0, os.WriteFile(filepath.Join(s.root, f[1]), []byte(f[2]), 0o644)
	case "fail":
		fmt.Fprintln(out, "something went wrong")
		return 3, nil
	case "block":
		<-ctx.Done()
		return -1, ctx.Err()
	}
	return 127, nil
}

func (s *fakeSandbox) Close(context.Context) error { return nil }

func newTestService(t *testing.T) (*Service, *template.Manager, *fakeRunner) {
	t.Helper()
	testenv.RequireRoot(t)
	dir := t.TempDir()
	tm, err := template.New(template.Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// A base template: a directory and its metadata.
	base := filepath.Join(tm.Dir(), "fakebase")
	os.MkdirAll(filepath.Join(base, "rootfs", "etc"), 0o755)
	os.WriteFile(filepath.Join(base, "rootfs", "etc", "base-file"), []byte("base"), 0o644)
	meta, _ := json.Marshal(template.Template{Name: "fakebase", BuiltAt: time.Now().UTC(), Recipe: template.Recipe})
	os.WriteFile(filepath.Join(base, "template.json"), meta, 0o644)
	fr := &fakeRunner{}
	b, err := NewBuilder(Config{Templates: tm, Runner: fr, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	s := NewService(ServiceConfig{Builder: b, Templates: tm, Logf: t.Logf})
	s.Recover()
	return s, tm, fr
}

func build(t *testing.T, s *Service, req Request) *Status {
	t.Helper()
	st, err := s.Start(context.Background(), req, nil)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	done, err := s.Wait(context.Background(), st.BuildID)
	if err != nil {
		t.Fatal(err)
	}
	return done
}

func countLines(logs []string, sub string) int {
	n := 0
	for _, l := range logs {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

func TestServiceBuildsAndCaches(t *testing.T) {
	s, tm, fr := newTestService(t)
	req := Request{Alias: "app", Template: Spec{BaseImage: "fakebase", RunCmds: []string{"write /a one", "write /b two"}, Envs: map[string]string{"K": "v"}}}
	st := build(t, s, req)
	if st.Status != StatusCompleted {
		t.Fatalf("build: %+v", st)
	}
	tp, err := tm.Resolve(st.TemplateID)
	if err != nil || tp.Name != "app" || tp.Runtime.Envs["K"] != "v" {
		t.Fatalf("Resolve(%s) = %+v, %v", st.TemplateID, tp, err)
	}
	for p, want := range map[string]string{"a": "one", "b": "two", "etc/base-file": "base"} {
		if b, err := os.ReadFile(filepath.Join(tp.RootFS, p)); err != nil || string(b) != want {
			t.Errorf("template file %s = %q, %v; want %q", p, b, err, want)
		}
	}
	if fr.runs != 2 {
		t.Errorf("first build ran %d steps in sandboxes, want 2", fr.runs)
	}
	// Same spec: every step cached, the template kept.
	st = build(t, s, req)
	if st.Status != StatusCompleted || fr.runs != 2 || countLines(st.Logs, "---> cached") != 3 {
		t.Errorf("rebuild: runs %d, logs:\n%s", fr.runs, strings.Join(st.Logs, "\n"))
	}
	// Step 2 changed: step 1 cached, step 2 run.
	req.Template.RunCmds[1] = "write /b three"
	st = build(t, s, req)
	if st.Status != StatusCompleted || fr.runs != 3 || countLines(st.Logs, "---> cached") != 1 {
		t.Errorf("changed step 2: runs %d, logs:\n%s", fr.runs, strings.Join(st.Logs, "\n"))
	}
	tp, _ = tm.Get("app")
	if b, _ := os.ReadFile(filepath.Join(tp.RootFS, "b")); string(b) != "three" {
		t.Errorf("after the change b = %q", b)
	}
	// Logs from an offset.
	got, err := s.Get(st.BuildID, 2)
	if err != nil || got.LogOffset != 2 || len(got.Logs) != len(st.Logs)-2 {
		t.Errorf("Get from offset 2: %+v, %v", got, err)
	}
	// force runs everything again.
	req.Force = true
	build(t, s, req)
	if fr.runs != 5 {
		t.Errorf("forced build: %d runs in total, want 5", fr.runs)
	}
}

func TestServiceFailuresLeaveNothing(t *testing.T) {
	s, tm, _ := newTestService(t)
	st := build(t, s, Request{Alias: "bad", Template: Spec{BaseImage: "fakebase", RunCmds: []string{"write /a x", "fail"}}})
	if st.Status != StatusFailed || st.Step != "RUN fail" || !strings.Contains(st.Reason, "something went wrong") {
		t.Errorf("failed build: %+v", st)
	}
	if _, err := tm.Get("bad"); err == nil {
		t.Error("a failed build left a template")
	}
	// Cancel a running build.
	started, err := s.Start(context.Background(), Request{Alias: "slow", Template: Spec{BaseImage: "fakebase", RunCmds: []string{"block"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(context.Background(), Request{Alias: "slow", Template: Spec{BaseImage: "fakebase"}}, nil); err == nil || !strings.Contains(err.Error(), "in progress") {
		t.Errorf("second build of a building alias: %v, want in progress", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, _ := s.Get(started.BuildID, 0)
		if countLines(cur.Logs, "RUN block") > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, err := s.Cancel(started.BuildID)
	if err != nil || c.Status != StatusFailed || c.Reason != "canceled" {
		t.Errorf("Cancel: %+v, %v", c, err)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), s.dir) {
		t.Errorf("mounts left under %s", s.dir)
	}
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		if e.IsDir() {
			t.Errorf("work dir left: %s", e.Name())
		}
	}
	if _, err := s.Start(context.Background(), Request{Alias: "x", Template: Spec{Dockerfile: "FROM fakebase\nVOLUME /x\n"}}, nil); err == nil {
		t.Error("an unsupported Dockerfile started")
	}
}

func TestServiceRecoverMarksInterruptedBuildsFailed(t *testing.T) {
	s, _, _ := newTestService(t)
	id := "bld-0123456789ab"
	os.MkdirAll(filepath.Join(s.dir, id, "mnt"), 0o755)
	writeStatus(filepath.Join(s.dir, id+".json"), Status{BuildID: id, Status: StatusBuilding})
	s.Recover()
	st, err := s.Get(id, 0)
	if err != nil || st.Status != StatusFailed || !strings.Contains(st.Reason, "server stopped") {
		t.Errorf("after Recover: %+v, %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, id)); err == nil {
		t.Error("Recover left the work dir")
	}
}

// TestServiceTeams: a build records its team on the build and the
// template; another team cannot take the alias, neither of a template
// nor of a build in progress, and learns nothing of the holder.
func TestServiceTeams(t *testing.T) {
	s, tm, _ := newTestService(t)
	st := build(t, s, Request{Alias: "mine", Team: "team_a", Template: Spec{BaseImage: "fakebase", RunCmds: []string{"write /a x"}}})
	if st.Status != StatusCompleted || st.TeamID != "team_a" {
		t.Fatalf("build of team_a: %+v", st)
	}
	if got, err := s.Get(st.BuildID, 0); err != nil || got.TeamID != "team_a" {
		t.Errorf("Get: %+v, %v; want team_a", got, err)
	}
	tp, err := tm.Get("mine")
	if err != nil || tp.Custom == nil || tp.Custom.TeamID != "team_a" || TemplateTeam(tp) != "team_a" {
		t.Fatalf("template of team_a: %+v, %v", tp.Custom, err)
	}
	_, err = s.Start(context.Background(), Request{Alias: "mine", Team: "team_b", Template: Spec{BaseImage: "fakebase"}}, nil)
	if !errors.Is(err, ErrAliasTaken) || strings.Contains(err.Error(), "team_a") || strings.Contains(err.Error(), tp.ID) {
		t.Errorf("team_b builds team_a's alias: %v, want ErrAliasTaken naming no holder", err)
	}
	if again := build(t, s, Request{Alias: "mine", Team: "team_a", Template: Spec{BaseImage: "fakebase", RunCmds: []string{"write /b y"}}}); again.Status != StatusCompleted || again.TemplateID != tp.ID {
		t.Errorf("team_a rebuilds its alias: %+v, want completed with the same template_id %s", again, tp.ID)
	}
	// Another team's template is no base: its name is an image reference
	// (the registry is refused here), as an unknown name is.
	reg := &refusingTransport{}
	s.cfg.Builder.cfg.Transport = reg
	other := build(t, s, Request{Alias: "theirs", Team: "team_b", Template: Spec{BaseImage: "mine"}})
	if other.Status != StatusFailed || countLines(other.Logs, "base: template mine") > 0 || reg.hosts() == 0 {
		t.Errorf("team_b builds FROM team_a's template: %+v (%d registry requests), want a failed image pull", other, reg.hosts())
	}
	if own := build(t, s, Request{Alias: "derived", Team: "team_a", Template: Spec{BaseImage: "mine"}}); own.Status != StatusCompleted || countLines(own.Logs, "base: template mine") != 1 {
		t.Errorf("team_a builds FROM its own template: %+v", own)
	}
	// A build in progress holds its alias too.
	slow, err := s.Start(context.Background(), Request{Alias: "slow", Team: "team_a", Template: Spec{BaseImage: "fakebase", RunCmds: []string{"block"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(context.Background(), Request{Alias: "slow", Team: "team_b", Template: Spec{BaseImage: "fakebase"}}, nil); !errors.Is(err, ErrAliasTaken) {
		t.Errorf("team_b builds an alias team_a is building: %v, want ErrAliasTaken", err)
	}
	s.Cancel(slow.BuildID)
	// Templates from before teams are the default team's; built-ins no team's.
	if got := TemplateTeam(template.Template{Name: "old", Custom: &template.Custom{}}); got != store.DefaultTeam {
		t.Errorf("TemplateTeam(no team) = %q, want %q", got, store.DefaultTeam)
	}
	for _, shared := range []template.Template{{Name: "python"}, {Name: "fakebase"}} {
		if got := TemplateTeam(shared); got != "" {
			t.Errorf("TemplateTeam(%s) = %q, want \"\" (shared)", shared.Name, got)
		}
	}
}

// refusingTransport counts registry requests and answers none.
type refusingTransport struct{ n atomic.Int32 }

func (r *refusingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	r.n.Add(1)
	return nil, errors.New("no registry in this test")
}

func (r *refusingTransport) hosts() int { return int(r.n.Load()) }
