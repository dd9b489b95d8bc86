package snapshot

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteRestore(t *testing.T) {
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(src, "old.txt"), []byte("before"), 0o644))
	must(os.MkdirAll(filepath.Join(src, "proc"), 0o755))
	time.Sleep(20 * time.Millisecond)
	since := time.Now()
	time.Sleep(20 * time.Millisecond)
	must(os.MkdirAll(filepath.Join(src, "home/user/project"), 0o750))
	must(os.WriteFile(filepath.Join(src, "home/user/project/main.py"), []byte("print('hi')\n"), 0o640))
	bin := bytes.Repeat([]byte{0, 1, 2, 255}, 100000)
	must(os.WriteFile(filepath.Join(src, "home/user/data.bin"), bin, 0o600))
	must(os.Symlink("project/main.py", filepath.Join(src, "home/user/link")))
	must(os.WriteFile(filepath.Join(src, "proc/skipped"), []byte("x"), 0o644))

	var buf bytes.Buffer
	must(Write(&buf, src, since, []string{"/proc"}))

	dst := t.TempDir()
	must(os.WriteFile(filepath.Join(dst, "old.txt"), []byte("template"), 0o644))
	must(os.MkdirAll(filepath.Join(dst, "proc"), 0o755)) // as a fresh sandbox of the template has
	must(Restore(bytes.NewReader(buf.Bytes()), dst, []string{"/proc"}))
	if b, _ := os.ReadFile(filepath.Join(dst, "home/user/project/main.py")); string(b) != "print('hi')\n" {
		t.Errorf("main.py = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "home/user/data.bin")); !bytes.Equal(b, bin) {
		t.Errorf("data.bin differs (%d bytes)", len(b))
	}
	if fi, err := os.Stat(filepath.Join(dst, "home/user/data.bin")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("data.bin mode = %v, %v; want 0600", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "home/user/project")); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("project dir mode = %v, %v", fi.Mode(), err)
	}
	if l, _ := os.Readlink(filepath.Join(dst, "home/user/link")); l != "project/main.py" {
		t.Errorf("symlink = %q", l)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "old.txt")); string(b) != "template" {
		t.Errorf("a file unchanged since the snapshot point was captured: old.txt = %q", b)
	}
	if _, err := os.Stat(filepath.Join(dst, "proc/skipped")); err == nil {
		t.Error("a skipped path was captured")
	}
}

func TestRestoreRefusesEscapes(t *testing.T) {
	outside := t.TempDir()
	root := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "evil")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"evil/pwned", "../pwned", "a/../../pwned"} {
		var buf bytes.Buffer
		gz := gzip.NewWriter(&buf)
		tw := tar.NewWriter(gz)
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
		tw.Write([]byte("x"))
		tw.Close()
		gz.Close()
		err := Restore(&buf, root, nil)
		if _, serr := os.Stat(filepath.Join(outside, "pwned")); serr == nil {
			t.Fatalf("entry %q was written outside the root", name)
		}
		if name == "evil/pwned" && !errors.Is(err, ErrBadArchive) {
			t.Errorf("Restore(%q) = %v, want ErrBadArchive", name, err)
		}
	}
	if err := Restore(bytes.NewReader([]byte("not gzip")), root, nil); !errors.Is(err, ErrBadArchive) {
		t.Errorf("Restore(garbage) = %v, want ErrBadArchive", err)
	}
}

// TestRestoreRemovesDeleted: what the sandbox deleted before its snapshot
// is deleted by a restore into a fresh copy of the template too; skipped
// paths and unlisted parts of unreadable directories stay.
func TestRestoreRemovesDeleted(t *testing.T) {
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	template := map[string]string{"etc/motd": "hi", "etc/keep.conf": "k", "opt/app/a.py": "a", "opt/app/b.py": "b", "proc/x": "p", "srv/x": "x"}
	lay := func(root string) {
		for p, c := range template {
			must(os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755))
			must(os.WriteFile(filepath.Join(root, p), []byte(c), 0o644))
		}
	}
	src := t.TempDir()
	lay(src)
	since := time.Now().Add(-time.Hour) // everything counts as changed: fine for this test
	must(os.Remove(filepath.Join(src, "etc/motd")))
	must(os.RemoveAll(filepath.Join(src, "opt/app")))
	must(os.WriteFile(filepath.Join(src, "etc/new.conf"), []byte("n"), 0o644))
	var buf bytes.Buffer
	must(Write(&buf, src, since, []string{"/proc"}))

	dst := t.TempDir()
	lay(dst)
	must(os.WriteFile(filepath.Join(dst, "stray"), []byte("not in the snapshot"), 0o644))
	must(Restore(bytes.NewReader(buf.Bytes()), dst, []string{"/proc"}))
	for p, want := range map[string]bool{"etc/motd": false, "opt/app": false, "opt": true, "stray": false,
		"etc/keep.conf": true, "etc/new.conf": true, "proc/x": true, "srv/x": true} {
		_, err := os.Lstat(filepath.Join(dst, p))
		if got := err == nil; got != want {
			t.Errorf("after restore, %s exists = %v, want %v", p, got, want)
		}
	}

	// An archive without a path list (an older envd) removes nothing.
	old := rewriteWithout(t, buf.Bytes(), PathsType)
	dst2 := t.TempDir()
	lay(dst2)
	must(Restore(bytes.NewReader(old), dst2, []string{"/proc"}))
	if _, err := os.Lstat(filepath.Join(dst2, "etc/motd")); err != nil {
		t.Errorf("restore without a path list removed etc/motd: %v", err)
	}
}

// TestRestoreKeepsPartlyListedDirs: a directory the snapshot could not
// read is kept whole.
func TestRestoreKeepsPartlyListedDirs(t *testing.T) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	list := "/a\x00?/a\x00/b\x00"
	tw.WriteHeader(&tar.Header{Typeflag: PathsType, Name: pathsName, Size: int64(len(list)), Mode: 0o600})
	tw.Write([]byte(list))
	tw.Close()
	gz.Close()
	dst := t.TempDir()
	for _, p := range []string{"a/x", "b/y", "c"} {
		os.MkdirAll(filepath.Dir(filepath.Join(dst, p)), 0o755)
		os.WriteFile(filepath.Join(dst, p), nil, 0o644)
	}
	if err := Restore(&buf, dst, nil); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{"a/x": true, "b": true, "b/y": false, "c": false} {
		_, err := os.Lstat(filepath.Join(dst, p))
		if got := err == nil; got != want {
			t.Errorf("%s exists = %v, want %v", p, got, want)
		}
	}
}

// rewriteWithout copies a snapshot archive without entries of type typ.
func rewriteWithout(t *testing.T, archive []byte, typ byte) []byte {
	t.Helper()
	gr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gr)
	var out bytes.Buffer
	gz := gzip.NewWriter(&out)
	tw := tar.NewWriter(gz)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == typ {
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	gz.Close()
	return out.Bytes()
}
