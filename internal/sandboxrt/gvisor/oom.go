package gvisor

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/declaw/declaw/internal/sandboxrt"
	"golang.org/x/sys/unix"
)

// OOM on this runtime: the memory cgroup (Resources.MemoryMB) holds the
// sentry, the gofer and every guest page, so at the limit the host kernel's
// OOM killer kills within that cgroup only, in practice the sentry (it
// holds the guest's memory): the sandbox ends, nothing else on the host is
// touched. The driver learns of it through the cgroup v1 OOM notification
// (an eventfd registered on memory.oom_control via cgroup.event_control)
// and reports EventOOM, then EventExit when "runsc run" is gone.

// oomWatch is the OOM notification of one sandbox's memory cgroup.
type oomWatch struct {
	efd     *os.File // eventfd (non-blocking: Go's poller waits on it)
	control *os.File // memory.oom_control
	done    chan struct{}
}

// watchOOM registers for OOM notifications of cgroup cg. The watcher ends
// when the cgroup is removed (the kernel then signals the eventfd too).
func (d *Driver) watchOOM(id, cg string) (*oomWatch, error) {
	dir := filepath.Join(cgroupMount, "memory", cg)
	control, err := os.Open(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		return nil, fmt.Errorf("oom watch: %w", err)
	}
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		control.Close()
		return nil, fmt.Errorf("oom watch: eventfd: %w", err)
	}
	efd := os.NewFile(uintptr(fd), "oom-eventfd")
	reg := fmt.Sprintf("%d %d", fd, control.Fd())
	if err := os.WriteFile(filepath.Join(dir, "cgroup.event_control"), []byte(reg), 0); err != nil {
		efd.Close()
		control.Close()
		return nil, fmt.Errorf("oom watch: register: %w", err)
	}
	w := &oomWatch{efd: efd, control: control, done: make(chan struct{})}
	go d.oomLoop(id, w)
	return w, nil
}

func (d *Driver) oomLoop(id string, w *oomWatch) {
	defer close(w.done)
	defer w.efd.Close()
	defer w.control.Close()
	buf := make([]byte, 8)
	for {
		if _, err := w.efd.Read(buf); err != nil {
			return
		}
		// The kernel signals at the start of an OOM (before it counts the
		// kill) and when the cgroup is removed, by which time its files
		// read ENODEV: a readable file means this wake-up is an OOM.
		if _, err := readOOMControl(w.control); err != nil {
			return
		}
		d.emit(sandboxrt.Event{ID: id, Kind: sandboxrt.EventOOM, Time: time.Now().UTC(), Detail: "memory limit reached; the kernel killed a process of the sandbox"})
	}
}

type oomControl struct {
	underOOM bool
	kills    uint64
}

// readOOMControl parses memory.oom_control ("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").
func readOOMControl(f *os.File) (oomControl, error) {
	b := make([]byte, 256)
	n, err := f.ReadAt(b, 0)
	if n == 0 && err != nil {
		return oomControl{}, err
	}
	return parseOOMControl(b[:n]), nil
}

func parseOOMControl(b []byte) oomControl {
	var oc oomControl
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		switch k {
		case "under_oom":
			oc.underOOM = n == 1
		case "oom_kill":
			oc.kills = n
		}
	}
	return oc
}

// Notify implements sandboxrt.Notifier.
func (d *Driver) Notify(fn func(sandboxrt.Event)) {
	d.mu.Lock()
	d.notify = fn
	d.mu.Unlock()
}

func (d *Driver) emit(ev sandboxrt.Event) {
	d.mu.Lock()
	fn := d.notify
	d.mu.Unlock()
	if fn != nil {
		fn(ev)
	}
}

// watchExit reports EventExit when "runsc run" of id exits on its own
// (not through Destroy), after the OOM watcher is done, so an OOM that
// ended the sandbox is always reported before its exit.
func (d *Driver) watchExit(id string, p *runProc, w *oomWatch) {
	<-p.done
	if w != nil {
		select {
		case <-w.done:
		case <-time.After(2 * time.Second):
		}
	}
	if p.destroying.Load() {
		return
	}
	detail := "the sandbox stopped"
	if p.err != nil {
		detail += ": " + p.err.Error()
	}
	d.emit(sandboxrt.Event{ID: id, Kind: sandboxrt.EventExit, Time: time.Now().UTC(), Detail: detail})
}
