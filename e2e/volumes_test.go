package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVolumes: a tarball volume uploaded through the API is unpacked into
// a sandbox created with it attached (mode copy): regular files and
// directories with their modes, owned by the sandbox user, links dropped;
// its data survives the sandbox and comes back in a new one; a path
// escaping the volume is refused; deleting it while attached is 409;
// another team's key sees nothing.
func TestVolumes(t *testing.T) {
	s := startServer(t)
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	for _, h := range []*tar.Header{
		{Name: "proj/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "proj/run.sh", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len("#!/bin/sh\necho ran-from-volume\n"))},
		{Name: "proj/link", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"},
	} {
		tw.WriteHeader(h)
		if h.Size > 0 {
			tw.Write([]byte("#!/bin/sh\necho ran-from-volume\n"))
		}
	}
	tw.Close()
	zw.Close()

	code, body := s.do("POST", "/volumes?name=proj", b.Bytes(), "Content-Type", "application/gzip")
	var v struct {
		VolumeID string `json:"volume_id"`
		Files    int    `json:"files"`
	}
	if code != 201 || json.Unmarshal(body, &v) != nil || v.Files != 1 {
		t.Fatalf("POST /volumes = %d %s", code, body)
	}
	t.Cleanup(func() { s.do("DELETE", "/volumes/"+v.VolumeID, nil) })

	attach := map[string]any{"volumes": []map[string]any{{"volume_id": v.VolumeID, "mount_path": "/home/user/work"}}}
	id := s.create(attach)
	res := s.run(id, "/home/user/work/proj/run.sh && stat -c '%U %a' /home/user/work/proj/run.sh && test ! -e /home/user/work/proj/link && echo no-link", "user", "user")
	if res.ExitCode != 0 || res.Stdout != "ran-from-volume\nuser 755\nno-link\n" {
		t.Errorf("in the sandbox: exit %d stdout %q stderr %q; want the script run, owned by user, mode 755, the link dropped", res.ExitCode, res.Stdout, res.Stderr)
	}
	if ls := s.run(id, "ls -a /tmp"); strings.Contains(ls.Stdout, "declaw-volume") {
		t.Errorf("the uploaded archive was left in /tmp: %q", ls.Stdout)
	}
	if code, body := s.do("DELETE", "/volumes/"+v.VolumeID, nil); code != 409 {
		t.Errorf("DELETE an attached volume = %d %s, want 409", code, body)
	}
	// The sandbox writes are its own: they do not change the volume, and
	// the data comes back unchanged in a new sandbox after this one dies.
	s.run(id, "echo changed > /home/user/work/proj/run.sh")
	s.must(200, "DELETE", "/sandboxes/"+id, nil, nil)
	id2 := s.create(attach)
	if res := s.run(id2, "cat /home/user/work/proj/run.sh"); !strings.Contains(res.Stdout, "ran-from-volume") {
		t.Errorf("the volume in a second sandbox = %q, want the uploaded data", res.Stdout)
	}
	s.must(200, "DELETE", "/sandboxes/"+id2, nil, nil)

	// Traversal refused at upload.
	b.Reset()
	zw = gzip.NewWriter(&b)
	tw = tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "../../etc/cron.d/x", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
	tw.Write([]byte("x"))
	tw.Close()
	zw.Close()
	if code, body := s.do("POST", "/volumes?name=evil", b.Bytes()); code != 400 {
		t.Errorf("upload with ../ = %d %s, want 400", code, body)
	}

	// Another team.
	s.mustCLI("", "teams", "create", "vol-other")
	r := s.cli("", "--json", "keys", "create", "--team", "vol-other", "--name", "k")
	var k struct {
		Key string `json:"key"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &k) != nil {
		t.Fatalf("keys create: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if code, body := s.do("GET", "/volumes/"+v.VolumeID, nil, "X-API-Key", k.Key); code != 404 {
		t.Errorf("another team's GET = %d %s, want 404", code, body)
	}
	if code, body := s.do("POST", "/sandboxes", map[string]any{"template": "base", "volumes": attach["volumes"]}, "X-API-Key", k.Key); code != 404 {
		t.Errorf("another team attaching = %d %s, want 404", code, body)
	}

	// The Python SDK, official names.
	script := `
import gzip, io, os, tarfile, tempfile
from declaw import Sandbox, Volumes
d = tempfile.mkdtemp()
os.makedirs(os.path.join(d, "sub"))
open(os.path.join(d, "sub", "f.txt"), "w").write("from-python")
v = Volumes.create("py", d)
assert v.volume_id in [x.volume_id for x in Volumes.list()]
assert Volumes.get(v.volume_id).files == 1
names = tarfile.open(fileobj=io.BytesIO(Volumes.download(v.volume_id)), mode="r:gz").getnames()
assert "sub/f.txt" in names, names
sbx = Sandbox.create(template="base", volumes=[v.attach("/home/user/py")])
out = sbx.commands.run("cat /home/user/py/sub/f.txt").stdout
assert out == "from-python", out
sbx.kill()
Volumes.delete(v.volume_id)
print("ok")
`
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := s.pythonCmd(ctx, script).CombinedOutput(); err != nil || !strings.Contains(string(out), "ok") {
		t.Errorf("python SDK volumes: %v\n%s", err, out)
	}

	// The CLI: a local directory in, attached with --volume, listed, removed.
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "cfg"), 0o755)
	os.WriteFile(filepath.Join(dir, "cfg", "app.conf"), []byte("from-cli"), 0o644)
	cliVol := strings.TrimSpace(s.mustCLI("", "volume", "create", "cli-vol", dir))
	if !strings.HasPrefix(cliVol, "vol-") {
		t.Fatalf("volume create printed %q", cliVol)
	}
	if ls := s.mustCLI("", "volume", "ls"); !strings.Contains(ls, cliVol) || !strings.Contains(ls, "cli-vol") {
		t.Errorf("volume ls:\n%s\nwant %s listed", ls, cliVol)
	}
	sb := strings.TrimSpace(s.mustCLI("", "sandbox", "create", "-t", "base", "--volume", cliVol+":/srv/app"))
	if out := s.mustCLI("", "sandbox", "exec", sb, "--", "cat", "/srv/app/cfg/app.conf"); out != "from-cli" {
		t.Errorf("file from the CLI volume = %q", out)
	}
	if r := s.cli("", "volume", "rm", cliVol); r.code == 0 || !strings.Contains(r.stderr, "volume_in_use") {
		t.Errorf("volume rm while attached: exit %d stderr %q, want a volume_in_use failure", r.code, r.stderr)
	}
	s.mustCLI("", "sandbox", "kill", sb)
	s.mustCLI("", "volume", "rm", cliVol)

	if code, body := s.do("DELETE", "/volumes/"+v.VolumeID, nil); code != 204 {
		t.Errorf("DELETE after the sandboxes died = %d %s, want 204", code, body)
	}
}
