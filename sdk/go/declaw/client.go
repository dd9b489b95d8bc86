// Package declaw is the Go SDK of Declaw, the self-hostable secure runtime
// for AI agents: create sandboxes, run commands in them (foreground,
// streamed, background with stdin, on a PTY), read, write and watch their
// files, snapshot and restore them, change their network policy and read
// their audit trail. It speaks the REST+SSE API of `declaw server`
// (docs/api.md, openapi/openapi.yaml), the same wire as the Python SDK
// (sdk/python/WIRE.md), and imports nothing of the server.
//
//	cl, err := declaw.New(declaw.Config{Domain: "127.0.0.1:8080", APIKey: key})
//	sb, err := cl.CreateSandbox(ctx, declaw.CreateRequest{Template: "python"})
//	res, err := cl.RunCommand(ctx, sb.SandboxID, declaw.CommandRequest{Cmd: "python3 -V"})
//
// Every call takes a context.Context first; cancelling it ends the call
// (for a foreground command, a cancelled stream kills the command). API
// errors are *Error values carrying the server's {"message","code"} and
// HTTP status; they match the sentinels (ErrNotFound, ErrTimeout,
// ErrConflict, ...) with errors.Is. Streams are range-over-func iterators
// (StreamCommand, Watcher.Events) or callbacks (RunStream, ConnectCommand).
// Optional request fields are pointers: declaw.Ptr(600).
//
// Requests send both auth headers, an Idempotency-Key on create (a create
// still running under the same key is waited for), and are retried only
// when the connection could not be dialled, so nothing was sent. A Client
// is safe for concurrent use. docs/go-sdk.md is the guide.
package declaw

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultDomain is the domain used when neither an API URL nor a domain is
// configured: the default listen address of `declaw server`.
const DefaultDomain = "127.0.0.1:8080"

// Config configures a Client. The zero value talks to DefaultDomain without a key.
type Config struct {
	// APIURL is the base URL (scheme, host, optional path prefix). It wins over Domain.
	APIURL string
	// Domain is host[:port]: https when there is no port or the port is 443, else http.
	Domain string
	// APIKey is sent as both "Authorization: Bearer" and "X-API-Key"; none when empty.
	APIKey string
	// UserAgent defaults to "declaw-go".
	UserAgent string
	// HTTPClient defaults to a client with a 10 s dial timeout and no overall
	// timeout (streams and uploads run as long as their context).
	HTTPClient *http.Client
}

// Client calls the declaw API.
type Client struct {
	base *url.URL
	key  string
	ua   string
	hc   *http.Client
}

// New returns a client for cfg; it fails only on a malformed URL or domain.
func New(cfg Config) (*Client, error) {
	base, err := BaseURL(cfg.APIURL, cfg.Domain)
	if err != nil {
		return nil, err
	}
	c := &Client{base: base, key: cfg.APIKey, ua: cfg.UserAgent, hc: cfg.HTTPClient}
	if c.ua == "" {
		c.ua = "declaw-go"
	}
	if c.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil // the API is usually local; never send it through a proxy
		tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		c.hc = &http.Client{Transport: tr}
	}
	return c, nil
}

// BaseURL resolves the API base URL like the SDKs: apiURL if set, else
// domain (default DefaultDomain) with https when it has no port or port
// 443 and http otherwise.
func BaseURL(apiURL, domain string) (*url.URL, error) {
	if apiURL != "" {
		u, err := url.Parse(apiURL)
		if err != nil {
			return nil, fmt.Errorf("API URL %q: %w", apiURL, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("API URL %q: want http(s)://host[:port][/prefix]", apiURL)
		}
		u.Path = strings.TrimRight(u.Path, "/")
		u.RawQuery, u.Fragment = "", ""
		return u, nil
	}
	if domain == "" {
		domain = DefaultDomain
	}
	if strings.Contains(domain, "/") {
		return nil, fmt.Errorf("domain %q: want host[:port] (use an API URL for a scheme or path)", domain)
	}
	scheme := "https"
	if _, port, err := net.SplitHostPort(domain); err == nil && port != "443" {
		scheme = "http"
	}
	u, err := url.Parse(scheme + "://" + domain)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("domain %q: want host[:port]", domain)
	}
	return u, nil
}

// Base returns the base URL the client sends requests to.
func (c *Client) Base() string { return c.base.String() }

