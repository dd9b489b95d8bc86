package egress

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/network"
	"github.com/declaw/declaw/internal/testenv"
)

// realUplinkNet is this machine's real uplink; the proxy under test refuses
// it on top of the defaults, so no test mistake can dial it.
var realUplinkNet = netip.MustParsePrefix("192.0.2.0/24")

type e2e struct {
	n      *testenv.Net
	p      *Proxy
	m      *network.Manager
	slot   *network.Slot
	sb     testenv.Netns // the slot's namespace
	events chan Event
}

// newE2E builds test-host + uplink, runs the proxy in test-host (its
// listener, upstream dials and DNS queries all in that namespace), a
// network.Manager redirecting to it, and one slot with a domain policy.
func newE2E(t *testing.T) *e2e { return newE2EWith(t, nil) }

// newE2EWith is newE2E with a hook to adjust the proxy's Config.
func newE2EWith(t *testing.T, adjust func(*testenv.Net, *Config)) *e2e {
	t.Helper()
	n := testenv.NewNet(t)
	e := &e2e{n: n, events: make(chan Event, 100)}
	cfg := Config{
		DNSUpstream: testenv.DNSServer.String(),
		Dial:        n.Host.DialContext, // IP literals only, checked to be in test-host
		Blocked:     append(DefaultBlocked(), realUplinkNet),
		SandboxCIDR: testenv.SandboxPrefix,
		DialTimeout: 3 * time.Second,
		Events:      func(ev Event) { e.events <- ev },
		Logf:        t.Logf,
	}
	if adjust != nil {
		adjust(n, &cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := n.Host.Listen("tcp", ":0") // dual-stack, as Start does
	if err != nil {
		t.Fatalf("listen in test-host: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-served; !errors.Is(err, ErrClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	e.p = p
	port := netip.MustParseAddrPort(ln.Addr().String()).Port()

	b := make([]byte, 3)
	rand.Read(b)
	m, err := network.New(t.Context(), network.Config{
		Prefix:    "eg" + hex.EncodeToString(b)[:5],
		PoolSize:  -1,
		ProxyPort: port,
		HostNetNS: n.Host.Path,
		Logf:      t.Logf,
	})
	if err != nil {
		t.Fatalf("network.New: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("network Manager.Close: %v", err)
		}
	})
	e.m = m
	slot, err := m.Acquire(t.Context())
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Release(context.Background(), slot); err != nil {
			t.Errorf("Release: %v", err)
		}
	})
	e.slot, e.sb = slot, testenv.Netns{Name: slot.NetNS, Path: slot.NetNSPath}
	e.apply(t, network.Policy{AllowOut: []string{"api.example.test", "*.allowed.test"}, DenyOut: []string{"0.0.0.0/0"}}, true)
	return e
}

func (e *e2e) apply(t *testing.T, pol network.Policy, register bool) {
	t.Helper()
	parsed, err := network.ParsePolicy(pol)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Apply(t.Context(), e.slot, pol); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if register {
		err = e.p.Register(e.slot.GuestIP, "sbx-e2e", parsed)
	} else {
		err = e.p.Update(e.slot.GuestIP, parsed)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// client returns an HTTP client in the sandbox that connects every request
// to ip (on the URL's port), whatever the URL's host: the host still
// becomes the Host header and the SNI, so the test forges at will.
func (e *e2e) client(ip netip.Addr) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			TLSClientConfig:   e.n.TLSConfig(),
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				_, port, _ := net.SplitHostPort(addr)
				return e.sb.DialContext(ctx, "tcp4", net.JoinHostPort(ip.String(), port))
			},
		},
	}
}

func (e *e2e) get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("status %s", resp.Status)
	}
	return string(b), err
}

func (e *e2e) event(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-e.events:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no proxy event within 10s")
		return Event{}
	}
}

// quiet waits briefly and fails if any connection, request or DNS query
// reached the uplink since Reset. (Those are recorded synchronously; the
// packet capture lags, so packets of the previous subtest's connection can
// show up after a Reset and are not used here. Every uplink address serves
// TCP 80/443, so a leaked connection would be recorded as a Conn.)
func (e *e2e) quiet(t *testing.T) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	if r := e.n.Records(); len(r.Conns)+len(r.HTTP)+len(r.DNS) > 0 {
		t.Errorf("expected nothing to reach the uplink, got %v", r)
	}
}

