package declaw

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"
)

// Entry describes a file system entry in a sandbox.
type Entry struct {
	Name          string     `json:"name"`
	Path          string     `json:"path"`
	Type          string     `json:"type"` // file, dir or symlink
	Size          int64      `json:"size"`
	Mode          uint32     `json:"mode,omitempty"`
	Permissions   string     `json:"permissions,omitempty"`
	Owner         string     `json:"owner,omitempty"`
	Group         string     `json:"group,omitempty"`
	ModifiedTime  *time.Time `json:"modified_time,omitempty"`
	SymlinkTarget string     `json:"symlink_target,omitempty"`

	// Raw is the entry as the server sent it.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes the fields and keeps the raw object in Raw.
func (e *Entry) UnmarshalJSON(b []byte) error {
	type plain Entry
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*e = Entry(p)
	e.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// ListFiles lists the directory path down to depth levels (0: the
// server's default, 1). user is sent as username when set.
func (c *Client) ListFiles(ctx context.Context, id, path string, depth int, user string) ([]Entry, error) {
	d := ""
	if depth > 0 {
		d = strconv.Itoa(depth)
	}
	var raw json.RawMessage
	err := c.call(ctx, request{method: http.MethodGet, path: sandboxPath(id, "/files/list"),
		query: query("path", path, "depth", d, "username", user)}, &raw)
	if err != nil {
		return nil, err
	}
	var entries []Entry
	if len(raw) > 0 && raw[0] == '{' { // {"entries": [...]} is accepted too
		var w struct {
			Entries []Entry `json:"entries"`
		}
		err = json.Unmarshal(raw, &w)
		entries = w.Entries
	} else {
		err = json.Unmarshal(raw, &entries)
	}
	if err != nil {
		return nil, fmt.Errorf("GET /files/list: decode answer: %w", err)
	}
	if entries == nil {
		entries = []Entry{}
	}
	return entries, nil
}

// ReadFile opens the file at path (GET /files/raw); the caller reads the
// bytes as they arrive and closes the reader.
func (c *Client) ReadFile(ctx context.Context, id, path, user string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: sandboxPath(id, "/files/raw"),
		query: query("path", path, "username", user), accept: "*/*"})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// WriteResult is the answer of a file write.
type WriteResult struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// WriteFile uploads r to path (PUT /files/raw, streamed, up to 500 MiB);
// size is its length, or -1 when unknown (sent chunked). The write is
// atomic; missing parent directories are created.
func (c *Client) WriteFile(ctx context.Context, id, path, user string, r io.Reader, size int64) (*WriteResult, error) {
	var res WriteResult
	err := c.call(ctx, request{method: http.MethodPut, path: sandboxPath(id, "/files/raw"),
		query: query("path", path, "username", user), body: r, size: size}, &res)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// FileOptions are the optional settings of a file call.
type FileOptions struct {
	// User resolves relative paths (against their home) and owns what is
	// written; empty: the server's default (root). Sent as username.
	User string
}

func fileUser(opts []FileOptions) string {
	if len(opts) > 0 {
		return opts[0].User
	}
	return ""
}

// Read returns the whole file at path (GET /files/raw). Use ReadFile to
// stream a large file.
func (c *Client) Read(ctx context.Context, id, path string, opts ...FileOptions) ([]byte, error) {
	rc, err := c.ReadFile(ctx, id, path, fileUser(opts))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// Write writes data to path (PUT /files/raw with its length), atomically,
// creating missing parent directories. Use WriteFile to stream a reader.
func (c *Client) Write(ctx context.Context, id, path string, data []byte, opts ...FileOptions) (*WriteResult, error) {
	return c.WriteFile(ctx, id, path, fileUser(opts), bytes.NewReader(data), int64(len(data)))
}

// Stat describes the entry at path (a symlink itself, not its target);
// a missing path is ErrNotFound.
func (c *Client) Stat(ctx context.Context, id, path string, opts ...FileOptions) (*Entry, error) {
	var e Entry
	err := c.call(ctx, request{method: http.MethodGet, path: sandboxPath(id, "/files/info"),
		query: query("path", path, "username", fileUser(opts))}, &e)
	if err != nil {
		return nil, err
	}
	return &e, nil
}

// Exists reports whether something exists at path.
func (c *Client) Exists(ctx context.Context, id, path string, opts ...FileOptions) (bool, error) {
	var out struct {
		Exists bool `json:"exists"`
	}
	err := c.call(ctx, request{method: http.MethodGet, path: sandboxPath(id, "/files/exists"),
		query: query("path", path, "username", fileUser(opts))}, &out)
	return out.Exists, err
}

// MakeDir creates the directory path and its parents; created is false
// when it already existed. Something else in the way is ErrConflict.
func (c *Client) MakeDir(ctx context.Context, id, path string, opts ...FileOptions) (created bool, err error) {
	var out struct {
		Created bool `json:"created"`
	}
	body := map[string]string{"path": path}
	if u := fileUser(opts); u != "" {
		body["username"] = u
	}
	err = c.call(ctx, request{method: http.MethodPost, path: sandboxPath(id, "/files/mkdir"), json: body}, &out)
	return out.Created, err
}

// Rename moves oldPath to newPath and describes the entry at newPath.
func (c *Client) Rename(ctx context.Context, id, oldPath, newPath string, opts ...FileOptions) (*Entry, error) {
	body := map[string]string{"old_path": oldPath, "new_path": newPath}
	if u := fileUser(opts); u != "" {
		body["username"] = u
	}
	var e Entry
	if err := c.call(ctx, request{method: http.MethodPatch, path: sandboxPath(id, "/files"), json: body}, &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// Remove deletes the file or directory (recursively) at path.
func (c *Client) Remove(ctx context.Context, id, path string, opts ...FileOptions) error {
	return c.call(ctx, request{method: http.MethodDelete, path: sandboxPath(id, "/files"),
		query: query("path", path, "username", fileUser(opts))}, nil)
}

// FileData is one file of WriteFiles.
type FileData struct {
	Path string
	Data []byte
}

// maxBatchBytes bounds the text sent in one batch (the API takes JSON
// bodies up to 10 MiB); larger or binary files go one by one, raw.
const maxBatchBytes = 8 << 20

// WriteFiles writes several files, in order, and returns their results
// in order. Runs of small UTF-8 files go together in one request (POST
// /files/batch, which stops at the first failure: earlier files stay
// written); binary and large ones are uploaded raw, one by one.
func (c *Client) WriteFiles(ctx context.Context, id string, files []FileData, opts ...FileOptions) ([]WriteResult, error) {
	user := fileUser(opts)
	out := make([]WriteResult, 0, len(files))
	type text struct {
		Path string `json:"path"`
		Data string `json:"data"`
	}
	var batch []text
	total := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		body := map[string]any{"files": batch}
		if user != "" {
			body["username"] = user
		}
		var raw json.RawMessage
		if err := c.call(ctx, request{method: http.MethodPost, path: sandboxPath(id, "/files/batch"), json: body}, &raw); err != nil {
			return err
		}
		var res []WriteResult
		var err error
		if len(raw) > 0 && raw[0] == '{' { // {"files": [...]} is accepted too
			var w struct {
				Files []WriteResult `json:"files"`
			}
			err = json.Unmarshal(raw, &w)
			res = w.Files
		} else {
			err = json.Unmarshal(raw, &res)
		}
		if err != nil {
			return fmt.Errorf("POST /files/batch: decode answer: %w", err)
		}
		if len(res) != len(batch) {
			return fmt.Errorf("POST /files/batch: %d results for %d files", len(res), len(batch))
		}
		out = append(out, res...)
		batch, total = nil, 0
		return nil
	}
	for _, f := range files {
		if utf8.Valid(f.Data) && len(f.Data) <= maxBatchBytes {
			if total+len(f.Data) > maxBatchBytes {
				if err := flush(); err != nil {
					return nil, err
				}
			}
			batch = append(batch, text{f.Path, string(f.Data)})
			total += len(f.Data)
			continue
		}
		if err := flush(); err != nil {
			return nil, err
		}
		res, err := c.WriteFile(ctx, id, f.Path, user, bytes.NewReader(f.Data), int64(len(f.Data)))
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", f.Path, err)
		}
		out = append(out, *res)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}
