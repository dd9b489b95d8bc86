package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/declaw/declaw/sdk/go/declaw"
)

// sandboxSnapshot runs "declaw sandbox snapshot ID".
func sandboxSnapshot(c *clientCmd, args []string) int {
	pos, _, _, ok := c.parse(args, 1, 1)
	if !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	sn, err := cl.CreateSnapshot(ctx, pos[0])
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		c.printJSON(sn)
		return 0
	}
	fmt.Fprintln(c.e.stdout, sn.SnapshotID)
	return 0
}

// sandboxSnapshots runs "declaw sandbox snapshots ID".
func sandboxSnapshots(c *clientCmd, args []string) int {
	pos, _, _, ok := c.parse(args, 1, 1)
	if !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	list, err := cl.ListSnapshots(ctx, pos[0])
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		c.printJSON(list)
		return 0
	}
	tw := tabwriter.NewWriter(c.e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SNAPSHOT\tSOURCE\tKIND\tSIZE\tCREATED")
	for _, sn := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", sn.SnapshotID, sn.Source, sn.Kind, sn.SizeBytes, fmtTime(&sn.CreatedAt))
	}
	tw.Flush()
	return 0
}

// sandboxDeleteSnapshot runs "declaw sandbox delete-snapshot ID SNAPSHOT".
func sandboxDeleteSnapshot(c *clientCmd, args []string) int {
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
	deleted, err := cl.DeleteSnapshot(ctx, pos[0], pos[1])
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		c.printJSON(map[string]any{"snapshot_id": pos[1], "deleted": deleted})
		return 0
	}
	if deleted {
		fmt.Fprintf(c.e.stdout, "deleted %s\n", pos[1])
	} else {
		fmt.Fprintf(c.e.stdout, "%s was already deleted\n", pos[1])
	}
	return 0
}

// sandboxRestore runs "declaw sandbox restore ID [--snapshot SNAP] [--fork]".
func sandboxRestore(c *clientCmd, args []string) int {
	var opts declaw.RestoreOptions
	c.fs.StringVar(&opts.SnapshotID, "snapshot", "", "the `SNAPSHOT` id (default: the most recent, pause > periodic > manual)")
	c.fs.BoolVar(&opts.Fork, "fork", false, "start a NEW sandbox from the snapshot and leave this one alone")
	pos, _, _, ok := c.parse(args, 1, 1)
	if !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	r, err := cl.Restore(ctx, pos[0], opts)
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		c.printJSON(r)
		return 0
	}
	if opts.Fork {
		fmt.Fprintln(c.e.stdout, r.SandboxID)
		return 0
	}
	fmt.Fprintf(c.e.stdout, "restored %s from %s\n", r.SandboxID, r.SnapshotID)
	return 0
}