// Error is an API error: an HTTP status >= 400 with the server's
// {"message","code"} (or its plain-text body).
type Error struct {
	Status  int
	Code    string // e.g. "sandbox_not_found"; empty for plain-text errors
	Message string
	// Body is the raw error body (JSON errors may carry more fields, e.g.
	// the output of a timed-out command).
	Body []byte
	// RetryAfter is the Retry-After header, if any.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("%d %s", e.Status, http.StatusText(e.Status))
}

// parseError builds an *Error from an answer with status >= 400.
func parseError(resp *http.Response) *Error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &Error{Status: resp.StatusCode, Body: body}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			e.RetryAfter = time.Duration(n) * time.Second
		}
	}
	var j struct {
		Message string `json:"message"`
		Code    string `json:"code"`
		Error   string `json:"error"`
	}
	if json.Unmarshal(body, &j) == nil && (j.Message != "" || j.Code != "" || j.Error != "") {
		e.Message, e.Code = j.Message, j.Code
		if e.Message == "" {
			e.Message = j.Error
		}
		if e.Message == "" {
			e.Message = j.Code
		}
		return e
	}
	e.Message = strings.TrimSpace(string(body))
	if e.Message == "" {
		e.Message = fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return e
}

// request is one API call.
type request struct {
	method string
	path   string // already escaped, relative to the base URL
	query  string // already encoded
	accept string
	// json is marshalled as the body (nil: none); body is sent as is
	// (octet-stream) with length size (-1: chunked).
	json   any
	body   io.Reader
	size   int64
	header http.Header
}

// send performs r and returns the response for a status < 400. A failed
// dial (nothing was sent) is retried twice when the body can be resent.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	var payload []byte
	if r.json != nil {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // commands are full of < > &
		if err := enc.Encode(r.json); err != nil {
			return nil, fmt.Errorf("%s %s: encode body: %w", r.method, r.path, err)
		}
		payload = bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	}
	for attempt := 1; ; attempt++ {
		req, err := c.newRequest(ctx, r, payload)
		if err != nil {
			return nil, err
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			if attempt < 3 && r.body == nil && isDialError(err) && sleepCtx(ctx, time.Duration(attempt)*500*time.Millisecond) {
				continue
			}
			return nil, fmt.Errorf("%s %s: %w", r.method, c.base.Path+r.path, err)
		}
		if resp.StatusCode < 400 {
			return resp, nil
		}
		apiErr := parseError(resp)
		resp.Body.Close()
		return nil, apiErr
	}
}

func (c *Client) newRequest(ctx context.Context, r request, payload []byte) (*http.Request, error) {
	u := c.base.Scheme + "://" + c.base.Host + c.base.EscapedPath() + r.path
	if r.query != "" {
		u += "?" + r.query
	}
	var body io.Reader
	switch {
	case payload != nil:
		body = bytes.NewReader(payload)
	case r.body != nil:
		body = r.body
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	if r.body != nil {
		req.ContentLength = r.size
		if r.size == 0 {
			req.Body = http.NoBody
		}
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
		req.Header.Set("X-API-Key", c.key)
	}
	req.Header.Set("User-Agent", c.ua)
	accept := r.accept
	if accept == "" {
		accept = "application/json"
	}
	req.Header.Set("Accept", accept)
	return req, nil
}

// call performs r and decodes a JSON answer into out (unless out is nil).
func (c *Client) call(ctx context.Context, r request, out any) error {
	resp, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", r.method, r.path, err)
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = b
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", r.method, r.path, err)
	}
	return nil
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// sandboxPath is /sandboxes/{id}{suffix} with the id escaped.
func sandboxPath(id, suffix string) string {
	return "/sandboxes/" + url.PathEscape(id) + suffix
}

// query encodes key/value pairs in order, like the SDK: %20 for spaces and
// "/" left literal. Empty values are skipped.
func query(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(queryEscape(kv[i]))
		b.WriteByte('=')
		b.WriteString(queryEscape(kv[i+1]))
	}
	return b.String()
}

func queryEscape(s string) string {
	s = url.QueryEscape(s)
	s = strings.ReplaceAll(s, "+", "%20")
	return strings.ReplaceAll(s, "%2F", "/")
}

// newIdempotencyKey returns a random UUIDv4.
func newIdempotencyKey() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
