package api

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// appServer is a stand-in for a web app inside the sandbox: the fake
// sandboxes' private address is 127.0.0.1, so it listens there.
type appServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	last *http.Request
}

func newAppServer(t *testing.T) *appServer {
	a := &appServer{}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *appServer) port() int { return a.srv.Listener.Addr().(*net.TCPAddr).Port }

func (a *appServer) seen() *http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

func (a *appServer) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.last = r.Clone(r.Context())
	a.mu.Unlock()
	switch r.URL.Path {
	case "/sse":
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the stream stays open; the client must see "one" now
	case "/ws":
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw) // echo every byte back
	default:
		http.SetCookie(w, &http.Cookie{Name: "app", Value: "x"})
		fmt.Fprintf(w, "app %s %s?%s", r.Method, r.URL.EscapedPath(), r.URL.RawQuery)
	}
}

func TestPortProxy(t *testing.T) {
	h := newHarness(t)
	app := newAppServer(t)
	sb := h.create(t, nil)
	base := "/sandboxes/" + sb.SandboxID + "/ports/" + strconv.Itoa(app.port())

	resp, b := h.do(t, "POST", base+"/a%2Fb/c?x=1&y=2", "body", "Cookie", "keep=1", "Authorization", "Bearer app-token", "X-API-Key", testKey)
	if resp.StatusCode != 200 || string(b) != "app POST /a%2Fb/c?x=1&y=2" {
		t.Fatalf("POST through port = %d %q, want 200 from the app with path and query kept", resp.StatusCode, b)
	}
	in := app.seen()
	if in.Header.Get("X-Api-Key") != "" || in.Header.Get("Authorization") != "Bearer app-token" || in.Header.Get("Cookie") != "keep=1" {
		t.Errorf("app got X-API-Key %q Authorization %q Cookie %q; want the key stripped, the app's own headers kept",
			in.Header.Get("X-Api-Key"), in.Header.Get("Authorization"), in.Header.Get("Cookie"))
	}
	if got := in.Header.Get("X-Forwarded-Prefix"); got != base {
		t.Errorf("X-Forwarded-Prefix = %q, want %q", got, base)
	}
	if sc := resp.Header.Values("Set-Cookie"); len(sc) != 0 {
		t.Errorf("Set-Cookie from the sandbox reached the client: %q", sc)
	}
	// Bare port URL goes to "/"; the key in Authorization is stripped too.
	resp, b = h.do(t, "GET", base, nil, "Authorization", "Bearer "+testKey)
	if resp.StatusCode != 200 || string(b) != "app GET /?" || app.seen().Header.Get("Authorization") != "" {
		t.Errorf("GET bare port URL = %d %q (Authorization upstream %q), want app GET / and no key", resp.StatusCode, b, app.seen().Header.Get("Authorization"))
	}

	t.Run("no credentials", func(t *testing.T) {
		resp, b := h.do(t, "GET", base+"/", nil, "-auth")
		wantError(t, "GET without key", resp, b, 401, "unauthorized")
	})
	t.Run("bad ports", func(t *testing.T) {
		resp, b := h.do(t, "GET", "/sandboxes/"+sb.SandboxID+"/ports/49983/health", nil)
		wantError(t, "envd port", resp, b, 403, "port_forbidden")
		for _, p := range []string{"0", "65536", "x", "080"} {
			resp, b := h.do(t, "GET", "/sandboxes/"+sb.SandboxID+"/ports/"+p+"/", nil)
			wantError(t, "port "+p, resp, b, 400, "invalid_port")
		}
	})
	t.Run("nothing listening", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		resp, b := h.do(t, "GET", "/sandboxes/"+sb.SandboxID+"/ports/"+strconv.Itoa(port)+"/", nil)
		wantError(t, "closed port", resp, b, 502, "port_unreachable")
	})
	t.Run("unknown sandbox", func(t *testing.T) {
		resp, b := h.do(t, "GET", "/sandboxes/nope/ports/8080/", nil)
		wantError(t, "unknown sandbox", resp, b, 404, "sandbox_not_found")
	})
	t.Run("sse streams", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", h.srv.URL+base+"/sse", nil)
		req.Header.Set("X-API-Key", testKey)
		resp, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || line != "data: one\n" {
			t.Errorf("first SSE line = %q, %v; want it before the stream ends", line, err)
		}
	})
	t.Run("websocket", func(t *testing.T) {
		conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET %s/ws HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", base, testKey)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade = %v, %v; want 101", resp, err)
		}
		io.WriteString(conn, "ping-bytes")
		got := make([]byte, len("ping-bytes"))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping-bytes" {
			t.Errorf("echo through upgraded connection = %q, %v", got, err)
		}
	})
}

