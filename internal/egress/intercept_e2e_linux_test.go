package egress

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/egress/ca"
	"github.com/declaw/declaw/internal/network"
	"github.com/declaw/declaw/internal/policy"
	"github.com/declaw/declaw/internal/testenv"
)

// icE2E is the root end-to-end setting for interception: the proxy in
// test-host trusting the uplink's test CA for upstreams, a real slot whose
// web traffic the firewall redirects to it, and a sandbox CA.
type icE2E struct {
	*e2e
	ca   *ca.CA
	http chan HTTPEvent
}

func newICE2E(t *testing.T) *icE2E {
	t.Helper()
	ie := &icE2E{http: make(chan HTTPEvent, 200)}
	ie.e2e = newE2EWith(t, func(n *testenv.Net, cfg *Config) {
		cfg.UpstreamCAs = n.CertPool()
		cfg.HTTPEvents = func(ev HTTPEvent) { ie.http <- ev }
		cfg.Events = func(Event) {} // connection events are not asserted here
	})
	c, err := ca.New("sbx-e2e")
	if err != nil {
		t.Fatal(err)
	}
	ie.ca = c
	// Handlers on the uplink: echo the body back with its Content-Type
	// (so redaction tokens come back and must be rehydrated), and an SSE
	// stream that repeats the request body split over several flushes.
	ie.n.HandleHTTP("/echo-body", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") && r.URL.Query().Get("gzip") != "" {
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			zw.Write(b)
			zw.Close()
			return
		}
		w.Write(b)
	}))
	ie.n.HandleHTTP("/stream", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Parts []string }
		json.NewDecoder(r.Body).Decode(&req)
		w.Header().Set("Content-Type", "text/event-stream")
		for _, p := range req.Parts {
			io.WriteString(w, p)
			w.(http.Flusher).Flush()
			time.Sleep(30 * time.Millisecond)
		}
	}))
	return ie
}

func (ie *icE2E) setSecurity(t *testing.T, sec string) {
	t.Helper()
	var s *policy.Security
	if sec != "" {
		var err error
		if s, err = policy.Parse(json.RawMessage(sec)); err != nil {
			t.Fatal(err)
		}
	}
	if err := ie.p.SetContent(ie.slot.GuestIP, &Content{Security: s, CA: ie.ca}); err != nil {
		t.Fatalf("SetContent: %v", err)
	}
	ie.drain()
}

func (ie *icE2E) drain() {
	for {
		select {
		case <-ie.http:
		default:
			return
		}
	}
}

func (ie *icE2E) httpEvent(t *testing.T) HTTPEvent {
	t.Helper()
	select {
	case ev := <-ie.http:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no HTTP event within 10s")
		return HTTPEvent{}
	}
}

