package egress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/network"
)

// These tests run the whole proxy over loopback without root: the
// original destination comes from a fake (there is no NAT), names resolve
// through a map, and Blocked is empty so 127.0.0.1 upstreams are dialable.

type mapResolver struct {
	mu sync.Mutex
	m  map[string][]netip.Addr
	n  atomic.Int64 // lookups
}

func (r *mapResolver) set(name string, addrs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string][]netip.Addr{}
	}
	r.m[name] = nil
	for _, a := range addrs {
		r.m[name] = append(r.m[name], netip.MustParseAddr(a))
	}
}

func (r *mapResolver) Resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	r.n.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, ok := r.m[host]; ok {
		return a, nil
	}
	return nil, fmt.Errorf("%s: %w", host, ErrNotFound)
}

// upstream records the requests an httptest server got.
type upstream struct {
	srv   *httptest.Server
	mu    sync.Mutex
	hosts []string
	port  uint16
}

func newUpstream(t *testing.T, tlsOn bool) *upstream {
	u := &upstream{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.hosts = append(u.hosts, r.Host)
		u.mu.Unlock()
		io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "hello %s", r.Host)
	})
	if tlsOn {
		u.srv = httptest.NewTLSServer(h)
	} else {
		u.srv = httptest.NewServer(h)
	}
	t.Cleanup(u.srv.Close)
	u.port = netip.MustParseAddrPort(u.srv.Listener.Addr().String()).Port()
	return u
}

func (u *upstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.hosts...)
}

type harness struct {
	dialMu sync.Mutex
	dialed []string // every upstream dial
	p      *Proxy
	addr   string
	res    *mapResolver
	dst    atomic.Pointer[netip.AddrPort]
	events chan Event
}

var loopback = netip.MustParseAddr("127.0.0.1")

func newHarness(t testing.TB, cfg Config, pol network.Parsed) *harness {
	t.Helper()
	h := &harness{res: &mapResolver{}, events: make(chan Event, 100)}
	if cfg.Resolver == nil {
		cfg.Resolver = h.res
	}
	if cfg.Blocked == nil {
		cfg.Blocked = []netip.Prefix{}
		cfg.DialLocal = true
	}
	cfg.Events = func(ev Event) { h.events <- ev }
	cfg.Logf = t.Logf
	if cfg.Dial == nil {
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			h.dialMu.Lock()
			h.dialed = append(h.dialed, addr)
			h.dialMu.Unlock()
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	p.origDst = func(*net.TCPConn) (netip.AddrPort, error) {
		if d := h.dst.Load(); d != nil {
			return *d, nil
		}
		return netip.AddrPort{}, errors.New("no fake destination")
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.p, h.addr = p, ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Errorf("Serve returned %v, want ErrClosed", err)
		}
	})
	if err := p.Register(loopback, "sbx-1", pol); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) setDst(s string) {
	d := netip.MustParseAddrPort(s)
	h.dst.Store(&d)
}

func (h *harness) event(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-h.events:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
		return Event{}
	}
}

func (h *harness) dial(t testing.TB) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp4", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

// wantResetEarly expects a connection the proxy resets without reading
// (unknown source, port): the reset can race the client's connect.
func (h *harness) wantResetEarly(t *testing.T, msg []byte) {
	t.Helper()
	c, err := net.Dial("tcp4", h.addr)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("dial: %v, want success or reset", err)
		}
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	wantReset(t, c, msg)
}

// wantReset writes msg and expects the connection to be reset.
func wantReset(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	var werr error
	if len(msg) > 0 {
		_, werr = c.Write(msg)
	}
	_, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(werr, syscall.ECONNRESET) {
		t.Errorf("after %.40q: write %v, read %v; want connection reset", msg, werr, err)
	}
}

func get(host string) []byte {
	return []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
}

func readResponse(t *testing.T, c net.Conn) string {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return string(b)
}

var testPolicy = network.Policy{AllowOut: []string{"api.example.test", "*.allowed.test", "example.com"}, DenyOut: []string{"0.0.0.0/0"}}

