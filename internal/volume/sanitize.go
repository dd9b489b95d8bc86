package volume

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Stats describes a sanitised archive.
type Stats struct {
	Files   int   // regular files kept
	Dirs    int   // directories kept
	Dropped int   // links, devices, FIFOs and other entries dropped
	Bytes   int64 // unpacked size of the regular files
}

// Sanitize reads a tar.gz from in and writes to out a tar.gz holding only
// its directories and regular files, under clean relative names, with
// modes limited to the permission bits, owned by 0:0. An entry whose name
// is absolute or climbs out (".."), a malformed archive, or more than
// maxUnpacked bytes of file content fail it.
func Sanitize(in io.Reader, out io.Writer, maxUnpacked int64) (Stats, error) {
	var st Stats
	gz, err := gzip.NewReader(in)
	if err != nil {
		return st, &InvalidError{"body is not a gzip stream: " + err.Error(), err}
	}
	tr := tar.NewReader(gz)
	zw := gzip.NewWriter(out)
	tw := tar.NewWriter(zw)
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, &InvalidError{"malformed tar archive: " + err.Error(), err}
		}
		name, err := CleanRel(h.Name)
		if err != nil {
			return st, err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if name == "." || seen[name+"/"] {
				continue
			}
			seen[name+"/"] = true
			st.Dirs++
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: h.Mode&0o777 | 0o700, ModTime: h.ModTime, Format: tar.FormatPAX}); err != nil {
				return st, err
			}
		case tar.TypeReg:
			if name == "." {
				return st, &InvalidError{Reason: fmt.Sprintf("entry %q is a file at the volume root", h.Name)}
			}
			if st.Bytes += h.Size; st.Bytes > maxUnpacked {
				return st, fmt.Errorf("%w: the archive unpacks to more than %d bytes", ErrQuota, maxUnpacked)
			}
			st.Files++
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: h.Size, Mode: h.Mode&0o777 | 0o600, ModTime: h.ModTime, Format: tar.FormatPAX}); err != nil {
				return st, err
			}
			if _, err := io.Copy(tw, tr); err != nil {
				return st, &InvalidError{"malformed tar archive: " + err.Error(), err}
			}
		default:
			st.Dropped++ // links, devices, FIFOs, ...
		}
	}
	if err := tw.Close(); err != nil {
		return st, err
	}
	if err := zw.Close(); err != nil {
		return st, err
	}
	// Drain the gzip trailer so a truncated upload is refused.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return st, &InvalidError{"malformed gzip stream: " + err.Error(), err}
	}
	return st, nil
}

// CleanRel returns name as a clean relative path ("." for the root), or
// an InvalidError when it is absolute or climbs out with "..".
func CleanRel(name string) (string, error) {
	if strings.HasPrefix(name, "/") || strings.Contains(name, "\x00") {
		return "", &InvalidError{Reason: fmt.Sprintf("path %q is absolute: paths must stay inside the volume", name)}
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", &InvalidError{Reason: fmt.Sprintf("path %q climbs out of the volume", name)}
		}
	}
	return path.Clean(name), nil
}
