package process

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Size is a terminal size in cells.
type Size struct {
	Cols, Rows uint16
}

// openPty opens a new pseudo-terminal pair of the given size. The master
// is non-blocking and registered with Go's poller (so reads can be
// interrupted by Close and writes can have deadlines); the tty is for the
// child. It is done here rather than with creack/pty, whose ioctls call
// os.File.Fd and so switch the master to blocking mode for good.
func openPty(size Size) (master, tty *os.File, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	defer func() {
		if err != nil {
			master.Close()
		}
	}()
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	if err := setSize(master, size); err != nil {
		return nil, nil, err
	}
	name := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	tty, err = os.OpenFile(name, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", name, err)
	}
	return master, tty, nil
}

// setSize sets the terminal size without taking f out of the poller.
func setSize(f *os.File, size Size) error {
	if size.Cols == 0 || size.Rows == 0 {
		return fmt.Errorf("%w: terminal size %dx%d must be positive", ErrBadRequest, size.Cols, size.Rows)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("resize pty: %w", err)
	}
	var ioctlErr error
	err = rc.Control(func(fd uintptr) {
		ioctlErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Rows, Col: size.Cols})
	})
	if err = errors.Join(err, ioctlErr); err != nil {
		return fmt.Errorf("resize pty: %w", err)
	}
	return nil
}
