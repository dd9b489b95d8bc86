// Package sysuser looks up users and groups in the sandbox's own
// /etc/passwd and /etc/group.
//
// It never consults NSS or the host: envd runs as PID 1 inside the sandbox,
// and the only user database there is the template's files. The files are
// re-read on every lookup, so users created by commands (useradd) are seen
// without restarting envd: a file is read again whenever its identity
// (device, inode, size, modification and change times) differs from the
// last read, so an unchanged file costs one stat. It is safe for
// concurrent use.
package sysuser

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrUnknownUser is returned (wrapped) when a user name is not in the passwd file.
var ErrUnknownUser = errors.New("unknown user")

// maxDBSize bounds how much of a passwd or group file is read.
const maxDBSize = 16 << 20

// User is one passwd entry plus its group memberships.
type User struct {
	Name   string
	Uid    int
	Gid    int    // primary group
	Groups []int  // supplementary groups (includes Gid), sorted as found
	Home   string // home directory, may not exist
	Shell  string
}

// DB reads users from a passwd and a group file.
// The zero value reads /etc/passwd and /etc/group.
type DB struct {
	PasswdPath string // default /etc/passwd
	GroupPath  string // default /etc/group
}

func (db DB) passwdPath() string {
	if db.PasswdPath != "" {
		return db.PasswdPath
	}
	return "/etc/passwd"
}

func (db DB) groupPath() string {
	if db.GroupPath != "" {
		return db.GroupPath
	}
	return "/etc/group"
}

// Lookup returns the user called name. An empty name is an error.
func (db DB) Lookup(name string) (*User, error) {
	if name == "" {
		return nil, fmt.Errorf("look up user %q: %w", name, ErrUnknownUser)
	}
	pw, err := readDB(db.passwdPath())
	if err != nil {
		return nil, fmt.Errorf("look up user %q: %w", name, err)
	}
	u, ok := findPasswd(pw, name)
	if !ok {
		return nil, fmt.Errorf("look up user %q: %w", name, ErrUnknownUser)
	}
	gr, err := readDB(db.groupPath())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("look up groups of %q: %w", name, err)
	}
	u.Groups = memberOf(gr, u.Name, u.Gid)
	return u, nil
}

// UserName returns the name of uid, or the number as a string if it has none.
func (db DB) UserName(uid int) string {
	return nameByID(db.passwdPath(), uid, 2)
}

// GroupName returns the name of gid, or the number as a string if it has none.
func (db DB) GroupName(gid int) string {
	return nameByID(db.groupPath(), gid, 2)
}

func nameByID(path string, id, field int) string {
	data, err := readDB(path)
	if err == nil {
		for _, f := range lines(data) {
			if len(f) > field && f[field] == strconv.Itoa(id) {
				return f[0]
			}
		}
	}
	return strconv.Itoa(id)
}

// fileID identifies one version of a file. Every write or rename changes
// its change time, which users cannot set.
type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime unix.Timespec
}

// dbCache holds the last read contents of each database file by path.
// Looking up a user is on the path of every command start, where reading
// two files costs ~20 syscalls; a stat is one.
var dbCache struct {
	mu sync.Mutex
	m  map[string]cachedDB // +checklocks:mu
}

type cachedDB struct {
	id   fileID
	data []byte // never modified after it is stored
}

func readDB(path string) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	id := fileID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
	dbCache.mu.Lock()
	c, ok := dbCache.m[path]
	dbCache.mu.Unlock()
	if ok && c.id == id {
		return c.data, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxDBSize))
	if err != nil {
		return nil, err
	}
	// Stored under the identity seen before reading: if the file changed
	// in between, the next stat differs and it is read again.
	dbCache.mu.Lock()
	if dbCache.m == nil {
		dbCache.m = make(map[string]cachedDB)
	}
	dbCache.m[path] = cachedDB{id: id, data: data}
	dbCache.mu.Unlock()
	return data, nil
}

// lines splits a colon-separated database into fields, skipping blank
// lines, comments and NIS "+"/"-" entries.
func lines(data []byte) [][]string {
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}

// findPasswd parses passwd data (name:pw:uid:gid:gecos:home:shell).
func findPasswd(data []byte, name string) (*User, bool) {
	for _, f := range lines(data) {
		if len(f) < 7 || f[0] != name {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil || uid < 0 || gid < 0 {
			continue
		}
		return &User{Name: f[0], Uid: uid, Gid: gid, Home: f[5], Shell: f[6]}, true
	}
	return nil, false
}

// memberOf parses group data (name:pw:gid:members) and returns the primary
// gid followed by every group listing name as a member.
func memberOf(data []byte, name string, primary int) []int {
	groups := []int{primary}
	for _, f := range lines(data) {
		if len(f) < 4 {
			continue
		}
		gid, err := strconv.Atoi(f[2])
		if err != nil || gid < 0 || gid == primary {
			continue
		}
		for _, m := range strings.Split(f[3], ",") {
			if strings.TrimSpace(m) == name {
				groups = append(groups, gid)
				break
			}
		}
	}
	return groups
}