func TestProxyHTTP(t *testing.T) {
	up := newUpstream(t, false)
	h := newHarness(t, Config{Ports: []uint16{up.port}}, mustParse(t, testPolicy.AllowOut, testPolicy.DenyOut))
	h.res.set("api.example.test", "127.0.0.1")
	h.res.set("evil.test", "127.0.0.1")
	dst := fmt.Sprintf("127.0.0.2:%d", up.port)
	h.setDst(dst)

	t.Run("allowed", func(t *testing.T) {
		c := h.dial(t)
		c.Write(get("api.example.test"))
		if got := readResponse(t, c); got != "hello api.example.test" {
			t.Errorf("body %q", got)
		}
		c.Close()
		ev := h.event(t)
		want := Event{SandboxID: "sbx-1", Proto: ProtoHTTP, Host: "api.example.test", Decision: DecisionAllow, Rule: "api.example.test",
			Dst: netip.MustParseAddrPort(dst), Upstream: netip.AddrPortFrom(loopback, up.port)}
		if ev.SandboxID != want.SandboxID || ev.Proto != want.Proto || ev.Host != want.Host || ev.Decision != want.Decision ||
			ev.Rule != want.Rule || ev.Dst != want.Dst || ev.Upstream != want.Upstream || ev.BytesUp != int64(len(get("api.example.test"))) ||
			ev.BytesDown == 0 || ev.Src.Addr() != loopback || ev.Duration <= 0 {
			t.Errorf("event %+v, want %+v with bytes and duration", ev, want)
		}
	})
	t.Run("blocked name is reset and never dialed", func(t *testing.T) {
		before, lookups := len(up.requests()), h.res.n.Load()
		wantReset(t, h.dial(t), get("evil.test"))
		ev := h.event(t)
		if ev.Decision != DecisionBlock || ev.Host != "evil.test" || ev.Reason != "domain not allowed" || ev.Rule != "0.0.0.0/0" {
			t.Errorf("event %+v, want block of evil.test by 0.0.0.0/0", ev)
		}
		if got := len(up.requests()); got != before || h.res.n.Load() != lookups {
			t.Errorf("upstream got %d requests (had %d), resolver %d lookups (had %d): blocked name reached out", got, before, h.res.n.Load(), lookups)
		}
	})
	t.Run("keep-alive second request stays on the allowed upstream", func(t *testing.T) {
		c := h.dial(t)
		br := bufio.NewReader(c)
		for i := range 2 {
			c.Write(get("api.example.test"))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		c.Close()
		h.event(t)
	})
	t.Run("malformed and nameless", func(t *testing.T) {
		for _, tc := range []struct{ in, reason string }{
			{"GET / HTTP/1.0\r\n\r\n", "no server name"},
			{"GET / HTTP/1.1\r\nHost: a.allowed.test\r\nHost: evil.test\r\n\r\n", "malformed ClientHello or request"},
			{"\x00\x00garbage", "malformed ClientHello or request"},
			{"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "IP address as server name"},
		} {
			start := time.Now()
			wantReset(t, h.dial(t), []byte(tc.in))
			if ev := h.event(t); ev.Decision != DecisionBlock || ev.Reason != tc.reason {
				t.Errorf("%q: event %+v, want block %q", tc.in, ev, tc.reason)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("%q: reset after %v, want at once", tc.in, d)
			}
		}
	})
	t.Run("header too large", func(t *testing.T) {
		wantReset(t, h.dial(t), []byte("GET / HTTP/1.1\r\nX: "+strings.Repeat("a", DefaultMaxPeek)+"\r\nHost: api.example.test\r\n\r\n"))
		if ev := h.event(t); ev.Reason != "ClientHello or request header too large" {
			t.Errorf("event %+v, want too large", ev)
		}
	})
	t.Run("port not served", func(t *testing.T) {
		h.setDst("127.0.0.2:22")
		defer h.setDst(dst)
		h.wantResetEarly(t, get("api.example.test"))
		if ev := h.event(t); ev.Reason != "port not served" {
			t.Errorf("event %+v, want port not served", ev)
		}
	})
	t.Run("unknown source", func(t *testing.T) {
		h.p.Unregister(loopback)
		defer h.p.Register(loopback, "sbx-1", mustParse(t, testPolicy.AllowOut, testPolicy.DenyOut))
		before := len(up.requests())
		h.wantResetEarly(t, get("api.example.test"))
		if ev := h.event(t); ev.Reason != "unknown source" || ev.SandboxID != "" || ev.Decision != DecisionBlock {
			t.Errorf("event %+v, want unknown source block", ev)
		}
		if len(up.requests()) != before {
			t.Error("unregistered source reached the upstream")
		}
	})
}

func TestProxyTLS(t *testing.T) {
	up := newUpstream(t, true)
	h := newHarness(t, Config{Ports: []uint16{up.port}}, mustParse(t, testPolicy.AllowOut, testPolicy.DenyOut))
	h.res.set("example.com", "127.0.0.1")
	pool := x509.NewCertPool()
	pool.AddCert(up.srv.Certificate())

	handshake := func(t *testing.T, c net.Conn, sni string) error {
		tc := tls.Client(c, &tls.Config{ServerName: sni, RootCAs: pool})
		if err := tc.Handshake(); err != nil {
			return err
		}
		tc.Write(get(sni))
		if got := readResponse(t, tc); got != "hello "+sni {
			t.Errorf("body %q", got)
		}
		return nil
	}
	t.Run("forged destination goes to the resolved address", func(t *testing.T) {
		dst := fmt.Sprintf("127.0.0.3:%d", up.port) // the client "dialed" 127.0.0.3
		h.setDst(dst)
		c := h.dial(t)
		if err := handshake(t, c, "example.com"); err != nil {
			t.Fatalf("TLS through proxy: %v", err)
		}
		c.Close()
		h.dialMu.Lock()
		if dialed := h.dialed; len(dialed) != 1 || dialed[0] != fmt.Sprintf("127.0.0.1:%d", up.port) {
			t.Errorf("upstream dials %v, want only the resolved 127.0.0.1:%d", dialed, up.port)
		}
		h.dialMu.Unlock()
		ev := h.event(t)
		if ev.Proto != ProtoTLS || ev.Host != "example.com" || ev.Decision != DecisionAllow || ev.Upstream.Addr() != loopback || ev.Dst.String() != dst {
			t.Errorf("event %+v, want TLS example.com to 127.0.0.1", ev)
		}
	})
	t.Run("denied sni", func(t *testing.T) {
		err := handshake(t, h.dial(t), "evil.test")
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("handshake with SNI evil.test: %v, want reset", err)
		}
		if ev := h.event(t); ev.Decision != DecisionBlock || ev.Host != "evil.test" || ev.Proto != ProtoTLS {
			t.Errorf("event %+v, want TLS block", ev)
		}
	})
	t.Run("no sni", func(t *testing.T) {
		c := h.dial(t)
		err := tls.Client(c, &tls.Config{InsecureSkipVerify: true}).Handshake()
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("handshake without SNI: %v, want reset", err)
		}
		if ev := h.event(t); ev.Reason != "no server name" {
			t.Errorf("event %+v, want no server name", ev)
		}
	})
}

