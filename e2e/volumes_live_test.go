package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVolumeLiveMounts: volumes attached with mode mount / mount-ro are
// bind mounts of one host directory (gVisor): a file written in one
// sandbox is read at once in another and through the download API, owned
// by the sandbox user; mount-ro refuses writes even to root and a remount
// rw; subpath binds a directory inside the volume; subpaths that climb out
// (.., absolute, a symlink the sandbox planted) are 400; deleting a
// mounted volume is 409.
func TestVolumeLiveMounts(t *testing.T) {
	s := startServer(t)
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "sub/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "seed.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5})
	tw.Write([]byte("seed\n"))
	tw.Close()
	zw.Close()
	var v struct {
		VolumeID string `json:"volume_id"`
	}
	s.must(201, "POST", "/volumes?name=live", b.Bytes(), &v)
	t.Cleanup(func() { s.do("DELETE", "/volumes/"+v.VolumeID, nil) })
	hostDir := filepath.Join(s.stateDir, "volumes", v.VolumeID, "data")

	a := s.create(map[string]any{"volumes": []map[string]any{
		{"volume_id": v.VolumeID, "mount_path": "/mnt/shared", "mode": "mount"},
		{"volume_id": v.VolumeID, "mount_path": "/mnt/ro", "mode": "mount-ro"},
		{"volume_id": v.VolumeID, "mount_path": "/srv/sub", "mode": "mount", "subpath": "sub/deeper"},
	}})
	bb := s.create(map[string]any{"volumes": []map[string]any{
		{"volume_id": v.VolumeID, "mount_path": "/data/vol", "mode": "mount"},
	}})

	// rw: a write in a is seen at once in b, on the host, by the API.
	if r := s.run(a, "cat /mnt/shared/seed.txt && echo from-a > /mnt/shared/a.txt && stat -c %U /mnt/shared/a.txt", "user", "user"); r.ExitCode != 0 || r.Stdout != "seed\nuser\n" {
		t.Errorf("write in sandbox a: exit %d %q %q; want the seed read, a.txt written by user", r.ExitCode, r.Stdout, r.Stderr)
	}
	if r := s.run(bb, "cat /data/vol/a.txt && echo from-b >> /data/vol/a.txt", "user", "user"); r.ExitCode != 0 || r.Stdout != "from-a\n" {
		t.Errorf("read in sandbox b: exit %d %q %q; want from-a", r.ExitCode, r.Stdout, r.Stderr)
	}
	if r := s.run(a, "cat /mnt/shared/a.txt /mnt/ro/a.txt", "user", "user"); r.Stdout != "from-a\nfrom-b\nfrom-a\nfrom-b\n" {
		t.Errorf("b's append seen in a (rw and ro mounts) = %q %q", r.Stdout, r.Stderr)
	}
	if got, err := os.ReadFile(filepath.Join(hostDir, "a.txt")); err != nil || string(got) != "from-a\nfrom-b\n" {
		t.Errorf("host volume a.txt = %q %v", got, err)
	}
	code, body := s.do("GET", "/volumes/"+v.VolumeID+"/download", nil)
	if files := untar(t, body); code != 200 || files["a.txt"] != "from-a\nfrom-b\n" || files["seed.txt"] != "seed\n" {
		t.Errorf("download = %d, files %v", code, files)
	}

	// mount-ro: root cannot write, nor remount it rw.
	for _, cmd := range []string{
		"echo x > /mnt/ro/evil",
		"mount -o remount,rw /mnt/ro; echo x > /mnt/ro/evil",
		"mount -o remount,rw,bind /mnt/ro; echo x > /mnt/ro/evil",
		"rm /mnt/ro/seed.txt",
		"chmod 777 /mnt/ro/seed.txt",
	} {
		r := s.run(a, cmd, "user", "root")
		if r.ExitCode == 0 || !strings.Contains(r.Stderr, "Read-only file system") {
			t.Errorf("as root in a mount-ro: %q = exit %d %q; want Read-only file system", cmd, r.ExitCode, r.Stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(hostDir, "evil")); err == nil {
		t.Errorf("a write through the mount-ro reached the host volume")
	}
	if fi, err := os.Stat(filepath.Join(hostDir, "seed.txt")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("seed.txt on the host after the ro attempts: %v %v", fi, err)
	}

	// subpath: only that directory (created when missing) is bound.
	if r := s.run(a, "ls -A /srv/sub && echo in-sub > /srv/sub/s.txt", "user", "user"); r.ExitCode != 0 || r.Stdout != "" {
		t.Errorf("subpath mount: exit %d ls %q %q; want an empty, writable directory", r.ExitCode, r.Stdout, r.Stderr)
	}
	if got, err := os.ReadFile(filepath.Join(hostDir, "sub", "deeper", "s.txt")); err != nil || string(got) != "in-sub\n" {
		t.Errorf("host sub/deeper/s.txt = %q %v", got, err)
	}

	// Deleting a mounted volume is refused.
	if code, body := s.do("DELETE", "/volumes/"+v.VolumeID, nil); code != 409 {
		t.Errorf("DELETE a mounted volume = %d %s, want 409", code, body)
	}

	// Pause and resume keep the live mounts (the container restarts with
	// the same spec): b's next write is seen in a, a's write reaches b.
	s.must(200, "POST", "/sandboxes/"+a+"/pause", nil, nil)
	s.must(200, "POST", "/sandboxes/"+a+"/resume", nil, nil)
	s.run(bb, "echo after-resume > /data/vol/r.txt", "user", "user")
	if r := s.run(a, "cat /mnt/shared/r.txt /mnt/ro/r.txt && echo back > /mnt/shared/r2.txt", "user", "user"); r.ExitCode != 0 || r.Stdout != "after-resume\nafter-resume\n" {
		t.Errorf("after pause/resume, a reads %q %q; want b's new file through both mounts", r.Stdout, r.Stderr)
	}
	if r := s.run(bb, "cat /data/vol/r2.txt", "user", "user"); r.Stdout != "back\n" {
		t.Errorf("after pause/resume, a's write seen in b = %q %q", r.Stdout, r.Stderr)
	}
	if r := s.run(a, "echo x > /mnt/ro/evil", "user", "root"); r.ExitCode == 0 {
		t.Errorf("after pause/resume, the mount-ro is writable")
	}

	// Escapes: a symlink planted by a sandbox, "..", an absolute subpath.
	if r := s.run(bb, "ln -s / /data/vol/esc && ln -s /etc/shadow /data/vol/shadow && mkfifo /data/vol/fifo", "user", "user"); r.ExitCode != 0 {
		t.Fatalf("plant links: %q", r.Stderr)
	}
	createSub := func(sub, mode string) (int, []byte) {
		t.Helper()
		code, body := s.do("POST", "/sandboxes", map[string]any{"template": "python", "volumes": []map[string]any{
			{"volume_id": v.VolumeID, "mount_path": "/mnt/x", "mode": mode, "subpath": sub}}})
		var info struct {
			SandboxID string `json:"sandbox_id"`
		}
		if json.Unmarshal(body, &info) == nil && info.SandboxID != "" {
			t.Cleanup(func() { s.do("DELETE", "/sandboxes/"+info.SandboxID, nil) })
		}
		return code, body
	}
	for _, sub := range []string{"../" + v.VolumeID, "/etc", "sub/../../x"} {
		if code, body := createSub(sub, "mount"); code != 400 {
			t.Errorf("subpath %q: %d %s, want 400", sub, code, body)
		}
	}
	// A subpath is resolved before runsc binds it: while another sandbox
	// can write to the volume (and swap a component for a symlink) it is
	// refused.
	if code, body := createSub("sub", "mount-ro"); code != 409 {
		t.Errorf("subpath while sandboxes mount the volume rw: %d %s, want 409", code, body)
	}
	code, body = s.do("GET", "/volumes/"+v.VolumeID+"/download", nil)
	if files := untar(t, body); code != 200 || files["a.txt"] == "" || files["shadow"] != "" || files["esc"] != "" || files["fifo"] != "" {
		t.Errorf("download with planted links = %d, files %v; want the links and fifo left out", code, files)
	}

	s.must(200, "DELETE", "/sandboxes/"+a, nil, nil)
	s.must(200, "DELETE", "/sandboxes/"+bb, nil, nil)
	for _, sub := range []string{"esc", "esc/etc", "shadow"} {
		if code, body := createSub(sub, "mount-ro"); code != 400 {
			t.Errorf("subpath %q through what the sandbox planted: %d %s, want 400", sub, code, body)
		}
	}
	code, body = createSub("sub/deeper", "mount-ro")
	var ro struct {
		SandboxID string `json:"sandbox_id"`
	}
	if code != 201 || json.Unmarshal(body, &ro) != nil {
		t.Fatalf("mount-ro subpath once no sandbox writes: %d %s", code, body)
	}
	if r := s.run(ro.SandboxID, "cat /mnt/x/s.txt", "user", "user"); r.Stdout != "in-sub\n" {
		t.Errorf("mount-ro subpath: %q %q", r.Stdout, r.Stderr)
	}
	s.must(200, "DELETE", "/sandboxes/"+ro.SandboxID, nil, nil)

	// A copy of a volume that was mounted live is its current content.
	c := s.create(map[string]any{"volumes": []map[string]any{{"volume_id": v.VolumeID, "mount_path": "/home/user/copy"}}})
	if r := s.run(c, "cat /home/user/copy/a.txt /home/user/copy/sub/deeper/s.txt; test ! -e /home/user/copy/esc", "user", "user"); r.ExitCode != 0 || r.Stdout != "from-a\nfrom-b\nin-sub\n" {
		t.Errorf("mode copy after live writes: exit %d %q %q", r.ExitCode, r.Stdout, r.Stderr)
	}
	s.must(200, "DELETE", "/sandboxes/"+c, nil, nil)
	s.must(204, "DELETE", "/volumes/"+v.VolumeID, nil, nil)
	if _, err := os.Stat(hostDir); err == nil {
		t.Errorf("the volume's directory outlived its deletion")
	}
}

// untar reads a tar.gz into name -> content ("" for a directory, "link"
// marks anything else).
func untar(t *testing.T, b []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Errorf("download is not gzip: %v", err)
		return out
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Errorf("download: %v", err)
			return out
		}
		switch h.Typeflag {
		case tar.TypeReg:
			c, _ := io.ReadAll(tr)
			out[h.Name] = string(c)
		case tar.TypeDir:
			out[h.Name] = ""
		default:
			out[h.Name] = "link"
		}
	}
}
