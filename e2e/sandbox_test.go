package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"
)

type info struct {
	SandboxID  string            `json:"sandbox_id"`
	TemplateID string            `json:"template_id"`
	State      string            `json:"state"`
	Metadata   map[string]string `json:"metadata"`
	Envs       map[string]string `json:"envs"`
	Timeout    int               `json:"timeout"`
	StartedAt  time.Time         `json:"started_at"`
	EndAt      *time.Time        `json:"end_at"`
}

func TestLifecycle(t *testing.T) {
	s := startServer(t)
	var created struct {
		info
		EnvdAccessToken string `json:"envd_access_token"`
	}
	s.must(201, "POST", "/sandboxes", map[string]any{
		"template": "python", "timeout": 120, "metadata": map[string]string{"owner": "e2e", "n": "1"},
		"envs": map[string]string{"FOO": "bar", "MY_API_KEY": "s3cret"},
	}, &created)
	id := created.SandboxID
	t.Cleanup(func() { s.do("DELETE", "/sandboxes/"+id, nil) })
	if created.State != "running" || created.TemplateID != "python" || created.Timeout != 120 || created.EnvdAccessToken == "" {
		t.Fatalf("create answer = %s", fmtJSON(created))
	}
	if created.EndAt == nil || created.EndAt.Sub(created.StartedAt) < 119*time.Second {
		t.Fatalf("end_at %v is not started_at+120s (%v)", created.EndAt, created.StartedAt)
	}
	// Masked env values never come back in clear; the sandbox still gets them.
	if created.Envs["MY_API_KEY"] == "s3cret" || created.Envs["FOO"] != "bar" {
		t.Fatalf("envs shown = %v: want FOO=bar and MY_API_KEY masked", created.Envs)
	}
	if res := s.run(id, "echo $FOO $MY_API_KEY"); res.Stdout != "bar s3cret\n" {
		t.Fatalf("envs inside = %q", res.Stdout)
	}

	other := s.create(map[string]any{"metadata": map[string]string{"owner": "someone-else"}})

	var got info
	s.must(200, "GET", "/sandboxes/"+id, nil, &got)
	if got.SandboxID != id || got.State != "running" || got.Metadata["owner"] != "e2e" {
		t.Fatalf("GET = %s", fmtJSON(got))
	}
	var list struct {
		Sandboxes []info `json:"sandboxes"`
	}
	s.must(200, "GET", "/sandboxes?metadata="+url.QueryEscape("owner=e2e"), nil, &list)
	if len(list.Sandboxes) != 1 || list.Sandboxes[0].SandboxID != id {
		t.Fatalf("list by metadata = %s", fmtJSON(list))
	}
	s.must(200, "GET", "/sandboxes?limit=1", nil, &list)
	if len(list.Sandboxes) != 1 {
		t.Fatalf("list limit=1 returned %d", len(list.Sandboxes))
	}
	var status struct {
		IsRunning bool `json:"is_running"`
	}
	s.must(200, "GET", "/sandboxes/"+id+"/status", nil, &status)
	if !status.IsRunning {
		t.Fatal("status: is_running false for a running sandbox")
	}

	// set_timeout moves end_at.
	s.must(200, "PATCH", "/sandboxes/"+id+"/timeout", map[string]any{"timeout": 600}, &got)
	if got.EndAt == nil || time.Until(*got.EndAt) < 590*time.Second {
		t.Fatalf("after PATCH timeout=600, end_at = %v", got.EndAt)
	}

	// Sync kill.
	var killed struct {
		Killed bool `json:"killed"`
	}
	s.must(200, "DELETE", "/sandboxes/"+id, nil, &killed)
	if !killed.Killed {
		t.Fatal("kill answered killed=false for a running sandbox")
	}
	s.must(200, "GET", "/sandboxes/"+id, nil, &got)
	if got.State != "killed" {
		t.Fatalf("state after kill = %q", got.State)
	}
	s.must(200, "GET", "/sandboxes/"+id+"/status", nil, &status)
	if status.IsRunning {
		t.Fatal("status: is_running true after kill")
	}
	s.must(200, "GET", "/sandboxes", nil, &list)
	for _, sb := range list.Sandboxes {
		if sb.SandboxID == id {
			t.Fatalf("killed sandbox still listed: %s", fmtJSON(list))
		}
	}
	if code, b := s.do("POST", "/sandboxes/"+id+"/commands", map[string]any{"cmd": "true"}); code != 410 {
		t.Fatalf("command on killed sandbox: %d %s, want 410", code, b)
	}
	s.must(200, "DELETE", "/sandboxes/"+id, nil, &killed)
	if killed.Killed {
		t.Fatal("second kill answered killed=true")
	}

	// Async kill and kill-many.
	s.must(202, "DELETE", "/sandboxes/"+other+"?async=true", nil, nil)
	waitState(t, s, other, "killed", 60*time.Second)
	a, b := s.create(nil), s.create(nil)
	var many struct {
		Results map[string]map[string]any `json:"results"`
	}
	s.must(200, "POST", "/sandboxes/kill-many", map[string]any{"sandbox_ids": []string{a, b, "sbx-doesnotexist"}}, &many)
	if many.Results[a]["killed"] != true || many.Results[b]["killed"] != true || many.Results["sbx-doesnotexist"]["error"] == nil {
		t.Fatalf("kill-many = %s", fmtJSON(many))
	}
}

