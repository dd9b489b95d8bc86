package cli

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"
)

const filesUsage = `Usage:
  declaw sandbox files ls ID PATH [--depth N] [--user U]      list a directory
  declaw sandbox files read ID PATH [--user U]                 write the file's bytes to stdout
  declaw sandbox files write ID PATH [LOCALFILE|-] [--user U]  upload LOCALFILE (default: stdin)

` + clientFlagsHelp

// runFiles runs "declaw sandbox files ls|read|write".
func runFiles(e *env, globals, args []string) int {
	if n := leadingClientFlags(args); n > 0 {
		globals, args = append(globals[:len(globals):len(globals)], args[:n]...), args[n:]
	}
	if len(args) == 0 {
		fmt.Fprint(e.stderr, filesUsage)
		return 2
	}
	verb, args := args[0], args[1:]
	c := e.newClientCmd("declaw sandbox files "+verb, globals)
	user := c.fs.String("user", "", "user whose home relative paths resolve against, and who owns created entries (default: root)")
	switch verb {
	case "ls", "list":
		return filesList(c, user, args)
	case "read", "cat", "get":
		return filesRead(c, user, args)
	case "write", "put":
		return filesWrite(c, user, args)
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, filesUsage)
		return 0
	}
	fmt.Fprintf(e.stderr, "declaw sandbox files: unknown command %q\n\n%s", verb, filesUsage)
	return 2
}

func filesList(c *clientCmd, user *string, args []string) int {
	depth := c.fs.Int("depth", 1, "levels to descend (1: the directory's entries)")
	pos, _, _, ok := c.parse(args, 2, 2)
	if !ok {
		return 2
	}
	if *depth < 1 {
		c.usagef("--depth must be >= 1")
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	entries, err := cl.ListFiles(ctx, pos[0], pos[1], *depth, *user)
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		raws := make([]any, len(entries))
		for i, en := range entries {
			raws[i] = en.Raw
		}
		c.printJSON(raws)
		return 0
	}
	tw := tabwriter.NewWriter(c.e.stdout, 0, 4, 1, ' ', 0)
	for _, en := range entries {
		perms := en.Permissions
		if perms == "" {
			perms = en.Type
		}
		name := en.Path
		if en.SymlinkTarget != "" {
			name += " -> " + en.SymlinkTarget
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", perms, en.Owner, en.Group, en.Size, fmtTime(en.ModifiedTime), name)
	}
	tw.Flush()
	return 0
}

func filesRead(c *clientCmd, user *string, args []string) int {
	pos, _, _, ok := c.parse(args, 2, 2)
	if !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	body, err := cl.ReadFile(ctx, pos[0], pos[1], *user)
	if err != nil {
		return c.fail(err)
	}
	defer body.Close()
	if _, err := io.Copy(c.e.stdout, body); err != nil {
		return c.fail(fmt.Errorf("read %s: %w", pos[1], err))
	}
	return 0
}

func filesWrite(c *clientCmd, user *string, args []string) int {
	pos, _, _, ok := c.parse(args, 2, 3)
	if !ok {
		return 2
	}
	var src io.Reader = c.e.stdin
	size := int64(-1)
	if len(pos) == 3 && pos[2] != "-" {
		f, err := os.Open(pos[2])
		if err != nil {
			return c.fail(err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return c.fail(err)
		}
		if st.IsDir() {
			return c.fail(fmt.Errorf("%s is a directory", pos[2]))
		}
		src = f
		if st.Mode().IsRegular() {
			size = st.Size()
		}
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	res, err := cl.WriteFile(ctx, pos[0], pos[1], *user, src, size)
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		c.printJSON(res)
		return 0
	}
	fmt.Fprintf(c.e.stdout, "wrote %d bytes to %s\n", res.Size, res.Path)
	return 0
}
