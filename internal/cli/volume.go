package cli

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/declaw/declaw/sdk/go/declaw"
)

const volumeUsage = `Usage: declaw volume COMMAND [flags]

Commands:
  create NAME PATH|-           upload a volume: a directory (packed as tar.gz), a .tar.gz file, or
                               a tar.gz on stdin; prints its id
  ls                           the team's volumes
  info ID                      one volume (JSON)
  download ID [FILE|-]         its tar.gz (default stdout)
  rm ID...                     delete volumes (refused while a live sandbox attached them)

Attach with: declaw sandbox create --volume ID:/path/in/sandbox

` + clientFlagsHelp

func runVolume(e *env, globals, args []string) int {
	return runVerbs(e, globals, args, "declaw volume", volumeUsage, map[string]func(*clientCmd, []string) int{
		"create": volumeCreate, "new": volumeCreate,
		"ls": volumeList, "list": volumeList,
		"info": volumeInfo, "get": volumeInfo,
		"download": volumeDownload, "cp": volumeDownload,
		"rm": volumeRemove, "delete": volumeRemove,
	})
}

func volumeCreate(c *clientCmd, args []string) int {
	pos, _, _, ok := c.parse(args, 2, 2)
	if !ok {
		return 2
	}
	var body io.Reader
	size := int64(-1)
	switch src := pos[1]; {
	case src == "-":
		body = c.e.stdin
	default:
		st, err := os.Stat(src)
		if err != nil {
			return c.fail(err)
		}
		if st.IsDir() {
			pr, pw := io.Pipe()
			go func() { pw.CloseWithError(packDir(src, pw)) }()
			body = pr
		} else {
			f, err := os.Open(src)
			if err != nil {
				return c.fail(err)
			}
			defer f.Close()
			body, size = f, st.Size()
		}
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	v, err := cl.CreateVolume(ctx, pos[0], body, size)
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		c.printJSON(v)
		return 0
	}
	fmt.Fprintln(c.e.stdout, v.VolumeID)
	return 0
}

// packDir writes dir as a tar.gz of its directories and regular files
// (links and other entries are skipped, as the server would drop them).
func packDir(dir string, w io.Writer) error {
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsDir() && !info.Mode().IsRegular() {
			return nil
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func volumeList(c *clientCmd, args []string) int {
	if _, _, _, ok := c.parse(args, 0, 0); !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	vs, err := cl.ListVolumes(ctx)
	if err != nil {
		return c.fail(err)
	}
	if c.opts.json {
		c.printJSON(map[string]any{"volumes": vs})
		return 0
	}
	tw := tabwriter.NewWriter(c.e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VOLUME\tNAME\tSIZE\tFILES\tCREATED")
	for _, v := range vs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", v.VolumeID, v.Name, v.SizeBytes, v.Files, v.CreatedAt.Format("2006-01-02T15:04:05Z"))
	}
	tw.Flush()
	return 0
}

func volumeInfo(c *clientCmd, args []string) int {
	pos, _, _, ok := c.parse(args, 1, 1)
	if !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	v, err := cl.GetVolume(ctx, pos[0])
	if err != nil {
		return c.fail(err)
	}
	c.printJSON(v)
	return 0
}

func volumeDownload(c *clientCmd, args []string) int {
	pos, _, _, ok := c.parse(args, 1, 2)
	if !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	rc, err := cl.DownloadVolume(ctx, pos[0])
	if err != nil {
		return c.fail(err)
	}
	defer rc.Close()
	out := c.e.stdout
	if len(pos) == 2 && pos[1] != "-" {
		f, err := os.Create(pos[1])
		if err != nil {
			return c.fail(err)
		}
		defer f.Close()
		out = f
	}
	if _, err := io.Copy(out, rc); err != nil {
		return c.fail(err)
	}
	return 0
}

func volumeRemove(c *clientCmd, args []string) int {
	pos, _, _, ok := c.parse(args, 1, -1)
	if !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	code := 0
	for _, id := range pos {
		if err := cl.DeleteVolume(ctx, id); err != nil {
			code = c.fail(err)
			continue
		}
		if !c.opts.json {
			fmt.Fprintf(c.e.stdout, "deleted %s\n", id)
		}
	}
	return code
}

// parseVolumeFlag parses --volume ID:PATH[:MODE[:SUBPATH]].
func parseVolumeFlag(v string) (declaw.VolumeAttachment, error) {
	parts := strings.SplitN(v, ":", 4)
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		return declaw.VolumeAttachment{}, fmt.Errorf("--volume %q: want ID:PATH[:MODE[:SUBPATH]]", v)
	}
	a := declaw.VolumeAttachment{VolumeID: parts[0], MountPath: parts[1]}
	if len(parts) > 2 {
		a.Mode = parts[2]
	}
	if len(parts) > 3 {
		a.Subpath = parts[3]
	}
	return a, nil
}
