package cli

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFiles(t *testing.T) {
	local := filepath.Join(t.TempDir(), "local.bin")
	blob := []byte("\x00\x01binary\xff\n")
	if err := os.WriteFile(local, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	entries := `[{"name":"a.txt","path":"/tmp/a.txt","type":"file","size":5,"mode":420,"permissions":"-rw-r--r--","owner":"root","group":"root","modified_time":"2026-11-27T04:29:35Z"},` +
		`{"name":"d","path":"/tmp/d","type":"dir","size":4096,"permissions":"drwxr-xr-x","owner":"user","group":"user","modified_time":"2026-11-27T04:30:00Z"},` +
		`{"name":"l","path":"/tmp/l","type":"symlink","size":5,"permissions":"Lrwxrwxrwx","owner":"root","group":"root","modified_time":"2026-11-27T04:31:00Z","symlink_target":"/tmp/a.txt"}]`
	tests := []struct {
		name       string
		args       []string
		stdin      string
		handle     http.HandlerFunc
		wantReq    string
		wantStdout string
		wantStderr string
		wantCode   int
		check      func(t *testing.T, r fakeReq)
	}{
		{
			name:    "ls",
			args:    []string{"sandbox", "files", "ls", "sbx-1", "/tmp", "--depth", "2"},
			handle:  answer(200, entries),
			wantReq: `GET /sandboxes/sbx-1/files/list?path=/tmp&depth=2`,
			wantStdout: "-rw-r--r-- root root 5    2026-11-27T04:29:35Z /tmp/a.txt\n" +
				"drwxr-xr-x user user 4096 2026-11-27T04:30:00Z /tmp/d\n" +
				"Lrwxrwxrwx root root 5    2026-11-27T04:31:00Z /tmp/l -> /tmp/a.txt\n",
		},
		{
			name:       "ls json, user, wrapped answer",
			args:       []string{"sbx", "files", "ls", "--json", "--user", "user", "sbx-1", "my dir"},
			handle:     answer(200, `{"entries":[{"name":"x","path":"/home/user/my dir/x","type":"file","size":1}]}`),
			wantReq:    `GET /sandboxes/sbx-1/files/list?path=my%20dir&depth=1&username=user`,
			wantStdout: `[{"name":"x","path":"/home/user/my dir/x","type":"file","size":1}]` + "\n",
		},
		{
			name:       "ls missing",
			args:       []string{"sandbox", "files", "ls", "sbx-1", "/nope"},
			handle:     answer(404, `{"message":"/nope: no such file or directory","code":"not_found"}`),
			wantReq:    `GET /sandboxes/sbx-1/files/list?path=/nope&depth=1`,
			wantStderr: "declaw sandbox files ls: /nope: no such file or directory (404 not_found)\n",
			wantCode:   1,
		},
		{
			name:       "read raw bytes",
			args:       []string{"sandbox", "files", "read", "sbx-1", "/tmp/blob"},
			handle:     answer(200, string(blob)),
			wantReq:    `GET /sandboxes/sbx-1/files/raw?path=/tmp/blob`,
			wantStdout: string(blob),
			check: func(t *testing.T, r fakeReq) {
				if got := r.Header.Get("Accept"); got != "*/*" {
					t.Errorf("Accept = %q, want */*", got)
				}
			},
		},
		{
			name:       "read a directory",
			args:       []string{"sandbox", "files", "read", "sbx-1", "/tmp"},
			handle:     answer(400, `{"message":"/tmp is a directory","code":"is_directory"}`),
			wantReq:    `GET /sandboxes/sbx-1/files/raw?path=/tmp`,
			wantStderr: "declaw sandbox files read: /tmp is a directory (400 is_directory)\n",
			wantCode:   1,
		},
		{
			name:       "write from stdin, chunked",
			args:       []string{"sandbox", "files", "write", "sbx-1", "/tmp/a.txt"},
			stdin:      "hello",
			handle:     answer(200, `{"path":"/tmp/a.txt","size":5}`),
			wantReq:    `PUT /sandboxes/sbx-1/files/raw?path=/tmp/a.txt hello`,
			wantStdout: "wrote 5 bytes to /tmp/a.txt\n",
			check: func(t *testing.T, r fakeReq) {
				if !r.Chunked {
					t.Errorf("stdin upload not chunked (Content-Length %d)", r.Length)
				}
				if got := r.Header.Get("Content-Type"); got != "application/octet-stream" {
					t.Errorf("Content-Type = %q", got)
				}
			},
		},
		{
			name:       "write from a file with its length, json",
			args:       []string{"sandbox", "files", "write", "sbx-1", "/tmp/b.bin", local, "--json", "--user", "user"},
			handle:     answer(200, `{"path":"/tmp/b.bin","size":11}`),
			wantReq:    `PUT /sandboxes/sbx-1/files/raw?path=/tmp/b.bin&username=user ` + string(blob),
			wantStdout: `{"path":"/tmp/b.bin","size":11}` + "\n",
			check: func(t *testing.T, r fakeReq) {
				if r.Chunked || r.Length != int64(len(blob)) || !bytes.Equal(r.Body, blob) {
					t.Errorf("file upload: chunked %v, length %d, body %q; want length %d", r.Chunked, r.Length, r.Body, len(blob))
				}
			},
		},
		{
			name:       "write from stdin with -",
			args:       []string{"sandbox", "files", "write", "sbx-1", "/tmp/e", "-"},
			stdin:      "",
			handle:     answer(200, `{"path":"/tmp/e","size":0}`),
			wantReq:    `PUT /sandboxes/sbx-1/files/raw?path=/tmp/e`,
			wantStdout: "wrote 0 bytes to /tmp/e\n",
		},
		{
			name:       "write a missing local file",
			args:       []string{"sandbox", "files", "write", "sbx-1", "/tmp/x", "/nonexistent/file"},
			wantStderr: "declaw sandbox files write: open /nonexistent/file: no such file or directory\n",
			wantCode:   1,
		},
		{
			name:       "unknown files verb",
			args:       []string{"sandbox", "files", "chmod"},
			wantStderr: `declaw sandbox files: unknown command "chmod"`,
			wantCode:   2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t, tt.handle)
			stdout, stderr, code := runCLI(t, f, strings.NewReader(tt.stdin), nil, tt.args...)
			if code != tt.wantCode {
				t.Errorf("run(%q) = exit %d, want %d; stderr: %s", tt.args, code, tt.wantCode, stderr)
			}
			if stdout != tt.wantStdout {
				t.Errorf("run(%q) stdout:\n%q\nwant:\n%q", tt.args, stdout, tt.wantStdout)
			}
			if tt.wantCode == 2 && !strings.Contains(stderr, tt.wantStderr) || tt.wantCode != 2 && stderr != tt.wantStderr {
				t.Errorf("run(%q) stderr = %q, want %q", tt.args, stderr, tt.wantStderr)
			}
			reqs := f.requests()
			if tt.wantReq == "" {
				if len(reqs) != 0 {
					t.Errorf("run(%q) sent %q, want no request", tt.args, f.requestLines())
				}
				return
			}
			if len(reqs) != 1 || reqs[0].String() != tt.wantReq {
				t.Fatalf("run(%q) requests = %q, want [%q]", tt.args, f.requestLines(), tt.wantReq)
			}
			if tt.check != nil {
				tt.check(t, reqs[0])
			}
		})
	}
}
