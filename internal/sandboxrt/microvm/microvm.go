// Package microvm is the sandboxrt driver that runs each sandbox in its own
// virtual machine: QEMU's "microvm" machine (virtio-mmio devices, no
// firmware, no PCI) with a Debian kernel, an initramfs built here in Go
// (package guestinit is its /init) and the template as a read-only ext4
// image under a tmpfs overlay. envd is PID 1 of the guest.
//
// Boot inputs, the same a Firecracker driver would take: kernel, initramfs,
// root image, a per-VM config disk (init argv, env, hostname, entropy seed,
// the contents of Spec.Mounts), a tap and a serial console.
//
// The network: the slot's netns keeps its veth end (Config.Iface, holding
// the guest address). The driver creates a tap there and redirects frames
// between the veth and the tap with tc mirred; the VM's NIC takes the
// veth's MAC address and the guest address from the kernel command line.
// QEMU runs inside that netns. The host end and its nftables rules do not
// change, so network policy, DNS and the egress proxy apply as with gVisor.
//
// Accelerator: KVM where /dev/kvm works; TCG (software emulation, ~10x
// slower, but a real kernel) where there is no /dev/kvm or it is PVM
// (nested paravirtual KVM, on which a stock kernel hangs; ARCHITECTURE §2).
//
// The driver keeps all it owns under Config.StateDir:
//
//	initramfs-<key>.cpio   the initramfs (guest init + modules), per input hash
//	vmlinux-<key>          the kernel, uncompressed (booted through its PVH entry)
//	images/                root images of directories that are not templates
//	vms/<id>/              record.json, config.tar, console.log, qemu.log,
//	                       qmp.sock, qemu.pid
//
// record.json is written before anything else is created for a VM, and QEMU
// writes its pid file, so Cleanup in a new process after a crash finds and
// frees every VM (the QEMU process is recognised by its -pidfile argument).
// Templates built by internal/template get their image beside the rootfs
// directory (rootfs.ext4), shared by every VM of the template.
package microvm

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/sandboxrt/diskimg"
	"github.com/declaw/declaw/internal/sandboxrt/microvm/guestinit"
	"golang.org/x/sys/unix"
)

// Config configures a Driver. The zero value is usable on a Debian host
// with qemu-system-x86, linux-image-amd64 and e2fsprogs, and declaw-init
// installed beside the running binary or in PATH.
type Config struct {
	// QEMU is the emulator binary. Default "qemu-system-x86_64".
	QEMU string
	// Accel is "auto" (default), "kvm" or "tcg"; see the package comment.
	Accel string
	// Kernel is the guest kernel. Default: the newest /boot/vmlinuz-*.
	Kernel string
	// ModulesDir holds the kernel's modules. Default /lib/modules/<version
	// from the kernel's file name>.
	ModulesDir string
	// Modules are loaded by the guest init (plus dependencies). Default DefaultModules.
	Modules []string
	// InitBinary is the static guest init (cmd/declaw-init). Default:
	// "declaw-init" beside the running executable, else in PATH.
	InitBinary string
	// Mkfs is mkfs.ext4, for root images. Default "mkfs.ext4".
	Mkfs string
	// StateDir holds everything the driver owns. Default "/var/lib/declaw/microvm".
	StateDir string
	// ImageDir caches root images of directories that are not built
	// templates (no template.json beside them). Default StateDir/images.
	ImageDir string
	// Iface is the slot interface in Spec.NetNSPath holding the guest
	// address. Default "eth0".
	Iface string
	// Defaults fills zero fields of Spec.Resources; its own zero fields
	// mean 1 vCPU and 512 MiB.
	Defaults sandboxrt.Resources
	// StartTimeout bounds how long Start waits for the guest to exec its
	// init. Default 120s (TCG boots take seconds).
	StartTimeout time.Duration
	// ExtraArgs are appended to QEMU's command line.
	ExtraArgs []string
	// KernelArgs are appended to the guest kernel's command line.
	KernelArgs []string
	// Logf logs driver events. Default: discard.
	Logf func(format string, args ...any)
}