// isReset reports a connection the proxy reset: ECONNRESET, or EPIPE when
// the client was still writing its request as the RST arrived.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		err != nil && strings.Contains(err.Error(), "connection reset")
}

func TestE2E(t *testing.T) {
	e := newE2E(t)
	n := e.n
	n.SetDNS("meta.allowed.test", testenv.MetadataIP)
	n.SetDNS("ten.allowed.test", netip.MustParseAddr("10.1.2.3"))
	n.SetDNS("slot.allowed.test", e.slot.GuestIP)
	n.Reset()

	t.Run("http allowed by Host", func(t *testing.T) {
		n.Reset()
		body, err := e.get(e.client(testenv.ServiceIP), "http://api.example.test/v1/x")
		if err != nil {
			t.Fatalf("GET http://api.example.test via %s from the sandbox: %v", testenv.ServiceIP, err)
		}
		if !strings.Contains(body, `"host":"api.example.test"`) {
			t.Errorf("echo body %s, want host api.example.test", body)
		}
		r := n.WaitRecords(5*time.Second, func(r testenv.Records) bool { return len(r.HTTP) > 0 })
		got := r.HTTP[0]
		if got.Host != "api.example.test" || got.URI != "/v1/x" || got.Local != netip.AddrPortFrom(testenv.ServiceIP, 80) || got.Remote.Addr() != testenv.HostIP {
			t.Errorf("uplink saw %+v, want api.example.test /v1/x at %s:80 from %s", got, testenv.ServiceIP, testenv.HostIP)
		}
		ev := e.event(t)
		if ev.Decision != DecisionAllow || ev.SandboxID != "sbx-e2e" || ev.Src.Addr() != e.slot.GuestIP ||
			ev.Dst != netip.AddrPortFrom(testenv.ServiceIP, 80) || ev.Upstream != netip.AddrPortFrom(testenv.ServiceIP, 80) ||
			ev.Rule != "api.example.test" || ev.BytesDown == 0 {
			t.Errorf("event %+v", ev)
		}
	})

	t.Run("http denied Host is reset and nothing leaves", func(t *testing.T) {
		n.Reset()
		_, err := e.get(e.client(testenv.ServiceIP), "http://evil.test/")
		if !isReset(err) {
			t.Errorf("GET http://evil.test: %v, want connection reset", err)
		}
		if ev := e.event(t); ev.Decision != DecisionBlock || ev.Host != "evil.test" || ev.Proto != ProtoHTTP {
			t.Errorf("event %+v, want block of evil.test", ev)
		}
		e.quiet(t)
	})

	t.Run("https allowed by SNI", func(t *testing.T) {
		n.Reset()
		body, err := e.get(e.client(testenv.ServiceIP), "https://a.allowed.test/tls")
		if err != nil {
			t.Fatalf("GET https://a.allowed.test from the sandbox: %v", err)
		}
		if !strings.Contains(body, `"sni":"a.allowed.test"`) {
			t.Errorf("echo body %s, want sni a.allowed.test", body)
		}
		r := n.WaitRecords(5*time.Second, func(r testenv.Records) bool { return len(r.HTTP) > 0 })
		if got := r.HTTP[0]; got.SNI != "a.allowed.test" || got.Local != netip.AddrPortFrom(testenv.ServiceIP, 443) {
			t.Errorf("uplink saw %+v", got)
		}
		if ev := e.event(t); ev.Decision != DecisionAllow || ev.Proto != ProtoTLS || ev.Rule != "*.allowed.test" {
			t.Errorf("event %+v", ev)
		}
	})

	t.Run("https denied SNI is reset", func(t *testing.T) {
		n.Reset()
		_, err := e.get(e.client(testenv.OtherIP), "https://evil.test/")
		if !isReset(err) {
			t.Errorf("GET https://evil.test: %v, want connection reset", err)
		}
		e.event(t)
		e.quiet(t)
	})

	for _, scheme := range []string{"http", "https"} {
		t.Run("forged "+scheme+" name to a denied address reaches only the name's address", func(t *testing.T) {
			n.Reset()
			if _, err := e.get(e.client(testenv.OtherIP), scheme+"://api.example.test/forged"); err != nil {
				t.Fatalf("GET %s://api.example.test sent to %s: %v", scheme, testenv.OtherIP, err)
			}
			ev := e.event(t)
			port := map[string]uint16{"http": 80, "https": 443}[scheme]
			if ev.Dst != netip.AddrPortFrom(testenv.OtherIP, port) || ev.Upstream != netip.AddrPortFrom(testenv.ServiceIP, port) {
				t.Errorf("event dst %v upstream %v, want %v -> %v", ev.Dst, ev.Upstream, testenv.OtherIP, testenv.ServiceIP)
			}
			r := n.WaitRecords(5*time.Second, func(r testenv.Records) bool { return len(r.HTTP) > 0 })
			if got := r.HTTP[0]; got.Local.Addr() != testenv.ServiceIP || got.URI != "/forged" {
				t.Errorf("uplink saw %+v at %v, want it at %v", got, got.Local, testenv.ServiceIP)
			}
			for _, p := range r.Packets {
				if p.Dst == testenv.OtherIP {
					t.Errorf("packet to the forged address %v: %v", testenv.OtherIP, p)
				}
			}
		})
	}

	t.Run("raw tcp to another port is dropped", func(t *testing.T) {
		n.Reset()
		ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
		defer cancel()
		c, err := e.sb.DialContext(ctx, "tcp4", netip.AddrPortFrom(testenv.OtherIP, testenv.PortTCPEcho).String())
		if err == nil {
			c.Close()
			t.Fatal("raw TCP connect to a denied address succeeded")
		}
		if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "timeout") {
			t.Errorf("raw TCP connect: %v, want a timeout (silent drop)", err)
		}
		r := n.Records()
		for _, p := range r.Packets {
			if p.Dst == testenv.OtherIP {
				t.Errorf("packet reached the uplink: %v", p)
			}
		}
		if len(r.Conns) > 0 {
			t.Errorf("uplink saw %v", r)
		}
	})

	t.Run("allowed names resolving to private or metadata addresses are refused", func(t *testing.T) {
		for _, name := range []string{"meta.allowed.test", "ten.allowed.test", "slot.allowed.test"} {
			n.Reset()
			_, err := e.get(e.client(testenv.ServiceIP), "http://"+name+"/latest/meta-data/")
			if !isReset(err) {
				t.Errorf("GET %s: %v, want reset", name, err)
			}
			if ev := e.event(t); ev.Decision != DecisionBlock || ev.Reason != "no permitted address for the name" {
				t.Errorf("%s: event %+v", name, ev)
			}
			r := n.Records()
			if len(r.DNS) == 0 {
				t.Errorf("%s: no DNS query reached the uplink; the refusal must come from the resolved address", name)
			}
			if len(r.Conns)+len(r.HTTP) > 0 {
				t.Errorf("%s: uplink saw %v", name, r)
			}
		}
	})

	t.Run("policy update cuts and blocks", func(t *testing.T) {
		e.apply(t, network.Policy{AllowOut: []string{"*.allowed.test"}, DenyOut: []string{"0.0.0.0/0"}}, false)
		n.Reset()
		if _, err := e.get(e.client(testenv.ServiceIP), "http://api.example.test/"); !isReset(err) {
			t.Errorf("GET api.example.test after the update: %v, want reset", err)
		}
		e.event(t)
		e.quiet(t)
	})

	t.Run("unregistered source is refused", func(t *testing.T) {
		e.p.Unregister(e.slot.GuestIP)
		n.Reset()
		_, err := e.get(e.client(testenv.ServiceIP), "http://a.allowed.test/")
		if !isReset(err) {
			t.Errorf("GET from an unregistered sandbox: %v, want reset", err)
		}
		if ev := e.event(t); ev.Reason != "unknown source" || ev.Src.Addr() != e.slot.GuestIP {
			t.Errorf("event %+v", ev)
		}
		e.quiet(t)
	})
}