func waitState(t *testing.T, s *server, id, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var got info
		s.must(200, "GET", "/sandboxes/"+id, nil, &got)
		if got.State == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s: state %q after %v, want %q", id, got.State, d, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestTimeoutKillsAndFreesEverything(t *testing.T) {
	s := startServer(t)
	id := s.create(map[string]any{"timeout": 3})
	s.run(id, "true")
	waitState(t, s, id, "killed", 30*time.Second)
	// The slot was scrubbed: no runsc container of that id remains.
	for _, p := range sandboxProcs(s.stateDir) {
		if strings.Contains(p, id) {
			t.Fatalf("runsc process of timed-out sandbox remains: %s", p)
		}
	}
}

func TestCommands(t *testing.T) {
	s := startServer(t)
	id := s.create(nil)

	res := s.run(id, "echo out; echo err >&2; exit 3")
	if res.Stdout != "out\n" || res.Stderr != "err\n" || res.ExitCode != 3 {
		t.Fatalf("run = %+v, want out/err/3", res)
	}
	res = s.run(id, "id -un; echo $HOME; pwd")
	if res.Stdout != "root\n/root\n/root\n" {
		t.Fatalf("default user/home/cwd = %q", res.Stdout)
	}
	res = s.run(id, "id -un; echo $HOME; pwd", "user", "user")
	if res.Stdout != "user\n/home/user\n/home/user\n" {
		t.Fatalf("user=user: %q", res.Stdout)
	}
	res = s.run(id, "pwd; echo $A", "cwd", "/tmp", "envs", map[string]string{"A": "b"})
	if res.Stdout != "/tmp\nb\n" {
		t.Fatalf("cwd/envs: %q", res.Stdout)
	}
	// Users made by commands are seen at once (envd keeps the user
	// database while /etc/passwd and /etc/group are unchanged), and so are
	// changes to them: a new group membership, a new home, removal.
	if res := s.run(id, "useradd -m -s /bin/bash bob && groupadd crew"); res.ExitCode != 0 {
		t.Fatalf("useradd: %+v", res)
	}
	if res := s.run(id, "id -un; echo $HOME; pwd; id -Gn", "user", "bob"); res.Stdout != "bob\n/home/bob\n/home/bob\nbob\n" {
		t.Fatalf("user=bob after useradd: %+v", res)
	}
	if res := s.run(id, "usermod -aG crew bob && mkdir /srv/bob && usermod -d /srv/bob bob"); res.ExitCode != 0 {
		t.Fatalf("usermod: %+v", res)
	}
	if res := s.run(id, "echo $HOME; id -Gn", "user", "bob"); res.Stdout != "/srv/bob\nbob crew\n" {
		t.Fatalf("user=bob after usermod: %+v", res)
	}
	s.must(200, "POST", "/sandboxes/"+id+"/files", map[string]any{"path": "/tmp/bob.txt", "data": "b", "username": "bob"}, nil)
	if res := s.run(id, "stat -c %U:%G /tmp/bob.txt"); res.Stdout != "bob:bob\n" {
		t.Fatalf("owner of a file written as bob: %+v", res)
	}
	if res := s.run(id, "userdel bob"); res.ExitCode != 0 {
		t.Fatalf("userdel: %+v", res)
	}
	s.must(400, "POST", "/sandboxes/"+id+"/commands", map[string]any{"cmd": "true", "user": "bob"}, nil)
	// Commands run on bash-static (the same bash, linked statically: a
	// faster start under gVisor) and still see themselves as /bin/bash.
	res = s.run(id, `c=$(cat /proc/$$/comm); echo "$0|$BASH|${BASH_VERSINFO[0]}|$c"`)
	if res.Stdout != "/bin/bash|/bin/bash|5|bash-static\n" {
		t.Fatalf("command shell = %+v", res)
	}
	// The everyday tools that stat files work (coreutils passes statx
	// AT_NO_AUTOMOUNT, which Debian 12's runsc refused with EINVAL before
	// the templates' statx fix), and the locale loads from its archive.
	res = s.run(id, `set -e; ls -ld / /tmp >/dev/null; stat -c '%n %F' /etc; cp -a /etc/hostname /tmp/h; ls -l /tmp/h | cut -c1-10; localedef --list-archive | grep -ci 'c.utf'`)
	if res.ExitCode != 0 || res.Stdout != "/etc directory\n-rw-r--r--\n1\n" {
		t.Fatalf("ls/stat/cp/locale = %+v", res)
	}

	// A timeout kills the whole process tree.
	code, b := s.do("POST", "/sandboxes/"+id+"/commands", map[string]any{"cmd": "(sleep 1000 &) ; echo started; sleep 1000", "timeout": 2})
	if code != 408 {
		t.Fatalf("command timeout: status %d %s, want 408", code, b)
	}
	time.Sleep(300 * time.Millisecond)
	if res := s.run(id, "ps -eo comm | grep -c '^sleep' || true"); strings.TrimSpace(res.Stdout) != "0" {
		t.Fatalf("sleep processes survived the timeout: %q", res.Stdout)
	}

	// Background with stdin, list, wait, kill.
	var bg struct {
		Pid int `json:"pid"`
	}
	s.must(200, "POST", "/sandboxes/"+id+"/commands", map[string]any{"cmd": "read line; echo got:$line; exit 7", "background": true, "stdin": true}, &bg)
	if bg.Pid <= 0 {
		t.Fatalf("background pid = %d", bg.Pid)
	}
	var procs []map[string]any
	s.must(200, "GET", "/sandboxes/"+id+"/commands", nil, &procs)
	if !hasPid(procs, bg.Pid) {
		t.Fatalf("background pid %d not listed: %v", bg.Pid, procs)
	}
	if code, b := s.do("POST", fmt.Sprintf("/sandboxes/%s/commands/%d/stdin", id, bg.Pid), map[string]any{"data": "hello\n"}); code/100 != 2 {
		t.Fatalf("send stdin: %d %s", code, b)
	}
	var waited cmdResult
	s.must(200, "GET", fmt.Sprintf("/sandboxes/%s/commands/%d/wait", id, bg.Pid), nil, &waited)
	if waited.ExitCode != 7 || waited.Stdout != "got:hello\n" {
		t.Fatalf("wait = %+v", waited)
	}
	s.must(200, "POST", "/sandboxes/"+id+"/commands", map[string]any{"cmd": "sleep 1000", "background": true}, &bg)
	var kr struct {
		Killed bool `json:"killed"`
	}
	s.must(200, "DELETE", fmt.Sprintf("/sandboxes/%s/commands/%d", id, bg.Pid), nil, &kr)
	if !kr.Killed {
		t.Fatal("kill background: killed=false")
	}
	if code, _ := s.do("DELETE", "/sandboxes/"+id+"/commands/999999", nil); code != 404 {
		t.Fatalf("kill unknown pid: %d, want 404", code)
	}

	// Streaming: SSE events with both type and stream keys, then exit.
	req, _ := http.NewRequest("POST", s.base+"/sandboxes/"+id+"/commands/stream", strings.NewReader(`{"cmd":"echo a; sleep 0.2; echo b >&2; exit 4"}`))
	req.Header.Set("Authorization", "Bearer "+s.key)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("stream content-type %q", ct)
	}
	var stdout, stderr string
	exit := -1
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data:") {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(strings.TrimSpace(line[5:])), &ev); err != nil {
			t.Fatalf("bad SSE data %q: %v", line, err)
		}
		switch ev["type"] {
		case "stdout", "stderr":
			if ev["stream"] != ev["type"] {
				t.Fatalf("event without matching stream key: %v", ev)
			}
			if ev["type"] == "stdout" {
				stdout += ev["data"].(string)
			} else {
				stderr += ev["data"].(string)
			}
		case "exit":
			exit = int(ev["exit_code"].(float64))
		}
	}
	if stdout != "a\n" || stderr != "b\n" || exit != 4 {
		t.Fatalf("stream: stdout %q stderr %q exit %d", stdout, stderr, exit)
	}
}

