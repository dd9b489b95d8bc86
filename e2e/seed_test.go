package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/testenv"
)

// TestSeedExample runs the seed document's example through the Python SDK,
// unchanged but for its two public target addresses, which point at
// emulated internet hosts in the uplink namespace.
func TestSeedExample(t *testing.T) {
	s := startServer(t)
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(root, "sdk", "python", "examples", "secured_vs_unsecured.py"))
	if err != nil {
		t.Fatal(err)
	}
	target1, target2 := testenv.ServiceIP.String(), testenv.OtherIP.String()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s.net.Reset()
	cmd := s.pythonCmd(ctx, string(script), "DECLAW_SEED_TARGET_1="+target1, "DECLAW_SEED_TARGET_2="+target2)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("seed example failed: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	t.Logf("seed example output:\n%s", out)

	unsecured, secured, ok := strings.Cut(out, "--- SECURED Sandbox")
	if !ok || !strings.Contains(unsecured, "UNSECURED") {
		t.Fatalf("output does not have the two sections")
	}
	for name, section := range map[string]string{"unsecured": unsecured, "secured": secured} {
		for _, re := range []string{
			`Test 1 \(read /etc/passwd\): Read \d+ lines`,
			`Test 2 \(env vars\): Found \d+ variables`,
			`\n  HOME=/root\n`,
			`\n  PATH=/usr/local/sbin:`,
			`Test 3 \(write /tmp\): Write succeeded`,
		} {
			if !regexp.MustCompile(re).MatchString(section) {
				t.Errorf("%s sandbox: output does not match %q", name, re)
			}
		}
		if strings.Contains(section, "DECLAW_E2E_HOST_CANARY") || strings.Contains(section, "host-secret-") {
			t.Errorf("%s sandbox sees the host's environment", name)
		}
	}
	for _, want := range []string{"Test 4 (network): CONNECTED", "Test 5 (exfiltrate): Data sent"} {
		if !strings.Contains(unsecured, want) {
			t.Errorf("unsecured sandbox: missing %q", want)
		}
	}
	for _, re := range []string{`Test 4 \(network\): BLOCKED \(.*timed out.*\)`, `Test 5 \(exfiltrate\): BLOCKED \(.*timed out.*\)`} {
		if !regexp.MustCompile(re).MatchString(secured) {
			t.Errorf("secured sandbox: output does not match %q", re)
		}
	}
	// The exfiltration of the unsecured sandbox arrived at the emulated
	// host; nothing of the secured sandbox's did: one connection to each
	// target, not two.
	count := func(r testenv.Records, dst string, exfil bool) int {
		n := 0
		for _, c := range r.Conns {
			if c.Local.Addr().String() == dst && c.Local.Port() == 80 && (!exfil || bytes.Contains(c.Data, []byte("POST /exfil"))) {
				n++
			}
		}
		return n
	}
	recs := s.net.WaitRecords(5*time.Second, func(r testenv.Records) bool { return count(r, target2, true) > 0 })
	if n := count(recs, target2, true); n != 1 {
		t.Errorf("exfiltration arrived at %s %d times, want once (from the unsecured sandbox only):\n%s", target2, n, recs)
	}
	if n := count(recs, target1, false); n != 1 {
		t.Errorf("%d connections reached %s:80, want 1 (from the unsecured sandbox only):\n%s", n, target1, recs)
	}
}
