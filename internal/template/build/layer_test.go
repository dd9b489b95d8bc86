package build

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/declaw/declaw/internal/testenv"
)

func tarOf(t *testing.T, hs ...*tar.Header) *bytes.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		body := []byte(h.Linkname)
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(h.Name))
			body = []byte(h.Name)
		}
		if h.Typeflag == tar.TypeSymlink || h.Typeflag == tar.TypeLink {
			body = nil
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(body)
		}
	}
	tw.Close()
	return bytes.NewReader(buf.Bytes())
}

func TestUnpackLayer(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	err := unpackLayer(tarOf(t,
		&tar.Header{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 7, Gid: 8},
		&tar.Header{Name: "a/.wh..wh..opq", Typeflag: tar.TypeReg},
		&tar.Header{Name: "a/f", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 1000, Gid: 1000},
		&tar.Header{Name: "a/.wh.gone", Typeflag: tar.TypeReg},
		&tar.Header{Name: "a/l", Typeflag: tar.TypeSymlink, Linkname: "/etc"},
		&tar.Header{Name: "a/h", Typeflag: tar.TypeLink, Linkname: "a/f"},
		// Through the symlink: must land inside dir, not in /etc.
		&tar.Header{Name: "a/l/declaw-unpack-test", Typeflag: tar.TypeReg, Mode: 0o644},
		&tar.Header{Name: "../../escape", Typeflag: tar.TypeReg, Mode: 0o644},
		&tar.Header{Name: "dev/sda", Typeflag: tar.TypeBlock, Devmajor: 8},
	), dir, t.Logf)
	if err != nil {
		t.Fatalf("unpackLayer: %v", err)
	}
	if _, err := os.Stat("/etc/declaw-unpack-test"); err == nil {
		os.Remove("/etc/declaw-unpack-test")
		t.Fatal("an entry under a symlink was written through it to the host's /etc")
	}
	if _, err := os.Stat(filepath.Join(dir, "etc/declaw-unpack-test")); err != nil {
		t.Errorf("entry under the symlink: %v (want it inside the layer)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "escape")); err != nil {
		t.Errorf("../../escape: %v (want it at the layer's root)", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "a/f"), &st); err != nil || st.Uid != 1000 || st.Mode&0o7777 != 0o4755 || st.Nlink != 2 {
		t.Errorf("a/f: uid %d mode %o nlink %d, %v", st.Uid, st.Mode&0o7777, st.Nlink, err)
	}
	if err := unix.Lstat(filepath.Join(dir, "a/gone"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("a/gone is not a whiteout: mode %o, %v", st.Mode, err)
	}
	buf := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(dir, "a"), opaqueXattr, buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("a is not opaque: %v", err)
	}
	if err := unix.Lstat(filepath.Join(dir, "a"), &st); err != nil || st.Uid != 7 || st.Mode&0o777 != 0o750 {
		t.Errorf("a: uid %d mode %o", st.Uid, st.Mode&0o777)
	}
	if _, err := os.Lstat(filepath.Join(dir, "dev/sda")); err == nil {
		t.Errorf("a device node was created")
	}
}

func TestOverlayStackAndCopy(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	l1, l2, mnt, out := filepath.Join(dir, "l1"), filepath.Join(dir, "l2"), filepath.Join(dir, "mnt"), filepath.Join(dir, "out")
	for _, d := range []string{l1, l2, mnt} {
		os.Mkdir(d, 0o755)
	}
	if err := unpackLayer(tarOf(t,
		&tar.Header{Name: "keep", Typeflag: tar.TypeReg, Mode: 0o600},
		&tar.Header{Name: "gone", Typeflag: tar.TypeReg, Mode: 0o644},
		&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "d/old", Typeflag: tar.TypeReg, Mode: 0o644},
	), l1, t.Logf); err != nil {
		t.Fatal(err)
	}
	if err := unpackLayer(tarOf(t,
		&tar.Header{Name: ".wh.gone", Typeflag: tar.TypeReg},
		&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "d/.wh..wh..opq", Typeflag: tar.TypeReg},
		&tar.Header{Name: "d/new", Typeflag: tar.TypeReg, Mode: 0o644},
		&tar.Header{Name: "d/lnk", Typeflag: tar.TypeSymlink, Linkname: "new"},
	), l2, t.Logf); err != nil {
		t.Fatal(err)
	}
	if err := mountOverlay(mnt, []string{l2, l1}, "", ""); err != nil {
		t.Fatal(err)
	}
	defer unmount(mnt)
	if err := copyTree(mnt, out, l2, l1); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(out, "d/new"), &st); err != nil || st.Nlink != 2 {
		t.Errorf("d/new: nlink %d (%v), want 2: linked from its layer, not copied", st.Nlink, err)
	}
	for p, want := range map[string]bool{"keep": true, "gone": false, "d/old": false, "d/new": true, "d/lnk": true} {
		_, err := os.Lstat(filepath.Join(out, p))
		if (err == nil) != want {
			t.Errorf("%s exists = %v, want %v", p, err == nil, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(out, "keep")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("keep: %v %v", fi, err)
	}
	if target, _ := os.Readlink(filepath.Join(out, "d/lnk")); target != "new" {
		t.Errorf("d/lnk -> %q", target)
	}
	if err := unmountUnder(dir); err != nil {
		t.Errorf("unmountUnder: %v", err)
	}
}

func TestCopyIntoStaysInside(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	mnt, ctx := filepath.Join(dir, "img"), filepath.Join(dir, "ctx")
	os.MkdirAll(mnt, 0o755)
	os.MkdirAll(ctx, 0o755)
	os.WriteFile(filepath.Join(ctx, "f"), []byte("x"), 0o644)
	// The image points /app at the host's /etc: the copy must stay in the image.
	os.Symlink("/etc", filepath.Join(mnt, "app"))
	if err := copyInto(mnt, ctx, "/", &CopyStep{Srcs: []string{"f"}, Dst: "/app/declaw-copy-test"}, t.Logf); err != nil {
		t.Fatalf("copyInto: %v", err)
	}
	if _, err := os.Stat("/etc/declaw-copy-test"); err == nil {
		os.Remove("/etc/declaw-copy-test")
		t.Fatal("COPY followed an image symlink out to the host")
	}
	if _, err := os.Stat(filepath.Join(mnt, "etc/declaw-copy-test")); err != nil {
		t.Errorf("copied file not inside the image: %v", err)
	}
	// Sources: symlinks out of the context are refused.
	os.Symlink("/etc/passwd", filepath.Join(ctx, "out"))
	if err := copyInto(mnt, ctx, "/", &CopyStep{Srcs: []string{"out"}, Dst: "/x"}, t.Logf); err == nil {
		t.Error("COPY of a symlink leading out of the context succeeded")
	}
}
