package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Addresses of the test network. The uplink's own gateway addresses also
// serve every TCP service and DNS; the service addresses serve everything.
var (
	GatewayIP  = netip.MustParseAddr("198.51.100.1")  // uplink end of the veth; test-host's IPv4 default gateway
	HostIP     = netip.MustParseAddr("198.51.100.2")  // test-host end of the veth (the server's egress address)
	ServiceIP  = netip.MustParseAddr("198.51.100.10") // "api.example.test", "*.allowed.test"
	OtherGW    = netip.MustParseAddr("203.0.113.1")
	OtherIP    = netip.MustParseAddr("203.0.113.10") // "evil.test": the address a policy should block
	MetadataIP = netip.MustParseAddr("169.254.169.254")

	GatewayIP6  = netip.MustParseAddr("2001:db8::1") // test-host's IPv6 default gateway
	HostIP6     = netip.MustParseAddr("2001:db8::2")
	ServiceIP6  = netip.MustParseAddr("2001:db8:1::10") // AAAA of "api.example.test", "*.allowed.test"
	MetadataIP6 = netip.MustParseAddr("fd00:ec2::254")  // the AWS IPv6 metadata address

	LinkPrefix  = netip.MustParsePrefix("198.51.100.0/24") // the veth link
	LinkPrefix6 = netip.MustParsePrefix("2001:db8::/64")

	// SandboxPrefix (the server's default sandbox range) is routed from the
	// uplink back to HostIP, so sandbox traffic that leaks out un-NATed still
	// arrives (and is recorded) and its replies find their way back.
	SandboxPrefix = netip.MustParsePrefix("10.200.0.0/16")

	// DNSServer is the uplink resolver to configure as the server's upstream.
	DNSServer = netip.AddrPortFrom(ServiceIP, PortDNS)

	// realUplink is this machine's real uplink network, never to be routable
	// from the test namespaces.
	realUplink = netip.MustParseAddr("192.0.2.1")
)

// Ports of the uplink services.
const (
	PortDNS     = 53
	PortHTTP    = 80
	PortHTTPS   = 443
	PortTCPEcho = 9000
	PortUDPEcho = 9001
)

// ServiceAddrs are the uplink addresses every service (UDP echo included)
// listens on; TCP services and DNS also answer on any other uplink address.
func ServiceAddrs() []netip.Addr {
	return []netip.Addr{GatewayIP, ServiceIP, OtherGW, OtherIP, MetadataIP, GatewayIP6, ServiceIP6, MetadataIP6}
}

// Net is a test-host namespace wired to an uplink namespace with recording
// services; see the package comment. Methods are safe for concurrent use.
type Net struct {
	Host   Netns // where the server under test runs
	Uplink Netns // "the internet"

	HostIf   string // test-host's veth (in Host)
	UplinkIf string // uplink's veth (in Uplink)

	t       testing.TB
	ca      *testCA
	rec     *recorder
	svcs    *services
	capture *capture

	closeOnce sync.Once
	undo      []func() error // cleanup stack, run in reverse

	caFileOnce sync.Once
	caFile     string
}

