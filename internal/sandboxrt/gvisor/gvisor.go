// Package gvisor is the sandboxrt driver that runs each sandbox under
// gVisor's runsc.
//
// Recipe (measured, see ARCHITECTURE §2): runsc is started inside the
// sandbox's own network namespace with --network=host, so the sandbox sees
// only that netns's interfaces; the OCI spec lists no network namespace.
// The root is the read-only template directory under runsc's in-memory
// overlay, so everything a sandbox writes vanishes when it is destroyed.
// Every runsc control command (state, kill, pause, delete, events) also
// runs inside that netns, because runsc reaches the sandbox over abstract
// unix sockets, which are scoped to a network namespace.
//
// The driver keeps all it owns under Config.StateDir:
//
//	runsc/          runsc --root: runsc's own container state
//	bundles/<id>/   config.json (OCI spec), record.json (netns, cgroup), console.log
//
// record.json is written before runsc starts, so a later Cleanup, even by
// a new process after a crash, can reach and destroy every container.
//
// runsc runs in the foreground ("runsc run", not --detach) as a child of the
// driver: runsc then reaps the sandbox process itself the moment it dies,
// and Destroy takes tens of milliseconds instead of waiting for the host's
// init to reap an orphan.
//
// Behaviour measured with runsc 0.0~20221219 (Debian bookworm), ptrace:
//   - Bind mount targets must exist in the template: runsc's gofer creates
//     missing ones in the host directory. Start refuses such specs.
//   - Under --overlay2=all:memory, writes to a writable bind mount stay
//     inside the sandbox; they do not reach the host file. The driver
//     therefore runs root:memory (or none, with a disk), and writable bind
//     mounts (live volumes) write to the host directory; another sandbox
//     binding it sees changes at once (gofer, --file-access-mounts=shared).
//     A read-only bind is enforced by the gofer: EROFS even for root, and
//     remount rw fails.
//   - A missing directory mount target is created by the gofer in the
//     root directory: allowed with a disk (the sandbox's own overlay).
//   - Resources.MemoryMB is the host memory cgroup limit (runsc also shows
//     it as the guest's total memory). It holds the sentry, the gofer and
//     all guest memory. Going over it OOM-kills the whole sandbox (the host
//     kernel kills the sentry, inside that cgroup only), which then reports
//     StateStopped; the driver reports EventOOM and EventExit (oom.go).
//   - Resources.DiskMB is the size of the sandbox's writable root: an ext4
//     image under a host overlayfs (disk.go); past it writes fail with
//     ENOSPC inside. Without it the root is runsc's in-memory overlay,
//     charged to the memory cgroup and bounded only by MemoryMB.
//   - Resources.Pids becomes RLIMIT_NPROC inside (fork/clone fail with
//     EAGAIN, per user, the sandbox lives on) plus a looser host pids cgroup
//     as a backstop: hitting that one kills the sentry.
//   - Resources.CPUs is a CFS quota on the sandbox cgroup; the guest sees
//     that many CPUs (--cpu-num-from-quota; runsc shows at least 2).
//   - The root in the OCI spec is writable: with readonly=true runsc
//     refuses writes even under --overlay. The template stays untouched.
package gvisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/sandboxrt/diskimg"
	"golang.org/x/sys/unix"
)

// Config configures a Driver. The zero value is usable on a host with
// Debian's runsc and cgroup v1.
type Config struct {
	// Runsc is the runsc binary (name looked up in PATH, or a path). Default "runsc".
	Runsc string
	// Platform is runsc's --platform. Default "ptrace"; newer gVisor: "systrap" or "kvm".
	Platform string
	// Network is runsc's --network. Default "host" (the slot netns is the sandbox's network).
	Network string
	// OverlayFlag makes the root an in-memory overlay over the template.
	// Default "--overlay2=all:memory", which Debian 12's runsc and newer
	// ones take (newer ones refuse the old "--overlay").
	OverlayFlag string
	// ExtraFlags are added to every runsc invocation (global flags, e.g. "--debug-log=/tmp/runsc/").
	ExtraFlags []string
	// StateDir holds everything the driver owns. Default "/var/lib/declaw/gvisor".
	StateDir string
	// CgroupParent is the cgroup (relative to each hierarchy's root) under
	// which every sandbox gets its own cgroup "<CgroupParent>/<id>". Default "declaw".
	CgroupParent string
	// Defaults fills the zero fields of Spec.Resources. Zero fields here
	// mean unlimited (DiskMB: runsc's in-memory overlay, bounded by MemoryMB).
	Defaults sandboxrt.Resources
	// Mkfs is mkfs.ext4, which formats the sandboxes' disks (once per size). Default "mkfs.ext4".
	Mkfs string
	// StartTimeout bounds how long Start waits for PID 1 to run. Default 60s.
	StartTimeout time.Duration
	// Logf logs driver events. Default: discard.
	Logf func(format string, args ...any)
}

