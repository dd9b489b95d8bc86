package process

import (
	"slices"
	"testing"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		in   string
		want procStat
		ok   bool
	}{
		{"42 (bash) S 1 42 42 0 -1 4194560", procStat{Pid: 42, State: 'S', Ppid: 1, Pgrp: 42, Session: 42}, true},
		{"7 (a) b) (c) Z 3 4 5 0", procStat{Pid: 7, State: 'Z', Ppid: 3, Pgrp: 4, Session: 5}, true},
		{"8 (x y) R 2 8 1", procStat{Pid: 8, State: 'R', Ppid: 2, Pgrp: 8, Session: 1}, true},
		{"", procStat{}, false},
		{"x (bash) S 1 2 3", procStat{}, false},
		{"9 (bash) S 1 2", procStat{}, false},
		{"9 bash S 1 2 3", procStat{}, false},
		{"9 (bash) S a 2 3", procStat{}, false},
	}
	for _, tt := range tests {
		got, ok := parseStat([]byte(tt.in))
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseStat(%q) = %+v, %v, want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestTreeOf(t *testing.T) {
	procs := []procStat{
		{Pid: 1, Ppid: 0, Pgrp: 1, Session: 1},
		{Pid: 10, Ppid: 1, Pgrp: 10, Session: 10},  // root
		{Pid: 11, Ppid: 10, Pgrp: 10, Session: 10}, // child
		{Pid: 12, Ppid: 11, Pgrp: 12, Session: 10}, // grandchild in own group
		{Pid: 13, Ppid: 12, Pgrp: 13, Session: 13}, // great-grandchild, own session: found by parent link
		{Pid: 14, Ppid: 1, Pgrp: 10, Session: 10},  // reparented, same group
		{Pid: 15, Ppid: 1, Pgrp: 15, Session: 10},  // reparented, own group, same session
		{Pid: 16, Ppid: 14, Pgrp: 16, Session: 16}, // child of reparented one, escaped session
		{Pid: 20, Ppid: 1, Pgrp: 20, Session: 20},  // unrelated
		{Pid: 21, Ppid: 20, Pgrp: 20, Session: 20}, // unrelated
		{Pid: 99, Ppid: 10, Pgrp: 10, Session: 10}, // excluded (self)
	}
	got := treeOf(procs, 10, 99)
	slices.Sort(got)
	want := []int{11, 12, 13, 14, 15, 16}
	if !slices.Equal(got, want) {
		t.Errorf("treeOf(10) = %v, want %v", got, want)
	}
	if got := treeOf(procs, 20, 0); !slices.Equal(got, []int{21}) {
		t.Errorf("treeOf(20) = %v, want [21]", got)
	}
}
