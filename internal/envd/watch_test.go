package envd

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/envd/process"
	"github.com/declaw/declaw/internal/envd/watch"
	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/testenv"
)

// watchStream follows a watch stream's events.
type watchStream struct {
	*sseStream
	id string
}

func (c *testClient) startWatch(t *testing.T, dir string, recursive bool) string {
	t.Helper()
	var st envdapi.WatchStarted
	c.mustDo(http.StatusOK, "POST", "/files/watch", envdapi.WatchRequest{Path: dir, Recursive: recursive}, &st)
	if st.WatcherID == "" {
		t.Fatal("POST /files/watch: empty watcher_id")
	}
	return st.WatcherID
}

func (c *testClient) openWatch(t *testing.T, path string) *watchStream {
	t.Helper()
	s := c.openSSE(t, path)
	ev := s.next(t)
	var we envdapi.WatchEvent
	if err := json.Unmarshal(ev.raw, &we); err != nil || ev.name != "start" || we.WatcherID == "" {
		t.Fatalf("first watch event %s %s, want start with watcher_id", ev.name, ev.raw)
	}
	return &watchStream{s, we.WatcherID}
}

// expect reads events until each of want ("type name", in this order,
// other events in between allowed) was seen; it returns all events read.
func (w *watchStream) expect(t *testing.T, want ...string) []envdapi.WatchEvent {
	t.Helper()
	var got []envdapi.WatchEvent
	var names []string
	for len(want) > 0 {
		var ev sseEvent
		select {
		case e, ok := <-w.events:
			if !ok {
				t.Fatalf("watch stream ended; still waiting for %q; got %v", want, names)
			}
			ev = e
		case <-time.After(10 * time.Second):
			t.Fatalf("no %q within 10s; got %v", want[0], names)
		}
		var we envdapi.WatchEvent
		if err := json.Unmarshal(ev.raw, &we); err != nil {
			t.Fatalf("watch event %s: %v", ev.raw, err)
		}
		if we.Type != ev.name {
			t.Errorf("event %q carries type %q", ev.name, we.Type)
		}
		if ts, err := time.Parse(time.RFC3339Nano, we.Timestamp); err != nil || time.Since(ts) > time.Minute {
			t.Errorf("event %s: bad timestamp %q", ev.raw, we.Timestamp)
		}
		if we.EventID > 0 && ev.id != fmt.Sprint(we.EventID) {
			t.Errorf("event %s: SSE id %q", ev.raw, ev.id)
		}
		got = append(got, we)
		key := we.Type + " " + we.Name
		names = append(names, key)
		if key == want[0] {
			want = want[1:]
		}
	}
	return got
}

func findEvent(evs []envdapi.WatchEvent, typ, name string) *envdapi.WatchEvent {
	for i := range evs {
		if evs[i].Type == typ && evs[i].Name == name {
			return &evs[i]
		}
	}
	return nil
}

