package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/declaw/declaw/sdk/go/declaw"
)

// ServerConfig is what a private (--local) server is started with. The
// CLI maps it onto server.Config; this package does not import the server.
type ServerConfig struct {
	StateDir    string // temp dir; its "templates" is a symlink to the shared templates
	Listen      string // a free loopback port ("127.0.0.1:0")
	APIKey      string
	NetPrefix   string // "db" + random hex: its own netns, veths and nftables table
	SandboxCIDR string // a /16 no other server on the host is likely to use
	DNSUpstream string // 127.0.0.1:1: the bench needs no DNS
	EnvdPath    string // "": the server's default
	WarmPool    map[string]int
	Logf        func(format string, args ...any)
}

// StartFunc starts a server in this process and returns its API address
// and a function that shuts it down.
type StartFunc func(ctx context.Context, cfg ServerConfig) (addr string, shutdown func(context.Context) error, err error)

// LocalConfig configures private servers.
type LocalConfig struct {
	Templates string // the built templates directory; default /var/lib/declaw/templates
	Template  string
	EnvdPath  string
	Start     StartFunc
	Logf      func(format string, args ...any)
}

// LocalOpener returns a Config.Open that starts a fresh private server
// for each call, each in its own temp state dir with a unique network
// prefix, and whose Close shuts it down and checks nothing is left: no
// process using its state dir, no netns, veth or nftables table with its
// prefix. It needs root.
func LocalOpener(lc LocalConfig) (func(ctx context.Context, warmPool int) (*Target, error), error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("--local needs root: the private server creates network namespaces, veths, nftables rules and runsc sandboxes")
	}
	if lc.Templates == "" {
		lc.Templates = "/var/lib/declaw/templates"
	}
	abs, err := filepath.Abs(lc.Templates)
	if err != nil {
		return nil, err
	}
	lc.Templates = abs
	if _, err := os.Stat(filepath.Join(abs, lc.Template, "rootfs")); err != nil {
		return nil, fmt.Errorf("template %s is not built in %s (run `declaw template build %s`)", lc.Template, abs, lc.Template)
	}
	if lc.Logf == nil {
		lc.Logf = func(string, ...any) {}
	}
	return func(ctx context.Context, warmPool int) (*Target, error) {
		return openLocal(ctx, lc, warmPool)
	}, nil
}

func openLocal(ctx context.Context, lc LocalConfig, warmPool int) (_ *Target, err error) {
	dir, err := os.MkdirTemp("", "declaw-bench-")
	if err != nil {
		return nil, fmt.Errorf("local server: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if err := os.Symlink(lc.Templates, filepath.Join(dir, "templates")); err != nil {
		return nil, fmt.Errorf("local server: %w", err)
	}
	cidr, err := freeCIDR()
	if err != nil {
		return nil, err
	}
	cfg := ServerConfig{
		StateDir:    dir,
		Listen:      "127.0.0.1:0",
		APIKey:      "dcl_bench_" + randHex(16),
		NetPrefix:   "db" + randHex(3),
		SandboxCIDR: cidr,
		DNSUpstream: "127.0.0.1:1",
		EnvdPath:    lc.EnvdPath,
		WarmPool:    map[string]int{},
		Logf:        lc.Logf,
	}
	if warmPool > 0 {
		cfg.WarmPool[lc.Template] = warmPool
	}
	addr, shutdown, err := lc.Start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("start local server: %w", err)
	}
	client, err := declaw.New(declaw.Config{APIURL: "http://" + addr, APIKey: cfg.APIKey, UserAgent: "declaw-bench"})
	if err != nil {
		shutdown(context.WithoutCancel(ctx))
		return nil, err
	}
	name := fmt.Sprintf("local server %s (net prefix %s, warm pool %d)", addr, cfg.NetPrefix, warmPool)
	return &Target{
		Client: client,

		WarmPool: warmPool,
		Close: func(ctx context.Context) (Cleanup, error) {
			err := shutdown(ctx)
			c := Cleanup{Server: name, Leftover: leftovers(dir, cfg.NetPrefix)}
			c.OK = len(c.Leftover) == 0
			if c.OK {
				if rerr := os.RemoveAll(dir); rerr != nil {
					err = errors.Join(err, rerr)
				}
			}
			return c, err
		},
	}, nil
}

// freeCIDR picks a 10.x.0.0/16 (x in 64..191) that no route on the host covers.
func freeCIDR() (string, error) {
	out, _ := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	var used []netip.Prefix
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for _, w := range f {
			if p, err := netip.ParsePrefix(w); err == nil {
				used = append(used, p)
			} else if a, err := netip.ParseAddr(w); err == nil && a.Is4() {
				used = append(used, netip.PrefixFrom(a, 32))
			}
		}
	}
	for range 64 {
		var b [1]byte
		rand.Read(b[:])
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 64 + b[0]%128, 0, 0}), 16)
		clash := false
		for _, u := range used {
			if u.Overlaps(p) {
				clash = true
				break
			}
		}
		if !clash {
			return p.String(), nil
		}
	}
	return "", errors.New("local server: no free 10.x.0.0/16 for the sandboxes")
}

// leftovers lists what a shut-down server with state dir dir and network
// prefix left: processes naming the state dir (runsc, gofers), netns,
// links and the nftables table.
func leftovers(dir, prefix string) []string {
	var left []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), dir) {
			left = append(left, "process "+filepath.Base(filepath.Dir(p)))
		}
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), prefix+"-") {
				left = append(left, "netns "+e.Name())
			}
		}
	}
	if ents, err := os.ReadDir("/sys/class/net"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), prefix) {
				left = append(left, "link "+e.Name())
			}
		}
	}
	if out, err := exec.Command("nft", "list", "tables").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[2] == prefix {
				left = append(left, "nftables table "+f[1]+" "+f[2])
			}
		}
	}
	return left
}
