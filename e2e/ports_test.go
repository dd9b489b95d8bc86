package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// portApp is a web app run inside the sandbox with python3's standard
// library only: a plain HTTP endpoint that reports what it received, an
// SSE stream that holds its second event until /release is called, and a
// WebSocket echo (a minimal RFC 6455 server: text/binary frames echoed
// with an "echo:" prefix, close answered).
const portApp = `
import base64, hashlib, http.server, sys, threading
release = threading.Event()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    def log_message(self, *a): pass
    def reply(self, body, ctype="text/plain"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "app=1")
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.reply(b"posted:" + self.rfile.read(n))
    def do_GET(self):
        if self.path.startswith("/sse"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(b"data: first\n\n"); self.wfile.flush()
            release.wait(60)
            self.wfile.write(b"data: second\n\n"); self.wfile.flush()
            self.close_connection = True
        elif self.path.startswith("/release"):
            release.set(); self.reply(b"released")
        elif self.path.startswith("/ws"):
            self.ws()
        else:
            h = self.headers
            self.reply(("hello %s %s key=%s auth=%s cookie=%s prefix=%s" % (self.command, self.path,
                h.get("X-API-Key", ""), h.get("Authorization", ""), h.get("Cookie", ""), h.get("X-Forwarded-Prefix", ""))).encode())
    def ws(self):
        acc = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket"); self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", acc)
        self.end_headers(); self.wfile.flush()
        r = self.rfile
        while True:
            h = r.read(2)
            if len(h) < 2: return
            op, n = h[0] & 0x0f, h[1] & 0x7f
            if n == 126: n = int.from_bytes(r.read(2), "big")
            elif n == 127: n = int.from_bytes(r.read(8), "big")
            mask = r.read(4) if h[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(r.read(n)))
            if op == 8:
                self.wfile.write(b"\x88\x00"); self.wfile.flush(); self.close_connection = True; return
            out = b"echo:" + data
            hdr = bytes([0x80 | op]) + (bytes([len(out)]) if len(out) < 126 else bytes([126]) + len(out).to_bytes(2, "big"))
            self.wfile.write(hdr + out); self.wfile.flush()
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
`