// Driver runs sandboxes as QEMU microVMs. It is safe for concurrent use on different ids.
type Driver struct {
	cfg         Config
	qemu, mkfs  string
	accel       string
	accelReason string
	tscKHz      int    // for tsc_early_khz under TCG; 0 under KVM
	bootKernel  string // what QEMU boots: Kernel or its extracted vmlinux
	initramfs   string
	vms         string // StateDir/vms
	images      string // StateDir/images

	imgMu    sync.Mutex
	imgLocks map[string]*sync.Mutex

	disks *diskimg.Maker // the sandboxes' writable disks (Resources.DiskMB)

	mu     sync.Mutex
	procs  map[string]*vmProc // QEMU children, by id
	notify func(sandboxrt.Event)
}

// vmProc is one QEMU child.
type vmProc struct {
	cmd        *exec.Cmd
	done       chan struct{} // closed when cmd.Wait returned
	err        error
	destroying atomic.Bool // Destroy is ending it: its exit is no event
}

// record is what the driver persists per VM to reach and undo it later.
type record struct {
	ID        string    `json:"id"`
	NetNSPath string    `json:"netns_path"`
	Iface     string    `json:"iface"`
	Tap       string    `json:"tap"`
	Image     string    `json:"image"`
	CreatedAt time.Time `json:"created_at"`
}

const (
	tapName       = "tap0"
	defaultMemMB  = 512
	maxSocketPath = 107
)

// New returns a Driver for cfg: it resolves the binaries and the kernel,
// picks the accelerator and builds (or reuses) the initramfs.
func New(cfg Config) (*Driver, error) {
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	if cfg.Accel == "" {
		cfg.Accel = "auto"
	}
	if cfg.Mkfs == "" {
		cfg.Mkfs = "mkfs.ext4"
	}
	if cfg.StateDir == "" {
		cfg.StateDir = "/var/lib/declaw/microvm"
	}
	if cfg.Iface == "" {
		cfg.Iface = "eth0"
	}
	if len(cfg.Modules) == 0 {
		cfg.Modules = DefaultModules
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 120 * time.Second
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	d := &Driver{cfg: cfg, imgLocks: map[string]*sync.Mutex{}, procs: map[string]*vmProc{}}
	var err error
	if d.qemu, err = exec.LookPath(cfg.QEMU); err != nil {
		return nil, fmt.Errorf("microvm: find qemu: %w", err)
	}
	if d.mkfs, err = exec.LookPath(cfg.Mkfs); err != nil {
		return nil, fmt.Errorf("microvm: find mkfs.ext4: %w", err)
	}
	switch cfg.Accel {
	case "auto":
		d.accel, d.accelReason = detectAccel("/")
	case "kvm", "tcg":
		d.accel, d.accelReason = cfg.Accel, "configured"
	default:
		return nil, fmt.Errorf("microvm: accel %q: want auto, kvm or tcg", cfg.Accel)
	}
	if d.accel == "tcg" {
		b, _ := os.ReadFile("/proc/cpuinfo")
		if d.tscKHz = hostTSCkHz(b); d.tscKHz == 0 {
			d.tscKHz = 2_000_000
		}
	}
	if d.cfg.Kernel == "" {
		if d.cfg.Kernel, err = newestKernel("/boot"); err != nil {
			return nil, fmt.Errorf("microvm: %w", err)
		}
	}
	if _, err := os.Stat(d.cfg.Kernel); err != nil {
		return nil, fmt.Errorf("microvm: kernel: %w", err)
	}
	if d.cfg.ModulesDir == "" {
		ver := strings.TrimPrefix(filepath.Base(d.cfg.Kernel), "vmlinuz-")
		d.cfg.ModulesDir = filepath.Join("/lib/modules", ver)
	}
	if d.cfg.InitBinary == "" {
		if d.cfg.InitBinary, err = findInit(); err != nil {
			return nil, fmt.Errorf("microvm: %w", err)
		}
	}
	stateDir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("microvm: state dir: %w", err)
	}
	if strings.ContainsAny(stateDir, ",:") {
		return nil, fmt.Errorf("microvm: state dir %q: QEMU arguments cannot hold ',' or ':'", stateDir)
	}
	d.cfg.StateDir = stateDir
	d.vms = filepath.Join(stateDir, "vms")
	d.images = filepath.Join(stateDir, "images")
	d.disks = &diskimg.Maker{Dir: filepath.Join(stateDir, "disks"), Mkfs: d.mkfs}
	if cfg.ImageDir != "" {
		d.images = cfg.ImageDir
	}
	for _, dir := range []string{d.vms, d.images} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("microvm: create state dir: %w", err)
		}
	}
	if d.initramfs, err = d.ensureInitramfs(); err != nil {
		return nil, fmt.Errorf("microvm: initramfs: %w", err)
	}
	var note string
	d.bootKernel, note = bootableKernel(d.cfg.Kernel, stateDir)
	d.cfg.Logf("microvm: accel %s (%s), kernel %s (%s)", d.accel, d.accelReason, d.cfg.Kernel, note)
	return d, nil
}

