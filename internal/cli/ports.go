package cli

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// sandboxPortForward runs "declaw sandbox port-forward ID PORT [LOCAL]":
// a local HTTP listener whose every request (WebSocket upgrades and
// streams included) goes to PORT inside the sandbox through the API's port
// proxy, with the API key added, until interrupted. LOCAL is a port or
// HOST:PORT (default 127.0.0.1:PORT; port 0 picks a free one).
func sandboxPortForward(c *clientCmd, args []string) int {
	pos, _, _, ok := c.parse(args, 2, 3)
	if !ok {
		return 2
	}
	port, err := strconv.Atoi(pos[1])
	if err != nil || port < 1 || port > 65535 {
		c.usagef("PORT must be a number from 1 to 65535, not %q", pos[1])
		return 2
	}
	local := "127.0.0.1:" + pos[1]
	if len(pos) == 3 {
		local = pos[2]
		if !strings.Contains(local, ":") {
			local = "127.0.0.1:" + local
		}
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	// Fail early on an unknown or dead sandbox rather than at the first request.
	if _, err := cl.SandboxStatus(ctx, pos[0]); err != nil {
		return c.fail(err)
	}
	ln, err := net.Listen("tcp", local)
	if err != nil {
		return c.fail(fmt.Errorf("listen on %s: %w", local, err))
	}
	srv := &http.Server{Handler: cl.PortForwarder(pos[0], port), ReadHeaderTimeout: 30 * time.Second}
	if c.opts.json {
		c.printJSON(map[string]any{"sandbox_id": pos[0], "port": port, "local": "http://" + ln.Addr().String(), "remote": cl.PortURL(pos[0], port)})
	} else {
		fmt.Fprintf(c.e.stdout, "Forwarding http://%s -> %s (Ctrl-C to stop)\n", ln.Addr(), cl.PortURL(pos[0], port))
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		srv.Close()
		return 0
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return 0
		}
		return c.fail(err)
	}
}
