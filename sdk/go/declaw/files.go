package declaw

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
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