// client is an HTTP client inside the slot's namespace that trusts only
// the sandbox CA (as the sandbox's trust store does) and connects to
// ServiceIP whatever the URL says.
func (ie *icE2E) client(h2 bool, roots *tls.Config) *http.Client {
	tlsConf := &tls.Config{RootCAs: ie.ca.Pool()}
	if roots != nil {
		tlsConf = roots
	}
	tr := &http.Transport{
		TLSClientConfig:    tlsConf,
		ForceAttemptHTTP2:  h2,
		DisableCompression: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			return ie.sb.DialContext(ctx, "tcp4", net.JoinHostPort(testenv.ServiceIP.String(), port))
		},
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestE2EIntercept(t *testing.T) {
	ie := newICE2E(t)
	n := ie.n
	chat, _ := json.Marshal(map[string]any{"model": "m", "messages": []map[string]string{{"role": "user", "content": "I am jane.doe@example.org, SSN 123-45-6789 (and 536-22-1234), card 4111 1111 1111 1111, key sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5kL7nP9rT1vX3"}}})

	ie.setSecurity(t, `{"pii":{"enabled":true,"action":"redact"},"audit":{"enabled":true,"log_request_body":true}}`)
	for _, tc := range []struct {
		name string
		url  string
		h2   bool
	}{
		{"https http/1.1", "https://api.example.test/echo-body", false},
		{"https h2", "https://api.example.test/echo-body", true},
		{"plain http", "http://api.example.test/echo-body", false},
	} {
		t.Run("pii redacted upstream and rehydrated: "+tc.name, func(t *testing.T) {
			n.Reset()
			resp, got := post(t, ie.client(tc.h2, nil), tc.url, "application/json", chat)
			if resp.StatusCode != 200 || !bytes.Equal(got, chat) {
				t.Fatalf("status %d, body %s; want 200 and the original (rehydrated) body %s", resp.StatusCode, got, chat)
			}
			if tc.h2 && resp.ProtoMajor != 2 {
				t.Errorf("sandbox spoke %s, want HTTP/2", resp.Proto)
			}
			r := n.WaitRecords(5*time.Second, func(r testenv.Records) bool { return len(r.HTTP) > 0 })
			up := r.HTTP[0]
			if !json.Valid(up.Body) {
				t.Errorf("upstream body is not valid JSON: %s", up.Body)
			}
			for _, s := range chatSecrets[:4] {
				if bytes.Contains(up.Body, []byte(s)) {
					t.Errorf("upstream saw %q: %s", s, up.Body)
				}
			}
			if bytes.Contains(up.Body, []byte("sk-proj-")) || !bytes.Contains(up.Body, []byte("[REDACTED_API_KEY_")) {
				t.Errorf("API key not redacted upstream: %s", up.Body)
			}
			if up.Local.Addr() != testenv.ServiceIP || up.Host != "api.example.test" {
				t.Errorf("upstream request %+v", up)
			}
			ev := ie.httpEvent(t)
			if ev.PII["ssn"] != 2 || ev.PII["email"] != 1 || ev.PII["credit_card"] != 1 || ev.PII["api_key"] != 1 || ev.Rehydrated == 0 {
				t.Errorf("event PII %v rehydrated %d", ev.PII, ev.Rehydrated)
			}
			if !bytes.Equal(ev.RequestBody, up.Body) || ev.ResponseBody != nil {
				t.Errorf("audited bodies: request %s (want the redacted one), response %q (not asked for)", ev.RequestBody, ev.ResponseBody)
			}
		})
	}

	t.Run("pii block: 403 and nothing upstream", func(t *testing.T) {
		ie.setSecurity(t, `{"pii":{"enabled":true,"action":"block"}}`)
		n.Reset()
		resp, got := post(t, ie.client(false, nil), "https://api.example.test/echo-body", "application/json", chat)
		if resp.StatusCode != 403 || !strings.Contains(string(got), `"blocked by declaw: pii"`) {
			t.Errorf("status %d body %s, want 403 pii", resp.StatusCode, got)
		}
		time.Sleep(200 * time.Millisecond)
		if r := n.Records(); len(r.HTTP) > 0 {
			t.Errorf("upstream got %v", r.HTTP)
		}
		if ev := ie.httpEvent(t); ev.Stage != "pii" || ev.Decision != DecisionBlock {
			t.Errorf("event %+v", ev)
		}
	})

	inj, _ := json.Marshal(map[string]string{"content": injectionText})
	t.Run("injection block, log_only, domains", func(t *testing.T) {
		ie.setSecurity(t, `{"injection_defense":{"enabled":true,"action":"block"}}`)
		n.Reset()
		resp, _ := post(t, ie.client(false, nil), "https://api.example.test/echo-body", "application/json", inj)
		if resp.StatusCode != 403 {
			t.Errorf("block: status %d, want 403", resp.StatusCode)
		}
		time.Sleep(200 * time.Millisecond)
		if len(n.Records().HTTP) > 0 {
			t.Error("blocked injection reached upstream")
		}
		ie.httpEvent(t)

		ie.setSecurity(t, `{"injection_defense":{"enabled":true,"action":"log_only"}}`)
		resp, _ = post(t, ie.client(false, nil), "https://api.example.test/echo-body", "application/json", inj)
		if ev := ie.httpEvent(t); resp.StatusCode != 200 || ev.Injection == nil || ev.Injection.Verdict != "detected" {
			t.Errorf("log_only: status %d event %+v", resp.StatusCode, ev.Injection)
		}

		ie.setSecurity(t, `{"injection_defense":{"enabled":true,"action":"block","domains":["llm.allowed.test"]}}`)
		resp, _ = post(t, ie.client(false, nil), "https://api.example.test/echo-body", "application/json", inj)
		if ev := ie.httpEvent(t); resp.StatusCode != 200 || ev.Injection != nil {
			t.Errorf("host outside domains: status %d injection %+v, want 200 unscanned", resp.StatusCode, ev.Injection)
		}
		resp, _ = post(t, ie.client(false, nil), "https://llm.allowed.test/echo-body", "application/json", inj)
		if resp.StatusCode != 403 {
			t.Errorf("host in domains: status %d, want 403", resp.StatusCode)
		}
		ie.httpEvent(t)
	})

	t.Run("transformations in order and direction", func(t *testing.T) {
		ie.setSecurity(t, `{"transformations":[{"match":"cat-(\\d)","replace":"dog-\\1","direction":"outbound"},
			{"match":"dog","replace":"wolf","direction":"outbound"},{"match":"wolf","replace":"fox","direction":"inbound"}]}`)
		n.Reset()
		resp, got := post(t, ie.client(false, nil), "https://api.example.test/echo-body", "text/plain", []byte("a cat-7"))
		r := n.WaitRecords(5*time.Second, func(r testenv.Records) bool { return len(r.HTTP) > 0 })
		if string(r.HTTP[0].Body) != "a wolf-7" || resp.StatusCode != 200 || string(got) != "a fox-7" {
			t.Errorf("upstream %q, sandbox %q; want %q and %q", r.HTTP[0].Body, got, "a wolf-7", "a fox-7")
		}
		ie.httpEvent(t)
	})

	t.Run("gzip and chunked bodies", func(t *testing.T) {
		ie.setSecurity(t, `{"pii":{"enabled":true,"action":"redact"}}`)
		n.Reset()
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		zw.Write(chat)
		zw.Close()
		req, _ := http.NewRequest("POST", "https://api.example.test/echo-body?gzip=1", io.MultiReader(&zb))
		req.ContentLength = -1 // chunked
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Content-Encoding", "gzip")
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := ie.client(false, nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(got, chat) || resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("response (encoding %q) %s, want the decoded original", resp.Header.Get("Content-Encoding"), got)
		}
		r := n.WaitRecords(5*time.Second, func(r testenv.Records) bool { return len(r.HTTP) > 0 })
		if up := r.HTTP[0]; up.Header.Get("Content-Encoding") != "" || !json.Valid(up.Body) || bytes.Contains(up.Body, []byte("123-45-6789")) {
			t.Errorf("upstream got %q %s", up.Header.Get("Content-Encoding"), up.Body)
		}
		ie.httpEvent(t)
	})

	t.Run("sse streams in order with rehydration across chunks", func(t *testing.T) {
		ie.setSecurity(t, `{"pii":{"enabled":true,"action":"redact"}}`)
		// The request's email becomes [REDACTED_EMAIL_1]; the stream sends
		// the token split over two flushes.
		parts := []string{"data: first\n\n", "data: hi [REDACTED_EM", "AIL_1]!\n\n", "data: [DONE]\n\n"}
		body, _ := json.Marshal(map[string]any{"parts": parts, "who": "jane.doe@example.org"})
		req, _ := http.NewRequest("POST", "https://api.example.test/stream", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := ie.client(false, nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		// The first event must arrive before the stream ends (flushed per chunk).
		buf := make([]byte, 64)
		k, _ := resp.Body.Read(buf)
		rest, _ := io.ReadAll(resp.Body)
		got := string(buf[:k]) + string(rest)
		if want := "data: first\n\ndata: hi jane.doe@example.org!\n\ndata: [DONE]\n\n"; got != want {
			t.Errorf("stream %q, want %q", got, want)
		}
		if !strings.HasPrefix(string(buf[:k]), "data: first") {
			t.Errorf("first read %q", buf[:k])
		}
		ie.httpEvent(t)
	})

	t.Run("upstream with an untrusted certificate: TLS error", func(t *testing.T) {
		ie.setSecurity(t, `{"pii":{"enabled":true}}`)
		saved := ie.p.roots
		ie.p.roots = saved[:1] // system roots only: the uplink's test CA is not among them
		defer func() { ie.p.roots = saved }()
		n.Reset()
		_, err := ie.client(false, nil).Get("https://api.example.test/x")
		if err == nil {
			t.Fatal("request through an untrusted upstream succeeded")
		}
		if ev := ie.httpEvent(t); ev.Stage != "upstream_tls" || !strings.Contains(ev.Reason, "verification failed") {
			t.Errorf("event %+v", ev)
		}
		if r := n.Records(); len(r.HTTP) > 0 {
			t.Errorf("a request reached the upstream: %v", r.HTTP)
		}
	})

	t.Run("no content policy splices: the sandbox sees the real certificate", func(t *testing.T) {
		ie.setSecurity(t, `{"audit":{"enabled":true}}`) // no body logging: no interception
		if _, err := ie.client(false, nil).Get("https://api.example.test/"); err == nil {
			t.Error("sandbox CA verified a spliced connection")
		}
		resp, err := ie.client(false, n.TLSConfig()).Get("https://api.example.test/")
		if err != nil {
			t.Fatalf("with the upstream's CA: %v", err)
		}
		resp.Body.Close()
		if resp.TLS == nil || resp.TLS.PeerCertificates[0].Issuer.CommonName == ie.ca.Certificate().Subject.CommonName {
			t.Error("spliced connection presented the sandbox CA's leaf")
		}
		select {
		case ev := <-ie.http:
			t.Errorf("spliced connection produced an HTTP event %+v", ev)
		case <-time.After(200 * time.Millisecond):
		}
	})

	t.Run("denied name still reset under interception", func(t *testing.T) {
		ie.setSecurity(t, `{"pii":{"enabled":true}}`)
		n.Reset()
		if _, err := ie.client(false, nil).Get("https://evil.test/"); !isReset(err) {
			t.Errorf("GET https://evil.test: %v, want reset", err)
		}
		ie.quiet(t)
	})

	t.Run("allowed address dials the original destination whatever the name", func(t *testing.T) {
		ie.apply(t, network.Policy{AllowOut: []string{testenv.ServiceIP.String() + "/32", "api.example.test"}, DenyOut: []string{"0.0.0.0/0"}, Intercept: true}, false)
		defer ie.apply(t, network.Policy{AllowOut: []string{"api.example.test", "*.allowed.test"}, DenyOut: []string{"0.0.0.0/0"}}, false)
		ie.setSecurity(t, `{"pii":{"enabled":true}}`)
		n.Reset()
		resp, got := post(t, ie.client(false, nil), "https://unlisted.example.test/echo-body", "text/plain", []byte("ssn 123-45-6789"))
		if resp.StatusCode != 200 || string(got) != "ssn 123-45-6789" {
			t.Fatalf("status %d %s", resp.StatusCode, got)
		}
		r := n.WaitRecords(5*time.Second, func(r testenv.Records) bool { return len(r.HTTP) > 0 })
		if up := r.HTTP[0]; up.Local.Addr() != testenv.ServiceIP || up.SNI != "unlisted.example.test" || bytes.Contains(up.Body, []byte("123-45-6789")) {
			t.Errorf("upstream %+v body %s", up, up.Body)
		}
		if len(r.DNS) > 0 {
			t.Errorf("the name was resolved (%v); the original address must be dialed", r.DNS)
		}
		ie.httpEvent(t)
	})

	t.Run("default-allow policy with interception: no SNI (IP literal) works", func(t *testing.T) {
		ie.apply(t, network.Policy{Intercept: true}, false)
		defer ie.apply(t, network.Policy{AllowOut: []string{"api.example.test", "*.allowed.test"}, DenyOut: []string{"0.0.0.0/0"}}, false)
		ie.setSecurity(t, `{"pii":{"enabled":true}}`)
		n.Reset()
		url := fmt.Sprintf("https://%s/echo-body", testenv.ServiceIP)
		resp, got := post(t, ie.client(false, nil), url, "text/plain", []byte("ssn 123-45-6789"))
		if resp.StatusCode != 200 || string(got) != "ssn 123-45-6789" {
			t.Fatalf("status %d %s", resp.StatusCode, got)
		}
		r := n.WaitRecords(5*time.Second, func(r testenv.Records) bool { return len(r.HTTP) > 0 })
		if up := r.HTTP[0]; up.Local != netip.AddrPortFrom(testenv.ServiceIP, 443) || up.SNI != "" || bytes.Contains(up.Body, []byte("123-45-6789")) {
			t.Errorf("upstream %+v body %s", up, up.Body)
		}
		if ev := ie.httpEvent(t); ev.PII["ssn"] != 1 || ev.URL != url {
			t.Errorf("event %+v", ev)
		}
	})
}
