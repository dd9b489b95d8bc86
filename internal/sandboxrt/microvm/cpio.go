package microvm

import (
	"fmt"
	"io"
	"io/fs"
)

// cpioWriter writes a cpio archive in the "newc" format (the one the Linux
// kernel unpacks as an initramfs): a 110-byte ASCII header per entry, the
// NUL-terminated name, the data, each padded to 4 bytes, and a trailer.
type cpioWriter struct {
	w    io.Writer
	ino  uint32
	err  error
	done bool
}

func newCPIOWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: w, ino: 1} }

// cpioEntry is one archive member. Mode holds the file type bits (as in
// stat's st_mode: 0o100000 regular, 0o040000 directory, 0o120000 symlink,
// 0o020000 char device) and the permissions.
type cpioEntry struct {
	Name     string
	Mode     uint32
	Size     int
	DevMajor uint32 // for device nodes
	DevMinor uint32
	Nlink    uint32
	Mtime    int64
	UID, GID uint32
}

const (
	cpioReg  = 0o100000
	cpioDir  = 0o040000
	cpioLink = 0o120000
	cpioChar = 0o020000
)

func (c *cpioWriter) pad(n int) {
	if c.err != nil {
		return
	}
	if p := (4 - n%4) % 4; p > 0 {
		_, c.err = c.w.Write(make([]byte, p))
	}
}

func (c *cpioWriter) header(e cpioEntry) {
	if c.err != nil {
		return
	}
	nlink := e.Nlink
	if nlink == 0 {
		nlink = 1
		if e.Mode&0o170000 == cpioDir {
			nlink = 2
		}
	}
	ino := c.ino
	c.ino++
	if e.Name == "TRAILER!!!" {
		ino = 0
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, e.Mode, e.UID, e.GID, nlink, uint32(e.Mtime), uint32(e.Size),
		0, 0, e.DevMajor, e.DevMinor, len(e.Name)+1, 0)
	if _, c.err = io.WriteString(c.w, hdr+e.Name+"\x00"); c.err != nil {
		return
	}
	c.pad(len(hdr) + len(e.Name) + 1)
}

// Write adds an entry with its data (len(data) must equal e.Size for files and symlinks).
func (c *cpioWriter) Write(e cpioEntry, data []byte) error {
	if c.done {
		return fmt.Errorf("cpio: write after close")
	}
	e.Size = len(data)
	c.header(e)
	if c.err == nil && len(data) > 0 {
		_, c.err = c.w.Write(data)
		c.pad(len(data))
	}
	return c.err
}

// Dir, File, Symlink and CharDev are shorthands for Write.
func (c *cpioWriter) Dir(name string, perm fs.FileMode) error {
	return c.Write(cpioEntry{Name: name, Mode: cpioDir | uint32(perm.Perm())}, nil)
}

func (c *cpioWriter) File(name string, perm fs.FileMode, data []byte) error {
	return c.Write(cpioEntry{Name: name, Mode: cpioReg | uint32(perm.Perm())}, data)
}

func (c *cpioWriter) Symlink(name, target string) error {
	return c.Write(cpioEntry{Name: name, Mode: cpioLink | 0o777}, []byte(target))
}

func (c *cpioWriter) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	return c.Write(cpioEntry{Name: name, Mode: cpioChar | uint32(perm.Perm()), DevMajor: major, DevMinor: minor}, nil)
}

// Close writes the trailer. It does not close the underlying writer.
func (c *cpioWriter) Close() error {
	if c.done {
		return c.err
	}
	err := c.Write(cpioEntry{Name: "TRAILER!!!"}, nil)
	c.done = true
	return err
}
