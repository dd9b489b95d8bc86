package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// activity records what a forwarded call did, for the sandbox's audit
// trail: commands run (cmd, user, cwd), processes killed, files read,
// written, renamed or removed. The request's JSON body is teed (up to a
// cap) while it streams to envd; nothing is buffered in its way.
type activity struct {
	body *capBuffer
}

// auditCap bounds how much of a forwarded JSON body is kept to describe it.
const auditCap = 64 << 10

type capBuffer struct{ bytes.Buffer }

func (b *capBuffer) Write(p []byte) (int, error) {
	if room := auditCap - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// statusWriter remembers the status of a forwarded answer. It keeps the
// optional interfaces ReverseProxy uses (Flusher through Unwrap).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// describe turns a forwarded call into an audit event type and data, or
// "" when it is not worth recording (reads of process lists, streams).
func describe(method, rest string, query map[string][]string, body []byte, status int) (string, map[string]any) {
	q := func(k string) string {
		if v := query[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	var b map[string]any
	if len(body) > 0 {
		json.Unmarshal(body, &b)
	}
	data := map[string]any{"status": status}
	pick := func(keys ...string) {
		for _, k := range keys {
			if v, ok := b[k]; ok && v != nil && v != "" {
				data[k] = v
			}
		}
	}
	switch {
	case method == http.MethodPost && (rest == "/commands" || rest == "/commands/stream"):
		pick("cmd", "background", "user", "cwd", "timeout", "tag")
		return "command.run", data
	case method == http.MethodPost && rest == "/pty":
		pick("cmd", "user", "cwd")
		return "command.pty", data
	case method == http.MethodPost && rest == "/stdio":
		pick("cmd", "user", "cwd")
		return "command.stdio", data
	case method == http.MethodDelete && (strings.HasPrefix(rest, "/commands/") || strings.HasPrefix(rest, "/pty/") || strings.HasPrefix(rest, "/stdio/")):
		data["target"] = rest
		return "command.kill", data
	case strings.HasPrefix(rest, "/files"):
		path := q("path")
		if path != "" {
			data["path"] = path
		}
		if u := q("username"); u != "" {
			data["user"] = u
		}
		switch {
		case method == http.MethodGet && (rest == "/files" || rest == "/files/raw"):
			return "file.read", data
		case method == http.MethodPost && rest == "/files", method == http.MethodPut && rest == "/files/raw":
			pick("path", "username")
			return "file.write", data
		case method == http.MethodPost && rest == "/files/batch":
			if files, ok := b["files"].([]any); ok {
				var paths []any
				for _, f := range files {
					if m, ok := f.(map[string]any); ok {
						paths = append(paths, m["path"])
					}
				}
				data["paths"] = paths
			}
			return "file.write", data
		case method == http.MethodDelete && rest == "/files":
			return "file.remove", data
		case method == http.MethodPatch && rest == "/files":
			pick("old_path", "new_path")
			return "file.rename", data
		case method == http.MethodPost && rest == "/files/mkdir":
			pick("path")
			return "file.mkdir", data
		}
	}
	return "", nil
}

// teeBody makes r's body also fill a capped buffer (JSON bodies only).
func (a *activity) teeBody(r *http.Request) {
	a.body = &capBuffer{}
	if r.Body != nil && r.Body != http.NoBody && !isRawUpload(r) {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.TeeReader(r.Body, a.body), r.Body}
	}
}
