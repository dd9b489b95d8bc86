package volume

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"testing"
)

type entry struct {
	name string
	typ  byte
	body string
	mode int64
}

func tgz(t *testing.T, ents ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body))}
		if e.typ == tar.TypeSymlink || e.typ == tar.TypeLink {
			h.Linkname, h.Size = e.body, 0
		}
		if e.typ == tar.TypeDir || e.typ == tar.TypeChar {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			io.WriteString(tw, e.body)
		}
	}
	tw.Close()
	zw.Close()
	return b.Bytes()
}

func untgz(t *testing.T, b []byte) map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		out[h.Name] = string(h.Typeflag) + ":" + string(body)
		if h.Mode&^0o777 != 0 || h.Uid != 0 {
			t.Errorf("%s: mode %o uid %d, want permission bits only, root", h.Name, h.Mode, h.Uid)
		}
	}
}

func TestSanitize(t *testing.T) {
	in := tgz(t,
		entry{name: "./", typ: tar.TypeDir, mode: 0o755},
		entry{name: "data/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "./data/a.txt", typ: tar.TypeReg, body: "hello", mode: 0o4755},
		entry{name: "data/link", typ: tar.TypeSymlink, body: "/etc/passwd"},
		entry{name: "data/hard", typ: tar.TypeLink, body: "data/a.txt"},
		entry{name: "dev", typ: tar.TypeChar},
		entry{name: "b", typ: tar.TypeReg, body: "x", mode: 0o644},
	)
	var out bytes.Buffer
	st, err := Sanitize(bytes.NewReader(in), &out, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got := untgz(t, out.Bytes())
	want := map[string]string{"data/": "5:", "data/a.txt": "0:hello", "b": "0:x"}
	if len(got) != len(want) {
		t.Errorf("sanitised archive = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("entry %s = %q, want %q", k, got[k], v)
		}
	}
	if st.Files != 2 || st.Dirs != 1 || st.Dropped != 3 || st.Bytes != 6 {
		t.Errorf("stats = %+v, want 2 files, 1 dir, 3 dropped, 6 bytes", st)
	}

	for _, bad := range []string{"../x", "a/../../x", "/etc/x", "a/.."} {
		_, err := Sanitize(bytes.NewReader(tgz(t, entry{name: bad, typ: tar.TypeReg, body: "x"})), io.Discard, 1<<20)
		var inv *InvalidError
		if !errors.As(err, &inv) {
			t.Errorf("Sanitize(%q) = %v, want an InvalidError", bad, err)
		}
	}
	if _, err := Sanitize(bytes.NewReader(tgz(t, entry{name: "big", typ: tar.TypeReg, body: "0123456789"})), io.Discard, 5); !errors.Is(err, ErrQuota) {
		t.Errorf("Sanitize over the unpacked cap = %v, want ErrQuota", err)
	}
	if _, err := Sanitize(bytes.NewReader([]byte("not gzip")), io.Discard, 5); err == nil {
		t.Error("Sanitize(not gzip) succeeded")
	}
	if _, err := Sanitize(bytes.NewReader(in[:len(in)-10]), io.Discard, 1<<20); err == nil {
		t.Error("Sanitize(truncated) succeeded")
	}
}

func TestManager(t *testing.T) {
	st, err := NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(Config{Store: st, TeamQuotaBytes: 1 << 20})
	ctx := t.Context()
	v, err := m.Create(ctx, "team-a", "data", bytes.NewReader(tgz(t, entry{name: "f", typ: tar.TypeReg, body: "abc"})))
	if err != nil {
		t.Fatal(err)
	}
	if v.SizeBytes == 0 || v.Files != 1 || v.Unpacked != 3 || v.Team != "team-a" || v.Backend != "tarball" {
		t.Errorf("created %+v", v)
	}
	got, err := m.Get(ctx, v.ID)
	if err != nil || got.Name != "data" || got.SizeBytes != v.SizeBytes || got.Files != 1 || got.Unpacked != 3 {
		t.Errorf("Get = %+v, %v", got, err)
	}
	if l, _ := m.List(ctx, "team-b", false); len(l) != 0 {
		t.Errorf("team-b lists %d volumes, want 0", len(l))
	}
	if l, _ := m.List(ctx, "team-a", false); len(l) != 1 {
		t.Errorf("team-a lists %d volumes, want 1", len(l))
	}
	rc, err := m.Open(ctx, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if untgz(t, b)["f"] != "0:abc" {
		t.Errorf("download = %v", untgz(t, b))
	}
	// Attached to a live sandbox: 409; once it is dead, deleted.
	m.Attach(v.ID, "sbx-1")
	live := true
	if err := m.Delete(ctx, v.ID, func(string) bool { return live }); !errors.Is(err, ErrInUse) {
		t.Errorf("Delete attached = %v, want ErrInUse", err)
	}
	live = false
	if err := m.Delete(ctx, v.ID, func(string) bool { return live }); err != nil {
		t.Errorf("Delete = %v", err)
	}
	if _, err := m.Get(ctx, v.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after delete = %v, want ErrNotFound", err)
	}
	for _, id := range []string{"../x", "vol-zz", ""} {
		if _, err := m.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", id, err)
		}
	}
	// A failed upload leaves nothing behind.
	if _, err := m.Create(ctx, "team-a", "bad", bytes.NewReader(tgz(t, entry{name: "../x", typ: tar.TypeReg, body: "x"}))); err == nil {
		t.Error("Create with a traversal succeeded")
	}
	if l, _ := m.List(ctx, "team-a", true); len(l) != 0 {
		t.Errorf("after a failed create %d volumes, want 0", len(l))
	}
	// Team quota.
	q := NewManager(Config{Store: st, TeamQuotaBytes: 10})
	if _, err := q.Create(ctx, "team-q", "x", bytes.NewReader(tgz(t, entry{name: "f", typ: tar.TypeReg, body: "abc"}))); !errors.Is(err, ErrQuota) {
		t.Errorf("Create over the team quota = %v, want ErrQuota", err)
	}
}
