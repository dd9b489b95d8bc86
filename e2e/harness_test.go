// Package e2e holds the end-to-end tests of the whole product: a real
// declaw server (built from this tree) running in a test-host network
// namespace whose only way out is an emulated uplink (internal/testenv),
// real runsc sandboxes, real nftables. They need root; under DECLAW_E2E=1
// (CI) they fail instead of skipping.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/testenv"
)

// server is a declaw server under test, inside n.Host.
type server struct {
	t        testing.TB
	net      *testenv.Net
	base     string // http://127.0.0.1:8080, reachable only inside n.Host
	key      string
	prefix   string // names of the netns/veth/table the server owns
	stateDir string
	declaw   string
	envd     string
	client   *http.Client
	cmd      *exec.Cmd
	exited   chan struct{}
	log      *lineLogger // the server's output, also sent to t.Log
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// templatesDir is the shared cache of built templates (built once per machine).
func templatesDir() string {
	if d := os.Getenv("DECLAW_TEST_TEMPLATES"); d != "" {
		return d
	}
	return "/var/lib/declaw/templates"
}

// startServer starts a declaw server in a fresh test network.
func startServer(t testing.TB, extraArgs ...string) *server {
	t.Helper()
	n := testenv.NewNet(t)
	declaw, envd := testenv.BuildBinaries(t)
	s := &server{
		t: t, net: n, base: "http://127.0.0.1:8080", key: "e2e-" + randHex(8),
		prefix: "dt" + randHex(3), stateDir: t.TempDir(), declaw: declaw, envd: envd,
	}
	if err := os.MkdirAll(templatesDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(templatesDir(), filepath.Join(s.stateDir, "templates")); err != nil {
		t.Fatal(err)
	}
	s.client = &http.Client{Transport: &http.Transport{DialContext: n.Host.DialContext, DisableCompression: true}}
	s.start(extraArgs...)
	t.Cleanup(s.stop)
	return s
}

func (s *server) start(extraArgs ...string) {
	t := s.t
	args := append([]string{"server", "--listen", "127.0.0.1:8080", "--state-dir", s.stateDir, "--api-key", s.key,
		"--net-prefix", s.prefix, "--envd", s.envd, "--slot-pool", "2", "--dns-upstream", testenv.DNSServer.String(), "--warm-pool=",
		"--upstream-ca", s.net.CAFile()}, extraArgs...)
	if rt := os.Getenv("DECLAW_TEST_RUNTIME"); rt != "" {
		// The whole suite runs on another runtime with one setting, e.g.
		// DECLAW_TEST_RUNTIME=microvm. On hosts without hardware KVM the
		// microVM runtime boots under TCG (~10 s a sandbox), so CI runs the
		// representative subset in microvm_subset.txt there: the seed
		// example, commands, files, lifecycle, bad input, network policy,
		// DNS, domain rules, the security proxy and a restore in place.
		args = append(args, "--runtime", rt)
	}
	// Not n.Command: its cleanup would SIGKILL the server before stop
	// could shut it down gracefully (and check what it left behind).
	cmd := s.net.Host.Command(context.Background(), s.declaw, args...)
	lw := &lineLogger{t: t}
	s.log = lw
	cmd.Stdout, cmd.Stderr = lw, lw
	cmd.Env = append(os.Environ(), "DECLAW_E2E_HOST_CANARY=host-secret-"+randHex(4))
	if err := cmd.Start(); err != nil {
		t.Fatalf("start declaw server: %v", err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() { cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := s.client.Get(s.base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-s.exited:
			t.Fatalf("declaw server exited before answering /health")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("declaw server did not answer /health within 60s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lineLogger sends whole lines to t.Log while the test runs, and keeps
// the first maxKeptLines of them for logLines.
type lineLogger struct {
	t     testing.TB
	mu    sync.Mutex
	buf   []byte
	lines []string
}

const maxKeptLines = 20000

// logLines returns the server's output lines so far that contain substr.
func (s *server) logLines(substr string) []string {
	s.log.mu.Lock()
	defer s.log.mu.Unlock()
	var out []string
	for _, l := range s.log.lines {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		line := string(l.buf[:i])
		l.buf = l.buf[i+1:]
		if len(l.lines) < maxKeptLines {
			l.lines = append(l.lines, line)
		}
		func() {
			defer func() { recover() }() // t.Log after the test ended panics
			l.t.Log("declaw: " + line)
		}()
	}
	return len(p), nil
}

// stop shuts the server down gracefully and asserts it left nothing behind.
func (s *server) stop() {
	t := s.t
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(120 * time.Second):
		t.Errorf("declaw server did not stop within 120s of SIGTERM; killing it")
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
	s.assertNoLeftovers()
}

// crash kills the server without letting it clean up.
func (s *server) crash() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

// assertNoLeftovers checks that no netns, veth, nftables table, runsc
// container or sandbox process of this server remains.
func (s *server) assertNoLeftovers() {
	t := s.t
	t.Helper()
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), s.prefix+"-") {
		t.Errorf("network namespaces left behind:\n%s", out)
	}
	out, _ := s.net.Host.Command(context.Background(), "ip", "-o", "link").Output()
	if strings.Contains(string(out), s.prefix+"h") {
		t.Errorf("veths left behind in test-host:\n%s", out)
	}
	out, _ = s.net.Host.Command(context.Background(), "nft", "list", "tables").Output()
	if strings.Contains(string(out), s.prefix) {
		t.Errorf("nftables table left behind in test-host:\n%s", out)
	}
	if procs := sandboxProcs(s.stateDir); len(procs) > 0 {
		t.Errorf("runsc processes of this server left behind: %v", procs)
	}
	// Sandbox disks: an overlay and an ext4 (on a loop device) per sandbox.
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, s.stateDir+"/") {
				t.Errorf("mount left behind: %s", line)
			}
		}
	}
	if loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file"); len(loops) > 0 {
		for _, l := range loops {
			if b, _ := os.ReadFile(l); strings.HasPrefix(string(b), s.stateDir+"/") {
				t.Errorf("loop device left behind: %s -> %s", l, strings.TrimSpace(string(b)))
			}
		}
	}
}

// sandboxProcs lists runsc processes whose command line names stateDir.
func sandboxProcs(stateDir string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, "runsc") && strings.Contains(cmd, stateDir) {
			out = append(out, e.Name()+": "+cmd)
		}
	}
	return out
}

