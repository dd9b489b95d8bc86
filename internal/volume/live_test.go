package volume

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestMountDirs: the first live mount unpacks the archive into a host
// directory; subpaths are created, must stay inside and not go through
// symlinks; a subpath is refused while another sandbox writes to the
// volume; the download packs the live directory without links.
func TestMountDirs(t *testing.T) {
	st, err := NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(Config{Store: st})
	ctx := t.Context()
	v, err := m.Create(ctx, "team-a", "data", bytes.NewReader(tgz(t,
		entry{name: "d/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "d/f", typ: tar.TypeReg, body: "abc", mode: 0o640})))
	if err != nil {
		t.Fatal(err)
	}
	if m.Live(v.ID) {
		t.Fatal("Live before any live mount")
	}
	none := func(string) bool { return false }
	dirs, done, err := m.MountDirs(ctx, []MountReq{{ID: v.ID, RW: true}}, none)
	if err != nil {
		t.Fatal(err)
	}
	root := dirs[0]
	if b, err := os.ReadFile(filepath.Join(root, "d", "f")); err != nil || string(b) != "abc" || !m.Live(v.ID) {
		t.Fatalf("live dir d/f = %q %v (live %v)", b, err, m.Live(v.ID))
	}
	// Pending read-write mount of another create: a subpath waits its turn.
	if _, _, err := m.MountDirs(ctx, []MountReq{{ID: v.ID, Subpath: "d"}}, none); !errors.Is(err, ErrInUse) {
		t.Errorf("subpath while a rw mount is being created: %v, want ErrInUse", err)
	}
	if err := m.Delete(ctx, v.ID, none); !errors.Is(err, ErrInUse) {
		t.Errorf("Delete while a mount is being created: %v, want ErrInUse", err)
	}
	done("sbx-1")
	alive := func(sb string) bool { return sb == "sbx-1" }
	if _, _, err := m.MountDirs(ctx, []MountReq{{ID: v.ID, Subpath: "d"}}, alive); !errors.Is(err, ErrInUse) {
		t.Errorf("subpath while sbx-1 mounts it rw: %v, want ErrInUse", err)
	}
	// The writer plants links; once it is gone they cannot be used.
	os.Symlink("/", filepath.Join(root, "esc"))
	os.Symlink("/etc/passwd", filepath.Join(root, "d", "pw"))
	os.Mkdir(filepath.Join(root, "real"), 0o755)
	os.Symlink("real", filepath.Join(root, "inner"))
	for _, sub := range []string{"esc", "esc/etc", "inner", "d/pw", "../x", "/etc"} {
		if _, _, err := m.MountDirs(ctx, []MountReq{{ID: v.ID, Subpath: sub}}, none); err == nil || errors.Is(err, ErrInUse) {
			t.Errorf("subpath %q: %v, want it refused as invalid", sub, err)
		} else if ie := (*InvalidError)(nil); !errors.As(err, &ie) {
			t.Errorf("subpath %q: %v, want an InvalidError", sub, err)
		}
	}
	dirs, done, err = m.MountDirs(ctx, []MountReq{{ID: v.ID, Subpath: "d/new/deeper"}, {ID: v.ID, RW: true}}, none)
	if err != nil {
		t.Fatalf("subpath and rw in one create: %v", err)
	}
	if dirs[0] != filepath.Join(root, "d", "new", "deeper") {
		t.Errorf("subpath dir = %s", dirs[0])
	}
	// Another create's rw mount waits while that subpath is pending.
	if _, _, err := m.MountDirs(ctx, []MountReq{{ID: v.ID, RW: true}}, none); !errors.Is(err, ErrInUse) {
		t.Errorf("rw while a subpath mount is being created: %v, want ErrInUse", err)
	}
	done("")
	os.WriteFile(filepath.Join(root, "d", "new", "g"), []byte("live"), 0o600)
	rc, err := m.Open(ctx, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	got := untgz(t, b)
	if got["d/f"] != "0:abc" || got["d/new/g"] != "0:live" || got["esc"] != "" || got["d/pw"] != "" || got["inner"] != "" {
		t.Errorf("download of the live volume = %v", got)
	}
	if err := m.Delete(ctx, v.ID, none); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); err == nil {
		t.Errorf("live dir outlived Delete")
	}
}
