package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// owner holds what makes this server the only one using its state dir and
// its net prefix: two servers sharing either would each take the other's
// sandboxes for a crashed run's leftovers and delete them (runsc
// containers under the state dir; netns, veths and the nftables table named
// by the prefix).
type owner struct {
	lock *os.File     // STATE/server.lock, flocked
	ln   net.Listener // abstract unix socket: one per prefix per network namespace
}

// claimOwner takes the state dir's lock and the net prefix's abstract
// socket (abstract sockets belong to the network namespace, like the names
// the prefix is for, and vanish with the process).
func claimOwner(stateDir, prefix string) (_ *owner, err error) {
	path := filepath.Join(stateDir, "server.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("state dir %s is in use by another declaw server (pid %s); stop it or pass another --state-dir", stateDir, strings.TrimSpace(string(b)))
		}
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	ln, err := net.Listen("unix", "@declaw-server/net-prefix/"+prefix)
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("another declaw server with net prefix %q runs in this network namespace; stop it or pass another --net-prefix (and --sandbox-cidr)", prefix)
		}
		return nil, fmt.Errorf("net prefix lock: %w", err)
	}
	return &owner{lock: f, ln: ln}, nil
}

// release lets another server take the state dir and the prefix.
func (o *owner) release() {
	if o == nil {
		return
	}
	o.ln.Close()
	o.lock.Close()
}
