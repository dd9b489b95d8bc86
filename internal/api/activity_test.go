package api

import (
	"net/url"
	"testing"
)

func TestDescribe(t *testing.T) {
	q := func(s string) url.Values { v, _ := url.ParseQuery(s); return v }
	for _, tc := range []struct {
		method, rest, query, body string
		typ, key, want            string
	}{
		{"POST", "/commands", "", `{"cmd":"ls -l","user":"user"}`, "command.run", "cmd", "ls -l"},
		{"POST", "/commands/stream", "", `{"cmd":"make"}`, "command.run", "cmd", "make"},
		{"POST", "/pty", "", `{"size":{"cols":80,"rows":24}}`, "command.pty", "", ""},
		{"DELETE", "/commands/12", "", ``, "command.kill", "target", "/commands/12"},
		{"GET", "/files", "path=/etc/passwd", ``, "file.read", "path", "/etc/passwd"},
		{"GET", "/files/raw", "path=/tmp/a.bin", ``, "file.read", "path", "/tmp/a.bin"},
		{"POST", "/files", "", `{"path":"/tmp/x","data":"secret"}`, "file.write", "path", "/tmp/x"},
		{"PUT", "/files/raw", "path=/tmp/big", ``, "file.write", "path", "/tmp/big"},
		{"DELETE", "/files", "path=/tmp/x", ``, "file.remove", "path", "/tmp/x"},
		{"PATCH", "/files", "", `{"old_path":"/a","new_path":"/b"}`, "file.rename", "new_path", "/b"},
		{"POST", "/files/mkdir", "", `{"path":"/d"}`, "file.mkdir", "path", "/d"},
		{"GET", "/commands", "", ``, "", "", ""},
		{"GET", "/files/list", "path=/", ``, "", "", ""},
	} {
		typ, data := describe(tc.method, tc.rest, q(tc.query), []byte(tc.body), 200)
		if typ != tc.typ {
			t.Errorf("describe(%s %s) type = %q, want %q", tc.method, tc.rest, typ, tc.typ)
			continue
		}
		if tc.key != "" && data[tc.key] != tc.want {
			t.Errorf("describe(%s %s)[%s] = %v, want %q", tc.method, tc.rest, tc.key, data[tc.key], tc.want)
		}
		if data != nil && data["data"] != nil {
			t.Errorf("describe(%s %s) recorded the file content", tc.method, tc.rest)
		}
	}
}
