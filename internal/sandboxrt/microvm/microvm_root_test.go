package microvm

// Root tests boot real VMs. On hosts without usable KVM (such as the
// project's CI and dev machines, whose /dev/kvm is PVM) they run under TCG,
// where one boot costs several seconds of wall time. So the number of boots
// is kept small: TestBootEnvd boots once and checks everything the issue
// asks of a VM (envd over the network, guest kernel, VM cpuinfo, sysctl
// isolation, Destroy), and the conformance suite boots about nine VMs
// (~1.5 min on this 2-core host).
// Benchmarks (BenchmarkBoot) measure boot-to-envd-ready against the
// QEMU+kernel floor.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/sandboxrt/rttest"
	"github.com/declaw/declaw/internal/template"
	"github.com/declaw/declaw/internal/testenv"
)

// Every test slot uses the same addresses: each pair of namespaces is its own world.
const (
	testGuestIP = "10.200.0.2"
	testHostIP  = "10.200.0.1"
)

func requireRoot(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatalf("qemu-system-x86_64 not installed (scripts/deps.sh): %v", err)
	}
	if _, err := newestKernel("/boot"); err != nil {
		t.Fatalf("%v (scripts/deps.sh)", err)
	}
}

var initBuild struct {
	sync.Once
	path string
	err  error
}

// guestInit builds cmd/declaw-init once per test process.
func guestInit(t testing.TB) string {
	t.Helper()
	initBuild.Do(func() {
		root, err := testenv.ModuleRoot()
		if err != nil {
			initBuild.err = err
			return
		}
		dir, err := os.MkdirTemp("", "declaw-microvm-init-")
		if err != nil {
			initBuild.err = err
			return
		}
		initBuild.path = filepath.Join(dir, "declaw-init")
		cmd := exec.Command("go", "build", "-trimpath", "-o", initBuild.path, "./cmd/declaw-init")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			initBuild.err = fmt.Errorf("go build ./cmd/declaw-init: %v: %s", err, out)
		}
	})
	if initBuild.err != nil {
		t.Fatal(initBuild.err)
	}
	return initBuild.path
}

// testRootFS returns a root filesystem with python3 (as the gvisor tests).
func testRootFS(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("DECLAW_TEST_ROOTFS"); p != "" {
		return p
	}
	const dev = "/var/tmp/declaw-dev/rootfs-python"
	if _, err := os.Stat(filepath.Join(dev, "usr/bin/python3")); err == nil {
		return dev
	}
	m, err := template.New(template.Config{StateDir: "/var/tmp/declaw-test", Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	tm, err := m.Ensure(ctx, "python")
	if err != nil {
		t.Fatalf("build test rootfs: %v", err)
	}
	return tm.RootFS
}

// testImageDir is shared by the tests' drivers, so a root image is built
// once per machine, not once per test.
const testImageDir = "/var/tmp/declaw-test/microvm-images"

func newTestDriver(t testing.TB, stateDir string) *Driver {
	t.Helper()
	d, err := New(Config{StateDir: stateDir, ImageDir: testImageDir, InitBinary: guestInit(t), Logf: t.Logf,
		KernelArgs: strings.Fields(os.Getenv("DECLAW_TEST_KERNEL_ARGS"))})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// testSlot is a slot-like pair of namespaces: the sandbox's netns with
// eth0 (guest address, default route via the host end) and a "host" netns
// holding the other end of the veth, from which the tests dial the guest.
type testSlot struct {
	NetNS, HostNS string // /var/run/netns paths
}

var slots sync.Map // sandbox netns path -> *testSlot

func addNamedNS(t testing.TB, prefix string) (string, netns.NsHandle) {
	t.Helper()
	name := rttest.UniqueID(prefix)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	path := "/var/run/netns/" + name
	h, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return path, h
}

func newSlot(t testing.TB) *testSlot {
	t.Helper()
	slotPath, slotNS := addNamedNS(t, "dclw-mvs")
	hostPath, hostNS := addNamedNS(t, "dclw-mvh")
	hh, err := netlink.NewHandleAt(hostNS)
	if err != nil {
		t.Fatal(err)
	}
	defer hh.Close()
	gh, err := netlink.NewHandleAt(slotNS)
	if err != nil {
		t.Fatal(err)
	}
	defer gh.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(hh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth-h"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(slotNS)}))
	for _, s := range []struct {
		h         *netlink.Handle
		link, ip  string
		route, gw string
	}{{hh, "veth-h", testHostIP, "", ""}, {gh, "eth0", testGuestIP, "default", testHostIP}} {
		lo, err := s.h.LinkByName("lo")
		must(err)
		must(s.h.LinkSetUp(lo))
		l, err := s.h.LinkByName(s.link)
		must(err)
		must(s.h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(s.ip).To4(), Mask: net.CIDRMask(30, 32)}}))
		must(s.h.LinkSetUp(l))
		if s.route != "" {
			must(s.h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(s.gw)}))
		}
	}
	ts := &testSlot{NetNS: slotPath, HostNS: hostPath}
	slots.Store(slotPath, ts)
	return ts
}