func hasPid(procs []map[string]any, pid int) bool {
	for _, p := range procs {
		if int(p["pid"].(float64)) == pid {
			return true
		}
	}
	return false
}

func TestFiles(t *testing.T) {
	s := startServer(t)
	id := s.create(nil)
	base := "/sandboxes/" + id

	var wr struct {
		Path string `json:"path"`
		Size int64  `json:"size"`
	}
	s.must(200, "POST", base+"/files", map[string]any{"path": "/tmp/dir/a.txt", "data": "héllo\n"}, &wr)
	if wr.Size != int64(len("héllo\n")) {
		t.Fatalf("write answer %+v", wr)
	}
	if b := s.must(200, "GET", base+"/files?path=/tmp/dir/a.txt", nil, nil); string(b) != "héllo\n" {
		t.Fatalf("read back %q", b)
	}

	// Raw: every byte value, byte-exact both ways.
	bin := make([]byte, 256*1024)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	s.must(200, "PUT", base+"/files/raw?path=/tmp/bin.dat", bin, nil)
	if got := s.must(200, "GET", base+"/files/raw?path=/tmp/bin.dat", nil, nil); !bytes.Equal(got, bin) {
		t.Fatalf("raw round trip differs (len %d vs %d)", len(got), len(bin))
	}
	if res := s.run(id, "sha256sum /tmp/bin.dat | cut -d' ' -f1"); strings.TrimSpace(res.Stdout) != fmt.Sprintf("%x", sha256.Sum256(bin)) {
		t.Fatalf("sha256 inside sandbox %q", res.Stdout)
	}

	// A large upload streams through (more than the JSON body limit).
	big := &patternReader{n: 64 << 20}
	s.must(200, "PUT", base+"/files/raw?path=/tmp/big.dat", big, nil)
	req, _ := http.NewRequest("GET", s.base+base+"/files/raw?path=/tmp/big.dat", nil)
	req.Header.Set("X-API-Key", s.key)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, _ := io.Copy(h, resp.Body)
	resp.Body.Close()
	wantH := sha256.New()
	io.Copy(wantH, &patternReader{n: 64 << 20})
	if n != 64<<20 || !bytes.Equal(h.Sum(nil), wantH.Sum(nil)) {
		t.Fatalf("big download: %d bytes, hash mismatch=%v", n, !bytes.Equal(h.Sum(nil), wantH.Sum(nil)))
	}

	// Batch, list with depth, exists, info, rename, mkdir, remove.
	s.must(200, "POST", base+"/files/batch", map[string]any{"files": []map[string]string{{"path": "/tmp/b/1.txt", "data": "1"}, {"path": "/tmp/b/c/2.txt", "data": "22"}}}, nil)
	var entries []map[string]any
	s.must(200, "GET", base+"/files/list?path=/tmp/b&depth=1", nil, &entries)
	if len(entries) != 2 {
		t.Fatalf("list depth 1 = %v", entries)
	}
	s.must(200, "GET", base+"/files/list?path=/tmp/b&depth=2", nil, &entries)
	if len(entries) != 3 {
		t.Fatalf("list depth 2 = %v", entries)
	}
	var ex struct {
		Exists bool `json:"exists"`
	}
	s.must(200, "GET", base+"/files/exists?path=/tmp/b/1.txt", nil, &ex)
	if !ex.Exists {
		t.Fatal("exists false for a file")
	}
	s.must(200, "GET", base+"/files/exists?path=/tmp/nope", nil, &ex)
	if ex.Exists {
		t.Fatal("exists true for a missing file")
	}
	var ent map[string]any
	s.must(200, "GET", base+"/files/info?path=/tmp/b/c/2.txt", nil, &ent)
	if ent["type"] != "file" || ent["size"].(float64) != 2 || ent["name"] != "2.txt" {
		t.Fatalf("info = %v", ent)
	}
	s.must(200, "PATCH", base+"/files", map[string]any{"old_path": "/tmp/b/1.txt", "new_path": "/tmp/b/one.txt"}, &ent)
	if ent["path"] != "/tmp/b/one.txt" {
		t.Fatalf("rename = %v", ent)
	}
	var mk struct {
		Created bool `json:"created"`
	}
	s.must(200, "POST", base+"/files/mkdir", map[string]any{"path": "/tmp/newdir/x"}, &mk)
	if !mk.Created {
		t.Fatal("mkdir created=false for a new dir")
	}
	s.must(200, "POST", base+"/files/mkdir", map[string]any{"path": "/tmp/newdir/x"}, &mk)
	if mk.Created {
		t.Fatal("mkdir created=true for an existing dir")
	}
	if code, _ := s.do("DELETE", base+"/files?path=/tmp/b", nil); code/100 != 2 {
		t.Fatalf("remove dir: %d", code)
	}
	s.must(200, "GET", base+"/files/exists?path=/tmp/b/one.txt", nil, &ex)
	if ex.Exists {
		t.Fatal("file exists after removing its directory")
	}
	// Files written as user belong to user.
	s.must(200, "POST", base+"/files", map[string]any{"path": "/home/user/u.txt", "data": "u", "username": "user"}, nil)
	if res := s.run(id, `python3 -c 'import os,pwd; print(pwd.getpwuid(os.stat("/home/user/u.txt").st_uid).pw_name)'`); res.Stdout != "user\n" {
		t.Logf("stat: %+v", res)
		t.Fatalf("owner of file written as user: %q", res.Stdout)
	}
}

