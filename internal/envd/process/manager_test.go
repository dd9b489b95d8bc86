package process

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/envd/sysuser"
)

func self(t *testing.T) *sysuser.User {
	t.Helper()
	return &sysuser.User{Name: "self", Uid: os.Geteuid(), Gid: os.Getegid(), Groups: []int{os.Getegid()}, Home: t.TempDir(), Shell: "/bin/sh"}
}

func start(t *testing.T, m *Manager, cmd string, mod func(*Spec)) *Handler {
	t.Helper()
	u := self(t)
	env, err := BuildEnv(u, u.Home, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Cmd: cmd, User: u, Dir: u.Home, Env: env}
	if mod != nil {
		mod(&spec)
	}
	h, err := m.Start(spec)
	if err != nil {
		t.Fatalf("Start(%q) error = %v", cmd, err)
	}
	t.Cleanup(func() { h.Kill() })
	return h
}

func wait(t *testing.T, h *Handler) Result {
	t.Helper()
	select {
	case <-h.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("pid %d did not finish", h.Pid())
	}
	return h.Result()
}

func TestRun(t *testing.T) {
	m := NewManager(Config{})
	tests := []struct {
		cmd        string
		stdout     string
		stderr     string
		exitCode   int
		errContain string
	}{
		{"echo hello", "hello\n", "", 0, ""},
		{"echo oops >&2; exit 3", "", "oops\n", 3, ""},
		{"printf 'a\\0b'", "a\x00b", "", 0, ""},
		{"kill -TERM $$", "", "", 128 + 15, "terminated"},
		{"cat", "", "", 0, ""}, // stdin is /dev/null
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			r := wait(t, start(t, m, tt.cmd, nil))
			if string(r.Stdout) != tt.stdout || string(r.Stderr) != tt.stderr || r.ExitCode != tt.exitCode {
				t.Errorf("run %q = stdout %q stderr %q exit %d, want %q %q %d",
					tt.cmd, r.Stdout, r.Stderr, r.ExitCode, tt.stdout, tt.stderr, tt.exitCode)
			}
			if !strings.Contains(r.Error, tt.errContain) || (tt.errContain == "") != (r.Error == "") {
				t.Errorf("run %q: Error = %q, want containing %q", tt.cmd, r.Error, tt.errContain)
			}
		})
	}
}

func TestBadSpec(t *testing.T) {
	m := NewManager(Config{})
	u := self(t)
	file := u.Home + "/f"
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []Spec{
		{Cmd: "true", User: u, Dir: u.Home + "/missing"},
		{Cmd: "true", User: u, Dir: file},
		{Cmd: "true\x00", User: u, Dir: u.Home},
		{Cmd: "true", Dir: u.Home},
		{Cmd: "echo " + strings.Repeat("x", 1<<20), User: u, Dir: u.Home}, // over execve's per-argument limit
	} {
		if _, err := m.Start(spec); !errors.Is(err, ErrBadRequest) {
			t.Errorf("Start(%+v) error = %v, want ErrBadRequest", spec, err)
		}
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	st, ok := parseStat(b)
	return ok && st.State != 'Z' && st.State != 'X'
}

func waitDead(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still alive", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTimeoutKillsTree(t *testing.T) {
	m := NewManager(Config{})
	// The background sleep runs in its own process group and leaves the
	// pipes, so only the tree walk finds it.
	h := start(t, m, "set -m; sleep 300 >/dev/null 2>&1 & echo $!; sleep 300", func(s *Spec) {
		s.Timeout = 500 * time.Millisecond
	})
	r := wait(t, h)
	if !r.TimedOut || !strings.Contains(r.Error, "timed out") {
		t.Errorf("result = %+v, want TimedOut", r)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(r.Stdout)))
	if err != nil {
		t.Fatalf("stdout %q: want the child pid", r.Stdout)
	}
	waitDead(t, child)
}

