package declaw

import (
	"context"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"
)

// MCPPort is the port an MCP server listens on inside a sandbox by convention.
const MCPPort = 50005

// PortURL is the URL that reverse-proxies to port inside sandbox id (send
// the API key with it, or use a port token): the official SDK's get_host.
func (c *Client) PortURL(id string, port int) string {
	return strings.TrimSuffix(c.Base(), "/") + sandboxPath(id, "/ports/"+strconv.Itoa(port))
}

// MCPURL is the URL of the MCP server on MCPPort inside sandbox id.
func (c *Client) MCPURL(id string) string { return c.PortURL(id, MCPPort) + "/mcp" }

// PortToken is a signed, short-lived token opening one port of one sandbox
// without the API key (POST /sandboxes/{id}/port-tokens).
type PortToken struct {
	Token     string    `json:"token"`
	Port      int       `json:"port"`
	ExpiresAt time.Time `json:"expires_at"`
	// Path is the port URL with the token, relative to the API base; URL
	// is it made absolute.
	Path string `json:"path"`
	URL  string `json:"-"`
}

// CreatePortToken signs a token for port of sandbox id, valid for ttl
// (0: the server's default of one hour; at most 24 hours).
func (c *Client) CreatePortToken(ctx context.Context, id string, port int, ttl time.Duration) (*PortToken, error) {
	body := map[string]any{"port": port}
	if ttl > 0 {
		body["ttl_seconds"] = int(ttl.Round(time.Second) / time.Second)
	}
	var out PortToken
	if err := c.call(ctx, request{method: http.MethodPost, path: sandboxPath(id, "/port-tokens"), json: body}, &out); err != nil {
		return nil, err
	}
	out.URL = strings.TrimSuffix(c.Base(), "/") + out.Path
	return &out, nil
}

// PortForwarder returns a handler that forwards every request it serves
// (path and query kept, WebSocket upgrades and streams included) to port
// inside sandbox id, adding the API key: "declaw sandbox port-forward".
func (c *Client) PortForwarder(id string, port int) http.Handler {
	target := c.PortURL(id, port)
	tr := http.DefaultTransport
	if c.hc != nil && c.hc.Transport != nil {
		tr = c.hc.Transport
	}
	return &httputil.ReverseProxy{
		Transport:     tr,
		FlushInterval: -1,
		Rewrite: func(pr *httputil.ProxyRequest) {
			u := *pr.In.URL
			full := target + u.EscapedPath()
			nu, err := u.Parse(full)
			if err != nil {
				return
			}
			nu.RawQuery = u.RawQuery
			pr.Out.URL = nu
			pr.Out.Host = nu.Host
			pr.Out.Header.Set("X-API-Key", c.key)
			pr.SetXForwarded()
		},
	}
}