// Name implements sandboxrt.Runtime.
func (d *Driver) Name() string { return "microvm" }

// Accel returns the accelerator in use: "kvm" or "tcg".
func (d *Driver) Accel() string { return d.accel }

// AccelReason says why Accel was chosen (for the server log).
func (d *Driver) AccelReason() string { return d.accelReason }

// Kernel returns the guest kernel in use.
func (d *Driver) Kernel() string { return d.cfg.Kernel }

func newestKernel(boot string) (string, error) {
	ks, _ := filepath.Glob(filepath.Join(boot, "vmlinuz-*"))
	if len(ks) == 0 {
		return "", fmt.Errorf("no kernel %s/vmlinuz-* (install linux-image-amd64)", boot)
	}
	slices.SortFunc(ks, compareVersions)
	return ks[len(ks)-1], nil
}

// compareVersions orders "vmlinuz-6.1.0-9" before "vmlinuz-6.1.0-10".
func compareVersions(a, b string) int {
	split := func(s string) []string {
		return regexp.MustCompile(`\d+|\D+`).FindAllString(s, -1)
	}
	pa, pb := split(a), split(b)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		if ea == nil && eb == nil {
			if na != nb {
				return na - nb
			}
			continue
		}
		if c := strings.Compare(pa[i], pb[i]); c != 0 {
			return c
		}
	}
	return len(pa) - len(pb)
}

func findInit() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "declaw-init")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("declaw-init")
	if err != nil {
		return "", fmt.Errorf("find declaw-init (the guest init; build ./cmd/declaw-init with CGO_ENABLED=0): %w", err)
	}
	return p, nil
}

// ensureInitramfs builds the initramfs unless one with the same inputs exists.
func (d *Driver) ensureInitramfs() (string, error) {
	key, err := initramfsKey(d.cfg.InitBinary, d.cfg.ModulesDir, d.cfg.Modules)
	if err != nil {
		return "", err
	}
	path := filepath.Join(d.cfg.StateDir, "initramfs-"+key+".cpio")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	tmp := path + ".tmp-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return "", err
	}
	err = writeInitramfs(f, d.cfg.InitBinary, d.cfg.ModulesDir, d.cfg.Modules)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return path, nil
}

// EnsureImage returns the ext4 image of the template root directory
// rootfs, building it if it is missing or stale (see imageFor). Start calls
// it; template builds may call it ahead of time.
func (d *Driver) EnsureImage(ctx context.Context, rootfs string) (string, error) {
	image, key, err := imageFor(rootfs, d.images)
	if err != nil {
		return "", err
	}
	d.imgMu.Lock()
	mu := d.imgLocks[image]
	if mu == nil {
		mu = &sync.Mutex{}
		d.imgLocks[image] = mu
	}
	d.imgMu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	if imageCurrent(image, key) {
		return image, nil
	}
	t0 := time.Now()
	if err := buildImage(ctx, d.mkfs, rootfs, image, key); err != nil {
		return "", err
	}
	d.cfg.Logf("microvm: built root image %s in %v", image, time.Since(t0).Round(time.Millisecond))
	return image, nil
}

func (d *Driver) vmDir(id string) string { return filepath.Join(d.vms, id) }