// patternReader yields n deterministic pseudo-random bytes.
type patternReader struct {
	n, off int
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if len(b) > p.n-p.off {
		b = b[:p.n-p.off]
	}
	for i := range b {
		x := uint32(p.off + i)
		x ^= x >> 7
		x *= 2654435761
		b[i] = byte(x >> 13)
	}
	p.off += len(b)
	return len(b), nil
}

func TestBadInput(t *testing.T) {
	s := startServer(t)
	id := s.create(nil)
	base := "/sandboxes/" + id
	s.must(200, "POST", base+"/files", map[string]any{"path": "/tmp/keep.txt", "data": "precious"}, nil)

	cases := []struct {
		name         string
		method, path string
		body         any
		want         int
	}{
		{"unknown template", "POST", "/sandboxes", map[string]any{"template": "no-such-template"}, 404},
		{"negative timeout", "POST", "/sandboxes", map[string]any{"template": "python", "timeout": -5}, 400},
		{"malformed JSON", "POST", "/sandboxes", "{not json", 400},
		{"bad network entry", "POST", "/sandboxes", map[string]any{"template": "python", "network": map[string]any{"deny_out": []string{"10.0.0.0/33"}}}, 400},
		{"bad pii type", "POST", "/sandboxes", map[string]any{"template": "python", "security": map[string]any{"pii": map[string]any{"types": []string{"dna"}}}}, 400},
		{"nested quantifier", "POST", "/sandboxes", map[string]any{"template": "python", "security": map[string]any{"transformations": []map[string]any{{"match": "(a+)+", "replace": "x"}}}}, 400},
		{"unknown sandbox", "GET", "/sandboxes/sbx-000000000000", nil, 404},
		{"unknown sandbox command", "POST", "/sandboxes/sbx-000000000000/commands", map[string]any{"cmd": "true"}, 404},
		{"unknown pid wait", "GET", base + "/commands/999999/wait", nil, 404},
		{"unknown pid stdin", "POST", base + "/commands/999999/stdin", map[string]any{"data": "x"}, 404},
		{"missing file", "GET", base + "/files?path=/tmp/does-not-exist", nil, 404},
		{"read a directory", "GET", base + "/files?path=/tmp", nil, 400},
		{"malformed JSON to envd", "POST", base + "/files", "{", 400},
		{"oversized JSON", "POST", base + "/files", map[string]any{"path": "/tmp/keep.txt", "data": strings.Repeat("x", 11<<20)}, 413},
		{"negative set_timeout", "PATCH", base + "/timeout", map[string]any{"timeout": -1}, 400},
		{"unknown user", "POST", base + "/commands", map[string]any{"cmd": "true", "user": "nobody-here"}, 400},
	}
	var before struct {
		Sandboxes []info `json:"sandboxes"`
	}
	s.must(200, "GET", "/sandboxes", nil, &before)
	for _, c := range cases {
		code, b := s.do(c.method, c.path, c.body)
		if code != c.want {
			t.Errorf("%s: %s %s = %d %s, want %d", c.name, c.method, c.path, code, b, c.want)
			continue
		}
		var e struct {
			Message string `json:"message"`
			Code    string `json:"code"`
		}
		if err := json.Unmarshal(b, &e); err != nil || e.Message == "" {
			t.Errorf("%s: error body %q is not {message, code}", c.name, b)
		}
	}
	var after struct {
		Sandboxes []info `json:"sandboxes"`
	}
	s.must(200, "GET", "/sandboxes", nil, &after)
	if len(after.Sandboxes) != len(before.Sandboxes) {
		t.Errorf("bad input changed the sandbox list: %d -> %d", len(before.Sandboxes), len(after.Sandboxes))
	}
	if b := s.must(200, "GET", base+"/files?path=/tmp/keep.txt", nil, nil); string(b) != "precious" {
		t.Errorf("file changed by a rejected write: %q", b)
	}
	// Auth.
	req, _ := http.NewRequest("GET", s.base+"/sandboxes", nil)
	req.Header.Set("X-API-Key", "wrong")
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("wrong API key: %d, want 401", resp.StatusCode)
	}
}