func TestProxyRefusedAddresses(t *testing.T) {
	h := newHarness(t, Config{Blocked: DefaultBlocked(), SandboxCIDR: netip.MustParsePrefix("10.200.0.0/16")},
		mustParse(t, []string{"*.allowed.test"}, []string{"203.0.113.0/24"}))
	h.setDst("198.51.100.10:80")
	dialed := make(chan string, 10)
	h.p.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialed <- addr
		return nil, errors.New("test dial refused")
	}
	for name, addr := range map[string]string{
		"meta.allowed.test":  "169.254.169.254",
		"ten.allowed.test":   "10.1.2.3",
		"slot.allowed.test":  "10.200.0.6",
		"local.allowed.test": "127.0.0.1",
		"deny.allowed.test":  "203.0.113.10",
		"v6.allowed.test":    "fd00:ec2::254",
	} {
		h.res.set(name, addr)
		wantReset(t, h.dial(t), get(name))
		if ev := h.event(t); ev.Decision != DecisionBlock || ev.Reason != "no permitted address for the name" {
			t.Errorf("%s -> %s: event %+v, want no permitted address", name, addr, ev)
		}
	}
	h.res.set("ok.allowed.test", "198.51.100.10")
	wantReset(t, h.dial(t), get("ok.allowed.test"))
	if ev := h.event(t); ev.Decision != DecisionError || ev.Reason != "upstream unreachable" {
		t.Errorf("event %+v, want error (dial refused)", ev)
	}
	wantReset(t, h.dial(t), get("nx.allowed.test"))
	if ev := h.event(t); ev.Decision != DecisionError || ev.Reason != "name resolution failed" {
		t.Errorf("event %+v, want error (NXDOMAIN)", ev)
	}
	close(dialed)
	var got []string
	for a := range dialed {
		got = append(got, a)
	}
	if len(got) != 1 || got[0] != "198.51.100.10:80" {
		t.Errorf("dialed %v, want only 198.51.100.10:80", got)
	}
}

