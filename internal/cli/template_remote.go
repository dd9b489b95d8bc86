package cli

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/declaw/declaw/internal/template"
	"github.com/declaw/declaw/sdk/go/declaw"
)

// localTemplateCommand reports whether a template command works on the
// local state directory (built-in builds, --local) rather than the API.
func localTemplateCommand(verb string, args []string) bool {
	for _, a := range args {
		switch strings.SplitN(strings.TrimLeft(a, "-"), "=", 2)[0] {
		case "local", "state-dir", "envd", "if-needed", "no-image":
			if strings.HasPrefix(a, "-") {
				return true
			}
		}
	}
	if verb != "build" {
		return false
	}
	// "build base python": built-in names only, and no custom-build flag.
	names := 0
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			if a == "--json" || a == "-json" {
				continue
			}
			return false
		}
		if !template.IsBuiltin(a) {
			return false
		}
		names++
	}
	return names > 0
}

func runTemplateRemote(e *env, verb string, args []string) int {
	switch verb {
	case "build":
		return templateBuild(e, args)
	case "list", "ls":
		c := e.newClientCmd("declaw template list", nil)
		if _, _, _, ok := c.parse(args, 0, 0); !ok {
			return 2
		}
		return c.withClient(func(cl *declaw.Client) error {
			ctx, stop := signalContext()
			defer stop()
			ts, err := cl.Templates(ctx)
			if err != nil {
				return err
			}
			if c.opts.json {
				c.printJSON(ts)
				return nil
			}
			tw := tabwriter.NewWriter(c.e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TEMPLATE_ID\tALIAS\tSIZE\tCREATED\tIN_USE")
			for _, t := range ts {
				fmt.Fprintf(tw, "%v\t%v\t%d MB\t%v\t%v\n", t.TemplateID, t.Alias, t.SizeBytes>>20, t.CreatedAt.Format(time.RFC3339Nano), t.InUse)
			}
			return tw.Flush()
		})
	case "info", "get":
		c := e.newClientCmd("declaw template info", nil)
		pos, _, _, ok := c.parse(args, 1, 1)
		if !ok {
			return 2
		}
		return c.withClient(func(cl *declaw.Client) error {
			ctx, stop := signalContext()
			defer stop()
			tpl, err := cl.Template(ctx, pos[0])
			if err != nil {
				return err
			}
			raw := tpl.Raw
			if c.opts.json {
				c.printRaw(raw)
				return nil
			}
			var m map[string]any
			json.Unmarshal(raw, &m)
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			tw := tabwriter.NewWriter(c.e.stdout, 0, 4, 2, ' ', 0)
			for _, k := range keys {
				v := m[k]
				if _, ok := v.(string); !ok {
					b, _ := json.Marshal(v)
					v = string(b)
				}
				fmt.Fprintf(tw, "%s\t%v\n", k, v)
			}
			return tw.Flush()
		})
	case "delete", "rm":
		c := e.newClientCmd("declaw template delete", nil)
		force := c.fs.Bool("force", false, "kill the sandboxes using it first")
		pos, _, _, ok := c.parse(args, 1, -1)
		if !ok {
			return 2
		}
		return c.withClient(func(cl *declaw.Client) error {
			ctx, stop := signalContext()
			defer stop()
			for _, id := range pos {
				if err := cl.DeleteTemplate(ctx, id, *force); err != nil {
					return err
				}
			}
			return nil
		})
	case "logs":
		c := e.newClientCmd("declaw template logs", nil)
		follow := c.fs.Bool("follow", false, "keep printing until the build ends")
		offset := c.fs.Int("offset", 0, "first log line to print")
		pos, _, _, ok := c.parse(args, 1, 1)
		if !ok {
			return 2
		}
		return c.withClient(func(cl *declaw.Client) error {
			ctx, stop := signalContext()
			defer stop()
			if *follow {
				st, err := cl.FollowBuild(ctx, pos[0], *offset, func(l string) { fmt.Fprintln(c.e.stdout, l) })
				if err != nil {
					return err
				}
				return buildResult(st)
			}
			st, err := cl.Build(ctx, pos[0], *offset)
			if err != nil {
				return err
			}
			if c.opts.json {
				c.printJSON(st)
				return nil
			}
			for _, l := range st.Logs {
				fmt.Fprintln(c.e.stdout, l)
			}
			fmt.Fprintf(c.e.stderr, "build %s: %s %s\n", st.BuildID, st.Status, st.Reason)
			return nil
		})
	case "cancel":
		c := e.newClientCmd("declaw template cancel", nil)
		pos, _, _, ok := c.parse(args, 1, 1)
		if !ok {
			return 2
		}
		return c.withClient(func(cl *declaw.Client) error {
			ctx, stop := signalContext()
			defer stop()
			st, err := cl.CancelBuild(ctx, pos[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(c.e.stdout, "build %s: %s %s\n", st.BuildID, st.Status, st.Reason)
			return nil
		})
	}
	fmt.Fprint(e.stderr, templateUsage)
	return 2
}

// withClient runs fn with the API client; an error is printed and gives exit code 1.
func (c *clientCmd) withClient(fn func(*declaw.Client) error) int {
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	if err := fn(cl); err != nil {
		return c.fail(err)
	}
	return 0
}

func buildResult(st *declaw.BuildStatus) error {
	if st.Status == "completed" {
		return nil
	}
	if st.Step != "" {
		return fmt.Errorf("build %s %s at step %q: %s", st.BuildID, st.Status, st.Step, st.Reason)
	}
	return fmt.Errorf("build %s %s: %s", st.BuildID, st.Status, st.Reason)
}

func templateBuild(e *env, args []string) int {
	c := e.newClientCmd("declaw template build", nil)
	file := c.fs.String("f", "", "Dockerfile (default CONTEXT_DIR/Dockerfile; - reads stdin)")
	c.fs.StringVar(file, "file", "", "same as -f")
	alias := c.fs.String("alias", "", "template alias (name)")
	baseImage := c.fs.String("base-image", "", "base: a built-in template, a built template or an image reference (structured build)")
	var runCmds, pkgs listFlag
	c.fs.Var((*multiFlag)(&runCmds), "run-cmd", "command to run (repeatable)")
	c.fs.Var(&pkgs, "apt-package", "apt package to install (repeatable, comma-separated)")
	envs := &kvFlag{}
	c.fs.Var(envs, "env", "KEY=VALUE environment of the template (repeatable)")
	workdir := c.fs.String("workdir", "", "working directory of the start command")
	user := c.fs.String("user", "", "user of the later steps and the start command")
	startCmd := c.fs.String("start-cmd", "", "command started in the background in every new sandbox")
	readyCmd := c.fs.String("ready-cmd", "", "ready check: a command that exits 0 once the start command is ready")
	readyPort := c.fs.Int("ready-port", 0, "ready check: a TCP port that accepts once ready")
	readyURL := c.fs.String("ready-url", "", "ready check: a URL (in the sandbox) that answers once ready")
	readyTimeout := c.fs.Int("ready-timeout", 0, "ready check timeout in seconds (default 60)")
	force := c.fs.Bool("force", false, "rebuild every step, ignoring the cache")
	noWait := c.fs.Bool("no-wait", false, "return once the build started")
	cpu := c.fs.Int("cpu-count", 0, "CPUs of the template's sandboxes")
	mem := c.fs.Int("memory-mb", 0, "memory of the template's sandboxes")
	disk := c.fs.Int("disk-mb", 0, "largest size of the template")
	pos, _, _, ok := c.parse(args, 0, 1)
	if !ok {
		return 2
	}
	ctxDir := "."
	if len(pos) == 1 {
		ctxDir = pos[0]
	}
	spec := map[string]any{}
	structured := *baseImage != "" || len(runCmds) > 0 || len(pkgs) > 0 || *startCmd != ""
	if *file != "" || !structured {
		path := *file
		if path == "" {
			path = filepath.Join(ctxDir, "Dockerfile")
		}
		var df []byte
		var err error
		if path == "-" {
			df, err = io.ReadAll(io.LimitReader(e.stdin, 1<<20))
		} else {
			df, err = os.ReadFile(path)
		}
		if err != nil {
			return c.fail(fmt.Errorf("read the Dockerfile: %w (or build from flags: --base-image ...)", err))
		}
		spec["dockerfile"] = string(df)
	} else {
		spec["base_image"] = *baseImage
		if len(runCmds) > 0 {
			spec["run_cmds"] = []string(runCmds)
		}
		if len(pkgs) > 0 {
			spec["apt_packages"] = []string(pkgs)
		}
		if len(envs.m) > 0 {
			spec["envs"] = envs.m
		}
		if *workdir != "" {
			spec["workdir"] = *workdir
		}
		if *user != "" {
			spec["user"] = *user
		}
	}
	if *startCmd != "" {
		spec["start_cmd"] = *startCmd
	}
	ready := map[string]any{}
	if *readyCmd != "" {
		ready["cmd"] = *readyCmd
	}
	if *readyPort != 0 {
		ready["port"] = *readyPort
	}
	if *readyURL != "" {
		ready["url"] = *readyURL
	}
	if len(ready) > 0 {
		if *readyTimeout > 0 {
			ready["timeout"] = *readyTimeout
		}
		spec["ready_check"] = ready
	}
	req := map[string]any{"template": spec, "background": true}
	if *alias != "" {
		req["alias"] = *alias
	}
	if *force {
		req["force"] = true
	}
	for k, v := range map[string]int{"cpu_count": *cpu, "memory_mb": *mem, "disk_mb": *disk} {
		if v != 0 {
			req[k] = v
		}
	}
	var context io.Reader
	if _, isDF := spec["dockerfile"]; isDF || len(pos) == 1 {
		if st, err := os.Stat(ctxDir); err == nil && st.IsDir() {
			context = tarDir(ctxDir)
		}
	}
	return c.withClient(func(cl *declaw.Client) error {
		ctx, stop := signalContext()
		defer stop()
		st, err := cl.BuildTemplate(ctx, req, context)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.e.stderr, "build %s of template %s (%s) started\n", st.BuildID, st.Alias, st.TemplateID)
		if *noWait {
			if c.opts.json {
				c.printJSON(st)
			}
			return nil
		}
		final, err := cl.FollowBuild(ctx, st.BuildID, 0, func(l string) { fmt.Fprintln(c.e.stderr, l) })
		if err != nil {
			if ctx.Err() != nil {
				fmt.Fprintf(c.e.stderr, "interrupted: the build goes on; cancel it with: declaw template cancel %s\n", st.BuildID)
			}
			return err
		}
		if c.opts.json {
			c.printJSON(final)
		} else if final.Status == "completed" {
			fmt.Fprintf(c.e.stdout, "%s\t%s\n", final.TemplateID, final.Alias)
		}
		return buildResult(final)
	})
}

// multiFlag is a repeatable flag whose values are kept whole (commands contain commas).
type multiFlag []string

func (m *multiFlag) String() string     { return strconv.Quote(strings.Join(*m, "; ")) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// tarDir streams dir as a gzipped tar (regular files, directories and
// symlinks; .git is left out).
func tarDir(dir string) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		zw := gzip.NewWriter(pw)
		tw := tar.NewWriter(zw)
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			if rel == "." {
				return nil
			}
			if d.IsDir() && d.Name() == ".git" {
				return filepath.SkipDir
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			link := ""
			if fi.Mode()&fs.ModeSymlink != 0 {
				link, _ = os.Readlink(p)
			} else if !fi.Mode().IsRegular() && !fi.IsDir() {
				return nil
			}
			h, err := tar.FileInfoHeader(fi, link)
			if err != nil {
				return err
			}
			h.Name = filepath.ToSlash(rel)
			if fi.IsDir() {
				h.Name += "/"
			}
			h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if fi.Mode().IsRegular() {
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				_, err = io.Copy(tw, f)
				f.Close()
				return err
			}
			return nil
		})
		if err == nil {
			err = tw.Close()
		}
		if err == nil {
			err = zw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}
