package microvm

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/declaw/declaw/internal/sandboxrt"
)

// OOM in a microVM: the guest's RAM (Resources.MemoryMB) is the limit, and
// the guest kernel's OOM killer picks a process inside; the VM lives on.
// The kernel prints the kill on the console (pr_err, shown under "quiet"),
// which the driver follows: each "Out of memory: Killed process" line is
// an EventOOM. A QEMU that exits without Destroy is an EventExit.

// oomMarker starts the guest kernel's console line for an OOM kill (Linux 6.1:
// "Out of memory: Killed process 123 (python3) total-vm:..."; a memory
// cgroup inside the guest says "Memory cgroup out of memory: Killed process").
var oomMarker = []byte("out of memory: Killed process")

// consolePoll is how often the console is read for OOM kills.
const consolePoll = time.Second

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

// watchVM follows the console of VM id for OOM kills until QEMU exits,
// then reports the exit unless Destroy caused it.
func (d *Driver) watchVM(id string, p *vmProc) {
	console := filepath.Join(d.vmDir(id), "console.log")
	var off int64
	tick := time.NewTicker(consolePoll)
	defer tick.Stop()
	for {
		done := false
		select {
		case <-p.done:
			done = true
		case <-tick.C:
		}
		n, kills := countOOM(console, off)
		off = n
		for range kills {
			d.emit(sandboxrt.Event{ID: id, Kind: sandboxrt.EventOOM, Time: time.Now().UTC(), Detail: "memory limit reached; the guest kernel killed a process"})
		}
		if done {
			break
		}
	}
	if p.destroying.Load() {
		return
	}
	detail := "the VM stopped"
	if p.err != nil {
		detail += ": " + p.err.Error()
	}
	d.emit(sandboxrt.Event{ID: id, Kind: sandboxrt.EventExit, Time: time.Now().UTC(), Detail: detail})
}

// countOOM reads path from offset off and returns the offset after the
// last whole line and how many OOM kill lines it read.
func countOOM(path string, off int64) (int64, int) {
	f, err := os.Open(path)
	if err != nil {
		return off, 0
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, off, 1<<30))
	if err != nil || len(b) == 0 {
		return off, 0
	}
	end := bytes.LastIndexByte(b, '\n')
	if end < 0 {
		return off, 0 // no whole line yet
	}
	b = b[:end+1]
	return off + int64(len(b)), bytes.Count(bytes.ToLower(b), bytes.ToLower(oomMarker))
}

var _ sandboxrt.Notifier = (*Driver)(nil)
