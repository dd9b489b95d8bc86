package sysuser

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const testPasswd = `# comment
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
+nis
user:x:1000:1000:User,,,:/home/user:/bin/bash
broken:x:abc:1::/:/bin/sh
short:x:5
`

const testGroup = `root:x:0:
daemon:x:1:
sudo:x:27:user,other
docker:x:999: user
user:x:1000:
adm:x:4:other
`

func writeDB(t *testing.T) DB {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	gr := filepath.Join(dir, "group")
	if err := os.WriteFile(pw, []byte(testPasswd), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gr, []byte(testGroup), 0o644); err != nil {
		t.Fatal(err)
	}
	return DB{PasswdPath: pw, GroupPath: gr}
}

func TestLookup(t *testing.T) {
	db := writeDB(t)
	tests := []struct {
		name    string
		want    *User
		wantErr error
	}{
		{"root", &User{Name: "root", Uid: 0, Gid: 0, Groups: []int{0}, Home: "/root", Shell: "/bin/bash"}, nil},
		{"user", &User{Name: "user", Uid: 1000, Gid: 1000, Groups: []int{1000, 27, 999}, Home: "/home/user", Shell: "/bin/bash"}, nil},
		{"daemon", &User{Name: "daemon", Uid: 1, Gid: 1, Groups: []int{1}, Home: "/usr/sbin", Shell: "/usr/sbin/nologin"}, nil},
		{"broken", nil, ErrUnknownUser},
		{"short", nil, ErrUnknownUser},
		{"nis", nil, ErrUnknownUser},
		{"", nil, ErrUnknownUser},
		{"nobody-here", nil, ErrUnknownUser},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := db.Lookup(tt.name)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Lookup(%q) error = %v, want %v", tt.name, err, tt.wantErr)
			}
			if tt.want == nil {
				return
			}
			if got.Name != tt.want.Name || got.Uid != tt.want.Uid || got.Gid != tt.want.Gid ||
				got.Home != tt.want.Home || got.Shell != tt.want.Shell || !slices.Equal(got.Groups, tt.want.Groups) {
				t.Errorf("Lookup(%q) = %+v, want %+v", tt.name, got, tt.want)
			}
		})
	}
}

func TestNames(t *testing.T) {
	db := writeDB(t)
	if got := db.UserName(1000); got != "user" {
		t.Errorf("UserName(1000) = %q, want user", got)
	}
	if got := db.UserName(4242); got != "4242" {
		t.Errorf("UserName(4242) = %q, want 4242", got)
	}
	if got := db.GroupName(27); got != "sudo" {
		t.Errorf("GroupName(27) = %q, want sudo", got)
	}
	if got := db.GroupName(7); got != "7" {
		t.Errorf("GroupName(7) = %q, want 7", got)
	}
}

func TestMissingFiles(t *testing.T) {
	db := DB{PasswdPath: "/nonexistent/passwd", GroupPath: "/nonexistent/group"}
	if _, err := db.Lookup("root"); err == nil {
		t.Fatal("Lookup with missing passwd succeeded, want error")
	}
	if got := db.UserName(0); got != "0" {
		t.Errorf("UserName(0) with missing passwd = %q, want 0", got)
	}
}

// TestChangesSeen checks that lookups see every change to the files, made
// the ways tools make them: rewritten in place with the same size (a uid
// edited digit for digit), appended to, and replaced by rename (useradd).
func TestChangesSeen(t *testing.T) {
	db := writeDB(t)
	uidOf := func(name string) int {
		t.Helper()
		u, err := db.Lookup(name)
		if err != nil {
			t.Fatalf("lookup %s: %v", name, err)
		}
		return u.Uid
	}
	if got := uidOf("user"); got != 1000 {
		t.Fatalf("uid = %d, want 1000", got)
	}

	// Same size, same second: only the contents and the times differ.
	edited := []byte(strings.Replace(testPasswd, "user:x:1000:", "user:x:1001:", 1))
	if err := os.WriteFile(db.PasswdPath, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := uidOf("user"); got != 1001 {
		t.Fatalf("after an in-place edit: uid = %d, want 1001", got)
	}

	f, err := os.OpenFile(db.PasswdPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("extra:x:2000:2000::/home/extra:/bin/sh\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := uidOf("extra"); got != 2000 {
		t.Fatalf("after an append: uid = %d, want 2000", got)
	}

	tmp := db.GroupPath + ".new"
	if err := os.WriteFile(tmp, []byte(testGroup+"extra:x:2000:\nwheel:x:10:extra\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, db.GroupPath); err != nil {
		t.Fatal(err)
	}
	u, err := db.Lookup("extra")
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{2000, 10}; !slices.Equal(u.Groups, want) {
		t.Fatalf("after a rename: groups = %v, want %v", u.Groups, want)
	}

	if err := os.Remove(db.PasswdPath); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Lookup("user"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after removal: err = %v, want not exist", err)
	}
}
