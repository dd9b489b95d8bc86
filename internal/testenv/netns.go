package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named network namespaces are bind-mounted, as by
// `ip netns add`.
const NetnsDir = "/var/run/netns"

// Netns names a network namespace bind-mounted at Path, so that
// `nsenter --net=PATH` and `ip netns exec NAME` both find it.
type Netns struct {
	Name string // e.g. "dhnet4a1b2c"
	Path string // NetnsDir + "/" + Name
}

func netnsNamed(name string) Netns {
	return Netns{Name: name, Path: filepath.Join(NetnsDir, name)}
}

// Do runs fn inside ns on a locked OS thread. See the package-level Do.
func (ns Netns) Do(fn func() error) error { return Do(ns.Path, fn) }

// DialContext dials address, which must be an IP address and port (or a
// unix socket path), from inside ns: the socket is created in ns and keeps
// that namespace for life. Names are refused because resolving them would
// run on other threads, in this machine's namespace; Net.DialContext
// resolves through the uplink's DNS instead. Every socket's namespace is
// checked before it connects (see checkSocketNetns), so a socket created
// on the wrong thread fails instead of leaking to the real network.
func (ns Netns) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if err := requireLiteral(network, address); err != nil {
		return nil, err
	}
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		d := &net.Dialer{Control: ns.checkSocket}
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Listen creates a listener inside ns; address must be an IP literal or
// have an empty host (see DialContext).
func (ns Netns) Listen(network, address string) (net.Listener, error) {
	if err := requireLiteral(network, address); err != nil {
		return nil, err
	}
	var l net.Listener
	err := ns.Do(func() error {
		var err error
		l, err = (&net.ListenConfig{Control: ns.checkSocket}).Listen(context.Background(), network, address)
		return err
	})
	return l, err
}

// ListenPacket creates a packet listener inside ns; address as for Listen.
func (ns Netns) ListenPacket(network, address string) (net.PacketConn, error) {
	if err := requireLiteral(network, address); err != nil {
		return nil, err
	}
	var pc net.PacketConn
	err := ns.Do(func() error {
		var err error
		pc, err = (&net.ListenConfig{Control: ns.checkSocket}).ListenPacket(context.Background(), network, address)
		return err
	})
	return pc, err
}

// requireLiteral rejects host names for IP networks.
func requireLiteral(network, address string) error {
	if strings.HasPrefix(network, "unix") {
		return nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("testenv: %s address %q: %w", network, address, err)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("testenv: %s address %q is not an IP literal; names would resolve outside the namespace (use Net.DialContext)", network, address)
	}
	return nil
}

// checkSocket is a net.Dialer/ListenConfig Control hook: it runs after the
// socket exists and before it connects or binds, and fails unless the
// socket lives in ns.
func (ns Netns) checkSocket(network, address string, rc syscall.RawConn) error {
	var err error
	if cerr := rc.Control(func(fd uintptr) { err = checkSocketNetns(int(fd), ns.Path) }); cerr != nil {
		return cerr
	}
	return err
}

// checkSocketNetns asks the kernel which network namespace the socket fd
// belongs to (SIOCGSKNS) and compares it with the one mounted at path.
func checkSocketNetns(fd int, path string) error {
	nsfd, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if err != nil {
		return fmt.Errorf("testenv: SIOCGSKNS: %w", err)
	}
	defer unix.Close(nsfd)
	var got, want unix.Stat_t
	if err := unix.Fstat(nsfd, &got); err != nil {
		return err
	}
	if err := unix.Stat(path, &want); err != nil {
		return err
	}
	if got.Dev != want.Dev || got.Ino != want.Ino {
		return fmt.Errorf("testenv: refusing to use a socket outside netns %s (socket netns inode %d, want %d)", path, got.Ino, want.Ino)
	}
	return nil
}

// Command returns an unstarted command that runs name inside ns through
// `nsenter --net=PATH --` (not `ip netns exec`, which remounts /sys and breaks
// runsc). The process leads its own process group, and when ctx is done the
// whole group is killed. Callers Start and Wait it.
func (ns Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	nsenter := "nsenter"
	if p, err := exec.LookPath("nsenter"); err == nil {
		nsenter = p
	}
	cmd := exec.CommandContext(ctx, nsenter, append([]string{"--net=" + ns.Path, "--", name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// killGroup SIGKILLs cmd's process group (nsenter execs name, so the group
// leader is the command itself and its children unless they left the group).
func killGroup(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// Do runs fn on an OS thread switched into the network namespace bind-mounted
// (or found) at path, then switches the thread back. fn runs on a goroutine
// of its own, so it must not call t.FailNow/t.Fatal; return an error instead.
// Sockets fn creates stay in the namespace after Do returns. If the thread
// cannot be switched back it is never unlocked, so the runtime discards it
// rather than reuse a thread in the wrong namespace.
func Do(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()
	return onThread(func() error {
		if err := netns.Set(target); err != nil {
			return fmt.Errorf("enter netns %s: %w", path, err)
		}
		return fn()
	})
}

// onThread runs fn on a fresh goroutine locked to its OS thread and restores
// the thread's network namespace afterwards, whatever fn switched it to.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Stay locked: the goroutine exits and the runtime kills the thread.
			errc <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

var netnsDirOnce struct {
	sync.Once
	err error
}

// prepareNetnsDir makes NetnsDir a shared mount point, as iproute2 does, so
// namespaces mounted there propagate into mount namespaces made later (runsc).
func prepareNetnsDir() error {
	netnsDirOnce.Do(func() {
		if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
			netnsDirOnce.err = err
			return
		}
		err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if errors.Is(err, unix.EINVAL) { // not a mount point yet
			if err = unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
				err = unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
			}
		}
		if err != nil {
			netnsDirOnce.err = fmt.Errorf("make %s a shared mount: %w", NetnsDir, err)
		}
	})
	return netnsDirOnce.err
}

// createNetns creates a new network namespace bind-mounted at NetnsDir/name,
// like `ip netns add name`. The caller's thread is untouched.
func createNetns(name string) (Netns, error) {
	ns := netnsNamed(name)
	if err := prepareNetnsDir(); err != nil {
		return ns, err
	}
	err := onThread(func() error {
		h, err := netns.NewNamed(name) // unshares this thread, then bind-mounts
		if err != nil {
			return err
		}
		return h.Close()
	})
	if err != nil {
		// NewNamed leaves the file behind if the mount fails.
		if _, serr := os.Stat(ns.Path); serr == nil && !errors.Is(err, os.ErrExist) {
			unix.Unmount(ns.Path, unix.MNT_DETACH)
			os.Remove(ns.Path)
		}
		return ns, fmt.Errorf("create netns %s: %w", name, err)
	}
	return ns, nil
}

// deleteNetns unmounts and removes ns, like `ip netns delete`. The kernel
// frees the namespace once no process or socket refers to it.
func deleteNetns(ns Netns) error {
	err := unix.Unmount(ns.Path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", ns.Path, err)
	}
	if err := os.Remove(ns.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", ns.Path, err)
	}
	return nil
}
