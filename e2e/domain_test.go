package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/testenv"
)

// TestDomainRules: allow_out domains are enforced at L7 by the egress proxy
// (Host on 80, SNI on 443), which dials the name it matched, never the
// address the sandbox chose.
func TestDomainRules(t *testing.T) {
	s := startServer(t)
	id := s.create(map[string]any{"network": map[string]any{
		"allow_out": []string{"api.example.test", "*.allowed.test"}, "deny_out": []string{"0.0.0.0/0"}}})
	s.must(200, "POST", "/sandboxes/"+id+"/files", map[string]any{"path": "/tmp/ca.pem", "data": string(s.net.CAPEM())}, nil)
	curl := func(args string) cmdResult {
		t.Helper()
		return s.run(id, "curl -sS -m 5 -o /dev/null -w '%{http_code}' --cacert /tmp/ca.pem "+args)
	}
	svc, other := testenv.ServiceIP.String(), testenv.OtherIP.String()

	s.net.Reset()
	if res := curl("http://api.example.test/v1/ping"); res.Stdout != "200" {
		_, b := s.do("GET", "/sandboxes/"+id+"/audit?type=egress", nil)
		t.Fatalf("allowed domain over HTTP: %+v\naudit: %s", res, b)
	}
	if res := curl("https://www.allowed.test/secure"); res.Stdout != "200" {
		t.Fatalf("allowed wildcard domain over HTTPS: %+v", res)
	}
	if res := curl("http://evil.test/"); res.ExitCode == 0 {
		t.Fatalf("denied domain answered: %+v", res)
	}
	// Forged Host / SNI towards a denied address: the proxy dials the name it
	// matched, so the request lands on the allowed host, never on OtherIP.
	if res := curl("-H 'Host: api.example.test' http://" + other + "/forged-host"); res.Stdout != "200" {
		t.Fatalf("forged Host: %+v", res)
	}
	if res := curl("--resolve api.example.test:443:" + other + " https://api.example.test/forged-sni"); res.Stdout != "200" {
		t.Fatalf("forged SNI: %+v", res)
	}
	// A denied name towards an allowed address is reset.
	if res := curl("-H 'Host: evil.test' http://" + svc + "/"); res.ExitCode == 0 {
		t.Fatalf("denied Host to an allowed address answered: %+v", res)
	}
	// Non-web traffic to non-allowed addresses stays dropped.
	p := s.prober(id)
	p.expect("tcp", other, testenv.PortTCPEcho, "TIMEOUT")

	recs := s.net.WaitRecords(5*time.Second, func(r testenv.Records) bool { return len(r.HTTP) >= 4 })
	for _, h := range recs.HTTP {
		if h.Local.Addr().String() == other {
			t.Errorf("a request reached the denied address %s: %s %s host=%s", other, h.Method, h.URI, h.Host)
		}
		if strings.Contains(h.Host, "evil") {
			t.Errorf("a request for evil.test reached the uplink: %+v", h)
		}
	}
	for _, uri := range []string{"/v1/ping", "/secure", "/forged-host", "/forged-sni"} {
		found := false
		for _, h := range recs.HTTP {
			found = found || h.URI == uri && h.Local.Addr().String() == svc
		}
		if !found {
			t.Errorf("request %s did not arrive at %s:\n%s", uri, svc, recs)
		}
	}
	var audit struct {
		Events []struct {
			Type string         `json:"type"`
			Data map[string]any `json:"data"`
		} `json:"events"`
	}
	s.must(200, "GET", "/sandboxes/"+id+"/audit?type=egress&limit=1000", nil, &audit)
	var allowed, blocked bool
	for _, e := range audit.Events {
		allowed = allowed || e.Type == "egress.allowed" && e.Data["Host"] == "api.example.test"
		blocked = blocked || e.Type == "egress.blocked" && e.Data["Host"] == "evil.test"
	}
	if !allowed || !blocked {
		t.Errorf("audit lacks egress decisions (allowed %v, blocked %v): %s", allowed, blocked, fmtJSON(audit))
	}
}