// echoUpstream accepts connections, echoes everything and half-closes.
func echoUpstream(t *testing.T) uint16 {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String()).Port()
}

func TestProxySpliceHalfCloseAndBytes(t *testing.T) {
	port := echoUpstream(t)
	h := newHarness(t, Config{Ports: []uint16{port}}, mustParse(t, testPolicy.AllowOut, nil))
	h.res.set("api.example.test", "127.0.0.1")
	h.setDst(fmt.Sprintf("198.51.100.10:%d", port))
	c := h.dial(t)
	payload := make([]byte, 8<<20)
	rand.Read(payload)
	msg := append(get("api.example.test"), payload...)
	go func() {
		c.Write(msg)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if sha256.Sum256(got) != sha256.Sum256(msg) {
		t.Fatalf("echo through proxy: got %d bytes, want %d identical", len(got), len(msg))
	}
	ev := h.event(t)
	if ev.BytesUp != int64(len(msg)) || ev.BytesDown != int64(len(msg)) {
		t.Errorf("event bytes up %d down %d, want %d each", ev.BytesUp, ev.BytesDown, len(msg))
	}
}

func TestProxyIdleTimeout(t *testing.T) {
	port := echoUpstream(t)
	h := newHarness(t, Config{Ports: []uint16{port}, IdleTimeout: 300 * time.Millisecond}, mustParse(t, testPolicy.AllowOut, nil))
	h.res.set("api.example.test", "127.0.0.1")
	h.setDst(fmt.Sprintf("198.51.100.10:%d", port))
	c := h.dial(t)
	c.Write(get("api.example.test"))
	// Activity in short bursts keeps it open past the idle timeout...
	buf := make([]byte, 64<<10)
	for range 6 {
		time.Sleep(100 * time.Millisecond)
		c.Write([]byte("x"))
	}
	n, _ := io.ReadAtLeast(c, buf, len(get("api.example.test"))+6)
	if n < len(get("api.example.test"))+6 {
		t.Fatalf("echo %d bytes", n)
	}
	// ...silence closes it.
	start := time.Now()
	_, err := io.ReadAll(c)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("idle connection closed after %v (err %v), want ~300ms", d, err)
	}
	h.event(t)
}

