package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// ErrImageNotFound is returned (wrapped) when a registry has no such image.
var ErrImageNotFound = errors.New("image not found")

// ErrRegistry is returned (wrapped) when a registry cannot be reached or refuses access.
var ErrRegistry = errors.New("registry error")

// image is a pulled image: its layers unpacked (bottom first) and its config.
type image struct {
	Ref     string
	Digest  string
	Layers  []string // layer directories, bottom first
	Config  v1.Config
	Summary string
}

// pullImage resolves ref, pulls the layers not cached under layersDir yet
// and unpacks each into its own directory (see unpackLayer). Credentials
// come from the usual docker config file (DOCKER_CONFIG or ~/.docker).
func (b *Builder) pullImage(ctx context.Context, ref string, logf func(string, ...any)) (*image, error) {
	var opts []name.Option
	if b.insecure(ref) {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, &StepError{Msg: fmt.Sprintf("bad image reference %q: %v", ref, err)}
	}
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}),
	}
	if b.cfg.Transport != nil {
		ropts = append(ropts, remote.WithTransport(b.cfg.Transport))
	}
	logf("pulling %s", r.Name())
	img, err := remote.Image(r, ropts...)
	if err != nil {
		return nil, classifyRegistryError(ref, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, classifyRegistryError(ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, classifyRegistryError(ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, classifyRegistryError(ref, err)
	}
	out := &image{Ref: r.Name(), Digest: digest.String(), Config: cf.Config}
	for i, l := range layers {
		diffID, err := l.DiffID()
		if err != nil {
			return nil, classifyRegistryError(ref, err)
		}
		dir := filepath.Join(b.layersDir, "oci-"+shortHash(diffID.String()))
		out.Layers = append(out.Layers, dir)
		if _, err := os.Stat(dir); err == nil {
			logf("layer %d/%d %s: cached", i+1, len(layers), diffID.Hex[:12])
			continue
		}
		size, _ := l.Size()
		logf("layer %d/%d %s: %d bytes", i+1, len(layers), diffID.Hex[:12], size)
		if err := b.storeLayer(dir, func(tmp string) error {
			rc, err := l.Uncompressed()
			if err != nil {
				return classifyRegistryError(ref, err)
			}
			defer rc.Close()
			return unpackLayer(rc, tmp, logf)
		}); err != nil {
			return nil, fmt.Errorf("layer %s: %w", diffID.Hex[:12], err)
		}
	}
	out.Summary = fmt.Sprintf("%s@%s (%d layers)", r.Name(), digest, len(layers))
	return out, nil
}

// storeLayer fills a new layer directory with fill and renames it to dir,
// so a layer directory is complete or absent. A layer stored meanwhile by
// another build wins.
func (b *Builder) storeLayer(dir string, fill func(tmp string) error) error {
	tmp := filepath.Join(b.layersDir, ".tmp-"+randHex())
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return err
	}
	if err := fill(tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Stat(dir); serr == nil {
			return nil
		}
		return err
	}
	return nil
}

func (b *Builder) insecure(ref string) bool {
	host, _, _ := strings.Cut(ref, "/")
	return slices.Contains(b.cfg.InsecureRegistries, host)
}

// classifyRegistryError turns registry failures into a message users can act on.
func classifyRegistryError(ref string, err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case http.StatusNotFound:
			return &StepError{Msg: fmt.Sprintf("image %s: not found in the registry", ref), Err: ErrImageNotFound}
		case http.StatusUnauthorized, http.StatusForbidden:
			return &StepError{Msg: fmt.Sprintf("image %s: access denied by the registry (check the credentials in the docker config file)", ref), Err: ErrRegistry}
		}
		for _, d := range terr.Errors {
			if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
				return &StepError{Msg: fmt.Sprintf("image %s: not found in the registry", ref), Err: ErrImageNotFound}
			}
		}
		return &StepError{Msg: fmt.Sprintf("image %s: registry answered %d: %v", ref, terr.StatusCode, terr), Err: ErrRegistry}
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return &StepError{Msg: fmt.Sprintf("image %s: cannot reach the registry: %v", ref, err), Err: ErrRegistry}
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:12])
}