// Driver runs sandboxes with runsc. It is safe for concurrent use on different ids.
type Driver struct {
	cfg       Config
	runscPath string
	root      string // runsc --root
	bundles   string

	disks *diskimg.Maker

	mu     sync.Mutex
	procs  map[string]*runProc // foreground "runsc run" children, by id
	notify func(sandboxrt.Event)
}

// runProc is one foreground "runsc run" process.
type runProc struct {
	cmd        *exec.Cmd
	done       chan struct{} // closed when cmd.Wait returned
	err        error         // cmd.Wait's result, valid after done
	destroying atomic.Bool   // Destroy is ending it: its exit is no event
}

// record is what the driver persists per sandbox to reach it later.
type record struct {
	ID          string    `json:"id"`
	NetNSPath   string    `json:"netns_path"`
	CgroupsPath string    `json:"cgroups_path"`
	CreatedAt   time.Time `json:"created_at"`
}

const cgroupMount = "/sys/fs/cgroup"

// New returns a Driver for cfg, creating its state directories.
func New(cfg Config) (*Driver, error) {
	if cfg.Runsc == "" {
		cfg.Runsc = "runsc"
	}
	if cfg.Platform == "" {
		cfg.Platform = "ptrace"
	}
	if cfg.Network == "" {
		cfg.Network = "host"
	}
	if cfg.OverlayFlag == "" {
		cfg.OverlayFlag = "--overlay2=all:memory"
	}
	if cfg.StateDir == "" {
		cfg.StateDir = "/var/lib/declaw/gvisor"
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "declaw"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	p, err := exec.LookPath(cfg.Runsc)
	if err != nil {
		return nil, fmt.Errorf("gvisor: find runsc: %w", err)
	}
	stateDir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("gvisor: state dir: %w", err)
	}
	d := &Driver{
		cfg:       cfg,
		runscPath: p,
		root:      filepath.Join(stateDir, "runsc"),
		bundles:   filepath.Join(stateDir, "bundles"),
		disks:     &diskimg.Maker{Dir: filepath.Join(stateDir, "disks"), Mkfs: cfg.Mkfs},
		procs:     make(map[string]*runProc),
	}
	for _, dir := range []string{d.root, d.bundles} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("gvisor: create state dir: %w", err)
		}
	}
	return d, nil
}

// Name implements sandboxrt.Runtime.
func (d *Driver) Name() string { return "gvisor" }

func (d *Driver) globalFlags() []string {
	flags := []string{
		"--root=" + d.root,
		"--platform=" + d.cfg.Platform,
		"--network=" + d.cfg.Network,
		d.cfg.OverlayFlag,
	}
	return append(flags, d.cfg.ExtraFlags...)
}

// runFlags are the global flags of "runsc run" for a sandbox with res.
func (d *Driver) runFlags(res sandboxrt.Resources) []string {
	flags := d.globalFlags()
	if res.DiskMB > 0 {
		flags[3] = "--overlay2=none" // the root is the disk's overlay (disk.go)
	} else if flags[3] == "--overlay2=all:memory" {
		// Only the root: writes to a writable bind mount (a live volume)
		// must reach the host directory, which "all" keeps in memory.
		flags[3] = "--overlay2=root:memory"
	}
	if res.CPUs > 0 {
		flags = append(flags, "--cpu-num-from-quota")
	}
	return flags
}