// do sends a request with the API key and returns status and body.
func (s *server) do(method, path string, body any, hdr ...string) (int, []byte) {
	s.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	case string:
		r = strings.NewReader(b)
	case io.Reader:
		r = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.base+path, r)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("X-API-Key", s.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// must sends a request and fails the test unless the status is want; it decodes JSON into out.
func (s *server) must(want int, method, path string, body, out any) []byte {
	s.t.Helper()
	code, b := s.do(method, path, body)
	if code != want {
		s.t.Fatalf("%s %s: status %d, want %d; body: %s", method, path, code, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			s.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return b
}

// create creates a sandbox and registers its kill; it returns the id.
func (s *server) create(body map[string]any) string {
	s.t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	if _, ok := body["template"]; !ok {
		body["template"] = "python"
	}
	var out struct {
		SandboxID string `json:"sandbox_id"`
	}
	s.must(201, "POST", "/sandboxes", body, &out)
	if !strings.HasPrefix(out.SandboxID, "sbx-") {
		s.t.Fatalf("create: sandbox_id %q does not look like sbx-...", out.SandboxID)
	}
	id := out.SandboxID
	s.t.Cleanup(func() {
		if s.cmd != nil {
			s.do("DELETE", "/sandboxes/"+id, nil)
		}
	})
	return id
}

type cmdResult struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exit_code"`
	Pid      int    `json:"pid"`
}

// run runs a foreground command and fails unless the API answers 200.
func (s *server) run(id, cmd string, extra ...any) cmdResult {
	s.t.Helper()
	body := map[string]any{"cmd": cmd}
	for i := 0; i+1 < len(extra); i += 2 {
		body[extra[i].(string)] = extra[i+1]
	}
	var res cmdResult
	s.must(200, "POST", "/sandboxes/"+id+"/commands", body, &res)
	return res
}

// pythonCmd runs a Python SDK script inside test-host against the server.
func (s *server) pythonCmd(ctx context.Context, script string, env ...string) *exec.Cmd {
	root, err := testenv.ModuleRoot()
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := s.net.Host.Command(ctx, "python3", "-c", script)
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"PYTHONPATH=" + filepath.Join(root, "sdk", "python"),
		"DECLAW_API_KEY=" + s.key, "DECLAW_DOMAIN=127.0.0.1:8080", "PYTHONUNBUFFERED=1",
	}, env...)
	return cmd
}

func fmtJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

var _ = fmt.Sprintf