func TestProxyUpdateCutsConnections(t *testing.T) {
	up := newUpstream(t, false)
	h := newHarness(t, Config{Ports: []uint16{up.port}}, mustParse(t, testPolicy.AllowOut, testPolicy.DenyOut))
	h.res.set("api.example.test", "127.0.0.1")
	h.res.set("a.allowed.test", "127.0.0.1")
	h.setDst(fmt.Sprintf("127.0.0.2:%d", up.port))
	keep, drop := h.dial(t), h.dial(t)
	keep.Write(get("a.allowed.test"))
	readResponse(t, keep)
	drop.Write(get("api.example.test"))
	readResponse(t, drop)

	if err := h.p.Update(loopback, mustParse(t, []string{"*.allowed.test"}, []string{"*"})); err != nil {
		t.Fatal(err)
	}
	ev := h.event(t)
	if ev.Host != "api.example.test" || !strings.Contains(ev.Reason, "cut: policy update") {
		t.Errorf("event %+v, want api.example.test cut by the update", ev)
	}
	if _, err := drop.Read(make([]byte, 1)); err == nil {
		t.Error("connection to the newly denied name still open")
	}
	keep.Write(get("a.allowed.test"))
	if got := readResponse(t, keep); got != "hello a.allowed.test" {
		t.Errorf("still-allowed connection: %q", got)
	}
	wantReset(t, h.dial(t), get("api.example.test"))
	h.event(t)
	if err := h.p.Update(netip.MustParseAddr("127.9.9.9"), network.Parsed{}); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("Update(unregistered) = %v, want ErrNotRegistered", err)
	}
	if err := h.p.Register(loopback, "other", network.Parsed{}); !errors.Is(err, ErrRegistered) {
		t.Errorf("Register(twice) = %v, want ErrRegistered", err)
	}
}

func TestProxyPeekTimeoutAndClose(t *testing.T) {
	h := newHarness(t, Config{PeekTimeout: 200 * time.Millisecond}, mustParse(t, testPolicy.AllowOut, nil))
	h.setDst("198.51.100.10:80")
	start := time.Now()
	wantReset(t, h.dial(t), nil)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("silent client reset after %v, want ~200ms", d)
	}
	if ev := h.event(t); ev.Reason != "timeout waiting for ClientHello or request" {
		t.Errorf("event %+v, want peek timeout", ev)
	}

	// Close resets connections still waiting and returns once they are done.
	h2 := newHarness(t, Config{}, mustParse(t, testPolicy.AllowOut, nil))
	h2.setDst("198.51.100.10:80")
	c := h2.dial(t)
	c.Write([]byte("GET / HTT")) // incomplete: the handler waits
	time.Sleep(100 * time.Millisecond)
	if err := h2.p.Close(); err != nil {
		t.Fatal(err)
	}
	wantReset(t, c, nil)
	if ev := h2.event(t); ev.Decision != DecisionBlock {
		t.Errorf("event %+v", ev)
	}
	if _, err := net.Dial("tcp4", h2.addr); err == nil {
		t.Error("proxy still accepting after Close")
	}
}

type testInterceptor struct {
	take bool
	seen chan *Conn
}

func (ic *testInterceptor) Intercept(ctx context.Context, c *Conn) bool {
	ic.seen <- c
	if !ic.take {
		return false
	}
	defer c.Client.Close()
	req, err := http.ReadRequest(bufio.NewReader(c.Client))
	if err != nil {
		return true
	}
	up, err := c.Dial(ctx)
	if err != nil {
		return true
	}
	defer up.Close()
	req.Header.Set("X-Intercepted", "1")
	req.Write(up)
	resp, err := http.ReadResponse(bufio.NewReader(up), req)
	if err != nil {
		return true
	}
	resp.Header.Set("X-Intercepted", "1")
	resp.Write(c.Client)
	return true
}

func TestProxyInterceptor(t *testing.T) {
	up := newUpstream(t, false)
	for _, take := range []bool{false, true} {
		t.Run(fmt.Sprintf("take=%v", take), func(t *testing.T) {
			ic := &testInterceptor{take: take, seen: make(chan *Conn, 1)}
			h := newHarness(t, Config{Ports: []uint16{up.port}, Interceptor: ic}, mustParse(t, testPolicy.AllowOut, testPolicy.DenyOut))
			h.res.set("api.example.test", "127.0.0.1")
			h.setDst(fmt.Sprintf("127.0.0.2:%d", up.port))
			c := h.dial(t)
			c.Write(get("api.example.test"))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.Header.Get("X-Intercepted") == "1"; got != take {
				t.Errorf("intercepted response %v, want %v", got, take)
			}
			meta := <-ic.seen
			if meta.Host != "api.example.test" || meta.SandboxID != "sbx-1" || meta.Proto != ProtoHTTP || meta.Rule != "api.example.test" {
				t.Errorf("interceptor saw %+v", meta)
			}
			c.Close()
			ev := h.event(t)
			if ev.Intercepted != take || ev.Decision != DecisionAllow || ev.BytesUp == 0 || ev.BytesDown == 0 {
				t.Errorf("event %+v, want Intercepted=%v with bytes", ev, take)
			}
			if take && ev.Upstream.Addr() != loopback {
				t.Errorf("event upstream %v, want the interceptor's dial", ev.Upstream)
			}
		})
	}
	_ = bytes.Clone
}