// dialInNetNS dials addr from inside the netns at nsPath.
func dialInNetNS(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer orig.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// listenInNetNS listens on addr inside the netns at nsPath.
func listenInNetNS(nsPath, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNetNS(nsPath, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}

// dialGuest dials the guest from the host end of its slot.
func dialGuest(ctx context.Context, spec sandboxrt.Spec, port int) (net.Conn, error) {
	v, ok := slots.Load(spec.NetNSPath)
	if !ok {
		return nil, fmt.Errorf("no test slot for %s", spec.NetNSPath)
	}
	return dialInNetNS(ctx, v.(*testSlot).HostNS, net.JoinHostPort(testGuestIP, strconv.Itoa(port)))
}

// leaks lists what VM id left under stateDir and as processes.
func leaks(stateDir, id string) []string {
	var out []string
	dir := filepath.Join(stateDir, "vms", id)
	if _, err := os.Stat(dir); err == nil {
		out = append(out, dir)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || processGone(atoi(filepath.Base(filepath.Dir(p)))) {
			continue
		}
		if bytes.Contains(b, []byte(filepath.Join(dir, "qemu.pid"))) {
			out = append(out, "process "+filepath.Base(filepath.Dir(p)))
		}
	}
	return out
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// tapLeft reports whether the slot netns still holds the VM's tap or the redirect.
func tapLeft(t testing.TB, nsPath string) []string {
	t.Helper()
	var out []string
	err := inNetNS(nsPath, func() error {
		if _, err := netlink.LinkByName(tapName); err == nil {
			out = append(out, tapName)
		}
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		qs, err := netlink.QdiscList(eth)
		if err != nil {
			return err
		}
		for _, q := range qs {
			if q.Type() == "ingress" {
				out = append(out, "ingress qdisc on eth0")
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("inspect %s: %v", nsPath, err)
	}
	return out
}

func harness(t *testing.T) rttest.Harness {
	return rttest.Harness{
		New:    func(t *testing.T, dir string) sandboxrt.Runtime { return newTestDriver(t, dir) },
		RootFS: testRootFS(t),
		NetNS:  func(t *testing.T) string { return newSlot(t).NetNS },
		Dial:   dialGuest,
		Leaks:  leaks,
	}
}

// shortStateDir returns a state dir short enough for QMP's unix socket path.
func shortStateDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dmv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// envdCall sends one request to envd in the VM.
func envdCall(ctx context.Context, spec sandboxrt.Spec, token, method, path string, body any, out any) (int, error) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return dialGuest(ctx, spec, envdapi.Port)
	}}}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://envd"+path, rd)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set(envdapi.AccessTokenHeader, token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("parse %q: %w", b, err)
		}
	}
	return resp.StatusCode, nil
}