func TestIdempotentCreate(t *testing.T) {
	s := startServer(t)
	key := "idem-" + randHex(6)
	body := map[string]any{"template": "python", "metadata": map[string]string{"k": key}}
	code, b1 := s.do("POST", "/sandboxes", body, "Idempotency-Key", key)
	if code != 201 {
		t.Fatalf("first create: %d %s", code, b1)
	}
	var first info
	json.Unmarshal(b1, &first)
	t.Cleanup(func() { s.do("DELETE", "/sandboxes/"+first.SandboxID, nil) })
	code, b2 := s.do("POST", "/sandboxes", body, "Idempotency-Key", key)
	var second info
	json.Unmarshal(b2, &second)
	if code != 201 || second.SandboxID != first.SandboxID {
		t.Fatalf("replayed create: %d %s, want the same sandbox %s", code, b2, first.SandboxID)
	}
	body["metadata"] = map[string]string{"k": "different"}
	if code, b := s.do("POST", "/sandboxes", body, "Idempotency-Key", key); code != 422 {
		t.Fatalf("reused key with another body: %d %s, want 422", code, b)
	}
}

func TestRestartCleansLeftovers(t *testing.T) {
	s := startServer(t)
	id := s.create(nil)
	s.run(id, "true")
	s.crash()
	if len(sandboxProcs(s.stateDir)) == 0 {
		t.Fatal("expected the crashed server's sandbox processes to still run")
	}
	s.start()
	var got info
	s.must(200, "GET", "/sandboxes/"+id, nil, &got)
	if got.State != "killed" {
		t.Fatalf("sandbox of the crashed server: state %q, want killed", got.State)
	}
	if procs := sandboxProcs(s.stateDir); len(procs) > 0 {
		t.Fatalf("restart left runsc processes of the crashed run: %v", procs)
	}
	// The server still works after cleaning up.
	id2 := s.create(nil)
	if res := s.run(id2, "echo ok"); res.Stdout != "ok\n" {
		t.Fatalf("after restart: %q", res.Stdout)
	}
}

var _ = exec.Command
var _ = context.Background