func TestWatch(t *testing.T) {
	c := newTestServer(t, process.Config{})
	dir := t.TempDir()
	id := c.startWatch(t, dir, false)
	w := c.openWatch(t, "/files/watch/"+id+"/stream")
	if w.id != id {
		t.Errorf("start event watcher_id %q, want %q", w.id, id)
	}
	p := func(n string) string { return filepath.Join(dir, n) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(p("a.txt"), []byte("x"), 0o644))
	must(os.Chmod(p("a.txt"), 0o600))
	must(os.Rename(p("a.txt"), p("b.txt")))
	must(os.Remove(p("b.txt")))
	must(os.Mkdir(p("sub"), 0o755))
	must(os.WriteFile(p("sub/deep.txt"), []byte("x"), 0o644)) // not recursive: unseen
	must(os.WriteFile(p("end"), nil, 0o644))
	evs := w.expect(t, "create a.txt", "write a.txt", "chmod a.txt", "rename a.txt", "create b.txt", "remove b.txt", "create sub", "create end")
	if e := findEvent(evs, "create", "sub"); e == nil || !e.IsDir || e.Path != p("sub") {
		t.Errorf("create sub = %+v, want is_dir and path %s", e, p("sub"))
	}
	if e := findEvent(evs, "create", "a.txt"); e.IsDir || e.Path != p("a.txt") {
		t.Errorf("create a.txt = %+v", e)
	}
	for _, e := range evs {
		if strings.Contains(e.Name, "deep") {
			t.Errorf("non-recursive watch reported %+v", e)
		}
	}

	// Resume after an event: only later ones.
	r := &watchStream{c.openSSE(t, fmt.Sprintf("/files/watch/%s/stream?last_event_id=%d", id, evs[len(evs)-2].EventID)), id}
	if ev := r.next(t); ev.name != "start" {
		t.Fatalf("first event %s", ev.name)
	}
	if got := r.expect(t, "create end"); len(got) != 1 {
		t.Errorf("resume: events %+v, want only create end", got)
	}

	// Delete: the streams end, the watcher is gone.
	c.mustDo(http.StatusNoContent, "DELETE", "/files/watch/"+id, nil, nil)
	for _, s := range []*watchStream{w, r} {
		select {
		case _, ok := <-s.events:
			for ok {
				_, ok = <-s.events
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watch stream did not end after DELETE")
		}
	}
	for _, req := range [][2]string{{"DELETE", "/files/watch/" + id}, {"GET", "/files/watch/" + id + "/stream"}} {
		if status, raw := c.do(req[0], req[1], nil, nil); status != 404 || errorCode(t, raw) != "watcher_not_found" {
			t.Errorf("%s after delete = %d %s, want 404 watcher_not_found", req, status, raw)
		}
	}
	if n := c.srv.watches.Len(); n != 0 {
		t.Errorf("%d watchers left", n)
	}
}

func TestWatchRecursive(t *testing.T) {
	c := newTestServer(t, process.Config{})
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	if err := os.MkdirAll(p("pre/deep"), 0o755); err != nil {
		t.Fatal(err)
	}
	id := c.startWatch(t, dir, true)
	w := c.openWatch(t, "/files/watch/"+id+"/stream")
	wt, err := c.srv.watches.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(wt.Dirs(), ","); got != strings.Join([]string{dir, p("pre"), p("pre/deep")}, ",") {
		t.Errorf("watched dirs %s", got)
	}
	os.WriteFile(p("pre/deep/f"), nil, 0o644)
	w.expect(t, "create pre/deep/f")

	// A new tree made at once: its content is reported even if created
	// before the watch on the new directory was in place.
	if err := os.MkdirAll(p("n1/n2/n3"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p("n1/n2/n3/file"), []byte("x"), 0o644)
	evs := w.expect(t, "create n1", "create n1/n2/n3/file")
	if e := findEvent(evs, "create", "n1/n2"); e == nil || !e.IsDir {
		t.Errorf("create n1/n2 = %+v, want is_dir", e)
	}
	testenv.WaitFor(t, 5*time.Second, func() error {
		if n := len(wt.Dirs()); n != 6 {
			return fmt.Errorf("%d dirs watched: %v", n, wt.Dirs())
		}
		return nil
	})
	os.WriteFile(p("n1/n2/n3/later"), nil, 0o644)
	w.expect(t, "create n1/n2/n3/later")

	// Removing a tree releases its watches.
	if err := os.RemoveAll(p("n1")); err != nil {
		t.Fatal(err)
	}
	evs = w.expect(t, "remove n1/n2/n3/file", "remove n1")
	if e := findEvent(evs, "remove", "n1"); !e.IsDir {
		t.Errorf("remove n1 = %+v, want is_dir", e)
	}
	testenv.WaitFor(t, 5*time.Second, func() error {
		if n := len(wt.Dirs()); n != 3 {
			return fmt.Errorf("%d dirs watched after removal: %v", n, wt.Dirs())
		}
		return nil
	})

	// A directory moved within the tree is watched at its new place.
	if err := os.Rename(p("pre"), p("moved")); err != nil {
		t.Fatal(err)
	}
	w.expect(t, "rename pre", "create moved")
	testenv.WaitFor(t, 5*time.Second, func() error {
		if d := wt.Dirs(); strings.Join(d, ",") != strings.Join([]string{dir, p("moved"), p("moved/deep")}, ",") {
			return fmt.Errorf("dirs after the move: %v", d)
		}
		return nil
	})
	os.WriteFile(p("moved/deep/g"), nil, 0o644)
	w.expect(t, "create moved/deep/g")
}

func TestWatchLimits(t *testing.T) {
	c := newTestServerConfig(t, Config{Watch: watch.Config{MaxWatchers: 2, MaxDirs: 5, IdleTimeout: 300 * time.Millisecond}})
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	for _, d := range []string{"a/b/c", "x/y"} {
		if err := os.MkdirAll(p(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// 6 directories > MaxDirs.
	if status, raw := c.do("POST", "/files/watch", envdapi.WatchRequest{Path: dir, Recursive: true}, nil); status != 409 || errorCode(t, raw) != "watch_limit" {
		t.Errorf("recursive watch over the dir cap = %d %s, want 409 watch_limit", status, raw)
	}
	if n := c.srv.watches.Len(); n != 0 {
		t.Errorf("a refused watch left %d watchers", n)
	}
	// The budget was given back: 4 directories fit.
	id1 := c.startWatch(t, p("a"), true)
	c.startWatch(t, p("x"), false)
	if status, raw := c.do("POST", "/files/watch", envdapi.WatchRequest{Path: dir}, nil); status != 409 || errorCode(t, raw) != "watch_limit" {
		t.Errorf("third watcher = %d %s, want 409 watch_limit", status, raw)
	}
	// A new directory beyond the cap is an error event, not a silent miss.
	w := c.openWatch(t, "/files/watch/"+id1+"/stream")
	os.Mkdir(p("a/new1"), 0o755)
	os.Mkdir(p("a/new2"), 0o755)
	evs := w.expect(t, "create new1", "create new2")
	for len(evs) == 0 || evs[len(evs)-1].Type != "error" {
		evs = append(evs, w.expect(t, "error new2")...)
	}
	if e := evs[len(evs)-1]; !strings.Contains(e.Error, "limit") {
		t.Errorf("error event %+v, want a watch limit error", e)
	}
	w.cancel()

	// Watchers without subscribers expire.
	testenv.WaitFor(t, 10*time.Second, func() error {
		if n := c.srv.watches.Len(); n != 0 {
			return fmt.Errorf("%d watchers still alive", n)
		}
		return nil
	})

	errs := []struct {
		name string
		body any
		want int
		code string
	}{
		{"missing", envdapi.WatchRequest{Path: p("nope")}, 404, "not_found"},
		{"file", envdapi.WatchRequest{Path: p("f")}, 400, "not_directory"},
		{"empty path", envdapi.WatchRequest{}, 400, "bad_request"},
		{"NUL", envdapi.WatchRequest{Path: "/tmp/\x00"}, 400, "bad_request"},
		{"bad json", `{"path":`, 400, "bad_request"},
		{"unknown user", envdapi.WatchRequest{Path: dir, Username: "no-such-user"}, 400, "unknown_user"},
	}
	os.WriteFile(p("f"), nil, 0o644)
	for _, tt := range errs {
		status, raw := c.do("POST", "/files/watch", tt.body, nil)
		if status != tt.want || errorCode(t, raw) != tt.code {
			t.Errorf("%s: POST /files/watch = %d %s, want %d %s", tt.name, status, raw, tt.want, tt.code)
		}
	}
	if status, raw := c.do("GET", "/files/watch?path="+url.QueryEscape(dir)+"&recursive=maybe", nil, nil); status != 400 {
		t.Errorf("one-shot with recursive=maybe = %d %s, want 400", status, raw)
	}
}

func TestWatchGap(t *testing.T) {
	c := newTestServerConfig(t, Config{Watch: watch.Config{Buffer: 16}})
	dir := t.TempDir()
	id := c.startWatch(t, dir, false)
	wt, _ := c.srv.watches.Get(id)
	for i := range 40 {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d", i)), nil, 0o644)
	}
	testenv.WaitFor(t, 5*time.Second, func() error {
		if evs, _, _, _ := wt.Read(0, 0); len(evs) == 0 || evs[len(evs)-1].Name != "f39" {
			return fmt.Errorf("last event not yet f39")
		}
		return nil
	})
	w := c.openWatch(t, "/files/watch/"+id+"/stream")
	if ev := w.next(t); ev.name != "gap" {
		t.Fatalf("first event after the buffer overflowed: %s %s, want gap", ev.name, ev.raw)
	}
	evs := w.expect(t, "create f39")
	if len(evs) > 16 || evs[0].Name == "f00" {
		t.Errorf("after the gap: %d events from %s, want at most the 16 buffered", len(evs), evs[0].Name)
	}
}

func TestWatchOneShot(t *testing.T) {
	c := newTestServer(t, process.Config{})
	dir := t.TempDir()
	w := c.openWatch(t, "/files/watch?recursive=true&path="+url.QueryEscape(dir))
	if c.srv.watches.Len() != 1 {
		t.Fatalf("%d watchers, want 1", c.srv.watches.Len())
	}
	os.MkdirAll(filepath.Join(dir, "s/t"), 0o755)
	os.WriteFile(filepath.Join(dir, "s/t/u"), nil, 0o644)
	w.expect(t, "create s", "create s/t/u")
	w.cancel()
	testenv.WaitFor(t, 5*time.Second, func() error {
		if n := c.srv.watches.Len(); n != 0 {
			return fmt.Errorf("%d watchers after the one-shot stream closed", n)
		}
		return nil
	})
}
