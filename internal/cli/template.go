package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os/exec"
	"os/signal"
	"slices"
	"syscall"
	"text/tabwriter"

	"github.com/declaw/declaw/internal/sandboxrt/microvm"
	"github.com/declaw/declaw/internal/server"
	"github.com/declaw/declaw/internal/template"
)

const templateUsage = `Usage (custom templates, through the API server):
  declaw template build [-f Dockerfile] [--alias NAME] [CONTEXT_DIR]
                                  build a template from a Dockerfile (default CONTEXT_DIR/Dockerfile)
                                  with CONTEXT_DIR (default .) as its build context, showing the log live;
                                  or from flags: --base-image IMAGE --apt-package P --run-cmd CMD
                                  --env K=V --workdir DIR --user U --start-cmd CMD --ready-cmd CMD
                                  --ready-port N --ready-url URL; --force rebuilds cached steps,
                                  --no-wait returns at once, --cpu-count/--memory-mb/--disk-mb
  declaw template list            list templates (built-in and custom)
  declaw template info ID|ALIAS   show a template
  declaw template delete ID|ALIAS [--force]   delete a template (--force: kill its sandboxes first)
  declaw template logs BUILD_ID [--follow] [--offset N]   a build's log
  declaw template cancel BUILD_ID cancel a running build
` + clientFlagsHelp + `
Usage (built-in templates, on this machine, as root):
  declaw template build NAME...   build (or rebuild) built-in templates: base, python, node
                                  --if-needed: only those not built yet or built by an older recipe
  declaw template list --local    list the templates built in the state dir
  declaw template delete --local NAME
Local flags: --state-dir DIR (env DECLAW_STATE_DIR, default /var/lib/declaw), --envd PATH
`

func runTemplate(e *env, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, templateUsage)
		return 2
	}
	verb := args[0]
	if !localTemplateCommand(verb, args[1:]) {
		return runTemplateRemote(e, verb, args[1:])
	}
	args = slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "--local" || a == "-local" })
	fs := flag.NewFlagSet("declaw template "+verb, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	stateDir := fs.String("state-dir", e.envOr("DECLAW_STATE_DIR", "/var/lib/declaw"), "state directory")
	envd := fs.String("envd", e.envOr("DECLAW_ENVD", ""), "envd binary to install into templates")
	asJSON := fs.Bool("json", false, "print JSON")
	noImage := fs.Bool("no-image", false, "build: skip the ext4 image the microvm runtime boots from")
	ifNeeded := fs.Bool("if-needed", false, "build: skip templates that are built and current")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *envd == "" {
		*envd, _ = server.DefaultEnvdPath()
	}
	tm, err := template.New(template.Config{StateDir: *stateDir, EnvdPath: *envd, Logf: func(f string, a ...any) { fmt.Fprintf(e.stderr, f+"\n", a...) }})
	if err != nil {
		fmt.Fprintf(e.stderr, "declaw template: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch verb {
	case "build":
		if fs.NArg() == 0 {
			fmt.Fprint(e.stderr, templateUsage)
			return 2
		}
		for _, name := range fs.Args() {
			if t, err := tm.Get(name); err == nil && t.Current() && *ifNeeded {
				fmt.Fprintf(e.stderr, "template %s is built and current\n", name)
				continue
			}
			fmt.Fprintf(e.stderr, "building template %s...\n", name)
			if err := tm.Build(ctx, name, e.stderr); err != nil {
				fmt.Fprintf(e.stderr, "declaw template build %s: %v\n", name, err)
				return 1
			}
			t, err := tm.Get(name)
			if err != nil {
				fmt.Fprintf(e.stderr, "declaw template build %s: %v\n", name, err)
				return 1
			}
			// The microVM runtime boots the template from an ext4 image of it.
			if _, err := exec.LookPath("mkfs.ext4"); err == nil && !*noImage {
				img, err := microvm.BuildTemplateImage(ctx, "", t.RootFS)
				if err != nil {
					fmt.Fprintf(e.stderr, "declaw template build %s: microvm image: %v\n", name, err)
					return 1
				}
				fmt.Fprintf(e.stderr, "microvm root image %s\n", img)
			}
			if *asJSON {
				json.NewEncoder(e.stdout).Encode(t)
			} else {
				fmt.Fprintf(e.stdout, "built %s (%d MB) in %s\n", t.Name, t.SizeBytes>>20, t.BuildTime)
			}
		}
		return 0
	case "list", "ls":
		ts, err := tm.List()
		if err != nil {
			fmt.Fprintf(e.stderr, "declaw template list: %v\n", err)
			return 1
		}
		if *asJSON {
			if ts == nil {
				ts = []template.Template{}
			}
			json.NewEncoder(e.stdout).Encode(ts)
			return 0
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSIZE\tBUILT")
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%d MB\t%s\n", t.Name, t.SizeBytes>>20, t.BuiltAt.Format("2006-01-02 15:04:05"))
		}
		tw.Flush()
		return 0
	case "delete", "rm":
		if fs.NArg() == 0 {
			fmt.Fprint(e.stderr, templateUsage)
			return 2
		}
		for _, name := range fs.Args() {
			if err := tm.Delete(name); err != nil {
				fmt.Fprintf(e.stderr, "declaw template delete %s: %v\n", name, err)
				return 1
			}
		}
		return 0
	}
	fmt.Fprint(e.stderr, templateUsage)
	return 2
}