func TestProxyStartAndLimits(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New(Config{}) succeeded without a resolver or DNS upstream")
	}
	if _, err := New(Config{DNSUpstream: "1.2.3.4"}); err == nil {
		t.Error("New accepted a DNS upstream without a port")
	}
	events := make(chan Event, 10)
	p, err := New(Config{Listen: "127.0.0.1:0", Resolver: &mapResolver{}, MaxConns: 2, Events: func(ev Event) { events <- ev }})
	if err != nil {
		t.Fatal(err)
	}
	p.origDst = func(*net.TCPConn) (netip.AddrPort, error) { return netip.MustParseAddrPort("198.51.100.10:80"), nil }
	ap, err := p.Start()
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if ap.Port() == 0 || ap.Addr() != loopback {
		t.Errorf("Start bound %v", ap)
	}
	p.Register(loopback, "sbx", network.Parsed{})
	var conns []net.Conn
	for range 2 { // two connections waiting in the peek: the limit
		c, err := net.Dial("tcp4", ap.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	time.Sleep(100 * time.Millisecond)
	c, err := net.Dial("tcp4", ap.String())
	if err == nil {
		c.SetDeadline(time.Now().Add(time.Second)) // well before the peek timeout
		wantReset(t, c, nil)
		c.Close()
	}
	if ev := <-events; ev.Reason != "too many connections" {
		t.Errorf("event %+v, want too many connections", ev)
	}
	p.Close()
	for _, c := range conns {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		wantReset(t, c, nil)
	}
	if _, err := p.Start(); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v, want ErrClosed", err)
	}
}

type waitInterceptor struct{ started, done chan struct{} }

func (ic *waitInterceptor) Intercept(ctx context.Context, c *Conn) bool {
	close(ic.started)
	<-ctx.Done()
	c.Client.Close()
	close(ic.done)
	return true
}

func TestProxyInterceptorCancelledByUpdate(t *testing.T) {
	ic := &waitInterceptor{started: make(chan struct{}), done: make(chan struct{})}
	h := newHarness(t, Config{Interceptor: ic}, mustParse(t, testPolicy.AllowOut, testPolicy.DenyOut))
	h.setDst("198.51.100.10:80")
	c := h.dial(t)
	c.Write(get("api.example.test"))
	select {
	case <-ic.started:
	case <-time.After(5 * time.Second):
		t.Fatal("interceptor not called")
	}
	if err := h.p.Update(loopback, mustParse(t, []string{"*.allowed.test"}, nil)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ic.done:
	case <-time.After(5 * time.Second):
		t.Fatal("interceptor's context not cancelled by a policy update blocking its name")
	}
	if ev := h.event(t); !ev.Intercepted {
		t.Errorf("event %+v", ev)
	}
}

func TestProxyRefusesThisHost(t *testing.T) {
	up := newUpstream(t, false)
	// Blocked is empty, but 127.0.0.1 is still this host.
	h := newHarness(t, Config{Blocked: []netip.Prefix{}, Ports: []uint16{up.port}}, mustParse(t, testPolicy.AllowOut, nil))
	h.res.set("api.example.test", "127.0.0.1")
	h.setDst(fmt.Sprintf("198.51.100.10:%d", up.port))
	wantReset(t, h.dial(t), get("api.example.test"))
	if ev := h.event(t); ev.Decision != DecisionBlock || ev.Reason != "no permitted address for the name" {
		t.Errorf("event %+v, want block: resolves to this host", ev)
	}
	if got := up.requests(); len(got) != 0 {
		t.Errorf("upstream on this host got %v", got)
	}
}