// NewNet builds the test-host and uplink namespaces, starts the uplink
// services, and registers Close with t.Cleanup. It calls RequireRoot first.
// Tests using it must not call t.Parallel (see the package comment).
func NewNet(t testing.TB) *Net {
	t.Helper()
	RequireRoot(t)
	start := time.Now()
	n, err := newNet(t)
	if err != nil {
		if n != nil {
			if cerr := n.close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
		t.Fatalf("testenv.NewNet: %v", err)
	}
	t.Cleanup(func() {
		if err := n.close(); err != nil {
			t.Errorf("testenv.Net.Close: %v", err)
		}
	})
	t.Logf("testenv: test-host %s, uplink %s (setup %v)", n.Host.Path, n.Uplink.Path, time.Since(start).Round(time.Millisecond))
	return n
}

// nameToken makes a short unique token from the test name: up to 5
// lower-case alphanumerics of the last path element plus 6 random hex digits.
func nameToken(testName string) string {
	base := strings.TrimPrefix(testName[strings.LastIndexByte(testName, '/')+1:], "Test")
	var b strings.Builder
	for _, r := range strings.ToLower(base) {
		if b.Len() == 5 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return fmt.Sprintf("%s%06x", b.String(), rand.Uint32()&0xffffff)
}

func newNet(t testing.TB) (_ *Net, err error) {
	tok := nameToken(t.Name())
	n := &Net{
		t:        t,
		rec:      &recorder{},
		HostIf:   "vh" + tok, // <= 13 bytes: IFNAMSIZ is 16 with the NUL
		UplinkIf: "vu" + tok,
	}
	if n.ca, err = newTestCA(); err != nil {
		return nil, err
	}

	// An owner marker lets a later process remove these namespaces should
	// this one die before its cleanups run (test timeout, SIGKILL).
	sweepStale()
	if err := writeOwner(tok); err != nil {
		return n, err
	}
	n.undo = append(n.undo, func() error { return removeOwner(tok) })

	// Namespaces, each undone right after it exists.
	up, err := createNetns("du" + tok)
	if err != nil {
		return n, err
	}
	n.Uplink = up
	n.undo = append(n.undo, func() error { return deleteNetns(up) })
	host, err := createNetns("dh" + tok)
	if err != nil {
		return n, err
	}
	n.Host = host
	n.undo = append(n.undo, func() error { return deleteNetns(host) })

	hostNS, err := netns.GetFromPath(n.Host.Path)
	if err != nil {
		return n, err
	}
	defer hostNS.Close()
	upNS, err := netns.GetFromPath(n.Uplink.Path)
	if err != nil {
		return n, err
	}
	defer upNS.Close()
	hh, err := netlink.NewHandleAt(hostNS)
	if err != nil {
		return n, fmt.Errorf("netlink handle in %s: %w", n.Host.Name, err)
	}
	defer hh.Close()
	uh, err := netlink.NewHandleAt(upNS)
	if err != nil {
		return n, fmt.Errorf("netlink handle in %s: %w", n.Uplink.Name, err)
	}
	defer uh.Close()

	// The veth is created inside test-host with its peer placed straight into
	// the uplink, so neither end ever exists in this machine's namespace.
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: n.HostIf},
		PeerName:      n.UplinkIf,
		PeerNamespace: netlink.NsFd(upNS),
	}
	if err := hh.LinkAdd(veth); err != nil {
		return n, fmt.Errorf("add veth %s/%s: %w", n.HostIf, n.UplinkIf, err)
	}
	hostIf := n.HostIf
	n.undo = append(n.undo, func() error { return delLink(host, hostIf) })

	// Sysctls are per namespace; write them from inside.
	if err := n.Host.Do(func() error {
		return writeSysctls(map[string]string{
			"net/ipv4/ip_forward":                     "1",
			"net/ipv6/conf/all/forwarding":            "1",
			"net/ipv6/conf/default/accept_dad":        "0",
			"net/ipv6/conf/" + hostIf + "/accept_dad": "0",
		})
	}); err != nil {
		return n, err
	}
	if err := n.Uplink.Do(func() error {
		return writeSysctls(map[string]string{
			"net/ipv4/ip_forward":                         "0",
			"net/ipv6/conf/all/forwarding":                "0",
			"net/ipv6/conf/default/accept_dad":            "0",
			"net/ipv6/conf/" + n.UplinkIf + "/accept_dad": "0",
		})
	}); err != nil {
		return n, err
	}

	addrs := []struct {
		h    *netlink.Handle
		link string
		cidr string
	}{
		{hh, n.HostIf, "198.51.100.2/24"},
		{hh, n.HostIf, "2001:db8::2/64"},
		{uh, n.UplinkIf, "198.51.100.1/24"},
		{uh, n.UplinkIf, "2001:db8::1/64"},
		// Service addresses live on the uplink's lo, one by one (/32, /128),
		// so only these exist; a dummy interface would do, but not every
		// kernel has the dummy module.
		{uh, "lo", "198.51.100.10/32"},
		{uh, "lo", "203.0.113.1/32"},
		{uh, "lo", "203.0.113.10/32"},
		{uh, "lo", "169.254.169.254/32"},
		{uh, "lo", "2001:db8:1::1/128"},
		{uh, "lo", "2001:db8:1::10/128"},
		{uh, "lo", "fd00:ec2::254/128"},
	}
	for _, a := range addrs {
		l, err := a.h.LinkByName(a.link)
		if err != nil {
			return n, fmt.Errorf("find link %s: %w", a.link, err)
		}
		addr, err := netlink.ParseAddr(a.cidr)
		if err != nil {
			return n, err
		}
		addr.Flags = unix.IFA_F_NODAD // no tentative IPv6 addresses: usable at once
		if err := a.h.AddrAdd(l, addr); err != nil {
			return n, fmt.Errorf("add %s to %s: %w", a.cidr, a.link, err)
		}
	}
	for _, l := range []struct {
		h    *netlink.Handle
		name string
	}{{hh, "lo"}, {hh, n.HostIf}, {uh, "lo"}, {uh, n.UplinkIf}} {
		link, err := l.h.LinkByName(l.name)
		if err != nil {
			return n, fmt.Errorf("find link %s: %w", l.name, err)
		}
		if err := l.h.LinkSetUp(link); err != nil {
			return n, fmt.Errorf("set %s up: %w", l.name, err)
		}
	}

	hostLink, err := hh.LinkByName(n.HostIf)
	if err != nil {
		return n, err
	}
	upLink, err := uh.LinkByName(n.UplinkIf)
	if err != nil {
		return n, err
	}
	routes := []struct {
		h     *netlink.Handle
		where string
		r     netlink.Route
	}{
		{hh, "test-host", netlink.Route{LinkIndex: hostLink.Attrs().Index, Gw: GatewayIP.AsSlice()}},
		{hh, "test-host", netlink.Route{LinkIndex: hostLink.Attrs().Index, Gw: GatewayIP6.AsSlice(), Family: unix.AF_INET6}},
		{uh, "uplink", netlink.Route{LinkIndex: upLink.Attrs().Index, Dst: ipNet(SandboxPrefix), Gw: HostIP.AsSlice()}},
	}
	for _, r := range routes {
		if err := r.h.RouteAdd(&r.r); err != nil {
			return n, fmt.Errorf("add route %s in %s: %w", r.r, r.where, err)
		}
	}

	if err := checkSealed(uh, hh, n.HostIf); err != nil {
		return n, err
	}

	n.svcs = newServices(n.rec, n.ca)
	n.undo = append(n.undo, func() error { n.svcs.close(); return nil })
	if err := n.svcs.start(n.Uplink, ServiceAddrs()); err != nil {
		return n, err
	}
	if n.capture, err = startCapture(n.Uplink, upLink.Attrs().Index, n.rec); err != nil {
		return n, err
	}
	n.undo = append(n.undo, func() error { n.capture.close(); return nil })
	return n, nil
}