func TestKillAndStdin(t *testing.T) {
	m := NewManager(Config{})
	h := start(t, m, "while read l; do echo got:$l; done", func(s *Spec) { s.Stdin = true })
	if err := h.WriteStdin([]byte("one\ntwo\n")); err != nil {
		t.Fatalf("WriteStdin() error = %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for string(h.Output().Bytes(Stdout)) != "got:one\ngot:two\n" {
		if time.Now().After(deadline) {
			t.Fatalf("stdout = %q, want echoed lines", h.Output().Bytes(Stdout))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := m.List(); len(got) != 1 || got[0].Pid != h.Pid() {
		t.Errorf("List() = %+v, want pid %d", got, h.Pid())
	}
	if !h.Kill() {
		t.Error("Kill() = false for a running process")
	}
	r := wait(t, h)
	if !r.Killed || r.ExitCode != 137 {
		t.Errorf("after Kill: %+v, want Killed, exit 137", r)
	}
	if h.Kill() {
		t.Error("second Kill() = true, want false")
	}
	if err := h.WriteStdin([]byte("x")); !errors.Is(err, ErrStdinClosed) {
		t.Errorf("WriteStdin after exit error = %v, want ErrStdinClosed", err)
	}
	if got := m.List(); len(got) != 0 {
		t.Errorf("List() after kill = %+v, want empty", got)
	}
	if _, err := m.Get(h.Pid()); err != nil {
		t.Errorf("Get(finished) error = %v, want kept for wait", err)
	}

	h2 := start(t, m, "true", nil)
	if err := h2.WriteStdin([]byte("x")); !errors.Is(err, ErrNoStdin) {
		t.Errorf("WriteStdin without pipe error = %v, want ErrNoStdin", err)
	}
	if _, err := m.Get(-5); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(-5) error = %v, want ErrNotFound", err)
	}
}

func TestRetention(t *testing.T) {
	m := NewManager(Config{Retention: 100 * time.Millisecond, WaitedRetention: 50 * time.Millisecond})
	h := start(t, m, "true", nil)
	wait(t, h)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := m.Get(h.Pid()); errors.Is(err, ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("finished handler never dropped")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLargeOutputBounded(t *testing.T) {
	const limit = 1 << 20
	m := NewManager(Config{OutputLimit: limit})
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// 50 MiB on stdout and 10 MiB on stderr that nobody reads.
	h := start(t, m, "head -c 52428800 /dev/zero; head -c 10485760 /dev/zero >&2", nil)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	select {
	case <-h.Done():
	case <-ctx.Done():
		t.Fatal("process producing 60 MiB blocked")
	}
	for s, want := range map[Stream]int64{Stdout: 50 << 20, Stderr: 10 << 20} {
		ret, total := h.Output().Stats(s)
		if total != want || ret > limit {
			t.Errorf("Stats(%v) = %d retained, %d total, want <= %d, %d", s, ret, total, limit, want)
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grow := int64(after.HeapInuse) - int64(before.HeapInuse); grow > 16<<20 {
		t.Errorf("heap grew by %d bytes for 60 MiB of output with a %d byte limit", grow, limit)
	}
}

func TestOrphansReaped(t *testing.T) {
	if err := SetSubreaper(); err != nil {
		t.Skipf("cannot become subreaper: %v", err)
	}
	m := NewManager(Config{})
	// The subshell exits at once; its sleep is reparented to us and exits later.
	r := wait(t, start(t, m, "(sleep 0.2 >/dev/null 2>&1 & echo $!)", nil))
	orphan, err := strconv.Atoi(strings.TrimSpace(string(r.Stdout)))
	if err != nil {
		t.Fatalf("stdout %q: want a pid", r.Stdout)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat("/proc/" + strconv.Itoa(orphan)); os.IsNotExist(err) {
			break // exited and reaped, not left a zombie
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan %d never reaped", orphan)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMaxFinished(t *testing.T) {
	m := NewManager(Config{MaxFinished: 2})
	var hs []*Handler
	for i := range 4 {
		h := start(t, m, "echo "+strconv.Itoa(i), nil)
		wait(t, h)
		hs = append(hs, h)
	}
	for i, h := range hs {
		_, err := m.Get(h.Pid())
		if kept := err == nil; kept != (i >= 2) {
			t.Errorf("finished #%d kept = %v, want %v", i, kept, i >= 2)
		}
	}
	hs[3].Release()
	if _, err := m.Get(hs[3].Pid()); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Release error = %v, want ErrNotFound", err)
	}
}

func TestMaxFinishedOutput(t *testing.T) {
	m := NewManager(Config{MaxFinishedOutput: 25000})
	var hs []*Handler
	for range 4 {
		h := start(t, m, "head -c 10000 /dev/zero", nil)
		if r := wait(t, h); len(r.Stdout) != 10000 {
			t.Fatalf("stdout %d bytes, want 10000", len(r.Stdout))
		}
		hs = append(hs, h)
	}
	// 4 x 10000 bytes with room for 25000: the two newest are kept.
	for i, h := range hs {
		_, err := m.Get(h.Pid())
		if kept := err == nil; kept != (i >= 2) {
			t.Errorf("finished #%d kept = %v, want %v", i, kept, i >= 2)
		}
	}
	// The newest is kept even alone over the limit.
	m2 := NewManager(Config{MaxFinishedOutput: 10})
	h := start(t, m2, "head -c 100 /dev/zero", nil)
	wait(t, h)
	if _, err := m2.Get(h.Pid()); err != nil {
		t.Errorf("the only finished process was dropped: %v", err)
	}
}

func TestPty(t *testing.T) {
	m := NewManager(Config{})
	h := start(t, m, `tty; stty size; read line; echo "got:$line"; stty size`, func(s *Spec) {
		s.Pty = &Size{Cols: 100, Rows: 30}
	})
	waitOutput := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(string(h.Output().Bytes(PtyStream)), want) {
			if time.Now().After(deadline) {
				t.Fatalf("pty output %q, want it to contain %q", h.Output().Bytes(PtyStream), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitOutput("30 100")
	if !h.Info().IsPty || !strings.Contains(string(h.Output().Bytes(PtyStream)), "/dev/pts/") {
		t.Errorf("not on a pty: info %+v, output %q", h.Info(), h.Output().Bytes(PtyStream))
	}
	if err := h.Resize(Size{Cols: 120, Rows: 40}); err != nil {
		t.Fatalf("Resize() error = %v", err)
	}
	if err := h.Resize(Size{Cols: 0, Rows: 40}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("Resize(0 cols) error = %v, want ErrBadRequest", err)
	}
	if err := h.WriteStdin([]byte("hello\r")); err != nil {
		t.Fatalf("WriteStdin() error = %v", err)
	}
	r := wait(t, h)
	out := string(h.Output().Bytes(PtyStream))
	if r.ExitCode != 0 || !strings.Contains(out, "got:hello") || !strings.Contains(out, "40 120") {
		t.Errorf("pty result %+v, output %q", r, out)
	}
	if len(r.Stdout) != 0 || len(r.Stderr) != 0 {
		t.Errorf("pty output leaked into stdout/stderr: %+v", r)
	}

	plain := start(t, m, "true", nil)
	if err := plain.Resize(Size{Cols: 1, Rows: 1}); !errors.Is(err, ErrNotPty) {
		t.Errorf("Resize without pty error = %v, want ErrNotPty", err)
	}
}

func TestDescendantHoldsOutput(t *testing.T) {
	m := NewManager(Config{WaitDelay: 100 * time.Millisecond})
	tests := []struct {
		name string
		cmd  string
		want string
	}{
		// The sleep inherits stdout and keeps it open.
		{"quiet descendant", "sleep 300 & echo $!; echo main", "main\n"},
		// The loop keeps writing after the shell exited.
		{"chatty descendant", "(while :; do echo x; sleep 0.02; done) & echo $!; echo main", "main\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			begin := time.Now()
			h := start(t, m, tt.cmd, nil)
			r := wait(t, h)
			lines := strings.SplitN(string(r.Stdout), "\n", 2)
			if pid, err := strconv.Atoi(lines[0]); err == nil {
				t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
			}
			if len(lines) < 2 || !strings.Contains(lines[1], tt.want) || r.ExitCode != 0 {
				t.Errorf("result stdout %q exit %d, want a pid then %q", r.Stdout, r.ExitCode, tt.want)
			}
			if d := time.Since(begin); d > 5*time.Second {
				t.Errorf("result took %v with a descendant holding stdout", d)
			}
		})
	}
}

func TestOutputCompleteAfterExit(t *testing.T) {
	// The process fills the pipe and exits at once: all of it must be
	// read even though the reader runs after the exit.
	m := NewManager(Config{WaitDelay: time.Millisecond})
	for i := range 20 {
		r := wait(t, start(t, m, "head -c 1000000 /dev/zero | tr '\\0' a", nil))
		if len(r.Stdout) != 1000000 {
			t.Fatalf("run %d: got %d bytes of stdout, want 1000000", i, len(r.Stdout))
		}
	}
}

func TestWarmup(t *testing.T) {
	if err := Warmup(30 * time.Second); err != nil {
		t.Fatalf("Warmup: %v", err)
	}
}