func (d *Driver) bundleDir(id string) string { return filepath.Join(d.bundles, id) }

func (d *Driver) cgroupsPath(id string) string {
	return "/" + strings.Trim(d.cfg.CgroupParent, "/") + "/" + id
}

// Start implements sandboxrt.Runtime. It returns once runsc reports PID 1
// running. On error, everything it created has been removed.
func (d *Driver) Start(ctx context.Context, spec sandboxrt.Spec) (err error) {
	t0 := time.Now()
	if !sandboxrt.ValidID(spec.ID) {
		return fmt.Errorf("gvisor: start: invalid sandbox id %q", spec.ID)
	}
	if spec.NetNSPath == "" {
		// With --network=host an empty path would mean the host's network.
		return fmt.Errorf("gvisor: start %s: no network namespace", spec.ID)
	}
	// runsc mounts into the root by its path and newer releases refuse a
	// path that goes through a symlink (a state dir whose templates dir is
	// a link, say): give it the real one.
	if real, err := filepath.EvalSymlinks(spec.RootFS); err == nil {
		spec.RootFS = real
	}
	if fi, err := os.Stat(spec.RootFS); err != nil || !fi.IsDir() {
		return fmt.Errorf("gvisor: start %s: root filesystem %q is not a directory", spec.ID, spec.RootFS)
	}
	if _, err := os.Stat(spec.NetNSPath); err != nil {
		return fmt.Errorf("gvisor: start %s: netns: %w", spec.ID, err)
	}
	rec := record{
		ID:          spec.ID,
		NetNSPath:   spec.NetNSPath,
		CgroupsPath: d.cgroupsPath(spec.ID),
		CreatedAt:   time.Now().UTC(),
	}
	res := mergeResources(spec.Resources, d.cfg.Defaults)
	// With a disk the root is the sandbox's own overlayfs (disk.go): a
	// missing directory mount point that runsc's gofer creates lands there,
	// not in the template.
	if err := checkMountTargets(spec, res.DiskMB > 0); err != nil {
		return fmt.Errorf("gvisor: start %s: %w", spec.ID, err)
	}
	oci, err := buildSpec(spec, res, rec.CgroupsPath)
	if err != nil {
		return fmt.Errorf("gvisor: start: %w", err)
	}
	bundle := d.bundleDir(spec.ID)
	if err := os.Mkdir(bundle, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("gvisor: start %s: sandbox already exists", spec.ID)
		}
		return fmt.Errorf("gvisor: start %s: %w", spec.ID, err)
	}
	defer func() {
		if err != nil {
			if derr := d.Destroy(context.WithoutCancel(ctx), spec.ID); derr != nil {
				err = errors.Join(err, fmt.Errorf("clean up failed start: %w", derr))
			}
		}
	}()
	if err := sandboxrt.WriteJSON(filepath.Join(bundle, "record.json"), rec); err != nil {
		return fmt.Errorf("gvisor: start %s: %w", spec.ID, err)
	}
	if res.DiskMB > 0 {
		if oci.Root.Path, err = d.setupDisk(ctx, spec.ID, spec.RootFS, res.DiskMB); err != nil {
			return fmt.Errorf("gvisor: start %s: %w", spec.ID, err)
		}
		// /tmp is on the disk too. Without a /tmp mount runsc puts an
		// in-memory tmpfs there (when the template's /tmp is empty), which
		// only the memory limit bounds: a full /tmp then OOM-kills the
		// sandbox instead of failing with ENOSPC.
		tmp := filepath.Join(oci.Root.Path, "tmp")
		if err := os.MkdirAll(tmp, 0o1777); err != nil {
			return fmt.Errorf("gvisor: start %s: /tmp on the disk: %w", spec.ID, err)
		}
		oci.Mounts = append(oci.Mounts, ociMount{Destination: "/tmp", Type: "bind", Source: tmp, Options: []string{"rbind"}})
	}
	if err := sandboxrt.WriteJSON(filepath.Join(bundle, "config.json"), oci); err != nil {
		return fmt.Errorf("gvisor: start %s: %w", spec.ID, err)
	}
	console, err := os.OpenFile(filepath.Join(bundle, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("gvisor: start %s: %w", spec.ID, err)
	}
	args := append(d.runFlags(res), "run", "--bundle="+bundle, spec.ID)
	cmd := exec.Command(d.runscPath, args...)
	cmd.Stdout = console
	cmd.Stderr = console
	// Own process group: a terminal's ^C must not reach runsc, which would
	// forward it to the sandbox.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Dir = bundle
	if err := startInNetNS(spec.NetNSPath, cmd); err != nil {
		console.Close()
		return fmt.Errorf("gvisor: start %s: runsc run: %w", spec.ID, err)
	}
	console.Close() // the child has its own copy
	p := &runProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	d.mu.Lock()
	d.procs[spec.ID] = p
	d.mu.Unlock()

	if err := d.waitRunning(ctx, spec.ID, p); err != nil {
		return fmt.Errorf("gvisor: start %s: %w", spec.ID, err)
	}
	var w *oomWatch
	if res.MemoryMB > 0 {
		if w, err = d.watchOOM(spec.ID, rec.CgroupsPath); err != nil {
			d.cfg.Logf("gvisor: %s: %v (an OOM will not be reported as such)", spec.ID, err)
		}
	}
	go d.watchExit(spec.ID, p, w)
	d.cfg.Logf("gvisor: started %s in %v", spec.ID, time.Since(t0).Round(time.Millisecond))
	return nil
}

