package guestinit

import (
	"archive/tar"
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Paths inside the initramfs.
const (
	cfgDir  = "/cfg"     // the config disk, extracted
	lower   = "/lower"   // the template image, read-only
	rwDir   = "/rw"      // tmpfs holding the overlay's upper and work dirs
	newRoot = "/newroot" // the overlay, which becomes /
)

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Main runs the guest init. It never returns: it execs the sandbox's init,
// or reports the error on the console and resets the VM (QEMU runs with
// -no-reboot, so it exits and the driver sees the failed start).
func Main() {
	err := run()
	if !errors.Is(err, errPowerOff) {
		fmt.Fprintf(os.Stdout, "%s%v\n", FailMarker, err)
	}
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	select {}
}

var errPowerOff = errors.New("power off requested")

// step prints a progress line with the time since the init started.
func step(t0 time.Time, what string) {
	fmt.Fprintf(os.Stdout, "declaw-init: %s (+%v)\n", what, time.Since(t0).Round(time.Millisecond))
}

func run() error {
	t0 := time.Now()
	for _, m := range []struct{ src, dst, fstype, data string }{
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755"},
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
	} {
		if err := mount(m.src, m.dst, m.fstype, 0, m.data); err != nil {
			return err
		}
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	boot, err := ParseCmdline(string(cmdline))
	if err != nil {
		return err
	}
	if boot.PowerOff {
		return errPowerOff
	}
	step(t0, "started")
	if err := loadModules(boot.ModParams); err != nil {
		return err
	}
	step(t0, "modules loaded")
	rootDev, err := waitDisk(RootSerial, 30*time.Second)
	if err != nil {
		return err
	}
	cfgDev, err := waitDisk(ConfigSerial, 30*time.Second)
	if err != nil {
		return err
	}
	cfg, err := readConfig(cfgDev, cfgDir)
	if err != nil {
		return err
	}
	step(t0, "disks found, config read")
	if len(cfg.Init) == 0 {
		return errors.New("config: no init")
	}
	if err := mount(rootDev, lower, "ext4", unix.MS_RDONLY, "noload"); err != nil {
		return err
	}
	if cfg.Disk {
		diskDev, err := waitDisk(DiskSerial, 30*time.Second)
		if err != nil {
			return err
		}
		// noinit_itable: the image is sparse, its inode tables read as zeros.
		if err := mount(diskDev, rwDir, "ext4", unix.MS_NOATIME, "noinit_itable"); err != nil {
			return err
		}
	} else if err := mount("tmpfs", rwDir, "tmpfs", 0, "mode=0755"); err != nil {
		return err
	}
	for _, d := range []string{rwDir + "/upper", rwDir + "/work"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := mount("overlay", newRoot, "overlay", 0, "lowerdir="+lower+",upperdir="+rwDir+"/upper,workdir="+rwDir+"/work"); err != nil {
		return err
	}
	if err := placeMounts(cfg.Mounts); err != nil {
		return err
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	step(t0, "root mounted")
	if err := setupNetwork(boot); err != nil {
		return err
	}
	step(t0, "network up")
	if now := time.Now(); !boot.Time.IsZero() && now.Before(boot.Time) {
		tv := unix.NsecToTimeval(boot.Time.UnixNano())
		if err := unix.Settimeofday(&tv); err != nil {
			return fmt.Errorf("settimeofday: %w", err)
		}
	}
	if err := addEntropy(cfg.Seed); err != nil {
		return err
	}
	if err := switchRoot(); err != nil {
		return err
	}
	argv0, err := lookPath(cfg.Init[0], cfg.Env)
	if err != nil {
		return err
	}
	env := cfg.Env
	if !hasKey(env, "PATH") {
		env = append(env, defaultPath)
	}
	fmt.Fprintf(os.Stdout, "%s%s (init took %v)\n", ReadyMarker, argv0, time.Since(t0).Round(time.Millisecond))
	return fmt.Errorf("exec %s: %w", argv0, unix.Exec(argv0, cfg.Init, env))
}

func mount(src, dst, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(src, dst, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s (%s): %w", src, dst, fstype, err)
	}
	return nil
}

// loadModules loads the modules listed in ModulesOrder, in order, with the
// module parameters of the kernel command line (as modprobe passes them).
func loadModules(params map[string][]string) error {
	b, err := os.ReadFile(ModulesOrder)
	if err != nil {
		return fmt.Errorf("modules: %w", err)
	}
	for _, name := range strings.Fields(string(b)) {
		mod := strings.ReplaceAll(strings.TrimSuffix(filepath.Base(name), ".ko"), "-", "_")
		f, err := os.Open(filepath.Join(ModulesDir, name))
		if err != nil {
			return fmt.Errorf("module %s: %w", name, err)
		}
		err = unix.FinitModule(int(f.Fd()), strings.Join(params[mod], " "), 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("load module %s: %w", name, err)
		}
	}
	return nil
}

// waitDisk returns the /dev path of the virtio disk with the given serial.
func waitDisk(serial string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		paths, _ := filepath.Glob("/sys/block/*/serial")
		for _, p := range paths {
			if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == serial {
				dev := "/dev/" + filepath.Base(filepath.Dir(p))
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no disk with serial %q after %v", serial, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readConfig extracts the config disk's tar into dir and parses its Config.
func readConfig(dev, dir string) (*Config, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	tr := tar.NewReader(bufio.NewReaderSize(f, 1<<20))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("config disk: %w", err)
		}
		name := filepath.Clean("/" + h.Name)
		p := filepath.Join(dir, name)
		mode := os.FileMode(h.Mode) & os.ModePerm
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, mode|0o700); err != nil {
				return nil, err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return nil, err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return nil, err
			}
			out, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return nil, fmt.Errorf("config disk: %s: %w", h.Name, err)
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, fmt.Errorf("config disk: %w", err)
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("config disk: %w", err)
	}
	return &cfg, nil
}

// placeMounts binds each config-disk file at its target in the new root,
// creating a missing target in the overlay (never in the template image).
// A symlink at the target is replaced, so the bind cannot escape the root.
func placeMounts(mounts []Mount) error {
	for _, m := range mounts {
		src := filepath.Join(cfgDir, FilesDir, fmt.Sprint(m.Index))
		target := filepath.Join(newRoot, filepath.Clean("/"+m.Target))
		if err := ensureTarget(target, m.Dir); err != nil {
			return fmt.Errorf("mount target %s: %w", m.Target, err)
		}
		if err := unix.Mount(src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", m.Target, err)
		}
		if m.ReadOnly {
			if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("read-only %s: %w", m.Target, err)
			}
		}
	}
	return nil
}

func ensureTarget(target string, dir bool) error {
	// Parents: resolve inside the new root only (no symlink may lead out).
	parent := filepath.Dir(target)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(parent); err != nil || !strings.HasPrefix(real+"/", newRoot+"/") {
		return fmt.Errorf("parent leads outside the root (%s)", real)
	}
	fi, err := os.Lstat(target)
	if err == nil && (fi.Mode()&os.ModeSymlink != 0 || fi.IsDir() != dir) {
		if err := os.RemoveAll(target); err != nil {
			return err
		}
		err = os.ErrNotExist
	}
	if err == nil {
		return nil
	}
	if dir {
		return os.Mkdir(target, 0o755)
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

func setupNetwork(b Boot) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	if !b.IP.IsValid() {
		return nil
	}
	var eth netlink.Link
	deadline := time.Now().Add(30 * time.Second)
	for {
		if eth, err = netlink.LinkByName("eth0"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("eth0: %w", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if b.MTU > 0 {
		if err := netlink.LinkSetMTU(eth, b.MTU); err != nil {
			return fmt.Errorf("eth0 mtu: %w", err)
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: b.IP.Addr().AsSlice(), Mask: net.CIDRMask(b.IP.Bits(), b.IP.Addr().BitLen())}}
	if err := netlink.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("eth0 address %s: %w", b.IP, err)
	}
	if err := netlink.LinkSetUp(eth); err != nil {
		return fmt.Errorf("eth0 up: %w", err)
	}
	if b.GW.IsValid() {
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: b.GW.AsSlice()}); err != nil {
			return fmt.Errorf("default route via %s: %w", b.GW, err)
		}
	}
	return nil
}

// addEntropy credits seed to the kernel's pool (RNDADDENTROPY), so getrandom
// does not block early and the guest does not start from a guessable state.
func addEntropy(seed []byte) error {
	if len(seed) == 0 {
		return nil
	}
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 8+len(seed))
	binary.NativeEndian.PutUint32(buf[0:], uint32(len(seed)*8))
	binary.NativeEndian.PutUint32(buf[4:], uint32(len(seed)))
	copy(buf[8:], seed)
	if err := ioctlPtr(f.Fd(), unix.RNDADDENTROPY, buf); err != nil {
		return fmt.Errorf("RNDADDENTROPY: %w", err)
	}
	return nil
}

// switchRoot moves /dev, /proc and /sys into the new root and makes it /.
func switchRoot() error {
	for _, m := range []string{"/dev", "/proc", "/sys"} {
		dst := newRoot + m
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m, dst, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s: %w", m, err)
		}
	}
	_ = mount("devpts", newRoot+"/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "gid=5,mode=620,ptmxmode=666")
	_ = mount("tmpfs", newRoot+"/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")
	if err := os.Chdir(newRoot); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move new root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return os.Chdir("/")
}

// lookPath resolves argv0 in the new root, with the PATH of env for bare names.
func lookPath(argv0 string, env []string) (string, error) {
	if !strings.Contains(argv0, "/") {
		path := strings.TrimPrefix(defaultPath, "PATH=")
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, "PATH="); ok {
				path = v
			}
		}
		for _, dir := range filepath.SplitList(path) {
			p := filepath.Join(dir, argv0)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return p, nil
			}
		}
		return "", fmt.Errorf("init %q: not found in PATH", argv0)
	}
	fi, err := os.Stat(argv0)
	if err != nil {
		return "", fmt.Errorf("init: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("init %s: not an executable file", argv0)
	}
	return argv0, nil
}

func hasKey(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

func ioctlPtr(fd uintptr, req uint, buf []byte) error {
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, uintptr(req), uintptr(unsafePointer(buf)))
	if errno != 0 {
		return errno
	}
	return nil
}