// vmParams are the inputs of one QEMU command line.
type vmParams struct {
	Accel     string
	VCPUs     int
	MemoryMB  int64
	Kernel    string
	Initramfs string
	Cmdline   string
	Image     string
	Disk      string // the sandbox's writable disk image ("" = none: a tmpfs in guest memory)
	Dir       string // VM dir (config.tar, console.log, qmp.sock, qemu.pid)
	Tap       string
	MAC       string
}

// qemuArgs builds QEMU's argv (without the binary) for p.
func qemuArgs(p vmParams, extra []string) []string {
	esc := func(s string) string { return strings.ReplaceAll(s, ",", ",,") }
	cpu := "max"
	if p.Accel == "kvm" {
		cpu = "host"
	}
	args := []string{
		"-name", "declaw",
		// rtc=on: without it the kernel hangs calibrating the TSC under TCG.
		"-M", "microvm,isa-serial=on,rtc=on",
		"-accel", p.Accel, "-cpu", cpu,
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-smp", strconv.Itoa(p.VCPUs), "-m", strconv.FormatInt(p.MemoryMB, 10),
		"-kernel", p.Kernel, "-initrd", p.Initramfs, "-append", p.Cmdline,
		"-serial", "file:" + filepath.Join(p.Dir, "console.log"),
		"-drive", "file=" + esc(p.Image) + ",format=raw,if=none,id=root,readonly=on",
		"-device", "virtio-blk-device,drive=root,serial=" + guestinit.RootSerial,
		"-drive", "file=" + esc(filepath.Join(p.Dir, "config.tar")) + ",format=raw,if=none,id=cfg,readonly=on",
		"-device", "virtio-blk-device,drive=cfg,serial=" + guestinit.ConfigSerial,
	}
	if p.Disk != "" {
		args = append(args,
			"-drive", "file="+esc(p.Disk)+",format=raw,if=none,id=disk,discard=unmap",
			"-device", "virtio-blk-device,drive=disk,serial="+guestinit.DiskSerial)
	}
	args = append(args,
		"-netdev", "tap,id=n0,ifname="+p.Tap+",script=no,downscript=no",
		"-device", "virtio-net-device,netdev=n0,mac="+p.MAC,
		"-qmp", "unix:"+filepath.Join(p.Dir, "qmp.sock")+",server=on,wait=off",
		"-pidfile", filepath.Join(p.Dir, "qemu.pid"),
	)
	return append(args, extra...)
}

// kernelCmdline is the guest kernel's command line: serial console, reset
// on reboot and panic (QEMU runs with -no-reboot, so the VM then exits), and
// the guest's network and clock (guestinit.FormatCmdline). tscKHz > 0 adds
// tsc_early_khz: under TCG the microvm has no PIT or HPET the kernel can
// calibrate the TSC against, and without a known TSC frequency the kernel
// hangs (one vCPU: in the delay loop calibration; two: bringing up the
// second CPU). TCG's TSC ticks at the host's rate. Measured with QEMU 7.2
// and Debian's 6.1 kernel.
func kernelCmdline(b guestinit.Boot, tscKHz int) string {
	// ipv6.disable=1: slots carry IPv4 only (the host end drops IPv6), so
	// the guest sends no IPv6 at all, as a slot's netns does not.
	w := []string{"console=ttyS0", "reboot=t", "panic=-1", "quiet", "8250.nr_uarts=1", "ipv6.disable=1"}
	if tscKHz > 0 {
		w = append(w, "tsc_early_khz="+strconv.Itoa(tscKHz))
	}
	return strings.Join(append(w, guestinit.FormatCmdline(b)...), " ")
}

// hostTSCkHz estimates the host's TSC frequency from the first "cpu MHz"
// line of cpuinfo (0 if there is none).
func hostTSCkHz(cpuinfo []byte) int {
	for _, line := range strings.Split(string(cpuinfo), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil && mhz > 0 {
				return int(mhz * 1000)
			}
		}
	}
	return 0
}