// waitHealth polls envd's GET /health from the host side until it answers 2xx.
func waitHealth(ctx context.Context, spec sandboxrt.Spec, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		code, err := envdCall(cctx, spec, "", "GET", "/health", nil, nil)
		ccancel()
		if err == nil && code/100 == 2 {
			return nil
		}
		last = fmt.Errorf("GET /health = %d, %v", code, err)
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("envd not healthy after %v: %v", timeout, last)
}

// envdSpec is a sandbox like the orchestrator's: envd as PID 1, with its
// binary, resolv.conf, hosts and hostname bound in.
func envdSpec(t testing.TB, envd, rootfs, nsPath, token string) sandboxrt.Spec {
	t.Helper()
	run := t.TempDir()
	files := map[string]string{"resolv.conf": "nameserver " + testHostIP + "\n", "hosts": "127.0.0.1 localhost\n", "hostname": "vm-test\n"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(run, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return sandboxrt.Spec{
		ID:        rttest.UniqueID("vm"),
		RootFS:    rootfs,
		NetNSPath: nsPath,
		Hostname:  "vm-test",
		Init:      []string{"/usr/local/bin/envd"},
		Env:       []string{envdapi.AccessTokenEnv + "=" + token, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Mounts: []sandboxrt.Mount{
			{Source: envd, Target: "/usr/local/bin/envd", ReadOnly: true},
			{Source: filepath.Join(run, "resolv.conf"), Target: "/etc/resolv.conf", ReadOnly: true},
			{Source: filepath.Join(run, "hosts"), Target: "/etc/hosts", ReadOnly: true},
			{Source: filepath.Join(run, "hostname"), Target: "/etc/hostname", ReadOnly: true},
		},
	}
}

// TestBootEnvd boots one VM with envd as PID 1 and checks that it is a VM.
func TestBootEnvd(t *testing.T) {
	requireRoot(t)
	_, envd := testenv.BuildBinaries(t)
	rootfs := testRootFS(t)
	dir := shortStateDir(t)
	d := newTestDriver(t, dir)
	t.Logf("accel %s (%s), kernel %s", d.Accel(), d.AccelReason(), d.Kernel())
	t.Cleanup(func() {
		if err := d.Cleanup(context.Background()); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	})
	slot := newSlot(t)
	const token = "microvm-test-token"
	spec := envdSpec(t, envd, rootfs, slot.NetNS, token)
	spec.Resources = sandboxrt.Resources{CPUs: 2, MemoryMB: 384}
	t0 := time.Now()
	if err := d.Start(t.Context(), spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), spec.ID) })
	console, _ := os.ReadFile(filepath.Join(d.vmDir(spec.ID), "console.log"))
	t.Logf("console:\n%s", console)
	started := time.Since(t0)
	if err := waitHealth(t.Context(), spec, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("boot: Start returned after %v, envd healthy after %v", started.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))

	run := func(cmd string) envdapi.CommandResult {
		t.Helper()
		var r envdapi.CommandResult
		code, err := envdCall(t.Context(), spec, token, "POST", "/commands", envdapi.CommandRequest{Cmd: cmd}, &r)
		if err != nil || code != 200 {
			t.Fatalf("POST /commands %q = %d, %v", cmd, code, err)
		}
		return r
	}
	if code, err := envdCall(t.Context(), spec, "wrong", "POST", "/commands", envdapi.CommandRequest{Cmd: "true"}, nil); err != nil || code != 401 {
		t.Errorf("POST /commands with a wrong token = %d, %v; want 401", code, err)
	}

	var host unix.Utsname
	_ = unix.Uname(&host)
	hostRelease := unix.ByteSliceToString(host.Release[:])
	guestRelease := strings.TrimPrefix(filepath.Base(d.Kernel()), "vmlinuz-")
	if r := run("uname -r"); strings.TrimSpace(r.Stdout) != guestRelease || guestRelease == hostRelease {
		t.Errorf("uname -r in the VM = %q (%s); want the guest kernel %q (host runs %q)", r.Stdout, r.Stderr, guestRelease, hostRelease)
	}
	cpuinfo := run("grep -c ^processor /proc/cpuinfo; grep -m1 'model name' /proc/cpuinfo; grep -m1 -o -w hypervisor /proc/cpuinfo; cat /sys/class/dmi/id/sys_vendor 2>/dev/null; cat /sys/devices/system/cpu/online").Stdout
	t.Logf("guest cpuinfo: %q", cpuinfo)
	lines := strings.Split(strings.TrimSpace(cpuinfo), "\n")
	if len(lines) < 3 || lines[0] != "2" || !strings.Contains(cpuinfo, "QEMU") && !strings.Contains(cpuinfo, "hypervisor") {
		t.Errorf("guest /proc/cpuinfo = %q; want 2 processors of a QEMU virtual CPU (hypervisor flag)", cpuinfo)
	}
	if r := run("awk '/MemTotal/ {print $2}' /proc/meminfo"); atoi(strings.TrimSpace(r.Stdout)) > 384<<10 || atoi(strings.TrimSpace(r.Stdout)) < 200<<10 {
		t.Errorf("guest MemTotal = %q kB; want about 384 MiB", r.Stdout)
	}
	if r := run("hostname; cat /etc/resolv.conf; echo $$PPID; cat /proc/1/comm"); !strings.Contains(r.Stdout, "vm-test") || !strings.Contains(r.Stdout, "nameserver "+testHostIP) || !strings.Contains(r.Stdout, "envd") {
		t.Errorf("hostname, resolv.conf, PID 1 = %q; want vm-test, the bound resolv.conf, envd", r.Stdout)
	}
	if r := run("echo x > /etc/resolv.conf"); r.ExitCode == 0 {
		t.Errorf("writing the read-only /etc/resolv.conf succeeded")
	}
	if r := run("echo $" + envdapi.AccessTokenEnv + "; date +%s"); strings.Contains(r.Stdout, token) {
		t.Errorf("the access token is visible to commands: %q", r.Stdout)
	} else if f := strings.Fields(r.Stdout); len(f) > 0 {
		if skew := time.Since(time.Unix(int64(atoi(f[len(f)-1])), 0)); skew > time.Minute || skew < -time.Minute {
			t.Errorf("guest clock is %v off", skew)
		}
	}

	// A kernel-level change inside stays inside.
	hostSwap, _ := os.ReadFile("/proc/sys/vm/swappiness")
	want := "13"
	if strings.TrimSpace(string(hostSwap)) == want {
		want = "17"
	}
	if r := run("sysctl -w vm.swappiness=" + want + " >/dev/null 2>&1 || echo " + want + " > /proc/sys/vm/swappiness; cat /proc/sys/vm/swappiness"); strings.TrimSpace(r.Stdout) != want {
		t.Errorf("sysctl vm.swappiness in the VM = %q (%s); want %s", r.Stdout, r.Stderr, want)
	}
	if after, _ := os.ReadFile("/proc/sys/vm/swappiness"); !bytes.Equal(after, hostSwap) {
		t.Errorf("host vm.swappiness changed from %q to %q by the guest", hostSwap, after)
	}
	// The overlay is writable, the template image is not touched.
	if r := run("echo hi > /root/vm-written && cat /root/vm-written && touch /usr/vm-written"); r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "hi" {
		t.Errorf("writing into the overlay = %+v", r)
	}
	if _, err := os.Stat(filepath.Join(rootfs, "root/vm-written")); err == nil {
		t.Errorf("a guest write reached the template directory")
	}
	// The guest reaches the host end of its slot (the path to DNS and the egress proxy).
	l, err := listenInNetNS(slot.HostNS, testHostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		b, _ := io.ReadAll(c)
		got <- string(b)
	}()
	port := l.Addr().(*net.TCPAddr).Port
	if r := run(fmt.Sprintf("python3 -c 'import socket; s = socket.create_connection((%q, %d), 10); s.sendall(b\"from-vm\"); s.close()'", testHostIP, port)); r.ExitCode != 0 {
		t.Errorf("connect from the guest to the host end = %+v", r)
	}
	select {
	case msg := <-got:
		if msg != "from-vm" {
			t.Errorf("host end received %q, want from-vm", msg)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("host end received nothing from the guest")
	}
	if r := run("cat /proc/net/if_inet6 2>&1; ls /proc/sys/net/ipv6 2>&1 | head -1"); strings.Contains(r.Stdout, "eth0") {
		t.Errorf("guest has IPv6 on eth0: %q", r.Stdout)
	}

	st, err := d.Stats(t.Context(), spec.ID)
	if err != nil || st.CPUUsageNanos == 0 || st.MemoryBytes < 16<<20 {
		t.Errorf("Stats = %+v, %v", st, err)
	}

	if err := d.Destroy(t.Context(), spec.ID); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if l := leaks(dir, spec.ID); len(l) > 0 {
		t.Errorf("leaks after Destroy: %q", l)
	}
	if l := tapLeft(t, slot.NetNS); len(l) > 0 {
		t.Errorf("left in the slot netns after Destroy: %q", l)
	}
	if _, err := d.State(t.Context(), spec.ID); err == nil {
		t.Errorf("State after Destroy succeeded, want ErrNotFound")
	}
	// The slot is as the network package made it: the netns's own stack answers again.
	if err := inNetNS(slot.NetNS, func() error {
		sn, err := readSlot("eth0")
		if err == nil && sn.IP.String() != testGuestIP+"/30" {
			err = fmt.Errorf("eth0 address %s", sn.IP)
		}
		return err
	}); err != nil {
		t.Errorf("slot after Destroy: %v", err)
	}
}

func TestConformance(t *testing.T) {
	requireRoot(t)
	h := harness(t)
	// The suite's state dirs come from t.TempDir(), whose paths can be too
	// long for QMP's unix socket; wrap New to use a short one per state dir.
	var mu sync.Mutex
	short := map[string]string{}
	h.New = func(t *testing.T, dir string) sandboxrt.Runtime {
		mu.Lock()
		s, ok := short[dir]
		if !ok {
			s = shortStateDir(t)
			short[dir] = s
		}
		mu.Unlock()
		d := newTestDriver(t, s)
		// Also when a test fails before its own Cleanup (CleanupAfterCrash).
		t.Cleanup(func() { _ = d.Cleanup(context.Background()) })
		return d
	}
	leaksFn := h.Leaks
	h.Leaks = func(dir, id string) []string {
		mu.Lock()
		s := short[dir]
		mu.Unlock()
		return leaksFn(s, id)
	}
	rttest.Run(t, h)
}

// BenchmarkBoot reports, in the same run, the QEMU+kernel floor (the same
// kernel and initramfs booting an init that resets at once) and the
// driver's boot: Start (guest init done, envd exec'd) and envd's /health
// answering over the slot. Each iteration boots two VMs: under TCG run it
// with a small count, e.g. -bench Boot -benchtime 3x.
func BenchmarkBoot(b *testing.B) {
	requireRoot(b)
	_, envd := testenv.BuildBinaries(b)
	rootfs := testRootFS(b)
	d := newTestDriver(b, shortStateDir(b))
	d.cfg.Logf = func(string, ...any) {}
	b.Cleanup(func() { _ = d.Cleanup(context.Background()) })
	slot := newSlot(b)
	if _, err := d.EnsureImage(context.Background(), rootfs); err != nil {
		b.Fatal(err)
	}
	var floor, start, ready time.Duration
	for b.Loop() {
		f, err := d.BootFloor(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		spec := envdSpec(b, envd, rootfs, slot.NetNS, "bench")
		t0 := time.Now()
		if err := d.Start(context.Background(), spec); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := waitHealth(context.Background(), spec, 60*time.Second); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if err := d.Destroy(context.Background(), spec.ID); err != nil {
			b.Fatal(err)
		}
		floor += f
		start += t1.Sub(t0)
		ready += t2.Sub(t0)
	}
	n := float64(b.N)
	b.ReportMetric(floor.Seconds()/n, "floor-s/op")
	b.ReportMetric(start.Seconds()/n, "start-s/op")
	b.ReportMetric(ready.Seconds()/n, "envd-ready-s/op")
	b.Logf("accel %s: QEMU+kernel floor %.2fs, Start %.2fs, envd ready %.2fs (n=%d)", d.Accel(), floor.Seconds()/n, start.Seconds()/n, ready.Seconds()/n, b.N)
}

// TestLimits: the guest's RAM is the memory limit (an OOM kills a process
// inside, reported as EventOOM, and the VM lives on) and the disk image's
// size is the disk limit (ENOSPC inside, then writing again works).
func TestLimits(t *testing.T) {
	requireRoot(t)
	_, envd := testenv.BuildBinaries(t)
	rootfs := testRootFS(t)
	dir := shortStateDir(t)
	d := newTestDriver(t, dir)
	var mu sync.Mutex
	var events []sandboxrt.Event
	d.Notify(func(ev sandboxrt.Event) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	})
	t.Cleanup(func() {
		if err := d.Cleanup(context.Background()); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	})
	slot := newSlot(t)
	const token = "microvm-limits-token"
	spec := envdSpec(t, envd, rootfs, slot.NetNS, token)
	spec.Resources = sandboxrt.Resources{CPUs: 1, MemoryMB: 256, DiskMB: 32}
	if err := d.Start(t.Context(), spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := waitHealth(t.Context(), spec, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	run := func(cmd string) envdapi.CommandResult {
		t.Helper()
		var r envdapi.CommandResult
		zero := 0.0
		code, err := envdCall(t.Context(), spec, token, "POST", "/commands", envdapi.CommandRequest{Cmd: cmd, Timeout: &zero}, &r)
		if err != nil || code != 200 {
			t.Fatalf("POST /commands %q = %d, %v", cmd, code, err)
		}
		return r
	}
	if r := run("dd if=/dev/zero of=/tmp/fill bs=1M count=64"); r.ExitCode == 0 || !strings.Contains(r.Stderr, "No space left on device") {
		t.Errorf("dd of 64 MiB into a 32 MiB disk = %+v, want ENOSPC", r)
	}
	if r := run("rm /tmp/fill && echo again > /root/x && cat /root/x"); r.Stdout != "again\n" {
		t.Errorf("after ENOSPC: %+v", r)
	}
	if st, err := os.Stat(filepath.Join(d.vmDir(spec.ID), "disk.img")); err != nil || st.Size() != 32<<20 {
		t.Errorf("disk image: %v, %v; want 32 MiB", st, err)
	}
	r := run("python3 -c 'x=[bytearray(16<<20) for _ in range(100)]'; echo exit=$?")
	t.Logf("memory hog in a 256 MiB VM: %+v", r)
	if !strings.Contains(r.Stdout, "exit=137") && !strings.Contains(r.Stderr, "MemoryError") {
		t.Errorf("memory hog = %+v, want it killed (137) or refused (MemoryError)", r)
	}
	if r := run("echo alive"); r.Stdout != "alive\n" {
		t.Errorf("the VM after the hog: %+v", r)
	}
	if strings.Contains(r.Stdout, "exit=137") {
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := len(events)
			var kinds []sandboxrt.EventKind
			for _, ev := range events {
				kinds = append(kinds, ev.Kind)
			}
			mu.Unlock()
			if n > 0 {
				if kinds[0] != sandboxrt.EventOOM || slices.Contains(kinds, sandboxrt.EventExit) {
					t.Errorf("events = %v, want oom and no exit", kinds)
				}
				break
			}
			if time.Now().After(deadline) {
				console, _ := os.ReadFile(filepath.Join(d.vmDir(spec.ID), "console.log"))
				t.Errorf("no OOM event after the kill; console:\n%s", console)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if err := d.Destroy(t.Context(), spec.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * consolePoll)
	mu.Lock()
	defer mu.Unlock()
	for _, ev := range events {
		if ev.Kind == sandboxrt.EventExit {
			t.Errorf("Destroy was reported as %+v", ev)
		}
	}
}
