package filesystem

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

func self() Owner { return Owner{Uid: os.Geteuid(), Gid: os.Getegid()} }

func TestResolve(t *testing.T) {
	tests := []struct {
		in, home, want string
		wantErr        bool
	}{
		{"/etc/passwd", "/root", "/etc/passwd", false},
		{"/a/../b//c/", "/root", "/b/c", false},
		{"x/y", "/home/user", "/home/user/x/y", false},
		{"~", "/home/user", "/home/user", false},
		{"~/f", "/home/user", "/home/user/f", false},
		{"../../etc", "/home/user", "/etc", false},
		{"", "/root", "", true},
		{"a\x00b", "/root", "", true},
		{"rel", "", "", true},
	}
	for _, tt := range tests {
		got, err := Resolve(tt.in, tt.home)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Resolve(%q, %q) = %q, %v, want %q, err %v", tt.in, tt.home, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, ErrBadRequest) {
			t.Errorf("Resolve(%q) error = %v, want ErrBadRequest", tt.in, err)
		}
	}
}

func TestPermissions(t *testing.T) {
	tests := []struct {
		mode fs.FileMode
		want string
	}{
		{0o644, "-rw-r--r--"},
		{fs.ModeDir | 0o755, "drwxr-xr-x"},
		{fs.ModeSymlink | 0o777, "lrwxrwxrwx"},
		{fs.ModeSetuid | 0o755, "-rwsr-xr-x"},
		{fs.ModeSetgid | 0o640, "-rw-r-S---"},
		{fs.ModeDir | fs.ModeSticky | 0o777, "drwxrwxrwt"},
		{fs.ModeDir | fs.ModeSticky | 0o770, "drwxrwx--T"},
		{fs.ModeNamedPipe | 0o600, "prw-------"},
	}
	for _, tt := range tests {
		if got := permissions(tt.mode); got != tt.want {
			t.Errorf("permissions(%v) = %q, want %q", tt.mode, got, tt.want)
		}
	}
}

func allBytes() []byte {
	b := make([]byte, 0, 256*4)
	for range 4 {
		for i := range 256 {
			b = append(b, byte(i))
		}
	}
	return b
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a", "b", "f.bin")
	data := allBytes()
	n, err := WriteFile(p, bytes.NewReader(data), self())
	if err != nil || n != int64(len(data)) {
		t.Fatalf("WriteFile() = %d, %v, want %d", n, err, len(data))
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v: not byte-exact", len(got), err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("new file mode = %v, want 0644", st.Mode().Perm())
	}

	// Replacing keeps the mode.
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteFile(p, strings.NewReader("new"), self()); err != nil {
		t.Fatal(err)
	}
	st, _ = os.Stat(p)
	if got, _ := os.ReadFile(p); string(got) != "new" || st.Mode().Perm() != 0o600 {
		t.Errorf("after overwrite: %q mode %v, want %q 0600", got, st.Mode().Perm(), "new")
	}

	// A failing reader leaves the old content and no temp file behind.
	bad := io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(errors.New("conn reset")))
	if _, err := WriteFile(p, bad, self()); err == nil {
		t.Fatal("WriteFile(failing reader) succeeded")
	}
	if got, _ := os.ReadFile(p); string(got) != "new" {
		t.Errorf("after failed write content = %q, want %q", got, "new")
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Errorf("directory has %d entries after failed write, want 1 (temp file left?)", len(ents))
	}

	// Writing through a symlink writes its target.
	link := filepath.Join(dir, "link")
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteFile(link, strings.NewReader("via link"), self()); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "via link" {
		t.Errorf("target content = %q, want %q", got, "via link")
	}
	if fi, _ := os.Lstat(link); fi.Mode()&fs.ModeSymlink == 0 {
		t.Error("symlink was replaced by a file")
	}

	long := filepath.Join(dir, strings.Repeat("n", 255))
	if _, err := WriteFile(long, strings.NewReader("long"), self()); err != nil {
		t.Errorf("WriteFile(255-byte name) error = %v", err)
	}
	if _, err := WriteFile(dir, strings.NewReader("x"), self()); !errors.Is(err, ErrIsDir) {
		t.Errorf("WriteFile(dir) error = %v, want ErrIsDir", err)
	}
	if _, err := WriteFile(filepath.Join(p, "sub"), strings.NewReader("x"), self()); !errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteFile(file/sub) error = %v, want ErrExist", err)
	}
}

func TestOpenFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	os.WriteFile(p, []byte("hi"), 0o644)
	tests := []struct {
		path    string
		wantErr error
	}{
		{p, nil},
		{dir, ErrIsDir},
		{filepath.Join(dir, "missing"), fs.ErrNotExist},
		{"/dev/null", ErrBadRequest},
	}
	for _, tt := range tests {
		f, _, err := OpenFile(tt.path)
		if f != nil {
			f.Close()
		}
		if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
			t.Errorf("OpenFile(%q) error = %v, want %v", tt.path, err, tt.wantErr)
		}
	}
}

func TestMakeDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	tests := []struct {
		path        string
		wantCreated bool
		wantErr     error
	}{
		{filepath.Join(dir, "a/b/c"), true, nil},
		{filepath.Join(dir, "a/b/c"), false, nil},
		{filepath.Join(dir, "a"), false, nil},
		{file, false, fs.ErrExist},
		{filepath.Join(file, "x"), false, fs.ErrExist},
	}
	for _, tt := range tests {
		got, err := MakeDir(tt.path, self())
		if got != tt.wantCreated || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
			t.Errorf("MakeDir(%q) = %v, %v, want %v, %v", tt.path, got, err, tt.wantCreated, tt.wantErr)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "a/b/c")); err != nil || !st.IsDir() {
		t.Errorf("a/b/c not a directory: %v", err)
	}
}

func tree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"d1/d2/d3", "e"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	for _, f := range []string{"f1", "d1/f2", "d1/d2/f3", "d1/d2/d3/f4"} {
		os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644)
	}
	os.Symlink("d1", filepath.Join(dir, "link"))
	return dir
}

func TestList(t *testing.T) {
	dir := tree(t)
	var f FS
	tests := []struct {
		depth int
		want  []string
	}{
		{1, []string{"d1/", "e/", "f1", "link@"}},
		{0, []string{"d1/", "e/", "f1", "link@"}},
		{2, []string{"d1/", "d1/d2/", "d1/f2", "e/", "f1", "link@"}},
		{10, []string{"d1/", "d1/d2/", "d1/d2/d3/", "d1/d2/d3/f4", "d1/d2/f3", "d1/f2", "e/", "f1", "link@"}},
	}
	for _, tt := range tests {
		ents, err := f.List(dir, tt.depth)
		if err != nil {
			t.Fatalf("List(depth %d) error = %v", tt.depth, err)
		}
		var got []string
		for _, e := range ents {
			rel, _ := filepath.Rel(dir, e.Path)
			switch e.Type {
			case "dir":
				rel += "/"
			case "symlink":
				rel += "@"
			}
			got = append(got, rel)
			if e.Name != filepath.Base(e.Path) {
				t.Errorf("entry %q has name %q", e.Path, e.Name)
			}
		}
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("List(depth %d) = %v, want %v", tt.depth, got, tt.want)
		}
	}
	if _, err := f.List(filepath.Join(dir, "f1"), 1); !errors.Is(err, ErrNotDir) {
		t.Errorf("List(file) error = %v, want ErrNotDir", err)
	}
	if _, err := f.List(filepath.Join(dir, "missing"), 1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("List(missing) error = %v, want ErrNotExist", err)
	}
	if ents, err := f.List(filepath.Join(dir, "link"), 1); err != nil || len(ents) != 2 {
		t.Errorf("List(symlink to dir) = %d entries, %v, want 2", len(ents), err)
	}
}

func TestStatRenameRemove(t *testing.T) {
	dir := tree(t)
	var f FS
	e, err := f.Stat(filepath.Join(dir, "f1"))
	if err != nil || e.Type != "file" || e.Size != 2 || e.Mode != 0o644 || e.Permissions != "-rw-r--r--" || e.ModifiedTime == "" {
		t.Errorf("Stat(f1) = %+v, %v", e, err)
	}
	e, err = f.Stat(filepath.Join(dir, "link"))
	if err != nil || e.Type != "symlink" || e.SymlinkTarget != "d1" {
		t.Errorf("Stat(link) = %+v, %v", e, err)
	}
	if _, err := f.Stat(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(missing) error = %v", err)
	}

	newPath := filepath.Join(dir, "new/sub/f1")
	e, err = f.Rename(filepath.Join(dir, "f1"), newPath, self())
	if err != nil || e.Path != newPath || e.Size != 2 {
		t.Errorf("Rename() = %+v, %v", e, err)
	}
	if Exists(filepath.Join(dir, "f1")) || !Exists(newPath) {
		t.Error("Rename did not move the file")
	}
	if _, err := f.Rename(filepath.Join(dir, "missing"), newPath, self()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Rename(missing) error = %v", err)
	}

	if err := Remove(filepath.Join(dir, "d1")); err != nil || Exists(filepath.Join(dir, "d1")) {
		t.Errorf("Remove(d1) = %v, exists %v", err, Exists(filepath.Join(dir, "d1")))
	}
	if err := Remove(filepath.Join(dir, "d1")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Remove(missing) error = %v", err)
	}
	if err := Remove("/"); !errors.Is(err, ErrBadRequest) {
		t.Errorf("Remove(/) error = %v", err)
	}
	// A dangling symlink exists.
	if !Exists(filepath.Join(dir, "link")) {
		t.Error("Exists(dangling link) = false")
	}
}

func FuzzResolve(f *testing.F) {
	for _, s := range []string{"/etc", "a/b", "~", "~/x", "../..", "", "/a/./b/../c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := Resolve(p, "/home/user")
		if err != nil {
			return
		}
		if !filepath.IsAbs(got) || filepath.Clean(got) != got || strings.IndexByte(got, 0) >= 0 {
			t.Errorf("Resolve(%q) = %q: not a clean absolute path", p, got)
		}
	})
}
