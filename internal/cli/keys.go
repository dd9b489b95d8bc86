package cli

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/declaw/declaw/sdk/go/declaw"
)

// The keys and teams commands talk to the API with an admin key (on the
// server host: the one in /var/lib/declaw/api-key, or --api-key of
// `declaw server`), so they manage a remote server as well as a local one,
// and a revoke cuts the requests open with the key at once.

const keysUsage = `Usage: declaw keys COMMAND [flags]    (needs an admin API key)

Commands:
  create --team TEAM [--name NAME] [--admin]
                       create a key of TEAM (its id or name) and print it: it is
                       shown this once (the server keeps its SHA-256 only)
  list [--team TEAM]   list keys (every team's without --team), never their secrets
  revoke KEY_ID...     revoke keys: refused at once, open streams made with them cut

` + clientFlagsHelp

const teamsUsage = `Usage: declaw teams COMMAND [flags]

Commands:
  create NAME          create a team and print its id (admin key)
  list                 list teams (an admin key sees every team, another key its own)

` + clientFlagsHelp

// runKeys runs "declaw keys VERB ..."; globals are client flags given
// before "keys".
func runKeys(e *env, globals, args []string) int {
	return runVerbs(e, globals, args, "declaw keys", keysUsage, map[string]func(*clientCmd, []string) int{
		"create": keysCreate, "new": keysCreate,
		"list": keysList, "ls": keysList,
		"revoke": keysRevoke, "rm": keysRevoke, "delete": keysRevoke,
	})
}

// runTeams runs "declaw teams VERB ...".
func runTeams(e *env, globals, args []string) int {
	return runVerbs(e, globals, args, "declaw teams", teamsUsage, map[string]func(*clientCmd, []string) int{
		"create": teamsCreate, "new": teamsCreate,
		"list": teamsList, "ls": teamsList,
	})
}

// resolveTeam returns the id of the team named by ref: a team id, else a
// team name.
func resolveTeam(ctx context.Context, cl *declaw.Client, ref string) (string, error) {
	teams, err := cl.ListTeams(ctx)
	if err != nil {
		return "", err
	}
	for _, t := range teams {
		if t.TeamID == ref {
			return t.TeamID, nil
		}
	}
	for _, t := range teams {
		if t.Name == ref {
			return t.TeamID, nil
		}
	}
	return "", fmt.Errorf("no team with the id or name %q (declaw teams list)", ref)
}

// keysCreate runs "declaw keys create --team T [--name N] [--admin]".
func keysCreate(c *clientCmd, args []string) int {
	team := c.fs.String("team", "", "the `TEAM` (id or name) the key belongs to (required)")
	name := c.fs.String("name", "", "a `NAME` for the key, shown by keys list")
	admin := c.fs.Bool("admin", false, "an admin key: it may also manage teams and keys")
	if _, _, _, ok := c.parse(args, 0, 0); !ok {
		return 2
	}
	if *team == "" {
		c.usagef("--team is required")
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	id, err := resolveTeam(ctx, cl, *team)
	if err != nil {
		return c.fail(err)
	}
	k, err := cl.CreateAPIKey(ctx, id, *name, *admin)
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		c.printJSON(k)
		return 0
	}
	fmt.Fprintln(c.e.stdout, k.Key)
	fmt.Fprintf(c.e.stderr, "created API key %s of team %s: store it now, it is not shown again\n", k.KeyID, k.TeamID)
	return 0
}

// keysList runs "declaw keys list [--team T]".
func keysList(c *clientCmd, args []string) int {
	team := c.fs.String("team", "", "only the keys of `TEAM` (id or name)")
	if _, _, _, ok := c.parse(args, 0, 0); !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	id := ""
	if *team != "" {
		if id, err = resolveTeam(ctx, cl, *team); err != nil {
			return c.fail(err)
		}
	}
	keys, err := cl.ListAPIKeys(ctx, id)
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		c.printJSON(keys)
		return 0
	}
	tw := tabwriter.NewWriter(c.e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tTEAM\tNAME\tADMIN\tCREATED\tREVOKED")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\n", k.KeyID, k.TeamID, k.Name, k.Admin, fmtTime(&k.CreatedAt), fmtTime(k.RevokedAt))
	}
	tw.Flush()
	return 0
}

// keysRevoke runs "declaw keys revoke KEY_ID...".
func keysRevoke(c *clientCmd, args []string) int {
	pos, _, _, ok := c.parse(args, 1, -1)
	if !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	code := 0
	for _, id := range pos {
		revoked, err := cl.RevokeAPIKey(ctx, id)
		if err != nil {
			code = c.fail(fmt.Errorf("%s: %w", id, err))
			continue
		}
		switch {
		case c.opts.json:
			c.printJSON(map[string]any{"key_id": id, "revoked": revoked})
		case revoked:
			fmt.Fprintf(c.e.stdout, "revoked %s\n", id)
		default:
			fmt.Fprintf(c.e.stdout, "%s was already revoked\n", id)
		}
	}
	return code
}

// teamsCreate runs "declaw teams create NAME".
func teamsCreate(c *clientCmd, args []string) int {
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
	t, err := cl.CreateTeam(ctx, pos[0])
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		c.printJSON(t)
		return 0
	}
	fmt.Fprintln(c.e.stdout, t.TeamID)
	return 0
}

// teamsList runs "declaw teams list".
func teamsList(c *clientCmd, args []string) int {
	if _, _, _, ok := c.parse(args, 0, 0); !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	teams, err := cl.ListTeams(ctx)
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		c.printJSON(teams)
		return 0
	}
	tw := tabwriter.NewWriter(c.e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TEAM\tNAME\tCREATED")
	for _, t := range teams {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", t.TeamID, t.Name, fmtTime(&t.CreatedAt))
	}
	tw.Flush()
	return 0
}