func TestPortTokens(t *testing.T) {
	h := newHarness(t)
	app := newAppServer(t)
	sb := h.create(t, nil)
	port := app.port()
	base := "/sandboxes/" + sb.SandboxID + "/ports/" + strconv.Itoa(port)

	resp, b := h.do(t, "POST", "/sandboxes/"+sb.SandboxID+"/port-tokens", map[string]any{"port": port, "ttl_seconds": 60})
	if resp.StatusCode != 201 {
		t.Fatalf("POST port-tokens = %d %s", resp.StatusCode, b)
	}
	tok := decode[struct {
		Token     string    `json:"token"`
		Port      int       `json:"port"`
		Path      string    `json:"path"`
		ExpiresAt time.Time `json:"expires_at"`
	}](t, "port-tokens", b)
	if tok.Port != port || time.Until(tok.ExpiresAt) > 61*time.Second || time.Until(tok.ExpiresAt) < 50*time.Second || !strings.HasPrefix(tok.Path, base+"/?"+PortTokenParam+"=") {
		t.Errorf("token answer = %+v, want port %d, expiry in ~60s and a path under %s", tok, port, base)
	}

	// Token in the URL: no key needed, the token is not forwarded, and a
	// cookie scoped to this port's path is set.
	resp, b = h.do(t, "GET", tok.Path+"&q=1", nil, "-auth")
	if resp.StatusCode != 200 || string(b) != "app GET /?q=1" {
		t.Fatalf("GET with token = %d %q, want the app with the token param removed", resp.StatusCode, b)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == PortTokenParam {
			cookie = c
		}
	}
	if cookie == nil || cookie.Path != base+"/" || !cookie.HttpOnly || cookie.Value != tok.Token {
		t.Fatalf("Set-Cookie = %q, want an HttpOnly %s cookie with Path %s/", resp.Header.Values("Set-Cookie"), PortTokenParam, base)
	}
	// The cookie alone works, and does not reach the app; other cookies do.
	resp, b = h.do(t, "GET", base+"/page", nil, "-auth", "Cookie", PortTokenParam+"="+tok.Token+"; app=1")
	if resp.StatusCode != 200 || app.seen().Header.Get("Cookie") != "app=1" {
		t.Errorf("GET with cookie = %d %q, app saw Cookie %q; want 200 and only app=1", resp.StatusCode, b, app.seen().Header.Get("Cookie"))
	}
	// The token opens only its own port and sandbox.
	other := h.create(t, nil)
	for _, path := range []string{
		"/sandboxes/" + sb.SandboxID + "/ports/" + strconv.Itoa(port+1) + "/?" + PortTokenParam + "=" + tok.Token,
		"/sandboxes/" + other.SandboxID + "/ports/" + strconv.Itoa(port) + "/?" + PortTokenParam + "=" + tok.Token,
		base + "/?" + PortTokenParam + "=" + tok.Token + "x",
	} {
		resp, b := h.do(t, "GET", path, nil, "-auth")
		wantError(t, "GET "+path, resp, b, 401, "unauthorized")
	}
	// Expired.
	target, _ := h.m.Envd(t.Context(), sb.SandboxID)
	expired := h.api.portTokens.Sign(sb.SandboxID, port, target.Token, time.Now().Add(-time.Second))
	resp, b = h.do(t, "GET", base+"/?"+PortTokenParam+"="+expired, nil, "-auth")
	wantError(t, "expired token", resp, b, 401, "unauthorized")
	if !strings.Contains(string(b), "expired") {
		t.Errorf("expired token message = %s, want it to say so", b)
	}
	// Bad token requests.
	for _, body := range []map[string]any{{"port": 49983}, {"port": 0}, {"port": port, "ttl_seconds": 86401}, {"port": port, "ttl_seconds": -1}} {
		resp, b := h.do(t, "POST", "/sandboxes/"+sb.SandboxID+"/port-tokens", body)
		if resp.StatusCode != 400 && resp.StatusCode != 403 {
			t.Errorf("POST port-tokens %v = %d %s, want 400/403", body, resp.StatusCode, b)
		}
	}
	resp, b = h.do(t, "POST", "/sandboxes/"+sb.SandboxID+"/port-tokens", map[string]any{"port": port}, "-auth")
	wantError(t, "token without key", resp, b, 401, "unauthorized")

	// Killing the sandbox revokes its tokens.
	if resp, b := h.do(t, "DELETE", "/sandboxes/"+sb.SandboxID, nil); resp.StatusCode != 204 && resp.StatusCode != 200 {
		t.Fatalf("kill = %d %s", resp.StatusCode, b)
	}
	resp, b = h.do(t, "GET", tok.Path, nil, "-auth")
	if resp.StatusCode != 410 && resp.StatusCode != 404 {
		t.Errorf("token after kill = %d %s, want 410/404", resp.StatusCode, b)
	}
	resp, b = h.do(t, "GET", base+"/", nil)
	if resp.StatusCode != 410 && resp.StatusCode != 404 {
		t.Errorf("key after kill = %d %s, want 410/404", resp.StatusCode, b)
	}
}

// TestPortProxyHTTP2: a client speaking HTTP/2 to the API (TLS, h2) gets
// the app's answer and a streamed SSE event through the port URL.
func TestPortProxyHTTP2(t *testing.T) {
	h := newHarness(t)
	app := newAppServer(t)
	sb := h.create(t, nil)
	srv := httptest.NewUnstartedServer(h.api)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	base := srv.URL + "/sandboxes/" + sb.SandboxID + "/ports/" + strconv.Itoa(app.port())

	req, _ := http.NewRequestWithContext(t.Context(), "GET", base+"/h2?x=1", nil)
	req.Header.Set("X-API-Key", testKey)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(b) != "app GET /h2?x=1" {
		t.Fatalf("over h2: %s %d %q, want HTTP/2 200 from the app", resp.Proto, resp.StatusCode, b)
	}

	req, _ = http.NewRequestWithContext(t.Context(), "GET", base+"/sse", nil)
	req.Header.Set("X-API-Key", testKey)
	resp, err = srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if resp.ProtoMajor != 2 || err != nil || line != "data: one\n" {
		t.Errorf("SSE over h2: %s, first line %q, %v; want the event while the stream stays open", resp.Proto, line, err)
	}
}