// checkSealed verifies the safety property: the uplink has no default route
// and cannot route to this machine's real uplink network, and test-host has
// no interface but lo and its veth.
func checkSealed(uh, hh *netlink.Handle, hostIf string) error {
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		rs, err := uh.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("list uplink routes: %w", err)
		}
		for _, r := range rs {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() {
				if ones, _ := maskOf(r.Dst); ones == 0 && r.Type != unix.RTN_UNREACHABLE {
					return fmt.Errorf("uplink has a default route: %s", r)
				}
			}
		}
	}
	if rs, err := uh.RouteGet(realUplink.AsSlice()); err == nil {
		return fmt.Errorf("uplink can route to %s: %v", realUplink, rs)
	}
	links, err := hh.LinkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		if name := l.Attrs().Name; name != "lo" && name != hostIf {
			return fmt.Errorf("unexpected link %q in test-host", name)
		}
	}
	return nil
}

func maskOf(n *net.IPNet) (int, int) {
	if n == nil {
		return 0, 0
	}
	return n.Mask.Size()
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func delLink(ns Netns, name string) error {
	h0, err := netns.GetFromPath(ns.Path)
	if err != nil {
		return nil // namespace gone, and its links with it
	}
	defer h0.Close()
	h, err := netlink.NewHandleAt(h0)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", ns.Name, err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return nil
	}
	if err := h.LinkDel(l); err != nil {
		return fmt.Errorf("delete link %s in %s: %w", name, ns.Name, err)
	}
	return nil
}

