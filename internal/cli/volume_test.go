package cli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/declaw/declaw/sdk/go/declaw"
)

func TestParseVolumeFlag(t *testing.T) {
	for in, want := range map[string]declaw.VolumeAttachment{
		"vol-1:/data":              {VolumeID: "vol-1", MountPath: "/data"},
		"vol-1:/data:mount-ro":     {VolumeID: "vol-1", MountPath: "/data", Mode: "mount-ro"},
		"vol-1:/data:mount:sub/a:": {VolumeID: "vol-1", MountPath: "/data", Mode: "mount", Subpath: "sub/a:"},
	} {
		if got, err := parseVolumeFlag(in); err != nil || got != want {
			t.Errorf("parseVolumeFlag(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"vol-1", ":/data", "vol-1:", ""} {
		if _, err := parseVolumeFlag(bad); err == nil {
			t.Errorf("parseVolumeFlag(%q) succeeded", bad)
		}
	}
}

func TestPackDir(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755)
	os.WriteFile(filepath.Join(dir, "a", "f.txt"), []byte("x"), 0o644)
	os.Symlink("/etc/passwd", filepath.Join(dir, "a", "link"))
	var buf bytes.Buffer
	if err := packDir(dir, &buf); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	sort.Strings(names)
	want := []string{"a/", "a/b/", "a/f.txt"}
	if len(names) != len(want) || names[0] != want[0] || names[1] != want[1] || names[2] != want[2] {
		t.Errorf("packed %v, want %v (the symlink skipped)", names, want)
	}
}