// BootFloor measures the QEMU + kernel floor of a boot: the same QEMU
// machine, kernel and initramfs, with an init that resets the VM as soon
// as it runs (no modules, disks or network), from QEMU's start to its
// exit. Compare it with Start plus the wait for envd to answer.
func (d *Driver) BootFloor(ctx context.Context) (time.Duration, error) {
	dir, err := os.MkdirTemp(d.cfg.StateDir, "floor-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	vcpus, mem := resources(sandboxrt.Resources{}, d.cfg.Defaults)
	cpu := "max"
	if d.accel == "kvm" {
		cpu = "host"
	}
	args := []string{
		"-M", "microvm,isa-serial=on,rtc=on", "-accel", d.accel, "-cpu", cpu,
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-smp", strconv.Itoa(vcpus), "-m", strconv.FormatInt(mem, 10),
		"-kernel", d.bootKernel, "-initrd", d.initramfs,
		"-append", kernelCmdline(guestinit.Boot{PowerOff: true}, d.tscKHz),
		"-serial", "file:" + filepath.Join(dir, "console.log"),
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.qemu, args...)
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("microvm: boot floor: %w: %s", err, out)
	}
	return took, nil
}

// resources fills the zero fields of r from defaults, then from the driver's own.
func resources(r, defaults sandboxrt.Resources) (vcpus int, memMB int64) {
	cpus := r.CPUs
	if cpus <= 0 {
		cpus = defaults.CPUs
	}
	vcpus = max(1, int(math.Ceil(cpus)))
	memMB = r.MemoryMB
	if memMB <= 0 {
		memMB = defaults.MemoryMB
	}
	if memMB <= 0 {
		memMB = defaultMemMB
	}
	return vcpus, max(memMB, 128)
}

// Start implements sandboxrt.Runtime. It returns once the guest init has
// prepared the VM and is exec'ing Spec.Init (envd), not once envd answers.
// On error, everything it created has been removed.
func (d *Driver) Start(ctx context.Context, spec sandboxrt.Spec) (err error) {
	t0 := time.Now()
	if !sandboxrt.ValidID(spec.ID) {
		return fmt.Errorf("microvm: start: invalid sandbox id %q", spec.ID)
	}
	if spec.NetNSPath == "" {
		return fmt.Errorf("microvm: start %s: no network namespace", spec.ID)
	}
	if len(spec.Init) == 0 {
		return fmt.Errorf("microvm: start %s: no init", spec.ID)
	}
	if fi, err := os.Stat(spec.RootFS); err != nil || !fi.IsDir() {
		return fmt.Errorf("microvm: start %s: root filesystem %q is not a directory", spec.ID, spec.RootFS)
	}
	if _, err := os.Stat(spec.NetNSPath); err != nil {
		return fmt.Errorf("microvm: start %s: netns: %w", spec.ID, err)
	}
	for _, m := range spec.Mounts {
		if !filepath.IsAbs(m.Target) {
			return fmt.Errorf("microvm: start %s: mount target %q is not absolute", spec.ID, m.Target)
		}
		if _, err := os.Stat(m.Source); err != nil {
			return fmt.Errorf("microvm: start %s: mount source: %w", spec.ID, err)
		}
	}
	dir := d.vmDir(spec.ID)
	if len(filepath.Join(dir, "qmp.sock")) > maxSocketPath {
		return fmt.Errorf("microvm: start %s: state dir too long for a unix socket path", spec.ID)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("microvm: start %s: sandbox already exists", spec.ID)
		}
		return fmt.Errorf("microvm: start %s: %w", spec.ID, err)
	}
	defer func() {
		if err != nil {
			if derr := d.Destroy(context.WithoutCancel(ctx), spec.ID); derr != nil {
				err = errors.Join(err, fmt.Errorf("clean up failed start: %w", derr))
			}
		}
	}()
	rec := record{ID: spec.ID, NetNSPath: spec.NetNSPath, Iface: d.cfg.Iface, Tap: tapName, CreatedAt: time.Now().UTC()}
	if err := sandboxrt.WriteJSON(filepath.Join(dir, "record.json"), rec); err != nil {
		return fmt.Errorf("microvm: start %s: %w", spec.ID, err)
	}
	image, err := d.EnsureImage(ctx, spec.RootFS)
	if err != nil {
		return fmt.Errorf("microvm: start %s: %w", spec.ID, err)
	}
	seed := make([]byte, 64)
	_, _ = rand.Read(seed)
	gcfg := guestinit.Config{Init: spec.Init, Env: spec.Env, Hostname: spec.Hostname, Seed: seed}
	var disk string
	if diskMB := cmp.Or(spec.Resources.DiskMB, d.cfg.Defaults.DiskMB); diskMB > 0 {
		disk = filepath.Join(dir, "disk.img")
		if err := d.disks.Make(ctx, disk, diskMB); err != nil {
			return fmt.Errorf("microvm: start %s: %w", spec.ID, err)
		}
		gcfg.Disk = true
	}
	if err := writeConfigDisk(filepath.Join(dir, "config.tar"), gcfg, spec.Mounts); err != nil {
		return fmt.Errorf("microvm: start %s: %w", spec.ID, err)
	}
	var sn slotNet
	err = inNetNS(spec.NetNSPath, func() error {
		var err error
		if sn, err = readSlot(d.cfg.Iface); err != nil {
			return err
		}
		return addTap(d.cfg.Iface, tapName, sn.MTU)
	})
	if err != nil {
		return fmt.Errorf("microvm: start %s: network: %w", spec.ID, err)
	}
	vcpus, mem := resources(spec.Resources, d.cfg.Defaults)
	p := vmParams{
		Accel: d.accel, VCPUs: vcpus, MemoryMB: mem,
		Kernel: d.bootKernel, Initramfs: d.initramfs,
		Cmdline: strings.Join(append([]string{kernelCmdline(guestinit.Boot{IP: sn.IP, GW: sn.GW, MTU: sn.MTU, Time: time.Now()}, d.tscKHz)}, d.cfg.KernelArgs...), " "),
		Image:   image, Disk: disk, Dir: dir, Tap: tapName, MAC: sn.MAC.String(),
	}
	logf, err := os.OpenFile(filepath.Join(dir, "qemu.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("microvm: start %s: %w", spec.ID, err)
	}
	cmd := exec.Command(d.qemu, qemuArgs(p, d.cfg.ExtraArgs)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	cmd.Env = []string{}
	// Own process group: a terminal's ^C must not reach QEMU.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = startInNetNS(spec.NetNSPath, cmd)
	logf.Close()
	if err != nil {
		return fmt.Errorf("microvm: start %s: qemu: %w", spec.ID, err)
	}
	proc := &vmProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		proc.err = cmd.Wait()
		close(proc.done)
	}()
	d.mu.Lock()
	d.procs[spec.ID] = proc
	d.mu.Unlock()
	if err := d.waitReady(ctx, spec.ID, proc); err != nil {
		return fmt.Errorf("microvm: start %s: %w", spec.ID, err)
	}
	go d.watchVM(spec.ID, proc)
	d.cfg.Logf("microvm: started %s (%s, %d vCPU, %d MiB) in %v", spec.ID, d.accel, vcpus, mem, time.Since(t0).Round(time.Millisecond))
	return nil
}

