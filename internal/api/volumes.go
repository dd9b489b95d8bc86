package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/sandbox"
	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/tenancy"
	"github.com/declaw/declaw/internal/volume"
)

// Volumes: /volumes (tarball volumes, volume.Manager) and their
// attachment to sandboxes at create (mode copy).

func (s *Server) volumesOn(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.Volumes == nil {
		s.writeError(w, r, &Error{Status: http.StatusNotImplemented, Code: "not_implemented", Message: "volumes are not configured on this server"})
		return false
	}
	return true
}

func volumeNotFound(id string) error { return fmt.Errorf("volume %s: %w", id, volume.ErrNotFound) }

// volumeTeam is the ownedRoutes lookup for /volumes/{id}.
func (s *Server) volumeTeam(ctx context.Context, id string) (string, error) {
	if s.cfg.Volumes == nil {
		return "", volumeNotFound(id)
	}
	v, err := s.cfg.Volumes.Get(ctx, id)
	if err != nil {
		return "", err
	}
	return tenancy.Owner(v.Team), nil
}

// createVolume serves POST /volumes?name=N with a tar.gz body.
func (s *Server) createVolume(w http.ResponseWriter, r *http.Request) {
	if !s.volumesOn(w, r) {
		return
	}
	max := s.cfg.Volumes.MaxUploadBytes()
	if r.ContentLength > max {
		s.writeError(w, r, &http.MaxBytesError{Limit: max})
		return
	}
	body := http.MaxBytesReader(w, r.Body, max)
	v, err := s.cfg.Volumes.Create(r.Context(), tenancy.Owner(tenancy.TeamOf(r.Context())), r.URL.Query().Get("name"), body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) listVolumes(w http.ResponseWriter, r *http.Request) {
	if !s.volumesOn(w, r) {
		return
	}
	vs, err := s.cfg.Volumes.List(r.Context(), tenancy.Owner(tenancy.TeamOf(r.Context())), false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"volumes": vs})
}

