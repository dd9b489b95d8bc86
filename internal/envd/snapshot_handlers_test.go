package envd

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// snapshotNames lists the regular files of a GET /snapshot answer.
func snapshotNames(t *testing.T, b []byte) []string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("snapshot is not gzip: %v", err)
	}
	tr := tar.NewReader(gz)
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("snapshot tar: %v", err)
		}
		if hdr.Typeflag == tar.TypeReg {
			names = append(names, hdr.Name)
		}
	}
}

// TestSnapshotSinceEnvdStart: without ?since, GET /snapshot takes what
// changed since envd started, by envd's own clock (a microVM's clock may
// lag the host's, so the server does not send its own time).
func TestSnapshotSinceEnvdStart(t *testing.T) {
	root := t.TempDir()
	c := newTestServerConfig(t, Config{FSRoot: root})
	if err := os.WriteFile(filepath.Join(root, "new.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, b := c.do("GET", "/snapshot", nil, nil)
	if code != 200 || !slices.Equal(snapshotNames(t, b), []string{"new.txt"}) {
		t.Fatalf("GET /snapshot = %d, files %v; want new.txt", code, snapshotNames(t, b))
	}
	// A file older than envd's start is not taken: move the start ahead.
	c.srv.started = time.Now().Add(time.Hour)
	if code, b := c.do("GET", "/snapshot", nil, nil); code != 200 || len(snapshotNames(t, b)) != 0 {
		t.Fatalf("GET /snapshot with a later start = %d, files %v; want none", code, snapshotNames(t, b))
	}
	// An explicit since still wins.
	since := strconv.FormatInt(time.Now().Add(-time.Hour).UnixNano(), 10)
	if code, b := c.do("GET", "/snapshot?since="+since, nil, nil); code != 200 || !slices.Equal(snapshotNames(t, b), []string{"new.txt"}) {
		t.Fatalf("GET /snapshot?since= = %d, files %v; want new.txt", code, snapshotNames(t, b))
	}
}