// writeSysctls writes /proc/sys entries of the calling thread's namespace.
func writeSysctls(kv map[string]string) error {
	for k, v := range kv {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	return nil
}

// Close stops the services and deletes both namespaces and the veth, then
// checks that nothing is left. NewNet registers it with t.Cleanup; calling it
// earlier is fine, and later calls do nothing.
func (n *Net) Close() error { return n.close() }

func (n *Net) close() error {
	var err error
	n.closeOnce.Do(func() {
		var errs []error
		for i := len(n.undo) - 1; i >= 0; i-- {
			if e := n.undo[i](); e != nil {
				errs = append(errs, e)
			}
		}
		n.undo = nil
		for _, ns := range []Netns{n.Host, n.Uplink} {
			if ns.Path == "" {
				continue
			}
			if _, e := os.Lstat(ns.Path); e == nil {
				errs = append(errs, fmt.Errorf("netns %s still exists after close", ns.Path))
			}
		}
		// The veth never lived in this namespace; check no link by either name
		// leaked here anyway.
		for _, name := range []string{n.HostIf, n.UplinkIf} {
			if _, e := netlink.LinkByName(name); e == nil {
				errs = append(errs, fmt.Errorf("link %s exists in the root namespace after close", name))
			}
		}
		err = errors.Join(errs...)
	})
	return err
}

// CAPEM returns the PEM certificate of the CA behind the HTTPS service.
func (n *Net) CAPEM() []byte { return bytes.Clone(n.ca.certPEM) }

// CertPool returns a pool holding only the test CA.
func (n *Net) CertPool() *x509.CertPool { return n.ca.pool.Clone() }

// CAFile writes CAPEM to a file in t.TempDir (once) and returns its path,
// e.g. for SSL_CERT_FILE or a server's upstream trust setting.
func (n *Net) CAFile() string {
	n.caFileOnce.Do(func() {
		n.caFile = filepath.Join(n.t.TempDir(), "testenv-ca.pem")
		if err := os.WriteFile(n.caFile, n.ca.certPEM, 0o644); err != nil {
			n.t.Fatalf("write CA file: %v", err)
		}
	})
	return n.caFile
}

// TLSConfig returns a client TLS config trusting only the test CA.
func (n *Net) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: n.CertPool()}
}

// Resolver returns a resolver that asks the uplink's DNS service
// (DNSServer), from test-host.
func (n *Net) Resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return n.Host.DialContext(ctx, network, DNSServer.String())
		},
	}
}

// DialContext dials from test-host like Host.DialContext, but resolves
// names with Resolver first, so "api.example.test:443" works. Addresses are
// tried one at a time, in the resolver's order.
func (n *Net) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if _, err := netip.ParseAddr(host); err == nil || strings.HasPrefix(network, "unix") {
		return n.Host.DialContext(ctx, network, address)
	}
	ipNet := "ip"
	switch {
	case strings.HasSuffix(network, "4"):
		ipNet = "ip4"
	case strings.HasSuffix(network, "6"):
		ipNet = "ip6"
	}
	addrs, err := n.Resolver().LookupNetIP(ctx, ipNet, host)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, a := range addrs {
		c, err := n.Host.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// HTTPClient returns a client that dials from test-host (Net.DialContext,
// so names resolve through the uplink's DNS), trusts only the test CA, and
// uses no proxy.
func (n *Net) HTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:       n.DialContext,
			TLSClientConfig:   n.TLSConfig(),
			ForceAttemptHTTP2: true,
		},
		Timeout: 10 * time.Second,
	}
}

// HandleHTTP registers h for pattern (net/http ServeMux syntax) on the
// uplink's HTTP and HTTPS services, e.g. "GET api.example.test/v1/chat".
// Requests are still recorded. "/" is the echo and cannot be replaced; the
// metadata stand-in is not affected.
func (n *Net) HandleHTTP(pattern string, h http.Handler) { n.svcs.mux.Handle(pattern, h) }

