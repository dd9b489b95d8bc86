package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// cliResult is one run of the declaw CLI.
type cliResult struct {
	stdout, stderr string
	code           int
}

// cli runs the declaw binary as a client inside test-host (where the
// server listens on 127.0.0.1:8080), configured through the environment
// like a user would.
func (s *server) cli(stdin string, args ...string) cliResult {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := s.net.Host.Command(ctx, s.declaw, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"DECLAW_API_KEY=" + s.key, "DECLAW_DOMAIN=127.0.0.1:8080"}
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	default:
		s.t.Fatalf("declaw %q: %v", args, err)
	}
	return res
}

// mustCLI runs the CLI and fails the test unless it exits 0.
func (s *server) mustCLI(stdin string, args ...string) string {
	s.t.Helper()
	r := s.cli(stdin, args...)
	if r.code != 0 {
		s.t.Fatalf("declaw %q: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func TestCLI(t *testing.T) {
	s := startServer(t)
	suite := "cli-" + randHex(4)

	out := s.mustCLI("", "sandbox", "create", "-t", "python", "--timeout", "300", "--metadata", "suite="+suite, "-e", "GREETING=hello")
	id := strings.TrimSpace(out)
	if !strings.HasPrefix(id, "sbx-") || strings.Contains(id, "\n") {
		t.Fatalf("create printed %q, want one sandbox id", out)
	}
	t.Cleanup(func() {
		if s.cmd != nil {
			s.do("DELETE", "/sandboxes/"+id, nil)
		}
	})

	// exec streams both outputs and exits with the remote exit code.
	r := s.cli("", "sandbox", "exec", id, "--", "sh", "-c", "echo hi; exit 3")
	if r.stdout != "hi\n" || r.code != 3 {
		t.Fatalf("exec sh -c 'echo hi; exit 3': stdout %q, exit %d (stderr %q); want \"hi\\n\" and 3", r.stdout, r.code, r.stderr)
	}
	r = s.cli("", "sbx", "exec", id, "--cwd", "/tmp", "--user", "user", "-e", "X=y", "--", "sh", "-c", `pwd; whoami; echo "$X $GREETING" >&2`)
	if r.stdout != "/tmp\nuser\n" || r.stderr != "y hello\n" || r.code != 0 {
		t.Fatalf("exec with --cwd/--user/-e: stdout %q, stderr %q, exit %d", r.stdout, r.stderr, r.code)
	}
	r = s.cli("", "sandbox", "exec", id, "--json", "--", "echo", "j")
	var evs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("exec --json line %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	if r.code != 0 || len(evs) < 2 || evs[0]["type"] != "start" || evs[len(evs)-1]["type"] != "exit" {
		t.Fatalf("exec --json: exit %d, events %v", r.code, evs)
	}
	r = s.cli("", "sandbox", "exec", id, "--timeout", "1", "--", "sleep", "30")
	if r.code != 124 || !strings.Contains(r.stderr, "timed out") {
		t.Fatalf("exec --timeout 1 sleep 30: exit %d, stderr %q; want 124 and a timeout message", r.code, r.stderr)
	}

	// files: write from stdin and from a local file, read back byte for byte, list.
	out = s.mustCLI("hello from the cli\n", "sandbox", "files", "write", id, "/tmp/cli/a.txt")
	if out != "wrote 19 bytes to /tmp/cli/a.txt\n" {
		t.Fatalf("files write (stdin) printed %q", out)
	}
	blob := make([]byte, 3<<20)
	for i := range blob {
		blob[i] = byte(i*7 + i>>9)
	}
	local := filepath.Join(t.TempDir(), "blob.bin")
	if err := os.WriteFile(local, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	s.mustCLI("", "sandbox", "files", "write", id, "/tmp/cli/blob.bin", local)
	if got := s.mustCLI("", "sandbox", "files", "read", id, "/tmp/cli/blob.bin"); got != string(blob) {
		t.Fatalf("files read of a %d-byte blob returned %d bytes that differ", len(blob), len(got))
	}
	if got := s.mustCLI("", "sandbox", "files", "read", id, "/tmp/cli/a.txt"); got != "hello from the cli\n" {
		t.Fatalf("files read = %q", got)
	}
	var entries []struct {
		Name string `json:"name"`
		Type string `json:"type"`
		Size int64  `json:"size"`
	}
	if err := json.Unmarshal([]byte(s.mustCLI("", "sandbox", "files", "ls", "--json", id, "/tmp/cli")), &entries); err != nil {
		t.Fatalf("files ls --json: %v", err)
	}
	if len(entries) != 2 || entries[0].Name != "a.txt" || entries[1].Name != "blob.bin" || entries[1].Size != int64(len(blob)) {
		t.Fatalf("files ls --json = %+v", entries)
	}
	if out := s.mustCLI("", "sandbox", "files", "ls", id, "/tmp/cli"); !regexp.MustCompile(`(?m)^-rw-r--r-- +root +root +19 .* /tmp/cli/a\.txt$`).MatchString(out) {
		t.Fatalf("files ls = %q", out)
	}
	r = s.cli("", "sandbox", "files", "read", id, "/tmp/cli/missing")
	if r.code != 1 || !strings.Contains(r.stderr, "not_found") {
		t.Fatalf("files read of a missing file: exit %d, stderr %q", r.code, r.stderr)
	}

	// list, info, status, set-timeout, audit.
	out = s.mustCLI("", "sandbox", "list", "--metadata", "suite="+suite)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], id+" ") || !strings.Contains(lines[1], "running") {
		t.Fatalf("list --metadata:\n%s", out)
	}
	var listed []info
	if err := json.Unmarshal([]byte(s.mustCLI("", "--json", "sandbox", "list", "--state", "running")), &listed); err != nil {
		t.Fatalf("list --json: %v", err)
	}
	if len(listed) != 1 || listed[0].SandboxID != id || listed[0].Metadata["suite"] != suite {
		t.Fatalf("list --json = %+v", listed)
	}
	var got info
	if err := json.Unmarshal([]byte(s.mustCLI("", "sandbox", "info", id, "--json")), &got); err != nil {
		t.Fatalf("info --json: %v", err)
	}
	if got.SandboxID != id || got.State != "running" || got.TemplateID != "python" || got.Envs["GREETING"] != "hello" {
		t.Fatalf("info --json = %+v", got)
	}
	if out := s.mustCLI("", "sandbox", "status", id); out != "running\n" {
		t.Fatalf("status = %q", out)
	}
	if out := s.mustCLI("", "sandbox", "set-timeout", id, "600"); !strings.HasPrefix(out, id+": killed at ") {
		t.Fatalf("set-timeout = %q", out)
	}
	s.must(200, "GET", "/sandboxes/"+id, nil, &got)
	if got.Timeout != 600 {
		t.Fatalf("after set-timeout 600: timeout %d", got.Timeout)
	}
	if out := s.mustCLI("", "audit", id, "--type", "sandbox"); !strings.Contains(out, "sandbox.created") {
		t.Fatalf("audit --type sandbox:\n%s", out)
	}

	// pause freezes it (commands are refused), resume continues it.
	if out := s.mustCLI("", "sandbox", "pause", id); out != "paused "+id+"\n" {
		t.Fatalf("pause = %q", out)
	}
	if out := s.mustCLI("", "sandbox", "status", id); out != "paused\n" {
		t.Fatalf("status after pause = %q", out)
	}
	r = s.cli("", "sandbox", "exec", id, "--", "true")
	if r.code != 1 || !strings.Contains(r.stderr, "409 sandbox_paused") {
		t.Fatalf("exec in a paused sandbox: exit %d, stderr %q; want 1 and 409 sandbox_paused", r.code, r.stderr)
	}
	if out := s.mustCLI("", "sandbox", "resume", id, "--json"); !strings.Contains(out, `"sandbox_id":"`+id+`"`) {
		t.Fatalf("resume --json = %q", out)
	}
	if r = s.cli("", "sandbox", "exec", id, "--", "cat", "/tmp/cli/a.txt"); r.stdout != "hello from the cli\n" || r.code != 0 {
		t.Fatalf("exec after resume: stdout %q, exit %d, stderr %q", r.stdout, r.code, r.stderr)
	}

	// An API error: exit 1 with the server's message.
	r = s.cli("", "sandbox", "info", "sbx-000000000000")
	if r.code != 1 || !strings.Contains(r.stderr, "sandbox not found") || r.stdout != "" {
		t.Fatalf("info of an unknown id: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = s.cli("", "sandbox", "info", id, "--api-key", "wrong")
	if r.code != 1 || !strings.Contains(r.stderr, "401 unauthorized") {
		t.Fatalf("info with a wrong key: exit %d, stderr %q", r.code, r.stderr)
	}

	// kill: once, then again (already killed), then the sandbox is gone for exec.
	if out := s.mustCLI("", "sandbox", "kill", id); out != "killed "+id+"\n" {
		t.Fatalf("kill = %q", out)
	}
	if out := s.mustCLI("", "sandbox", "kill", id); out != id+" was already killed\n" {
		t.Fatalf("second kill = %q", out)
	}
	if out := s.mustCLI("", "sandbox", "status", id); out != "killed\n" {
		t.Fatalf("status after kill = %q", out)
	}
	r = s.cli("", "sandbox", "exec", id, "--", "true")
	if r.code != 1 || !strings.Contains(r.stderr, "410") {
		t.Fatalf("exec in a killed sandbox: exit %d, stderr %q; want 1 and the 410 message", r.code, r.stderr)
	}
	if out := s.mustCLI("", "sandbox", "list", "--metadata", "suite="+suite); strings.Contains(out, id) {
		t.Fatalf("killed sandbox still listed:\n%s", out)
	}
}

// TestCLIConnect drives `declaw sandbox connect` in a real terminal (tmux):
// an interactive python3, a window resize the remote side sees, and the
// remote exit code.
func TestCLIConnect(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("tmux is needed: %v", err)
	}
	s := startServer(t)
	id := s.create(map[string]any{"template": "python"})

	socket := "declaw-e2e-" + randHex(4)
	tmux := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("tmux", append([]string{"-L", socket}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %q: %v\n%s", args, err, out)
		}
		return string(out)
	}
	// The wrapper records the exit code and whether the terminal was restored.
	script := fmt.Sprintf(`before=$(stty -g); nsenter --net=%s -- env DECLAW_API_KEY=%s DECLAW_DOMAIN=127.0.0.1:8080 %s sandbox connect %s; `+
		`code=$?; [ "$(stty -g)" = "$before" ] && r=yes || r=no; echo "CONNECT-EXIT=$code TTY-RESTORED=$r"; sleep 600`,
		shq(s.net.Host.Path), shq(s.key), shq(s.declaw), shq(id))
	tmux("-f", "/dev/null", "new-session", "-d", "-s", "cli", "-x", "100", "-y", "30", script)
	t.Cleanup(func() { exec.Command("tmux", "-L", socket, "kill-server").Run() })
	tmux("set-option", "-t", "cli", "status", "off")

	screen := func() string { return tmux("capture-pane", "-p", "-J", "-t", "cli", "-S", "-200") }
	waitFor := func(what string, re *regexp.Regexp, poke func()) string {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for last := time.Now(); ; {
			sc := screen()
			if re.MatchString(sc) {
				return sc
			}
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s (%s); the screen shows:\n%s", what, re, sc)
			}
			if poke != nil && time.Since(last) > 3*time.Second {
				poke()
				last = time.Now()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	keys := func(k ...string) { tmux(append([]string{"send-keys", "-t", "cli"}, k...)...) }

	// The shell prompt (pressing Enter again if it was printed before the stream attached).
	waitFor("the shell prompt", regexp.MustCompile(`(?m)[#$] *$`), func() { keys("Enter") })
	keys("-l", "python3")
	keys("Enter")
	waitFor("the python prompt", regexp.MustCompile(`(?m)^>>> *$`), nil)
	keys("-l", "print(6*7)")
	keys("Enter")
	waitFor("42", regexp.MustCompile(`(?m)^42\s*$`), nil)
	keys("-l", "import os")
	keys("Enter")

	paneSize := func() string {
		return strings.TrimSpace(tmux("display-message", "-p", "-t", "cli", "#{pane_width} #{pane_height}"))
	}
	checkSize := func(want string) {
		t.Helper()
		// The resize travels SIGWINCH -> declaw -> PATCH /pty -> envd; ask until python sees it.
		re := regexp.MustCompile(`(?m)^SIZE ` + want + `\s*$`)
		deadline := time.Now().Add(30 * time.Second)
		for {
			keys("-l", "print('SIZE', *os.get_terminal_size())")
			keys("Enter")
			time.Sleep(300 * time.Millisecond)
			sc := screen()
			if re.MatchString(sc) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("python never saw the terminal size %s; the screen shows:\n%s", want, sc)
			}
		}
	}
	checkSize(paneSize())
	tmux("resize-window", "-t", "cli", "-x", "120", "-y", "40")
	if got := paneSize(); got != "120 40" {
		t.Fatalf("tmux pane size after resize-window = %q", got)
	}
	checkSize("120 40")
	keys("-l", "exit()")
	keys("Enter")
	waitFor("the shell prompt after python", regexp.MustCompile(`(?m)exit\(\)\s*\n.*[#$] *$`), nil)
	keys("-l", "stty size; exit 7")
	keys("Enter")
	sc := waitFor("connect to exit", regexp.MustCompile(`CONNECT-EXIT=\d+ TTY-RESTORED=\w+`), nil)
	t.Logf("the terminal at the end:\n%s", strings.TrimRight(sc, "\n"))
	if !strings.Contains(sc, "\n40 120") {
		t.Errorf("stty size inside did not print 40 120; the screen shows:\n%s", sc)
	}
	if !strings.Contains(sc, "CONNECT-EXIT=7 TTY-RESTORED=yes") {
		t.Fatalf("want connect to exit 7 and restore the terminal; the screen shows:\n%s", sc)
	}
}

// shq quotes s for sh.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