// waitReady watches the console until the guest init reports the exec of
// the sandbox's init, or a failure, or QEMU exits, or time runs out.
func (d *Driver) waitReady(ctx context.Context, id string, p *vmProc) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	console := filepath.Join(d.vmDir(id), "console.log")
	for {
		b, _ := os.ReadFile(console)
		if i := bytes.Index(b, []byte(guestinit.FailMarker)); i >= 0 {
			line, _, _ := bytes.Cut(b[i+len(guestinit.FailMarker):], []byte("\n"))
			return fmt.Errorf("guest init: %s", strings.TrimSpace(string(line)))
		}
		if bytes.Contains(b, []byte(guestinit.ReadyMarker)) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("qemu exited (%v): %s", p.err, d.logTail(id))
		case <-ctx.Done():
			return fmt.Errorf("waiting for the guest to start its init: %w; console: %s", ctx.Err(), d.logTail(id))
		case <-tick.C:
		}
	}
}

// logTail returns the end of the VM's QEMU log and console, for errors.
func (d *Driver) logTail(id string) string {
	var parts []string
	for _, name := range []string{"qemu.log", "console.log"} {
		b, _ := os.ReadFile(filepath.Join(d.vmDir(id), name))
		const max = 1500
		if len(b) > max {
			b = b[len(b)-max:]
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			parts = append(parts, name+": "+s)
		}
	}
	return strings.Join(parts, " | ")
}