// checkMountTargets requires every bind mount target to exist in the
// template with the source's kind (file or directory) and without symlinks
// on the way: runsc's gofer creates missing mount points in the host
// directory itself, under the overlay, which would write to the shared
// template (measured with runsc 20221219).
//
// With ownRoot (the root is per sandbox, not the template) a missing
// target for a directory source is fine: live volume mounts go to any
// path the caller names.
func checkMountTargets(spec sandboxrt.Spec, ownRoot bool) error {
	for _, m := range spec.Mounts {
		src, err := os.Stat(m.Source)
		if err != nil {
			return fmt.Errorf("mount source: %w", err)
		}
		target := filepath.Clean("/" + m.Target)
		cur := spec.RootFS
		var fi fs.FileInfo
		for _, part := range strings.Split(strings.TrimPrefix(target, "/"), "/") {
			cur = filepath.Join(cur, part)
			fi, err = os.Lstat(cur)
			if errors.Is(err, fs.ErrNotExist) && ownRoot && src.IsDir() {
				fi = nil
				break
			}
			if err != nil {
				return fmt.Errorf("mount target %s is missing in the template (runsc would create it there; add it when building the template): %w", target, err)
			}
			if fi.Mode()&fs.ModeSymlink != 0 {
				return fmt.Errorf("mount target %s: %s is a symlink in the template", target, strings.TrimPrefix(cur, spec.RootFS))
			}
		}
		if fi != nil && fi.IsDir() != src.IsDir() {
			return fmt.Errorf("mount target %s: source and target are not both files or both directories", target)
		}
	}
	return nil
}

