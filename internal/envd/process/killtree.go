package process

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// procStat is the part of /proc/PID/stat that tree walks need.
type procStat struct {
	Pid, Ppid, Pgrp, Session int
	State                    byte
}

// parseStat parses the content of /proc/PID/stat. The command name may
// contain spaces and parentheses, so fields are counted from the last ')'.
func parseStat(b []byte) (procStat, bool) {
	open := bytes.IndexByte(b, '(')
	closeIdx := bytes.LastIndexByte(b, ')')
	if open < 1 || closeIdx < open {
		return procStat{}, false
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return procStat{}, false
	}
	f := bytes.Fields(b[closeIdx+1:])
	if len(f) < 4 || len(f[0]) != 1 {
		return procStat{}, false
	}
	var n [3]int
	for i := range n {
		if n[i], err = strconv.Atoi(string(f[i+1])); err != nil {
			return procStat{}, false
		}
	}
	return procStat{Pid: pid, State: f[0][0], Ppid: n[0], Pgrp: n[1], Session: n[2]}, true
}

// readProcs lists the processes in /proc. Processes that vanish while
// reading are skipped.
func readProcs() []procStat {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make([]procStat, 0, len(ents))
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if st, ok := parseStat(b); ok {
			out = append(out, st)
		}
	}
	return out
}

// treeOf returns the processes that belong to the tree of root: its
// descendants by parent link, plus every process in root's process group or
// session (which catches descendants reparented after their parent died).
// root itself is not included. exclude is never returned (envd's own pid).
func treeOf(procs []procStat, root, exclude int) []int {
	children := make(map[int][]int)
	for _, p := range procs {
		children[p.Ppid] = append(children[p.Ppid], p.Pid)
	}
	seen := map[int]bool{root: true}
	var out []int
	add := func(pid int) bool {
		if seen[pid] || pid == exclude || pid <= 1 {
			return false
		}
		seen[pid] = true
		out = append(out, pid)
		return true
	}
	queue := []int{root}
	for _, p := range procs {
		if p.Pgrp == root || p.Session == root {
			if add(p.Pid) {
				queue = append(queue, p.Pid)
			}
		}
	}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			if add(c) {
				queue = append(queue, c)
			}
		}
	}
	return out
}

// killTree kills root's process group and every process found in its tree.
// Precondition: root is a session and group leader (started with Setsid)
// that was not reaped yet, so its pid and pgid cannot have been reused.
// The tree is stopped first so it cannot fork new members between the
// walk and the kill, then walked again and killed.
//
// Limitation: a process that left both the session and the process group
// (setsid) and whose parent already exited (a daemon's double fork) has
// been reparented to envd and carries no trace of its origin; it survives.
func killTree(root int) {
	self := os.Getpid()
	_ = syscall.Kill(-root, syscall.SIGSTOP)
	members := map[int]bool{}
	for range 2 {
		for _, pid := range treeOf(readProcs(), root, self) {
			if !members[pid] {
				members[pid] = true
				_ = syscall.Kill(pid, syscall.SIGSTOP)
			}
		}
	}
	_ = syscall.Kill(-root, syscall.SIGKILL)
	_ = syscall.Kill(root, syscall.SIGKILL)
	for pid := range members {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
