package declaw

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Volume is a team-owned tarball volume (/volumes).
type Volume struct {
	VolumeID      string            `json:"volume_id"`
	OwnerID       string            `json:"owner_id"`
	Name          string            `json:"name"`
	BlobKey       string            `json:"blob_key,omitempty"`
	SizeBytes     int64             `json:"size_bytes"`
	Files         int               `json:"files"`
	UnpackedBytes int64             `json:"unpacked_bytes"`
	ContentType   string            `json:"content_type,omitempty"`
	Backend       string            `json:"backend,omitempty"`
	QuotaBytes    int64             `json:"quota_bytes,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	CreatedAt     time.Time         `json:"created_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
}

// VolumeAttachment attaches a volume at create: Mode "" or "copy" unpacks
// it at MountPath ("mount" and "mount-ro" are not served yet).
type VolumeAttachment struct {
	VolumeID  string `json:"volume_id"`
	MountPath string `json:"mount_path"`
	Mode      string `json:"mode,omitempty"`
	Subpath   string `json:"subpath,omitempty"`
}

// CreateVolume uploads a tar.gz (size bytes, -1 if unknown) as volume name.
func (c *Client) CreateVolume(ctx context.Context, name string, targz io.Reader, size int64) (*Volume, error) {
	var v Volume
	err := c.call(ctx, request{method: http.MethodPost, path: "/volumes", query: query("name", name), body: targz, size: size,
		header: http.Header{"Content-Type": {"application/gzip"}}}, &v)
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// ListVolumes returns the caller's team's volumes, oldest first.
func (c *Client) ListVolumes(ctx context.Context) ([]Volume, error) {
	var out struct {
		Volumes []Volume `json:"volumes"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/volumes"}, &out); err != nil {
		return nil, err
	}
	if out.Volumes == nil {
		out.Volumes = []Volume{}
	}
	return out.Volumes, nil
}

// GetVolume returns one volume.
func (c *Client) GetVolume(ctx context.Context, id string) (*Volume, error) {
	var v Volume
	if err := c.call(ctx, request{method: http.MethodGet, path: "/volumes/" + url.PathEscape(id)}, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// DownloadVolume opens a volume's tar.gz; the caller closes it.
func (c *Client) DownloadVolume(ctx context.Context, id string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/volumes/" + url.PathEscape(id) + "/download", accept: "*/*"})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// DeleteVolume deletes a volume (409 volume_in_use while attached to a live sandbox).
func (c *Client) DeleteVolume(ctx context.Context, id string) error {
	return c.call(ctx, request{method: http.MethodDelete, path: "/volumes/" + url.PathEscape(id)}, nil)
}