// waitRunning polls runsc's state file (a plain read, no exec) until the
// container is running, runsc exits, or time runs out.
func (d *Driver) waitRunning(ctx context.Context, id string, p *runProc) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	tick := time.NewTicker(3 * time.Millisecond)
	defer tick.Stop()
	for {
		if st, err := d.readStateFile(id); err == nil && st.Status == "running" {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("runsc run exited (%v): %s", p.err, d.consoleTail(id))
		case <-ctx.Done():
			return fmt.Errorf("waiting for init to run: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// consoleTail returns the end of the sandbox's console log, for errors.
func (d *Driver) consoleTail(id string) string {
	b, _ := os.ReadFile(filepath.Join(d.bundleDir(id), "console.log"))
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

// Destroy implements sandboxrt.Runtime. It is idempotent. It kills the
// sandbox process, lets "runsc run" tear the container down, falls back to
// "runsc kill --all" + "runsc delete --force" and finally to killing runsc
// processes by pid, then removes the cgroups and the bundle.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	if !sandboxrt.ValidID(id) {
		return nil // cannot be ours
	}
	t0 := time.Now()
	found, err := d.destroy(ctx, id)
	if err == nil && found {
		d.cfg.Logf("gvisor: destroyed %s in %v", id, time.Since(t0).Round(time.Millisecond))
	}
	return err
}

func (d *Driver) destroy(ctx context.Context, id string) (found bool, err error) {
	rec, recErr := d.loadRecord(id)
	_, stErr := d.readStateFile(id)
	d.mu.Lock()
	p := d.procs[id]
	d.mu.Unlock()
	if p != nil {
		p.destroying.Store(true)
	}
	if recErr != nil && stErr != nil && p == nil {
		if _, err := os.Stat(d.bundleDir(id)); err == nil {
			return true, d.removeBundle(id) // a half-made bundle of a failed start
		}
		return false, nil
	}
	var errs []error
	if stErr == nil {
		// Fast path: SIGKILL the sandbox process (the sentry: every guest
		// process dies with it). The foreground "runsc run" then tears the
		// container down itself (gofer, cgroups, state) and exits.
		runPid := d.runPidOf(id, p)
		if st, err := d.readStateFile(id); err == nil && st.Sandbox != nil && (p != nil || runPid > 0) && d.isOurRunsc(st.Sandbox.Pid) {
			_ = syscall.Kill(st.Sandbox.Pid, syscall.SIGKILL)
		} else {
			_, _ = d.runscFor(ctx, rec, id, "kill", "--all", id, "KILL")
		}
		// Wait for "runsc run" before "runsc delete": both take the
		// container's lock, and a delete that wins it waits for a sandbox
		// process only "runsc run" can reap (a 5 s stall).
		d.waitRunExit(p, runPid, 5*time.Second)
		if _, err := d.readStateFile(id); err == nil {
			if _, err := d.runscFor(ctx, rec, id, "delete", "--force", id); err != nil && !isNotExist(err) {
				errs = append(errs, err)
			}
		}
	}
	if p != nil {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		d.mu.Lock()
		delete(d.procs, id)
		d.mu.Unlock()
	}
	// Last resort, e.g. when runsc could not delete it: kill by pid and drop the state.
	if st, err := d.readStateFile(id); err == nil {
		d.killPids(st)
		if err := d.removeStateFiles(id); err != nil {
			errs = append(errs, err)
		}
	}
	cg := d.cgroupsPath(id)
	if rec != nil && rec.CgroupsPath != "" {
		cg = rec.CgroupsPath
	}
	if err := removeCgroup(cg); err != nil {
		errs = append(errs, err)
	}
	if err := d.removeBundle(id); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return true, fmt.Errorf("gvisor: destroy %s: %w", id, err)
	}
	return true, nil
}

// runPidOf returns the pid of the foreground "runsc run" of id: our child,
// or, for a container started by a previous process, the sandbox's parent.
func (d *Driver) runPidOf(id string, p *runProc) int {
	if p != nil {
		return p.cmd.Process.Pid
	}
	st, err := d.readStateFile(id)
	if err != nil || st.Sandbox == nil || !d.isOurRunsc(st.Sandbox.Pid) {
		return 0
	}
	ppid := parentPid(st.Sandbox.Pid)
	if ppid > 1 && d.isOurRunsc(ppid) {
		return ppid
	}
	return 0
}

// waitRunExit waits up to timeout for the "runsc run" process to exit.
func (d *Driver) waitRunExit(p *runProc, pid int, timeout time.Duration) {
	if p != nil {
		select {
		case <-p.done:
		case <-time.After(timeout):
		}
		return
	}
	if pid <= 0 {
		return
	}
	deadline := time.Now().Add(timeout)
	for !processGone(pid) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// parentPid returns the parent of pid, 0 if unknown.
func parentPid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// processGone reports whether pid has exited (gone or a zombie).
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}

// removeBundle unmounts the sandbox's disk, if any, then deletes its bundle.
func (d *Driver) removeBundle(id string) error {
	if err := d.teardownDisk(id); err != nil {
		return err // never RemoveAll through a mount
	}
	if err := os.RemoveAll(d.bundleDir(id)); err != nil {
		return fmt.Errorf("remove bundle: %w", err)
	}
	return nil
}

// controlNetNS picks the namespace in which runsc can reach the sandbox:
// the live sandbox process's own netns when it runs (exact even if the
// slot's netns path was removed or reused), else the recorded path.
func (d *Driver) controlNetNS(rec *record, st *runscState) string {
	if st != nil && st.Sandbox != nil && d.isOurRunsc(st.Sandbox.Pid) {
		p := "/proc/" + strconv.Itoa(st.Sandbox.Pid) + "/ns/net"
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if rec != nil && rec.NetNSPath != "" {
		if _, err := os.Stat(rec.NetNSPath); err == nil {
			return rec.NetNSPath
		}
	}
	return "" // not reachable: runsc can still kill by pid and delete
}

// isOurRunsc reports whether pid is a runsc process using our --root.
func (d *Driver) isOurRunsc(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	for _, arg := range bytes.Split(b, []byte{0}) {
		if string(arg) == "--root="+d.root {
			return true
		}
	}
	return false
}

func (d *Driver) killPids(st *runscState) {
	pids := []int{st.GoferPid}
	if st.Sandbox != nil {
		pids = append(pids, st.Sandbox.Pid)
	}
	for _, pid := range pids {
		if d.isOurRunsc(pid) {
			d.cfg.Logf("gvisor: killing leftover runsc pid %d of %s", pid, st.ID)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// State implements sandboxrt.Runtime. A sandbox the driver knows but runsc
// no longer runs (PID 1 exited) is StateStopped; runsc's "created" (PID 1
// not started yet, only seen after a crash mid-Start) is also StateStopped.
func (d *Driver) State(ctx context.Context, id string) (sandboxrt.State, error) {
	rec, recErr := d.loadRecord(id)
	_, stErr := d.readStateFile(id)
	if recErr != nil && stErr != nil {
		return "", fmt.Errorf("gvisor: state %s: %w", id, sandboxrt.ErrNotFound)
	}
	if stErr != nil {
		return sandboxrt.StateStopped, nil
	}
	out, err := d.runscFor(ctx, rec, id, "state", id)
	if err != nil {
		if isNotExist(err) {
			return sandboxrt.StateStopped, nil
		}
		return "", fmt.Errorf("gvisor: state %s: %w", id, err)
	}
	var s struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(out, &s); err != nil {
		return "", fmt.Errorf("gvisor: state %s: parse runsc state: %w", id, err)
	}
	switch s.Status {
	case "running":
		return sandboxrt.StateRunning, nil
	case "paused":
		return sandboxrt.StatePaused, nil
	case "created", "stopped", "creating":
		return sandboxrt.StateStopped, nil
	}
	return "", fmt.Errorf("gvisor: state %s: unknown runsc status %q", id, s.Status)
}

// Stats implements sandboxrt.Runtime. It reads the sandbox's cgroup v1
// counters (host view: sentry, gofer and all guest work) and falls back to
// "runsc events --stats" when they are not there (e.g. cgroup v2 hosts).
func (d *Driver) Stats(ctx context.Context, id string) (sandboxrt.Stats, error) {
	rec, recErr := d.loadRecord(id)
	_, stErr := d.readStateFile(id)
	if recErr != nil && stErr != nil {
		return sandboxrt.Stats{}, fmt.Errorf("gvisor: stats %s: %w", id, sandboxrt.ErrNotFound)
	}
	cg := d.cgroupsPath(id)
	if rec != nil && rec.CgroupsPath != "" {
		cg = rec.CgroupsPath
	}
	now := time.Now()
	mem, memErr := readUint(filepath.Join(cgroupMount, "memory", cg, "memory.usage_in_bytes"))
	cpu, cpuErr := readUint(filepath.Join(cgroupMount, "cpuacct", cg, "cpuacct.usage"))
	if memErr == nil && cpuErr == nil {
		st := sandboxrt.Stats{Time: now, CPUUsageNanos: cpu, MemoryBytes: mem}
		if lim, err := readUint(filepath.Join(cgroupMount, "memory", cg, "memory.limit_in_bytes")); err == nil && lim < 1<<60 {
			st.MemoryLimitBytes = lim
		}
		st.DiskBytes, st.DiskLimitBytes = d.diskUsage(id)
		return st, nil
	}
	if stErr != nil {
		return sandboxrt.Stats{}, fmt.Errorf("gvisor: stats %s: not running", id)
	}
	out, err := d.runscFor(ctx, rec, id, "events", "--stats", id)
	if err != nil {
		return sandboxrt.Stats{}, fmt.Errorf("gvisor: stats %s: %w", id, err)
	}
	var ev struct {
		Data struct {
			CPU struct {
				Usage struct {
					Total uint64 `json:"total"`
				} `json:"usage"`
			} `json:"cpu"`
			Memory struct {
				Usage struct {
					Usage uint64 `json:"usage"`
				} `json:"usage"`
			} `json:"memory"`
		} `json:"data"`
	}
	if err := json.Unmarshal(out, &ev); err != nil {
		return sandboxrt.Stats{}, fmt.Errorf("gvisor: stats %s: parse runsc events: %w", id, err)
	}
	return sandboxrt.Stats{Time: now, CPUUsageNanos: ev.Data.CPU.Usage.Total, MemoryBytes: ev.Data.Memory.Usage.Usage}, nil
}

// Pause implements sandboxrt.Pauser: runsc pause stops every task of the sandbox.
func (d *Driver) Pause(ctx context.Context, id string) error {
	return d.control(ctx, id, "pause")
}

// Resume implements sandboxrt.Pauser.
func (d *Driver) Resume(ctx context.Context, id string) error {
	return d.control(ctx, id, "resume")
}

func (d *Driver) control(ctx context.Context, id, verb string) error {
	rec, _ := d.loadRecord(id)
	if _, err := d.readStateFile(id); err != nil {
		return fmt.Errorf("gvisor: %s %s: %w", verb, id, sandboxrt.ErrNotFound)
	}
	if _, err := d.runscFor(ctx, rec, id, verb, id); err != nil {
		if isNotExist(err) {
			return fmt.Errorf("gvisor: %s %s: %w", verb, id, sandboxrt.ErrNotFound)
		}
		return fmt.Errorf("gvisor: %s %s: %w", verb, id, err)
	}
	return nil
}

// Cleanup implements sandboxrt.Runtime: it destroys every container under
// the driver's state dir, whether this Driver value started it or not.
func (d *Driver) Cleanup(ctx context.Context) error {
	ids := map[string]bool{}
	if ents, err := os.ReadDir(d.bundles); err == nil {
		for _, e := range ents {
			ids[e.Name()] = true
		}
	}
	if ents, err := os.ReadDir(d.root); err == nil {
		for _, e := range ents {
			if id, ok := stateFileID(e.Name()); ok {
				ids[id] = true
			}
		}
	}
	d.mu.Lock()
	for id := range d.procs {
		ids[id] = true
	}
	d.mu.Unlock()
	var errs []error
	for id := range ids {
		d.cfg.Logf("gvisor: cleanup: destroying %s", id)
		if err := d.Destroy(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	// Leftover runsc files of ids that do not match our pattern. Newer
	// runsc also leaves "null-netns" there, a bind mount of a network
	// namespace: unmount it first or it cannot be removed.
	if ents, err := os.ReadDir(d.root); err == nil {
		for _, e := range ents {
			if e.Name() == "null-netns" {
				_ = unix.Unmount(filepath.Join(d.root, e.Name()), unix.MNT_DETACH)
			}
			if err := os.RemoveAll(filepath.Join(d.root, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// The parent cgroup goes if no one else uses it; failure is expected otherwise.
	for _, dir := range cgroupDirs("/" + strings.Trim(d.cfg.CgroupParent, "/")) {
		_ = os.Remove(dir)
	}
	return errors.Join(errs...)
}

// runscFor runs a runsc control command for sandbox id inside the netns
// where runsc reaches it, chosen at call time: the sandbox process may
// die (and its /proc netns link vanish) between two commands.
func (d *Driver) runscFor(ctx context.Context, rec *record, id string, args ...string) ([]byte, error) {
	var out []byte
	var err error
	for range 2 {
		st, _ := d.readStateFile(id)
		out, err = d.runsc(ctx, d.controlNetNS(rec, st), args...)
		if !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	return out, err
}

// runsc runs one runsc control command inside nsPath ("" = current netns)
// and returns its stdout.
func (d *Driver) runsc(ctx context.Context, nsPath string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, d.runscPath, append(d.globalFlags(), args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	var err error
	if nsPath != "" {
		err = startInNetNS(nsPath, cmd)
	} else {
		err = cmd.Start()
	}
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		return stdout.Bytes(), &runscError{verb: args[0], err: err, msg: msg}
	}
	return stdout.Bytes(), nil
}

// runscError is a failed runsc command with the last line of its stderr.
type runscError struct {
	verb string
	err  error
	msg  string
}

func (e *runscError) Error() string { return "runsc " + e.verb + ": " + e.err.Error() + ": " + e.msg }
func (e *runscError) Unwrap() error { return e.err }

func isNotExist(err error) bool {
	var re *runscError
	if !errors.As(err, &re) {
		return false
	}
	return strings.Contains(re.msg, "does not exist") || strings.Contains(re.msg, "not found") ||
		strings.Contains(re.msg, "no such file")
}

// runscState is the part of runsc's on-disk container state the driver reads.
type runscState struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	GoferPid int    `json:"goferPid"`
	Sandbox  *struct {
		Pid int `json:"pid"`
	} `json:"sandbox"`
}

// stateFileName is runsc's state file name for a root container
// ("<cid>_sandbox:<sid>.state"; runsc 2022 and later).
func (d *Driver) stateFileName(id string) string {
	return filepath.Join(d.root, id+"_sandbox:"+id+".state")
}

func stateFileID(name string) (string, bool) {
	base, ok := strings.CutSuffix(name, ".state")
	if !ok {
		base, ok = strings.CutSuffix(name, ".lock")
	}
	if !ok {
		return "", false
	}
	cid, sid, ok := strings.Cut(base, "_sandbox:")
	if !ok || cid != sid || !sandboxrt.ValidID(cid) {
		return "", false
	}
	return cid, true
}

func (d *Driver) readStateFile(id string) (*runscState, error) {
	b, err := os.ReadFile(d.stateFileName(id))
	if err != nil {
		return nil, err
	}
	var st runscState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parse runsc state of %s: %w", id, err)
	}
	return &st, nil
}

func (d *Driver) removeStateFiles(id string) error {
	var errs []error
	for _, suffix := range []string{".state", ".lock"} {
		if err := os.Remove(filepath.Join(d.root, id+"_sandbox:"+id+suffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (d *Driver) loadRecord(id string) (*record, error) {
	var r record
	if err := sandboxrt.ReadJSON(filepath.Join(d.bundleDir(id), "record.json"), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// cgroupDirs lists the directories of cgroup path cg in every v1 hierarchy mounted under cgroupMount.
func cgroupDirs(cg string) []string {
	ents, err := os.ReadDir(cgroupMount)
	if err != nil {
		return nil
	}
	var dirs []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dirs = append(dirs, filepath.Join(cgroupMount, e.Name(), cg))
	}
	return dirs
}

// removeCgroup removes the sandbox's cgroup from every hierarchy. runsc
// normally did it already; this covers containers it could not delete.
func removeCgroup(cg string) error {
	var errs []error
	for _, dir := range cgroupDirs(cg) {
		var err error
		for range 50 {
			err = os.Remove(dir)
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(20 * time.Millisecond) // tasks still exiting
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup: %w", err))
		}
	}
	return errors.Join(errs...)
}

var (
	_ sandboxrt.Runtime  = (*Driver)(nil)
	_ sandboxrt.Pauser   = (*Driver)(nil)
	_ sandboxrt.Notifier = (*Driver)(nil)
)
