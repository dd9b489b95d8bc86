package microvm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestBuildTemplateImage(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed (scripts/deps.sh installs e2fsprogs)")
	}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755)
	os.WriteFile(filepath.Join(rootfs, "etc", "hostname"), []byte("x\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "template.json"), []byte(`{"name":"t","built_at":"1"}`), 0o644)
	img, err := BuildTemplateImage(context.Background(), "", rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if img != filepath.Join(dir, "rootfs.ext4") {
		t.Fatalf("image at %s, want beside the rootfs", img)
	}
	st1, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := BuildTemplateImage(context.Background(), "", rootfs); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(img); !st2.ModTime().Equal(st1.ModTime()) {
		t.Fatal("a current image was rebuilt")
	}
	os.WriteFile(filepath.Join(dir, "template.json"), []byte(`{"name":"t","built_at":"2"}`), 0o644)
	if _, err := BuildTemplateImage(context.Background(), "", rootfs); err != nil {
		t.Fatal(err)
	}
	if st3, _ := os.Stat(img); st3.ModTime().Equal(st1.ModTime()) {
		t.Fatal("a rebuilt template kept its old image")
	}
}