// TestPorts: an HTTP server, an SSE stream and a WebSocket echo inside a
// sandbox all work through /sandboxes/{id}/ports/{port}/..., with the API
// key and with a signed port token (query and cookie); other sandboxes,
// other teams, envd's port and killed sandboxes are refused.
func TestPorts(t *testing.T) {
	s := startServer(t)
	id := s.create(map[string]any{"timeout": 300, "network": map[string]any{"deny_out": []string{"0.0.0.0/0"}}})
	other := s.create(map[string]any{"template": "base", "timeout": 300})
	s.must(200, "PUT", "/sandboxes/"+id+"/files/raw?path=/tmp/app.py", portApp, nil)
	s.must(200, "POST", "/sandboxes/"+id+"/commands", map[string]any{"cmd": "python3 /tmp/app.py 8000", "background": true, "timeout": 0}, nil)
	base := "/sandboxes/" + id + "/ports/8000"

	deadline := time.Now().Add(30 * time.Second)
	for {
		code, b := s.do("GET", base+"/hello", nil)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the app never answered through the port URL: last %d %s", code, b)
		}
		time.Sleep(200 * time.Millisecond)
	}

	t.Run("http with key", func(t *testing.T) {
		code, b := s.do("GET", base+"/a/b?x=1&y=%20", nil, "Cookie", "mine=2")
		want := "hello GET /a/b?x=1&y=%20 key= auth= cookie=mine=2 prefix=" + base
		if code != 200 || string(b) != want {
			t.Errorf("GET = %d %q, want 200 %q (the key never reaches the app)", code, b, want)
		}
		code, b = s.do("POST", base+"/submit", "payload", "Content-Type", "text/plain")
		if code != 200 || string(b) != "posted:payload" {
			t.Errorf("POST = %d %q, want posted:payload", code, b)
		}
		resp := s.raw("GET", base+"/", nil)
		if sc := resp.Header.Values("Set-Cookie"); len(sc) != 0 {
			t.Errorf("the app's Set-Cookie reached the client: %q", sc)
		}
		code, b = s.do("GET", base+"/", nil, "X-API-Key", "")
		if code != 401 {
			t.Errorf("GET without key or token = %d %s, want 401", code, b)
		}
	})

	var tok struct {
		Token string `json:"token"`
		Path  string `json:"path"`
	}
	s.must(201, "POST", "/sandboxes/"+id+"/port-tokens", map[string]any{"port": 8000, "ttl_seconds": 600}, &tok)

	t.Run("http with token", func(t *testing.T) {
		resp := s.raw("GET", tok.Path+"&q=1", nil, "X-API-Key", "")
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := "hello GET /?q=1 key= auth= cookie= prefix=" + base
		if resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("GET with token = %d %q, want %q (token not forwarded)", resp.StatusCode, b, want)
		}
		var cookie *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == "declaw_port_token" {
				cookie = c
			}
		}
		if cookie == nil || cookie.Path != base+"/" || !cookie.HttpOnly {
			t.Fatalf("Set-Cookie = %q, want the token as an HttpOnly cookie for %s/", resp.Header.Values("Set-Cookie"), base)
		}
		code, b := s.do("GET", base+"/page", nil, "X-API-Key", "", "Cookie", "declaw_port_token="+tok.Token+"; mine=3")
		if code != 200 || !strings.HasSuffix(strings.SplitN(string(b), " prefix=", 2)[0], "cookie=mine=3") {
			t.Errorf("GET with the cookie = %d %q, want 200 and only the app's cookie forwarded", code, b)
		}
		// The token opens its own sandbox and port only.
		for _, p := range []string{
			"/sandboxes/" + other + "/ports/8000/?declaw_port_token=" + tok.Token,
			"/sandboxes/" + id + "/ports/8001/?declaw_port_token=" + tok.Token,
		} {
			if code, b := s.do("GET", p, nil, "X-API-Key", ""); code != 401 {
				t.Errorf("GET %s = %d %s, want 401", p, code, b)
			}
		}
	})

	t.Run("sse streams", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", s.base+base+"/sse?declaw_port_token="+tok.Token, nil)
		resp, err := s.client.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /sse: %v %v", resp, err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		// The second event is only sent after /release: if the proxy
		// buffered, the first would never arrive and this would time out.
		if line, err := br.ReadString('\n'); err != nil || line != "data: first\n" {
			t.Fatalf("first SSE line = %q, %v", line, err)
		}
		s.must(200, "GET", base+"/release", nil, nil)
		br.ReadString('\n')
		if line, err := br.ReadString('\n'); err != nil || line != "data: second\n" {
			t.Errorf("second SSE line = %q, %v", line, err)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		for _, auth := range []struct{ query, header string }{
			{"", "X-API-Key: " + s.key + "\r\n"},
			{"?declaw_port_token=" + tok.Token, ""},
		} {
			if got, err := s.wsEcho(base+"/ws"+auth.query, auth.header, "hi there"); err != nil || got != "echo:hi there" {
				t.Errorf("WebSocket echo (query %q) = %q, %v; want echo:hi there", auth.query, got, err)
			}
		}
	})

	t.Run("refused", func(t *testing.T) {
		for _, c := range []struct {
			path string
			want int
		}{
			{"/sandboxes/" + id + "/ports/49983/health", 403},
			{"/sandboxes/" + id + "/ports/0/", 400},
			{"/sandboxes/" + id + "/ports/8001/", 502}, // nothing listens there
			{"/sandboxes/sbx-nope/ports/8000/", 404},
		} {
			if code, b := s.do("GET", c.path, nil); code != c.want {
				t.Errorf("GET %s = %d %s, want %d", c.path, code, b, c.want)
			}
		}
		// Another team's key finds no such sandbox.
		s.mustCLI("", "teams", "create", "ports-other")
		r := s.cli("", "--json", "keys", "create", "--team", "ports-other", "--name", "k")
		var k struct {
			Key string `json:"key"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &k) != nil {
			t.Fatalf("keys create: %d %s %s", r.code, r.stdout, r.stderr)
		}
		if code, b := s.do("GET", base+"/hello", nil, "X-API-Key", k.Key); code != 404 {
			t.Errorf("another team's key on the port URL = %d %s, want 404", code, b)
		}
		if code, b := s.do("POST", "/sandboxes/"+id+"/port-tokens", map[string]any{"port": 8000}, "X-API-Key", k.Key); code != 404 {
			t.Errorf("another team's key asking a port token = %d %s, want 404", code, b)
		}
	})

	t.Run("cli port-forward", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cmd := s.net.Host.Command(ctx, s.declaw, "sandbox", "port-forward", "--json", id, "8000", "0")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "DECLAW_API_KEY=" + s.key, "DECLAW_DOMAIN=127.0.0.1:8080"}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
		var info struct {
			Local string `json:"local"`
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || json.Unmarshal([]byte(line), &info) != nil || info.Local == "" {
			t.Fatalf("port-forward printed %q (%v), stderr %q", line, err, stderr.String())
		}
		resp, err := s.client.Get(info.Local + "/fwd?z=9")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "hello GET /fwd?z=9 key= "; resp.StatusCode != 200 || !strings.HasPrefix(string(b), want) {
			t.Errorf("GET through port-forward = %d %q, want prefix %q", resp.StatusCode, b, want)
		}
	})

	t.Run("python sdk", func(t *testing.T) {
		script := `
import os, sys, urllib.request
from declaw import Sandbox
sbx = Sandbox.connect(sys.argv[1])
host = sbx.get_host(8000)
assert host.endswith("/sandboxes/%s/ports/8000" % sys.argv[1]), host
assert sbx.get_mcp_url() == sbx.get_host(50005) + "/mcp"
req = urllib.request.Request(host + "/sdk", headers={"X-API-Key": os.environ["DECLAW_API_KEY"]})
body = urllib.request.urlopen(req).read().decode()
assert body.startswith("hello GET /sdk key= "), body
url = sbx.get_signed_host(8000, ttl_seconds=120)
body = urllib.request.urlopen(url).read().decode()
assert body.startswith("hello GET / key= "), body
print("ok")
`
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := s.pythonCmd(ctx, script)
		cmd.Args = append(cmd.Args, id)
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "ok") {
			t.Errorf("python SDK: %v\n%s", err, out)
		}
	})

	t.Run("killed sandbox refused", func(t *testing.T) {
		if code, b := s.do("DELETE", "/sandboxes/"+id, nil); code != 200 && code != 204 {
			t.Fatalf("kill = %d %s", code, b)
		}
		for _, c := range []struct{ path, key string }{{tok.Path, ""}, {base + "/hello", s.key}} {
			if code, b := s.do("GET", c.path, nil, "X-API-Key", c.key); code != 410 && code != 404 {
				t.Errorf("GET %s after kill = %d %s, want 410", c.path, code, b)
			}
		}
	})
}

// raw sends a request with the key and returns the response (caller closes).
func (s *server) raw(method, path string, body io.Reader, hdr ...string) *http.Response {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, body)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("X-API-Key", s.key)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// wsEcho opens a WebSocket to path on the server (headers: extra raw
// header lines), sends msg as one masked text frame and returns the text
// of the first frame that comes back.
func (s *server) wsEcho(path, headers, msg string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := s.net.Host.DialContext(ctx, "tcp", "127.0.0.1:8080")
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	nonce := make([]byte, 16)
	rand.Read(nonce)
	key := base64.StdEncoding.EncodeToString(nonce)
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n%sConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", path, headers, key)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 101 {
		b, _ := io.ReadAll(resp.Body)
		return "", fmt.Errorf("upgrade answered %d %s", resp.StatusCode, b)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != base64.StdEncoding.EncodeToString(sum[:]) {
		return "", fmt.Errorf("Sec-WebSocket-Accept = %q", got)
	}
	mask := []byte{1, 2, 3, 4}
	frame := []byte{0x81, 0x80 | byte(len(msg))}
	frame = append(frame, mask...)
	for i := range len(msg) {
		frame = append(frame, msg[i]^mask[i%4])
	}
	if _, err := conn.Write(frame); err != nil {
		return "", err
	}
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return "", err
	}
	if hdr[0] != 0x81 || hdr[1]&0x80 != 0 || hdr[1] >= 126 {
		return "", fmt.Errorf("unexpected frame header % x", hdr)
	}
	out := make([]byte, hdr[1])
	if _, err := io.ReadFull(br, out); err != nil {
		return "", err
	}
	conn.Write([]byte{0x88, 0x80, 0, 0, 0, 0}) // close
	return string(out), nil
}

// BenchmarkPortProxy: a GET through /sandboxes/{id}/ports/8000/ vs the
// same GET sent straight to the sandbox's address from the server's own
// network namespace (the baseline), interleaved, keep-alive on both.
// Reports both p50s and their ratio (proxy-vs-direct-p50).
func BenchmarkPortProxy(b *testing.B) {
	s := startServer(b)
	var out struct {
		SandboxID string `json:"sandbox_id"`
		GuestIP   string `json:"guest_ip"`
	}
	s.must(201, "POST", "/sandboxes", map[string]any{"template": "python", "timeout": 600}, &out)
	id := out.SandboxID
	b.Cleanup(func() { s.do("DELETE", "/sandboxes/"+id, nil) })
	s.must(200, "PUT", "/sandboxes/"+id+"/files/raw?path=/tmp/app.py", portApp, nil)
	s.must(200, "POST", "/sandboxes/"+id+"/commands", map[string]any{"cmd": "python3 /tmp/app.py 8000", "background": true, "timeout": 0}, nil)
	if out.GuestIP == "" {
		b.Fatal("create answered no guest_ip")
	}
	get := func(url string, key bool) time.Duration {
		req, _ := http.NewRequest("GET", url, nil)
		if key {
			req.Header.Set("X-API-Key", s.key)
		}
		start := time.Now()
		resp, err := s.client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("GET %s: %d", url, resp.StatusCode)
		}
		return time.Since(start)
	}
	proxied := s.base + "/sandboxes/" + id + "/ports/8000/bench"
	direct := "http://" + net.JoinHostPort(out.GuestIP, "8000") + "/bench"
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _ := s.do("GET", "/sandboxes/"+id+"/ports/8000/", nil)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the app never answered: %d", code)
		}
		time.Sleep(200 * time.Millisecond)
	}
	get(direct, false) // warm both connections
	get(proxied, true)
	var viaProxy, viaDirect latencies
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		viaProxy = append(viaProxy, get(proxied, true))
		viaDirect = append(viaDirect, get(direct, false))
	}
	b.StopTimer()
	viaProxy.report(b, "proxy-") // sorts
	viaDirect.report(b, "direct-")
	mid := (b.N - 1) / 2 // the index report's p50 uses
	if p := viaDirect[mid]; p > 0 {
		b.ReportMetric(float64(viaProxy[mid])/float64(p), "proxy-vs-direct-p50")
	}
}