// SetDNS makes the uplink's DNS service answer name ("*.x" for everything
// below x) with addrs (A for IPv4, AAAA for IPv6); no addrs removes the name,
// which then gets NXDOMAIN.
func (n *Net) SetDNS(name string, addrs ...netip.Addr) { n.svcs.zone.set(name, addrs) }

// Records returns a copy of everything the uplink has seen.
func (n *Net) Records() Records { return n.rec.snapshot() }

// Reset forgets all records, e.g. after a test's setup traffic.
func (n *Net) Reset() { n.rec.reset() }

// WaitRecords polls Records until cond holds and returns them; it fails the
// test (showing what did arrive) if that takes longer than timeout.
func (n *Net) WaitRecords(timeout time.Duration, cond func(Records) bool) Records {
	n.t.Helper()
	var r Records
	if poll(timeout, func() error {
		if r = n.Records(); cond(r) {
			return nil
		}
		return errNotYet
	}) != nil {
		n.t.Fatalf("testenv: uplink records did not satisfy the condition within %v; got %v", timeout, r)
	}
	return r
}

// ExpectQuiet waits for d and fails the test if anything at all reached the
// uplink meanwhile (or since the last Reset): no packet, connection,
// request, datagram or query.
func (n *Net) ExpectQuiet(d time.Duration) {
	n.t.Helper()
	time.Sleep(d)
	if r := n.Records(); !r.Empty() {
		n.t.Errorf("testenv: expected nothing to reach the uplink, got %v", r)
	}
}

// Command returns an unstarted command running name inside test-host (see
// Netns.Command). Its output goes to the test log unless the caller sets
// Stdout/Stderr, and its process group is killed when ctx is done and again
// when the test ends. The caller Starts and Waits it.
func (n *Net) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := n.Host.Command(ctx, name, args...)
	lw := &logWriter{t: n.t, prefix: filepath.Base(name) + ": "}
	cmd.Stdout, cmd.Stderr = lw, lw
	n.t.Cleanup(lw.stop) // runs after the kill below: output after the test is dropped
	n.t.Cleanup(func() { killGroup(cmd) })
	return cmd
}

// StartInHost starts name inside test-host, with output in the test log, and
// in t.Cleanup kills its process group and waits for it. The test fails
// at once if it cannot start.
func (n *Net) StartInHost(name string, args ...string) *exec.Cmd {
	n.t.Helper()
	cmd := n.Command(n.t.Context(), name, args...)
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("start %s in test-host: %v", name, err)
	}
	n.t.Cleanup(func() {
		killGroup(cmd)
		cmd.Wait()
	})
	return cmd
}

// logWriter sends whole lines to t.Log until stop.
type logWriter struct {
	t       testing.TB
	prefix  string
	mu      sync.Mutex
	buf     []byte
	stopped bool
}

func (w *logWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.t.Log(w.prefix + string(w.buf))
	}
	w.buf, w.stopped = nil, true
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.t.Log(w.prefix + string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 {
		w.t.Log(w.prefix + string(w.buf))
		w.buf = nil
	}
	return len(p), nil
}

// OwnerDir holds one file per live Net, named by its token and holding the
// owning process's pid.
const OwnerDir = "/run/declaw-testenv"

func writeOwner(tok string) error {
	if err := os.MkdirAll(OwnerDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(OwnerDir, tok), []byte(strconv.Itoa(os.Getpid())), 0o644)
}

func removeOwner(tok string) error {
	err := os.Remove(filepath.Join(OwnerDir, tok))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

var sweepOnce sync.Once

// sweepStale deletes, once per process, the namespaces of Nets whose owning
// process has died without cleaning up. Their veths go with them.
func sweepStale() {
	sweepOnce.Do(func() {
		ents, err := os.ReadDir(OwnerDir)
		if err != nil {
			return
		}
		for _, e := range ents {
			tok := e.Name()
			b, err := os.ReadFile(filepath.Join(OwnerDir, tok))
			if err != nil {
				continue
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 0 || unix.Kill(pid, 0) != unix.ESRCH {
				continue // unreadable, or the owner still runs
			}
			deleteNetns(netnsNamed("dh" + tok))
			deleteNetns(netnsNamed("du" + tok))
			removeOwner(tok)
		}
	})
}