// qemuPid returns the pid of the VM's QEMU if it still runs: our child, or
// the process named by the pid file whose command line is ours.
func (d *Driver) qemuPid(id string, p *vmProc) int {
	if p != nil {
		select {
		case <-p.done:
			return 0
		default:
			return p.cmd.Process.Pid
		}
	}
	pidFile := filepath.Join(d.vmDir(id), "qemu.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid > 0 && isOurQEMU(pid, pidFile) && !processGone(pid) {
		return pid
	}
	return 0
}

// isOurQEMU reports whether pid runs with "-pidfile pidFile".
func isOurQEMU(pid int, pidFile string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(string(b), "\x00")
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-pidfile" && args[i+1] == pidFile {
			return true
		}
	}
	return false
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

// Destroy implements sandboxrt.Runtime. It is idempotent: it asks QEMU to
// quit over QMP, kills it if it does not exit within two seconds, removes
// the tap and the redirect from the slot's netns and deletes the VM's dir.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	if !sandboxrt.ValidID(id) {
		return nil
	}
	t0 := time.Now()
	dir := d.vmDir(id)
	d.mu.Lock()
	p := d.procs[id]
	d.mu.Unlock()
	if p != nil {
		p.destroying.Store(true)
	}
	if _, err := os.Stat(dir); err != nil && p == nil {
		return nil
	}
	rec, _ := d.loadRecord(id)
	var errs []error
	if pid := d.qemuPid(id, p); pid > 0 {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		_, _ = qmp(qctx, filepath.Join(dir, "qmp.sock"), "quit", nil)
		cancel()
		if !waitGone(pid, p, 2*time.Second) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			if !waitGone(pid, p, 5*time.Second) {
				errs = append(errs, fmt.Errorf("qemu pid %d did not exit after SIGKILL", pid))
			}
		}
	}
	if p != nil {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
		d.mu.Lock()
		delete(d.procs, id)
		d.mu.Unlock()
	}
	if rec != nil && rec.NetNSPath != "" {
		if _, err := os.Stat(rec.NetNSPath); err == nil {
			if err := inNetNS(rec.NetNSPath, func() error { return delTap(rec.Iface, rec.Tap) }); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("microvm: destroy %s: %w", id, err)
	}
	d.cfg.Logf("microvm: destroyed %s in %v", id, time.Since(t0).Round(time.Millisecond))
	return nil
}