func (s *Server) getVolume(w http.ResponseWriter, r *http.Request) {
	if !s.volumesOn(w, r) {
		return
	}
	v, err := s.cfg.Volumes.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) downloadVolume(w http.ResponseWriter, r *http.Request) {
	if !s.volumesOn(w, r) {
		return
	}
	id := r.PathValue("id")
	v, err := s.cfg.Volumes.Get(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rc, err := s.cfg.Volumes.Open(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/gzip")
	if !s.cfg.Volumes.Live(id) { // a live volume is packed as it is sent
		w.Header().Set("Content-Length", strconv.FormatInt(v.SizeBytes, 10))
	}
	w.Header().Set("Content-Disposition", `attachment; filename="`+id+`.tar.gz"`)
	io.Copy(w, rc)
}

func (s *Server) deleteVolume(w http.ResponseWriter, r *http.Request) {
	if !s.volumesOn(w, r) {
		return
	}
	err := s.cfg.Volumes.Delete(r.Context(), r.PathValue("id"), func(sb string) bool {
		info, err := s.cfg.Sandboxes.Get(r.Context(), sb)
		return err != nil && !errors.Is(err, sandbox.ErrNotFound) || err == nil && info.State != sandbox.StateKilled
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// attachment is one entry of the create body's "volumes".
type attachment struct {
	VolumeID  string `json:"volume_id"`
	MountPath string `json:"mount_path"`
	Mode      string `json:"mode,omitempty"`
	Subpath   string `json:"subpath,omitempty"`
	size      int64
}

// parseAttachments reads and checks the "volumes" of a create body: each
// volume exists and is the caller's, each mount path is a clean absolute
// path outside /proc, /sys and /dev.
func (s *Server) parseAttachments(ctx context.Context, raw []byte) ([]attachment, error) {
	var body struct {
		Volumes []attachment `json:"volumes"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, err
	}
	if len(body.Volumes) == 0 {
		return nil, nil
	}
	if s.cfg.Volumes == nil {
		return nil, &Error{Status: http.StatusNotImplemented, Code: "not_implemented", Message: "volumes are not configured on this server"}
	}
	seen := map[string]bool{}
	for i := range body.Volumes {
		a := &body.Volumes[i]
		switch a.Mode {
		case "", "copy":
			if a.Subpath != "" {
				return nil, badRequest("invalid_volume", "subpath is for live mounts only, not mode copy")
			}
		case "mount", "mount-ro":
			if !s.cfg.Sandboxes.LiveMounts() {
				return nil, &Error{Status: http.StatusNotImplemented, Code: "not_implemented",
					Message: "live volume mounts (mode " + a.Mode + ") need the gvisor runtime; this server runs microVMs: attach with mode copy"}
			}
			if _, err := volume.CleanRel(a.Subpath); err != nil {
				return nil, err
			}
		default:
			return nil, badRequest("invalid_volume", fmt.Sprintf("mode %q is not copy, mount or mount-ro", a.Mode))
		}
		mp := a.MountPath
		if !strings.HasPrefix(mp, "/") || strings.ContainsAny(mp, "\x00\n") || path.Clean(mp) != mp || mp == "/" {
			return nil, badRequest("invalid_volume", fmt.Sprintf("mount_path %q must be a clean absolute path other than /", mp))
		}
		for _, p := range []string{"/proc", "/sys", "/dev"} {
			if mp == p || strings.HasPrefix(mp, p+"/") {
				return nil, badRequest("invalid_volume", "mount_path may not be under "+p)
			}
		}
		if seen[mp] {
			return nil, badRequest("invalid_volume", "two volumes attached at "+mp)
		}
		seen[mp] = true
		v, err := s.cfg.Volumes.Get(ctx, a.VolumeID)
		if err == nil && !tenancy.Visible(ctx, tenancy.Owner(v.Team)) {
			err = volumeNotFound(a.VolumeID)
		}
		if err != nil {
			return nil, err
		}
		a.size = v.SizeBytes
	}
	return body.Volumes, nil
}

// hydrate unpacks each attached volume into sandbox id at its mount path:
// the (sanitised) archive is uploaded into the sandbox and unpacked there
// by tar, as root, then handed to the sandbox user.
func (s *Server) hydrate(ctx context.Context, id string, atts []attachment) error {
	for _, a := range atts {
		s.cfg.Volumes.Attach(a.VolumeID, id)
	}
	t, err := s.cfg.Sandboxes.Envd(ctx, id)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: s.cfg.Sandboxes.Transport()}
	send := func(method, p string, body io.Reader, size int64, ctype string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, method, t.BaseURL.String()+p, body)
		if err != nil {
			return nil, err
		}
		req.ContentLength = size
		req.Header.Set(envdapi.AccessTokenHeader, t.Token)
		req.Header.Set("Content-Type", ctype)
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode/100 != 2 {
			return nil, fmt.Errorf("envd %s %s: %d %s", method, p, resp.StatusCode, b)
		}
		return b, nil
	}
	run := func(a attachment, cmd string) error {
		timeout := float64(600)
		in, _ := json.Marshal(envdapi.CommandRequest{Cmd: cmd, User: "root", Timeout: &timeout})
		b, err := send(http.MethodPost, "/commands", bytes.NewReader(in), int64(len(in)), "application/json")
		if err != nil {
			return fmt.Errorf("volume %s: %w", a.VolumeID, err)
		}
		var res envdapi.CommandResult
		if err := json.Unmarshal(b, &res); err != nil {
			return fmt.Errorf("volume %s: %w", a.VolumeID, err)
		}
		if res.ExitCode != 0 {
			return &Error{Status: http.StatusUnprocessableEntity, Code: "volume_unpack_failed",
				Message: fmt.Sprintf("volume %s could not be set up at %s: %s", a.VolumeID, a.MountPath, strings.TrimSpace(res.Stderr))}
		}
		return nil
	}
	for _, a := range atts {
		if a.live() {
			// Bound at boot (liveMounts); a writable one is handed to the
			// sandbox user, as a copy is.
			if a.Mode == "mount" {
				if err := run(a, "if id -u user >/dev/null 2>&1; then chown -R user:user -- "+shellQuote(a.MountPath)+"; fi"); err != nil {
					return err
				}
			}
			continue
		}
		rc, err := s.cfg.Volumes.Open(ctx, a.VolumeID)
		if err != nil {
			return err
		}
		tmp := "/tmp/.declaw-volume-" + a.VolumeID + ".tar.gz"
		size := a.size
		if s.cfg.Volumes.Live(a.VolumeID) {
			size = -1 // packed from its live directory as it is sent
		}
		_, err = send(http.MethodPut, "/files/raw?"+url.Values{"path": {tmp}, "username": {"root"}}.Encode(), rc, size, "application/octet-stream")
		rc.Close()
		if err != nil {
			return fmt.Errorf("volume %s: upload into the sandbox: %w", a.VolumeID, err)
		}
		m, f := shellQuote(a.MountPath), shellQuote(tmp)
		cmd := "set -e; mkdir -p -- " + m + "; tar -xzf " + f + " -C " + m + " --no-same-owner; rm -f -- " + f +
			"; if id -u user >/dev/null 2>&1; then chown -R user:user -- " + m + "; fi"
		if err := run(a, cmd); err != nil {
			return err
		}
	}
	return nil
}

func (a attachment) live() bool { return a.Mode == "mount" || a.Mode == "mount-ro" }

// liveMounts resolves the live attachments of atts to bind mounts for the
// sandbox spec. The volumes are held against deletion until done is
// called with the new sandbox's id ("" when it was not created).
func (s *Server) liveMounts(ctx context.Context, atts []attachment) (mounts []sandboxrt.Mount, done func(sandbox string), err error) {
	var (
		reqs []volume.MountReq
		live []attachment
	)
	for _, a := range atts {
		if a.live() {
			reqs = append(reqs, volume.MountReq{ID: a.VolumeID, Subpath: a.Subpath, RW: a.Mode == "mount"})
			live = append(live, a)
		}
	}
	if len(reqs) == 0 {
		return nil, func(string) {}, nil
	}
	alive := func(sb string) bool {
		info, err := s.cfg.Sandboxes.Get(ctx, sb)
		return err != nil && !errors.Is(err, sandbox.ErrNotFound) || err == nil && info.State != sandbox.StateKilled
	}
	dirs, done, err := s.cfg.Volumes.MountDirs(ctx, reqs, alive)
	if errors.Is(err, volume.ErrNoLiveMounts) {
		err = &Error{Status: http.StatusNotImplemented, Code: "not_implemented", Message: err.Error()}
	}
	if err != nil {
		return nil, nil, err
	}
	for i, a := range live {
		mounts = append(mounts, sandboxrt.Mount{Source: dirs[i], Target: a.MountPath, ReadOnly: a.Mode == "mount-ro"})
	}
	return mounts, done, nil
}

// attachVolumes hydrates atts into the new sandbox id, killing it when
// that fails (a sandbox without the data it asked for is no use).
func (s *Server) attachVolumes(ctx context.Context, id string, atts []attachment) error {
	if len(atts) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	if err := s.hydrate(ctx, id, atts); err != nil {
		if _, kerr := s.cfg.Sandboxes.Kill(context.WithoutCancel(ctx), id); kerr != nil {
			s.logf("api: kill %s after a failed volume attach: %v", id, kerr)
		}
		return err
	}
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
