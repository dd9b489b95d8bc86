package snapshot

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
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
	must(Restore(bytes.NewReader(buf.Bytes()), dst))
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
		err := Restore(&buf, root)
		if _, serr := os.Stat(filepath.Join(outside, "pwned")); serr == nil {
			t.Fatalf("entry %q was written outside the root", name)
		}
		if name == "evil/pwned" && !errors.Is(err, ErrBadArchive) {
			t.Errorf("Restore(%q) = %v, want ErrBadArchive", name, err)
		}
	}
	if err := Restore(bytes.NewReader([]byte("not gzip")), root); !errors.Is(err, ErrBadArchive) {
		t.Errorf("Restore(garbage) = %v, want ErrBadArchive", err)
	}
}
