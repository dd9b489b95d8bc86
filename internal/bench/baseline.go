package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/declaw/declaw/internal/network/nsrun"
)

// Baselines are the same work done without declaw, measured in the same
// run as the figures they are compared to:
//
//   - RawRunsc: `runsc run` of /bin/true over the template's rootfs, with
//     the flags declaw's gVisor driver uses (--platform, --network=host,
//     --overlay), inside a throwaway network namespace and with an OCI spec
//     that has no network namespace of its own (as e2e's
//     BenchmarkRawRunscRun). No API, no slot, no envd.
//   - NativeSpawn: fork+exec of `/bin/bash -c true` on the host, which is
//     what envd does for commands.run("true").
//   - NativeShellStart: the shell exec chain of ShellChain on the host.

// rawRunscSpec is the OCI spec of the raw runsc baseline (%q: the rootfs).
const rawRunscSpec = `{"ociVersion":"1.0.2","process":{"args":["/bin/true"],"cwd":"/","env":["PATH=/usr/bin:/bin"],"user":{"uid":0,"gid":0}},
"root":{"path":%q,"readonly":true},"hostname":"bench",
"mounts":[{"destination":"/proc","type":"proc","source":"proc"},{"destination":"/dev","type":"tmpfs","source":"tmpfs"},{"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","noexec","nodev","ro"]}],
"linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"}]}}`

// RawRunscConfig configures the raw runsc baseline.
type RawRunscConfig struct {
	Runsc    string // default "runsc"
	Platform string // default "ptrace"
	RootFS   string // the template's rootfs directory
	Runs     int
}

// RawRunsc measures `runsc run /bin/true` cfg.Runs times in a network
// namespace it creates (and deletes) for the purpose. It needs root.
func RawRunsc(ctx context.Context, cfg RawRunscConfig) (_ []time.Duration, err error) {
	if cfg.Runsc == "" {
		cfg.Runsc = "runsc"
	}
	if cfg.Platform == "" {
		cfg.Platform = "ptrace"
	}
	if st, err := os.Stat(cfg.RootFS); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("raw runsc baseline: template rootfs %s: not a directory", cfg.RootFS)
	}
	dir, err := os.MkdirTemp("", "declaw-bench-runsc-")
	if err != nil {
		return nil, fmt.Errorf("raw runsc baseline: %w", err)
	}
	defer func() {
		// Newer runsc leaves a netns bind mount in its root dir.
		_ = unix.Unmount(filepath.Join(dir, "runsc", "null-netns"), unix.MNT_DETACH)
		os.RemoveAll(dir)
	}()
	bundle := filepath.Join(dir, "bundle")
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		return nil, fmt.Errorf("raw runsc baseline: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), fmt.Appendf(nil, rawRunscSpec, cfg.RootFS), 0o644); err != nil {
		return nil, fmt.Errorf("raw runsc baseline: write OCI spec: %w", err)
	}
	ns := "dbraw" + randHex(4)
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("raw runsc baseline: ip netns add %s: %v: %s", ns, err, out)
	}
	defer func() {
		if out, derr := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); derr != nil {
			err = errors.Join(err, fmt.Errorf("raw runsc baseline: ip netns delete %s: %v: %s", ns, derr, out))
		}
	}()
	root := filepath.Join(dir, "runsc")
	var lat []time.Duration
	for i := range cfg.Runs {
		id := fmt.Sprintf("dbraw-%s-%d", randHex(3), i)
		cmd := exec.CommandContext(ctx, cfg.Runsc, "--root", root, "--platform="+cfg.Platform, "--network=host", "--overlay2=all:memory",
			"run", "--bundle", bundle, id)
		start := time.Now()
		out, err := runInNetns(cmd, "/run/netns/"+ns)
		d := time.Since(start)
		exec.Command(cfg.Runsc, "--root", root, "delete", "--force", id).Run()
		if err != nil {
			return lat, fmt.Errorf("raw runsc baseline: runsc run: %v: %s", err, out)
		}
		lat = append(lat, d)
	}
	return lat, nil
}

// runInNetns starts cmd from an OS thread switched into the network
// namespace at nsPath (the child inherits it; the thread is switched back,
// or discarded if it cannot be) and returns its combined output. Unlike
// nsenter this adds no process to the measured time.
func runInNetns(cmd *exec.Cmd, nsPath string) ([]byte, error) {
	var out safeBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := startInNetns(cmd, nsPath); err != nil {
		return nil, err
	}
	err := cmd.Wait()
	return out.Bytes(), err
}

func startInNetns(cmd *exec.Cmd, nsPath string) error { return nsrun.Start(nsPath, cmd) }

// NativeSpawn measures fork+exec of `/bin/bash -c true` on the host runs times.
func NativeSpawn(ctx context.Context, runs int) ([]time.Duration, error) {
	var lat []time.Duration
	for range runs {
		start := time.Now()
		if err := exec.CommandContext(ctx, "/bin/bash", "-c", "true").Run(); err != nil {
			return lat, fmt.Errorf("native spawn baseline: /bin/bash -c true: %w", err)
		}
		lat = append(lat, time.Since(start))
	}
	return lat, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ShellChain returns a command that starts shell (a bash) n times in a row,
// each start exec'ing the next (no fork: what envd pays per command once
// its own fork is done), and prints the start and end times. ShellStarts
// turns the output into the time per start. Inside a sandbox it measures
// the floor of any command's round trip: the cost of starting the shell.
func ShellChain(shell string, n int) string {
	return fmt.Sprintf(`export N=%d T0=$EPOCHREALTIME; exec %s -c 'if [ "$N" -gt 0 ]; then N=$((N-1)) exec %s -c "$BASH_EXECUTION_STRING"; else echo "$T0 $EPOCHREALTIME"; fi'`, n, shell, shell)
}

// ShellStarts parses the output of ShellChain(_, n) into the time per start.
func ShellStarts(out string, n int) (time.Duration, error) {
	var t0, t1 float64
	if _, err := fmt.Sscanf(strings.TrimSpace(out), "%f %f", &t0, &t1); err != nil || n <= 0 || t1 < t0 {
		return 0, fmt.Errorf("shell chain: unexpected output %q", out)
	}
	return time.Duration((t1 - t0) / float64(n) * float64(time.Second)), nil
}

// NativeShellStart runs ShellChain("/bin/bash", n) on the host runs times
// and returns the time per start of each run.
func NativeShellStart(ctx context.Context, runs, n int) ([]time.Duration, error) {
	var lat []time.Duration
	for range runs {
		out, err := exec.CommandContext(ctx, "/bin/bash", "-c", ShellChain("/bin/bash", n)).Output()
		if err != nil {
			return lat, fmt.Errorf("native shell start baseline: %w", err)
		}
		d, err := ShellStarts(string(out), n)
		if err != nil {
			return lat, fmt.Errorf("native shell start baseline: %w", err)
		}
		lat = append(lat, d)
	}
	return lat, nil
}