// waitGone waits up to timeout for pid (our child p, if not nil) to exit.
func waitGone(pid int, p *vmProc, timeout time.Duration) bool {
	if p != nil {
		select {
		case <-p.done:
			return true
		case <-time.After(timeout):
			return false
		}
	}
	deadline := time.Now().Add(timeout)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func (d *Driver) known(id string) (*vmProc, bool) {
	d.mu.Lock()
	p := d.procs[id]
	d.mu.Unlock()
	if !sandboxrt.ValidID(id) {
		return nil, false
	}
	_, err := os.Stat(filepath.Join(d.vmDir(id), "record.json"))
	return p, err == nil || p != nil
}

// State implements sandboxrt.Runtime: QMP query-status of a live QEMU;
// StateStopped once QEMU has exited (the guest powered off or crashed).
func (d *Driver) State(ctx context.Context, id string) (sandboxrt.State, error) {
	p, ok := d.known(id)
	if !ok {
		return "", fmt.Errorf("microvm: state %s: %w", id, sandboxrt.ErrNotFound)
	}
	if d.qemuPid(id, p) == 0 {
		return sandboxrt.StateStopped, nil
	}
	out, err := qmp(ctx, filepath.Join(d.vmDir(id), "qmp.sock"), "query-status", nil)
	if err != nil {
		if d.qemuPid(id, p) == 0 {
			return sandboxrt.StateStopped, nil
		}
		return "", fmt.Errorf("microvm: state %s: %w", id, err)
	}
	var s struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(out, &s); err != nil {
		return "", fmt.Errorf("microvm: state %s: %w", id, err)
	}
	switch s.Status {
	case "running", "prelaunch", "inmigrate", "postmigrate", "finish-migrate":
		return sandboxrt.StateRunning, nil
	case "paused", "suspended":
		return sandboxrt.StatePaused, nil
	}
	return sandboxrt.StateStopped, nil
}

// Stats implements sandboxrt.Runtime with the host's view of the QEMU
// process: its CPU time (all vCPU and device threads) and resident memory
// (guest RAM actually touched plus QEMU's own).
func (d *Driver) Stats(ctx context.Context, id string) (sandboxrt.Stats, error) {
	p, ok := d.known(id)
	if !ok {
		return sandboxrt.Stats{}, fmt.Errorf("microvm: stats %s: %w", id, sandboxrt.ErrNotFound)
	}
	pid := d.qemuPid(id, p)
	if pid == 0 {
		return sandboxrt.Stats{}, fmt.Errorf("microvm: stats %s: not running", id)
	}
	cpu, mem, err := procUsage(pid)
	if err != nil {
		return sandboxrt.Stats{}, fmt.Errorf("microvm: stats %s: %w", id, err)
	}
	st := sandboxrt.Stats{Time: time.Now(), CPUUsageNanos: cpu, MemoryBytes: mem}
	// The disk: the blocks the guest has written to its sparse image (an
	// upper bound of what its filesystem holds; freed blocks stay allocated).
	var fi unix.Stat_t
	if err := unix.Stat(filepath.Join(d.vmDir(id), "disk.img"), &fi); err == nil {
		st.DiskBytes, st.DiskLimitBytes = uint64(fi.Blocks)*512, uint64(fi.Size)
	}
	return st, nil
}

// procUsage reads utime+stime (in ns, at USER_HZ=100) and VmRSS of pid.
func procUsage(pid int) (cpuNanos, rssBytes uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	cpuNanos = (ut + st) * uint64(time.Second/100)
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			rssBytes = kb << 10
		}
	}
	return cpuNanos, rssBytes, nil
}

// Pause implements sandboxrt.Pauser: QMP "stop" halts the vCPUs (guest
// memory stays in the QEMU process).
func (d *Driver) Pause(ctx context.Context, id string) error { return d.control(ctx, id, "stop") }

// Resume implements sandboxrt.Pauser: QMP "cont".
func (d *Driver) Resume(ctx context.Context, id string) error { return d.control(ctx, id, "cont") }

func (d *Driver) control(ctx context.Context, id, cmd string) error {
	p, ok := d.known(id)
	if !ok || d.qemuPid(id, p) == 0 {
		return fmt.Errorf("microvm: %s %s: %w", cmd, id, sandboxrt.ErrNotFound)
	}
	if _, err := qmp(ctx, filepath.Join(d.vmDir(id), "qmp.sock"), cmd, nil); err != nil {
		return fmt.Errorf("microvm: %s %s: %w", cmd, id, err)
	}
	return nil
}

// Cleanup implements sandboxrt.Runtime: it destroys every VM under the
// state dir, whether this Driver value started it or not, and kills any
// QEMU process still running with a pid file under it.
func (d *Driver) Cleanup(ctx context.Context) error {
	ids := map[string]bool{}
	if ents, err := os.ReadDir(d.vms); err == nil {
		for _, e := range ents {
			ids[e.Name()] = true
		}
	}
	d.mu.Lock()
	for id := range d.procs {
		ids[id] = true
	}
	d.mu.Unlock()
	var errs []error
	for id := range ids {
		if !sandboxrt.ValidID(id) {
			errs = append(errs, os.RemoveAll(filepath.Join(d.vms, id)))
			continue
		}
		d.cfg.Logf("microvm: cleanup: destroying %s", id)
		if err := d.Destroy(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	// QEMU processes whose VM dir is gone (e.g. removed by hand).
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-pidfile" && strings.HasPrefix(args[i+1], d.vms+"/") {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				d.cfg.Logf("microvm: cleanup: killing leftover qemu pid %d", pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return errors.Join(errs...)
}

func (d *Driver) loadRecord(id string) (*record, error) {
	var r record
	if err := sandboxrt.ReadJSON(filepath.Join(d.vmDir(id), "record.json"), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

var (
	_ sandboxrt.Runtime = (*Driver)(nil)
	_ sandboxrt.Pauser  = (*Driver)(nil)
)
