package api

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// testTarGz returns a tar.gz of name -> body files (a trailing "/" makes
// a directory; "->" in the body makes a symlink to what follows it).
func testTarGz(t *testing.T, files ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	for i := 0; i+1 < len(files); i += 2 {
		name, body := files[i], files[i+1]
		h := &tar.Header{Name: name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(body))}
		switch {
		case strings.HasSuffix(name, "/"):
			h.Typeflag, h.Size, h.Mode = tar.TypeDir, 0, 0o755
		case strings.HasPrefix(body, "->"):
			h.Typeflag, h.Size, h.Linkname = tar.TypeSymlink, 0, body[2:]
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(body))
		}
	}
	tw.Close()
	zw.Close()
	return b.Bytes()
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

type volumeJSON struct {
	VolumeID  string `json:"volume_id"`
	OwnerID   string `json:"owner_id"`
	Name      string `json:"name"`
	SizeBytes int64  `json:"size_bytes"`
	Files     int    `json:"files"`
	Backend   string `json:"backend"`
}

func TestVolumesAPI(t *testing.T) {
	h := newHarness(t)
	body := testTarGz(t, "data/", "", "data/a.txt", "hello", "data/link", "->/etc/passwd")
	resp, b := h.do(t, "POST", "/volumes?name=ds", body, "Content-Type", "application/gzip")
	if resp.StatusCode != 201 {
		t.Fatalf("POST /volumes = %d %s", resp.StatusCode, b)
	}
	v := decode[volumeJSON](t, "POST /volumes", b)
	if !strings.HasPrefix(v.VolumeID, "vol-") || v.Name != "ds" || v.Files != 1 || v.SizeBytes == 0 || v.Backend != "tarball" {
		t.Errorf("created volume = %s", b)
	}
	resp, b = h.do(t, "GET", "/volumes", nil)
	if list := decode[struct{ Volumes []volumeJSON }](t, "GET /volumes", b); resp.StatusCode != 200 || len(list.Volumes) != 1 || list.Volumes[0].VolumeID != v.VolumeID {
		t.Errorf("GET /volumes = %d %s", resp.StatusCode, b)
	}
	resp, b = h.do(t, "GET", "/volumes/"+v.VolumeID+"/download", nil)
	if resp.StatusCode != 200 || int64(len(b)) != v.SizeBytes || resp.Header.Get("Content-Type") != "application/gzip" {
		t.Errorf("download = %d, %d bytes, %s; want 200, %d bytes of gzip", resp.StatusCode, len(b), resp.Header.Get("Content-Type"), v.SizeBytes)
	}

	// Bad uploads.
	for _, c := range []struct {
		path string
		body []byte
		code string
		want int
	}{
		{"/volumes?name=x", testTarGz(t, "../escape", "x"), "invalid_volume", 400},
		{"/volumes?name=x", testTarGz(t, "/abs", "x"), "invalid_volume", 400},
		{"/volumes?name=x", []byte("not a tarball"), "invalid_volume", 400},
		{"/volumes", body, "invalid_volume", 400},                                                     // no name
		{"/volumes?name=big", testTarGz(t, "big", string(randomBytes(2<<20))), "quota_exceeded", 413}, // team quota is 1 MiB
	} {
		resp, b := h.do(t, "POST", c.path, c.body)
		if c.want == 413 && resp.StatusCode == 201 {
			t.Errorf("POST %s over the quota = 201", c.path)
			continue
		}
		wantError(t, "POST "+c.path, resp, b, c.want, c.code)
	}
	if resp, b := h.do(t, "GET", "/volumes/vol-0000000000000000", nil); resp.StatusCode != 404 {
		t.Errorf("unknown volume = %d %s", resp.StatusCode, b)
	}

	// Attach at create: the archive goes into the sandbox and is unpacked there.
	resp, b = h.do(t, "POST", "/sandboxes", map[string]any{"volumes": []map[string]any{{"volume_id": v.VolumeID, "mount_path": "/data"}}})
	if resp.StatusCode != 201 {
		t.Fatalf("create with a volume = %d %s", resp.StatusCode, b)
	}
	sb := decode[createResp](t, "create", b)
	calls := h.envd.received()
	var put, unpack bool
	for _, c := range calls {
		if c.Method == "PUT" && c.Path == "/files/raw" && strings.Contains(c.RawQuery, v.VolumeID) && c.BodyLen == int(v.SizeBytes) {
			put = true
		}
		if c.Method == "POST" && c.Path == "/commands" && put {
			unpack = true
		}
	}
	if !put || !unpack {
		t.Errorf("envd calls %+v, want the archive uploaded (%d bytes) then unpacked", calls, v.SizeBytes)
	}
	// Attached to a live sandbox: 409; killed: deletable.
	resp, b = h.do(t, "DELETE", "/volumes/"+v.VolumeID, nil)
	wantError(t, "delete attached", resp, b, 409, "volume_in_use")
	h.do(t, "DELETE", "/sandboxes/"+sb.SandboxID, nil)

	// Bad attachments.
	for _, a := range []map[string]any{
		{"volume_id": v.VolumeID, "mount_path": "data"},
		{"volume_id": v.VolumeID, "mount_path": "/a/../b"},
		{"volume_id": v.VolumeID, "mount_path": "/"},
		{"volume_id": v.VolumeID, "mount_path": "/proc/x"},
		{"volume_id": v.VolumeID, "mount_path": "/d", "subpath": "x"},
		{"volume_id": v.VolumeID, "mount_path": "/d", "mode": "weird"},
	} {
		resp, b := h.do(t, "POST", "/sandboxes", map[string]any{"volumes": []any{a}})
		wantError(t, "create with "+strconv.Quote(a["mount_path"].(string)), resp, b, 400, "invalid_volume")
	}
	resp, b = h.do(t, "POST", "/sandboxes", map[string]any{"volumes": []any{map[string]any{"volume_id": v.VolumeID, "mount_path": "/d", "mode": "mount"}}})
	wantError(t, "live mount", resp, b, 501, "not_implemented")
	if !strings.Contains(string(b), "need the gvisor runtime") {
		t.Errorf("live mount on a runtime without them: %s; want it to say gvisor is needed", b)
	}
	resp, b = h.do(t, "POST", "/sandboxes", map[string]any{"volumes": []any{map[string]any{"volume_id": "vol-0000000000000000", "mount_path": "/d"}}})
	wantError(t, "unknown volume", resp, b, 404, "volume_not_found")

	// Another team sees none of it.
	team := h.newTeam(t, "other")
	k := h.newKey(t, team, "k", false)
	for _, c := range []struct{ method, path string }{
		{"GET", "/volumes/" + v.VolumeID}, {"GET", "/volumes/" + v.VolumeID + "/download"}, {"DELETE", "/volumes/" + v.VolumeID},
	} {
		resp, b := h.do(t, c.method, c.path, nil, as(k.Key)...)
		wantError(t, "other team "+c.method+" "+c.path, resp, b, 404, "volume_not_found")
	}
	resp, b = h.do(t, "GET", "/volumes", nil, as(k.Key)...)
	if !strings.Contains(string(b), `"volumes":[]`) {
		t.Errorf("other team's list = %d %s, want empty", resp.StatusCode, b)
	}
	resp, b = h.do(t, "POST", "/sandboxes", map[string]any{"volumes": []any{map[string]any{"volume_id": v.VolumeID, "mount_path": "/d"}}}, as(k.Key)...)
	wantError(t, "other team attaching", resp, b, 404, "volume_not_found")

	resp, b = h.do(t, "DELETE", "/volumes/"+v.VolumeID, nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("delete after the sandbox died = %d %s", resp.StatusCode, b)
	}
	if resp, _ := h.do(t, "GET", "/volumes/"+v.VolumeID, nil); resp.StatusCode != 404 {
		t.Errorf("GET after delete = %d", resp.StatusCode)
	}
}
