package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func TestNetServices(t *testing.T) {
	n := NewNet(t)
	client := n.HTTPClient()

	t.Run("http", func(t *testing.T) {
		for _, ip := range []netip.Addr{ServiceIP, OtherIP, ServiceIP6} {
			url := "http://" + netip.AddrPortFrom(ip, PortHTTP).String() + "/path?q=1"
			req, _ := http.NewRequest("POST", url, strings.NewReader("hello body"))
			req.Host = "api.example.test"
			req.Header.Set("X-Test", "yes")
			var rep EchoReply
			getJSON(t, client, req, &rep)
			if rep.Method != "POST" || rep.Host != "api.example.test" || rep.URI != "/path?q=1" || rep.Body != "hello body" || rep.Header.Get("X-Test") != "yes" || rep.Service != SvcHTTP {
				t.Errorf("%s: echo = %+v", url, rep)
			}
			if want := netip.AddrPortFrom(ip, PortHTTP).String(); rep.Local != want {
				t.Errorf("%s: echo Local = %q, want %q", url, rep.Local, want)
			}
			from := HostIP
			if ip.Is6() {
				from = HostIP6
			}
			if r, err := netip.ParseAddrPort(rep.Remote); err != nil || r.Addr() != from {
				t.Errorf("%s: echo Remote = %q, want %v:*", url, rep.Remote, from)
			}
		}
	})

	t.Run("https", func(t *testing.T) {
		for _, name := range []string{"api.example.test", "x.allowed.test", ServiceIP.String()} {
			c := n.HTTPClient()
			c.Transport.(*http.Transport).TLSClientConfig.ServerName = name
			req, _ := http.NewRequest("GET", "https://"+netip.AddrPortFrom(ServiceIP, PortHTTPS).String()+"/secure", nil)
			req.Host = name
			var rep EchoReply
			getJSON(t, c, req, &rep)
			c.CloseIdleConnections()
			sni := name
			if net.ParseIP(name) != nil {
				sni = "" // clients send no SNI for IP literals
			}
			if rep.Service != SvcHTTPS || rep.URI != "/secure" || rep.SNI != sni {
				t.Errorf("https %s: echo = %+v", name, rep)
			}
		}
	})

	t.Run("https by name", func(t *testing.T) {
		// Net.HTTPClient resolves through the uplink DNS: SNI and Host follow.
		var rep EchoReply
		req, _ := http.NewRequest("GET", "https://deep.sub.allowed.test/by-name", nil)
		getJSON(t, client, req, &rep)
		if rep.SNI != "deep.sub.allowed.test" || rep.Host != "deep.sub.allowed.test" {
			t.Errorf("echo = %+v, want SNI and Host deep.sub.allowed.test", rep)
		}
		if l, _ := netip.ParseAddrPort(rep.Local); l.Addr() != ServiceIP && l.Addr() != ServiceIP6 {
			t.Errorf("echo Local = %s, want %v or %v", rep.Local, ServiceIP, ServiceIP6)
		}
	})

	t.Run("custom handler", func(t *testing.T) {
		n.HandleHTTP("GET /custom", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "custom answer")
		}))
		resp, err := client.Get("http://" + ServiceIP.String() + "/custom")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "custom answer" {
			t.Errorf("GET /custom = %q, want %q", b, "custom answer")
		}
	})

	t.Run("metadata", func(t *testing.T) {
		for _, ip := range []netip.Addr{MetadataIP, MetadataIP6} {
			url := "http://" + netip.AddrPortFrom(ip, PortHTTP).String() + "/latest/meta-data/iam/security-credentials/"
			resp, err := client.Get(url)
			if err != nil {
				t.Fatalf("GET %s: %v", url, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !bytes.Contains(b, []byte(MetadataSecret)) {
				t.Errorf("GET %s = %s, want it to contain MetadataSecret", url, b)
			}
		}
	})

	t.Run("tcp echo", func(t *testing.T) {
		for _, ip := range []netip.Addr{ServiceIP, OtherIP, ServiceIP6} {
			addr := netip.AddrPortFrom(ip, PortTCPEcho).String()
			c, err := n.Host.DialContext(t.Context(), "tcp", addr)
			if err != nil {
				t.Fatalf("dial %s: %v", addr, err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			msg := "ping " + addr
			io.WriteString(c, msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
				t.Errorf("tcp echo %s = %q, %v; want %q", addr, got, err, msg)
			}
			c.Close()
		}
	})

	t.Run("udp echo", func(t *testing.T) {
		for _, ip := range []netip.Addr{ServiceIP, OtherIP, ServiceIP6} {
			addr := netip.AddrPortFrom(ip, PortUDPEcho).String()
			c, err := n.Host.DialContext(t.Context(), "udp", addr)
			if err != nil {
				t.Fatalf("dial %s: %v", addr, err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			msg := "datagram " + addr
			io.WriteString(c, msg)
			got := make([]byte, 1500)
			k, err := c.Read(got)
			if err != nil || string(got[:k]) != msg {
				t.Errorf("udp echo %s = %q, %v; want %q", addr, got[:k], err, msg)
			}
			c.Close()
		}
	})

	t.Run("dns", func(t *testing.T) {
		n.SetDNS("added.test", netip.MustParseAddr("203.0.113.77"))
		tests := []struct {
			proto, server string
			name          string
			qtype         uint16
			rcode         int
			want          []string
		}{
			{"udp", ServiceIP.String(), "api.example.test.", dns.TypeA, dns.RcodeSuccess, []string{"198.51.100.10"}},
			{"tcp", ServiceIP.String(), "API.Example.Test.", dns.TypeAAAA, dns.RcodeSuccess, []string{"2001:db8:1::10"}},
			{"udp", "[" + ServiceIP6.String() + "]", "deep.sub.allowed.test.", dns.TypeA, dns.RcodeSuccess, []string{"198.51.100.10"}},
			{"udp", OtherIP.String(), "secret-data.evil.test.", dns.TypeA, dns.RcodeSuccess, []string{"203.0.113.10"}},
			{"udp", ServiceIP.String(), "evil.test.", dns.TypeAAAA, dns.RcodeSuccess, nil},
			{"udp", ServiceIP.String(), "added.test.", dns.TypeA, dns.RcodeSuccess, []string{"203.0.113.77"}},
			{"tcp", ServiceIP.String(), "nope.test.", dns.TypeA, dns.RcodeNameError, nil},
		}
		for _, tt := range tests {
			m := new(dns.Msg)
			m.SetQuestion(tt.name, tt.qtype)
			c, err := n.Host.DialContext(t.Context(), tt.proto, tt.server+":53")
			if err != nil {
				t.Fatal(err)
			}
			dc := &dns.Conn{Conn: c}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := dc.WriteMsg(m); err != nil {
				t.Fatal(err)
			}
			r, err := dc.ReadMsg()
			c.Close()
			if err != nil {
				t.Fatalf("dns %s %s via %s: %v", tt.proto, tt.name, tt.server, err)
			}
			var got []string
			for _, rr := range r.Answer {
				switch rr := rr.(type) {
				case *dns.A:
					got = append(got, rr.A.String())
				case *dns.AAAA:
					got = append(got, rr.AAAA.String())
				}
			}
			if r.Rcode != tt.rcode || !slices.Equal(got, tt.want) {
				t.Errorf("dns %s %s %s: rcode %d answers %v, want %d %v", tt.proto, tt.name, dns.TypeToString[tt.qtype], r.Rcode, got, tt.rcode, tt.want)
			}
		}
	})

	t.Run("records", func(t *testing.T) {
		r := n.Records()
		hasHTTP := func(svc string, ip netip.Addr, uri string) bool {
			return slices.ContainsFunc(r.HTTP, func(h HTTPRequest) bool {
				return h.Service == svc && h.Local.Addr() == ip && h.URI == uri
			})
		}
		if !hasHTTP(SvcHTTP, OtherIP, "/path?q=1") {
			t.Errorf("no HTTP record for %v; got %v", OtherIP, r)
		}
		if !slices.ContainsFunc(r.HTTP, func(h HTTPRequest) bool {
			return h.Method == "POST" && string(h.Body) == "hello body" && h.Remote.Addr() == HostIP
		}) {
			t.Errorf("no record of the POST body; got %v", r)
		}
		if !hasHTTP(SvcHTTPS, ServiceIP, "/secure") {
			t.Errorf("no HTTPS record; got %v", r)
		}
		if !hasHTTP(SvcMetadata, MetadataIP, "/latest/meta-data/iam/security-credentials/") {
			t.Errorf("no metadata record; got %v", r)
		}
		if !slices.ContainsFunc(r.Conns, func(c Conn) bool { return c.Service == SvcHTTPS && c.SNI == "x.allowed.test" && len(c.Data) > 0 }) {
			t.Errorf("no HTTPS conn record with SNI x.allowed.test; got %v", r)
		}
		if !slices.ContainsFunc(r.Conns, func(c Conn) bool {
			return c.Service == SvcTCPEcho && c.Local.Addr() == ServiceIP6 && string(c.Data) == "ping [2001:db8:1::10]:9000"
		}) {
			t.Errorf("no TCP echo record for %v; got %v", ServiceIP6, r)
		}
		if !slices.ContainsFunc(r.Datagrams, func(d Datagram) bool { return d.Local.Addr() == OtherIP && d.Remote.Addr() == HostIP }) {
			t.Errorf("no UDP record for %v; got %v", OtherIP, r)
		}
		if !slices.ContainsFunc(r.DNS, func(q DNSQuery) bool { return q.Name == "secret-data.evil.test" && q.Type == "A" && q.Proto == "udp" }) {
			t.Errorf("no DNS record for secret-data.evil.test; got %v", r)
		}
		if !slices.ContainsFunc(r.DNS, func(q DNSQuery) bool { return q.Name == "api.example.test" && q.Type == "AAAA" && q.Proto == "tcp" }) {
			t.Errorf("no DNS record for api.example.test AAAA over TCP; got %v", r)
		}
		if !slices.ContainsFunc(r.Packets, func(p Packet) bool {
			return p.Proto == "tcp" && p.Src == HostIP && p.Dst == OtherIP && p.DstPort == PortHTTP && p.TCPFlags&0x02 != 0
		}) {
			t.Errorf("no captured SYN to %v:80; got %v", OtherIP, r)
		}
	})

	t.Run("raw bytes to port 80", func(t *testing.T) {
		n.Reset()
		c, err := n.Host.DialContext(t.Context(), "tcp", OtherIP.String()+":80")
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "\x00\x01 not http at all SSN=078-05-1120")
		c.Close()
		r := n.WaitRecords(5*time.Second, func(r Records) bool {
			return slices.ContainsFunc(r.Conns, func(c Conn) bool { return bytes.Contains(c.Data, []byte("078-05-1120")) })
		})
		if len(r.HTTP) != 0 {
			t.Errorf("garbage parsed as HTTP: %v", r)
		}
	})

	t.Run("quiet", func(t *testing.T) {
		client.CloseIdleConnections()
		time.Sleep(100 * time.Millisecond) // let the FIN/ACK exchanges settle
		n.Reset()
		n.ExpectQuiet(100 * time.Millisecond)
	})
}

func getJSON(t *testing.T, c *http.Client, req *http.Request, v any) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: status %d: %s", req.Method, req.URL, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s %s: decode %s: %v", req.Method, req.URL, b, err)
	}
}

// TestNetSealed checks that nothing the test-host sends can leave the
// machine: the uplink has no default route and no route to the real uplink
// network, using route lookups only (no packet is sent there).
func TestNetSealed(t *testing.T) {
	n := NewNet(t)
	err := n.Uplink.Do(func() error {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			rs, err := netlink.RouteList(nil, fam)
			if err != nil {
				return err
			}
			for _, r := range rs {
				if r.Dst == nil {
					return fmt.Errorf("uplink has a default route: %v", r)
				}
			}
		}
		if rs, err := netlink.RouteGet(realUplink.AsSlice()); err == nil {
			return fmt.Errorf("uplink routes %v: %v", realUplink, rs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// From test-host, the real uplink's network is reachable only through the
	// uplink namespace.
	err = n.Host.Do(func() error {
		rs, err := netlink.RouteGet(realUplink.AsSlice())
		if err != nil {
			return fmt.Errorf("route get %v in test-host: %w", realUplink, err)
		}
		for _, r := range rs {
			l, err := netlink.LinkByIndex(r.LinkIndex)
			if err != nil {
				return err
			}
			if l.Attrs().Name != n.HostIf || !r.Gw.Equal(GatewayIP.AsSlice()) {
				return fmt.Errorf("test-host routes %v via %s gw %v, want %s gw %v", realUplink, l.Attrs().Name, r.Gw, n.HostIf, GatewayIP)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDialStaysInNamespace checks the guards that keep test traffic out of
// this machine's namespace.
func TestDialStaysInNamespace(t *testing.T) {
	n := NewNet(t)
	for _, addr := range []string{"api.example.test:80", "localhost:9000"} {
		if c, err := n.Host.DialContext(t.Context(), "tcp", addr); err == nil {
			c.Close()
			t.Errorf("Host.DialContext(%q) succeeded; want names refused", addr)
		}
		if l, err := n.Host.Listen("tcp", addr); err == nil {
			l.Close()
			t.Errorf("Host.Listen(%q) succeeded; want names refused", addr)
		}
	}
	// A socket of this process's own namespace is refused before it connects.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := checkSocketNetns(fd, n.Host.Path); err == nil {
		t.Errorf("checkSocketNetns(root-namespace socket, %s) = nil, want an error", n.Host.Path)
	}
	err = n.Host.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return checkSocketNetns(fd, n.Host.Path)
	})
	if err != nil {
		t.Errorf("checkSocketNetns(test-host socket) = %v, want nil", err)
	}
	// Names resolve through the uplink DNS, dual-stack, without leaving.
	c, err := n.DialContext(t.Context(), "tcp", "api.example.test:9000")
	if err != nil {
		t.Fatalf("Net.DialContext by name: %v", err)
	}
	c.Close()
	if _, err := n.DialContext(t.Context(), "tcp", "nope.test:80"); err == nil {
		t.Error("Net.DialContext(nope.test) succeeded; want NXDOMAIN")
	}
}

// TestNetClose checks that Close leaves no namespace or link behind, and
// that two Nets coexist.
func TestNetClose(t *testing.T) {
	n2 := NewNet(t)
	g0 := runtime.NumGoroutine()
	n1 := NewNet(t)
	c1 := n1.HTTPClient()
	for _, u := range []string{"http://api.example.test/", "https://api.example.test/"} {
		resp, err := c1.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close() // the connection stays open: Close must end it
	}
	if n1.Host.Name == n2.Host.Name || n1.HostIf == n2.HostIf {
		t.Fatalf("two Nets share names: %v %v", n1.Host, n2.Host)
	}
	for _, n := range []*Net{n1, n2} {
		if len(n.Host.Name) > 15 || len(n.HostIf) > 15 || len(n.UplinkIf) > 15 {
			t.Errorf("names too long: %q %q %q", n.Host.Name, n.HostIf, n.UplinkIf)
		}
	}
	// Keep a handle on the uplink to check the namespace itself is freed.
	if err := n1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := n1.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	c1.CloseIdleConnections()
	WaitFor(t, 5*time.Second, func() error {
		if g := runtime.NumGoroutine(); g > g0 {
			return fmt.Errorf("%d goroutines after Close, %d before NewNet", g, g0)
		}
		return nil
	})
	for _, ns := range []Netns{n1.Host, n1.Uplink} {
		if _, err := os.Lstat(ns.Path); !os.IsNotExist(err) {
			t.Errorf("%s still exists (err %v)", ns.Path, err)
		}
		if out, _ := exec.Command("ip", "netns", "list").Output(); bytes.Contains(out, []byte(ns.Name)) {
			t.Errorf("ip netns list still shows %s:\n%s", ns.Name, out)
		}
		if _, err := netns.GetFromPath(ns.Path); err == nil {
			t.Errorf("%s can still be opened", ns.Path)
		}
	}
	var mounts []byte
	mounts, _ = os.ReadFile("/proc/self/mountinfo")
	for _, ns := range []Netns{n1.Host, n1.Uplink} {
		if bytes.Contains(mounts, []byte(ns.Path)) || bytes.Contains(mounts, []byte("/run/netns/"+ns.Name)) {
			t.Errorf("%s still mounted", ns.Name)
		}
	}
	// n2 still works.
	c, err := n2.Host.DialContext(t.Context(), "tcp", ServiceIP.String()+":9000")
	if err != nil {
		t.Fatalf("second Net after closing the first: %v", err)
	}
	c.Close()
}

func TestSweepStale(t *testing.T) {
	RequireRoot(t)
	// A Net whose owner died: namespaces and marker exist, the pid does not.
	tok := nameToken(t.Name())
	for _, name := range []string{"dh" + tok, "du" + tok} {
		if _, err := createNetns(name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { deleteNetns(netnsNamed(name)) })
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(OwnerDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(OwnerDir, tok), []byte(fmt.Sprint(dead.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeOwner(tok) })
	// A live one: this process.
	live := nameToken(t.Name())
	if err := writeOwner(live); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeOwner(live) })

	sweepOnce = sync.Once{}
	sweepStale()
	for _, p := range []string{netnsNamed("dh" + tok).Path, netnsNamed("du" + tok).Path, filepath.Join(OwnerDir, tok)} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived the sweep (err %v)", p, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(OwnerDir, live)); err != nil {
		t.Errorf("live owner marker swept: %v", err)
	}
}

func TestStartInHost(t *testing.T) {
	RequireRoot(t)
	var pid int
	t.Run("start", func(t *testing.T) {
		n := NewNet(t)
		cmd := n.StartInHost("sleep", "60")
		pid = cmd.Process.Pid
		// The process runs in test-host.
		got, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(n.Host.Path, &st); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("net:[%d]", st.Ino); got != want {
			WaitFor(t, 2*time.Second, func() error { // nsenter may not have switched yet
				got, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
				if got != want {
					return fmt.Errorf("process netns %s, want %s", got, want)
				}
				return nil
			})
		}
	})
	if err := unix.Kill(pid, 0); err == nil {
		t.Errorf("process %d still alive after its test ended", pid)
	}
}
