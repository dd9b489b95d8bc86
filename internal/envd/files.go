package envd

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/declaw/declaw/internal/envd/filesystem"
	"github.com/declaw/declaw/internal/envd/sysuser"
	"github.com/declaw/declaw/internal/envdapi"
)

// target is a request path resolved for a user.
type target struct {
	path  string
	user  *sysuser.User
	owner filesystem.Owner
}

// resolve resolves p for the named user (default root): relative paths
// are taken relative to the user's home.
func (s *Server) resolve(p, username string) (target, error) {
	u, err := s.lookupUser(username)
	if err != nil {
		return target{}, err
	}
	abs, err := filesystem.Resolve(p, u.Home)
	if err != nil {
		return target{}, err
	}
	return target{path: abs, user: u, owner: filesystem.Owner{Uid: u.Uid, Gid: u.Gid}}, nil
}

// queryTarget resolves the ?path= and ?username= query parameters.
func (s *Server) queryTarget(r *http.Request) (target, error) {
	q := r.URL.Query()
	return s.resolve(q.Get("path"), q.Get("username"))
}

// handleRead is GET /files and GET /files/raw: the file's bytes, streamed.
func (s *Server) handleRead(w http.ResponseWriter, r *http.Request) {
	t, err := s.queryTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	f, st, err := filesystem.OpenFile(t.path)
	if err != nil {
		writeError(w, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	if st.Size() > 0 {
		// Files like those in /proc report 0 and are sent chunked.
		w.Header().Set("Content-Length", strconv.FormatInt(st.Size(), 10))
		w.WriteHeader(http.StatusOK)
		io.CopyN(w, f, st.Size())
		return
	}
	w.WriteHeader(http.StatusOK)
	io.Copy(w, f)
}

// handleWrite is POST /files: a text write.
func (s *Server) handleWrite(w http.ResponseWriter, r *http.Request) {
	var req envdapi.WriteRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Username == "" {
		req.Username = r.URL.Query().Get("username")
	}
	res, err := s.writeText(req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) writeText(req envdapi.WriteRequest) (envdapi.WriteResult, error) {
	t, err := s.resolve(req.Path, req.Username)
	if err != nil {
		return envdapi.WriteResult{}, err
	}
	n, err := filesystem.WriteFile(t.path, strings.NewReader(req.Data), t.owner)
	if err != nil {
		return envdapi.WriteResult{}, err
	}
	return envdapi.WriteResult{Path: t.path, Size: n}, nil
}

// handleWriteRaw is PUT /files/raw: the body, byte-exact and streamed to
// disk, up to envdapi.MaxRawUpload bytes.
func (s *Server) handleWriteRaw(w http.ResponseWriter, r *http.Request) {
	t, err := s.queryTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if r.ContentLength > envdapi.MaxRawUpload {
		writeError(w, &http.MaxBytesError{Limit: envdapi.MaxRawUpload})
		return
	}
	body := http.MaxBytesReader(w, r.Body, envdapi.MaxRawUpload)
	n, err := filesystem.WriteFile(t.path, body, t.owner)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, envdapi.WriteResult{Path: t.path, Size: n})
}

// handleWriteBatch is POST /files/batch: text writes in order. It stops at
// the first failure (earlier files stay written).
func (s *Server) handleWriteBatch(w http.ResponseWriter, r *http.Request) {
	var req envdapi.BatchWriteRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	out := make([]envdapi.WriteResult, 0, len(req.Files))
	for _, f := range req.Files {
		if f.Username == "" {
			f.Username = req.Username
		}
		res, err := s.writeText(f)
		if err != nil {
			writeError(w, err)
			return
		}
		out = append(out, res)
	}
	writeJSON(w, http.StatusOK, out)
}

// handleListDir is GET /files/list?path=&depth=.
func (s *Server) handleListDir(w http.ResponseWriter, r *http.Request) {
	t, err := s.queryTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	depth := 1
	if q := r.URL.Query().Get("depth"); q != "" {
		if depth, err = strconv.Atoi(q); err != nil || depth < 1 {
			writeError(w, badInput("depth must be a positive integer, got %q", q))
			return
		}
	}
	ents, err := s.files.List(t.path, depth)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ents)
}

func (s *Server) handleExists(w http.ResponseWriter, r *http.Request) {
	t, err := s.queryTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, envdapi.ExistsResult{Exists: filesystem.Exists(t.path)})
}

func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) {
	t, err := s.queryTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	e, err := s.files.Stat(t.path)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

func (s *Server) handleRemove(w http.ResponseWriter, r *http.Request) {
	t, err := s.queryTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := filesystem.Remove(t.path); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleRename(w http.ResponseWriter, r *http.Request) {
	var req envdapi.RenameRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Username == "" {
		req.Username = r.URL.Query().Get("username")
	}
	from, err := s.resolve(req.OldPath, req.Username)
	if err != nil {
		writeError(w, err)
		return
	}
	to, err := s.resolve(req.NewPath, req.Username)
	if err != nil {
		writeError(w, err)
		return
	}
	e, err := s.files.Rename(from.path, to.path, to.owner)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

// handleMkdir is POST /files/mkdir with a MkdirRequest body or, without
// a body, the ?path= and ?username= query parameters.
func (s *Server) handleMkdir(w http.ResponseWriter, r *http.Request) {
	body, err := readJSONBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req envdapi.MkdirRequest
	if len(bytes.TrimSpace(body)) > 0 {
		if err := unmarshal(body, &req); err != nil {
			writeError(w, err)
			return
		}
	}
	q := r.URL.Query()
	if req.Path == "" {
		req.Path = q.Get("path")
	}
	if req.Username == "" {
		req.Username = q.Get("username")
	}
	t, err := s.resolve(req.Path, req.Username)
	if err != nil {
		writeError(w, err)
		return
	}
	created, err := filesystem.MakeDir(t.path, t.owner)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, envdapi.MkdirResult{Created: created})
}
