package network

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	dropWait = 1500 * time.Millisecond // how long a dropped connect is given
	testDNS  = 53
	testProx = 15001
)

func newTestManager(t testing.TB, n *testNet, poolSize int) *Manager {
	t.Helper()
	m, err := New(t.Context(), Config{
		Prefix:    testPrefix(t),
		PoolSize:  poolSize,
		DNSPort:   testDNS,
		ProxyPort: testProx,
		HostNetNS: n.hostPath,
		Logf:      t.Logf,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

func acquire(t testing.TB, m *Manager) *Slot {
	t.Helper()
	s, err := m.Acquire(t.Context())
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	t.Cleanup(func() {
		m.mu.Lock()
		_, held := m.inUse[s.Index]
		m.mu.Unlock()
		if held {
			if err := m.Release(context.Background(), s); err != nil {
				t.Errorf("Release: %v", err)
			}
		}
	})
	return s
}

func apply(t testing.TB, m *Manager, s *Slot, p Policy) {
	t.Helper()
	if err := m.Apply(t.Context(), s, p); err != nil {
		t.Fatalf("Apply(%+v): %v", p, err)
	}
}

func ap(a netip.Addr, port int) netip.AddrPort { return netip.AddrPortFrom(a, uint16(port)) }

// wantReach asserts TCP and UDP echo from the slot to dst work.
func wantReach(t *testing.T, s *Slot, dst netip.Addr) {
	t.Helper()
	if err := tcpEcho(t, s.NetNSPath, ap(dst, echoPort), 3*time.Second); err != nil {
		t.Errorf("TCP from slot to %s: %v, want echo", dst, err)
	}
	if err := udpEcho(t, s.NetNSPath, ap(dst, echoPort), 3*time.Second); err != nil {
		t.Errorf("UDP from slot to %s: %v, want echo", dst, err)
	}
}

// wantTCPDropped asserts a TCP connect from the slot times out.
func wantTCPDropped(t *testing.T, s *Slot, dst netip.AddrPort) {
	t.Helper()
	c, err := dialTCP(t, s.NetNSPath, dst, dropWait)
	if err == nil {
		c.Close()
		t.Errorf("TCP connect from slot to %s succeeded, want timeout", dst)
		return
	}
	if !isTimeout(err) {
		t.Errorf("TCP connect from slot to %s: %v, want a timeout (silent drop)", dst, err)
	}
}

func wantUDPDropped(t *testing.T, s *Slot, dst netip.AddrPort) {
	t.Helper()
	err := udpEcho(t, s.NetNSPath, dst, dropWait/2)
	if !isTimeout(err) {
		t.Errorf("UDP from slot to %s: %v, want no answer (timeout)", dst, err)
	}
}

func TestSmoke(t *testing.T) {
	n := newTestNet(t)
	m := newTestManager(t, n, 1)
	s := acquire(t, m)
	apply(t, m, s, Policy{})
	wantReach(t, s, uplinkA)
}

// hostListener accepts TCP in the test-host namespace and records, for
// each connection, its SO_ORIGINAL_DST.
type hostListener struct {
	ln    net.Listener
	conns chan netip.AddrPort // original destination of each accepted conn
}

func listenInNS(t *testing.T, nsPath, network, addr string) *hostListener {
	t.Helper()
	h := &hostListener{conns: make(chan netip.AddrPort, 16)}
	var err error
	inNS(t, nsPath, func() { h.ln, err = net.Listen(network, addr) })
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, nsPath, err)
	}
	t.Cleanup(func() { h.ln.Close() })
	go func() {
		for {
			c, err := h.ln.Accept()
			if err != nil {
				return
			}
			select {
			case h.conns <- originalDst(c):
			default: // nobody is waiting for it
			}
			go func() { // echo, so clients can tell they got through
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return h
}

// next returns the original destination of the next accepted connection.
func (h *hostListener) next(t *testing.T) netip.AddrPort {
	t.Helper()
	select {
	case a := <-h.conns:
		return a
	case <-time.After(3 * time.Second):
		t.Fatal("no connection accepted within 3s")
		return netip.AddrPort{}
	}
}

func originalDst(c net.Conn) netip.AddrPort {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}
	}
	var out netip.AddrPort
	raw.Control(func(fd uintptr) {
		// struct sockaddr_in is 16 bytes, the size of an ipv6_mreq.
		mreq, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			return
		}
		b := mreq.Multiaddr
		out = netip.AddrPortFrom(netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]}), uint16(b[2])<<8|uint16(b[3]))
	})
	return out
}

func udpEchoInNS(t *testing.T, nsPath, addr string) {
	t.Helper()
	var pc net.PacketConn
	var err error
	inNS(t, nsPath, func() { pc, err = net.ListenPacket("udp4", addr) })
	if err != nil {
		t.Fatalf("listen udp %s: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// TestFirewall runs the policy scenarios against one test network, one
// Manager and two slots; subtests run in order and each applies the
// policy it needs.
func TestFirewall(t *testing.T) {
	n := newTestNet(t)
	const hostSvc = 2222
	listenInNS(t, n.hostPath, "tcp4", ":2222")
	listenInNS(t, n.hostPath, "tcp4", ":53")
	udpEchoInNS(t, n.hostPath, ":53")
	proxy := listenInNS(t, n.hostPath, "tcp4", ":15001")
	listenInNS(t, n.upPath, "tcp4", "203.0.113.1:443") // a web server on the internet

	// Controls: from test-host itself the uplink, the metadata stand-in
	// and both test networks answer, so a failure below is the firewall.
	for _, dst := range []netip.Addr{uplinkA, uplinkB, metadataIP} {
		if err := tcpEcho(t, n.hostPath, ap(dst, echoPort), 3*time.Second); err != nil {
			t.Fatalf("control: TCP from test-host to %s: %v", dst, err)
		}
		if err := udpEcho(t, n.hostPath, ap(dst, echoPort), 3*time.Second); err != nil {
			t.Fatalf("control: UDP from test-host to %s: %v", dst, err)
		}
	}
	n.echo.reset()

	m := newTestManager(t, n, 2)
	a, b := acquire(t, m), acquire(t, m)
	listenInNS(t, b.NetNSPath, "tcp4", ":7")
	listenInNS(t, a.NetNSPath, "tcp4", ":49983") // envd stand-in

	t.Run("acquired slot denies until Apply", func(t *testing.T) {
		wantTCPDropped(t, a, ap(uplinkA, echoPort))
	})
	t.Run("empty policy allows all", func(t *testing.T) {
		apply(t, m, a, Policy{})
		wantReach(t, a, uplinkA)
		wantReach(t, a, uplinkB)
		if err := ping(t, a.NetNSPath, uplinkA, 3*time.Second); err != nil {
			t.Errorf("ping %s: %v, want reply", uplinkA, err)
		}
	})
	t.Run("server reaches envd in slot", func(t *testing.T) {
		apply(t, m, a, Policy{DenyOut: []string{"0.0.0.0/0"}})
		if err := tcpEcho(t, n.hostPath, ap(a.GuestIP, 49983), 3*time.Second); err != nil {
			t.Errorf("TCP from host to envd at %s: %v", a.GuestIP, err)
		}
	})
	t.Run("deny all drops TCP UDP ICMP", func(t *testing.T) {
		for _, p := range []Policy{{DenyOut: []string{"0.0.0.0/0"}}, {DenyOut: []string{"*"}}} {
			apply(t, m, a, p)
			wantTCPDropped(t, a, ap(uplinkA, echoPort))
		}
		wantUDPDropped(t, a, ap(uplinkA, echoPort))
		if err := ping(t, a.NetNSPath, uplinkA, dropWait); !isTimeout(err) {
			t.Errorf("ping %s under deny-all: %v, want timeout", uplinkA, err)
		}
	})
	t.Run("CIDR allow beats deny all", func(t *testing.T) {
		apply(t, m, a, Policy{DenyOut: []string{"0.0.0.0/0"}, AllowOut: []string{"198.51.100.0/24"}})
		wantReach(t, a, uplinkA)
		wantTCPDropped(t, a, ap(uplinkB, echoPort))
	})
	t.Run("IP allow beats CIDR deny", func(t *testing.T) {
		apply(t, m, a, Policy{DenyOut: []string{"198.51.100.0/24", "203.0.113.0/24"}, AllowOut: []string{"198.51.100.1"}})
		wantReach(t, a, uplinkA)
		wantTCPDropped(t, a, ap(uplinkB, echoPort))
	})
	t.Run("CIDR deny with default allow", func(t *testing.T) {
		apply(t, m, a, Policy{DenyOut: []string{"203.0.113.0/24"}})
		wantReach(t, a, uplinkA)
		wantTCPDropped(t, a, ap(uplinkB, echoPort))
	})
	t.Run("metadata dropped even when allowed", func(t *testing.T) {
		for _, p := range []Policy{{}, {AllowOut: []string{"0.0.0.0/0", "169.254.169.254"}}} {
			apply(t, m, a, p)
			wantTCPDropped(t, a, ap(metadataIP, echoPort))
		}
	})
	t.Run("host addresses dropped except DNS and proxy", func(t *testing.T) {
		apply(t, m, a, Policy{})
		wantTCPDropped(t, a, ap(a.HostIP, hostSvc))
		wantTCPDropped(t, a, ap(testHostIP, hostSvc))
		wantTCPDropped(t, a, ap(b.HostIP, testDNS)) // another slot's gateway
		if err := udpEcho(t, a.NetNSPath, ap(a.HostIP, testDNS), 3*time.Second); err != nil {
			t.Errorf("UDP DNS to own gateway: %v", err)
		}
		if err := tcpEcho(t, a.NetNSPath, ap(a.HostIP, testDNS), 3*time.Second); err != nil {
			t.Errorf("TCP DNS to own gateway: %v", err)
		}
		if err := tcpEcho(t, a.NetNSPath, ap(a.HostIP, testProx), 3*time.Second); err != nil {
			t.Errorf("proxy port on own gateway: %v", err)
		}
		proxy.next(t)
	})
	t.Run("other slots unreachable", func(t *testing.T) {
		apply(t, m, a, Policy{AllowOut: []string{"10.0.0.0/8"}})
		wantTCPDropped(t, a, ap(b.GuestIP, echoPort))
	})
	t.Run("readdressing the guest opens nothing", func(t *testing.T) {
		apply(t, m, a, Policy{DenyOut: []string{"0.0.0.0/0"}, AllowOut: []string{"198.51.100.0/24"}})
		gh, err := netlink.NewHandleAt(mustNS(t, a.NetNSPath))
		must(t, err)
		defer gh.Close()
		eth, err := gh.LinkByName("eth0")
		must(t, err)
		for _, addr := range []string{"203.0.113.50/24", b.GuestIP.String() + "/32"} {
			must(t, gh.AddrAdd(eth, mustAddr(addr)))
			defer gh.AddrDel(eth, mustAddr(addr))
		}
		// 203.0.113.1 is now on-link for the guest: still unreachable.
		if c, err := dialTCP(t, a.NetNSPath, ap(uplinkB, echoPort), dropWait); err == nil {
			c.Close()
			t.Errorf("TCP to %s after adding 203.0.113.50/24 in slot succeeded", uplinkB)
		}
		// Spoofing another slot's address towards an allowed destination.
		var c net.Conn
		inNS(t, a.NetNSPath, func() {
			d := net.Dialer{Timeout: dropWait, LocalAddr: &net.TCPAddr{IP: net.IP(b.GuestIP.AsSlice())}}
			c, err = d.Dial("tcp4", ap(uplinkA, echoPort).String())
		})
		if err == nil {
			c.Close()
			t.Errorf("TCP to %s from spoofed source %s succeeded", uplinkA, b.GuestIP)
		} else if !isTimeout(err) {
			t.Errorf("TCP from spoofed source: %v, want timeout", err)
		}
		wantReach(t, a, uplinkA) // the real address still works
	})
	t.Run("policy change cuts established connection", func(t *testing.T) {
		apply(t, m, a, Policy{})
		c, err := dialTCP(t, a.NetNSPath, ap(uplinkA, echoPort), 3*time.Second)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		if err := echoOnce(c, 3*time.Second); err != nil {
			t.Fatalf("echo before policy change: %v", err)
		}
		apply(t, m, a, Policy{DenyOut: []string{"198.51.100.0/24"}})
		if flows := slotFlows(t, n, a, uplinkA); len(flows) > 0 {
			t.Errorf("conntrack still tracks %v after Apply", flows)
		}
		if err := echoOnce(c, dropWait); !isTimeout(err) {
			t.Errorf("echo on established connection after deny: %v, want timeout", err)
		}
	})
	t.Run("domains redirect web traffic to the proxy", func(t *testing.T) {
		apply(t, m, a, Policy{DenyOut: []string{"*"}, AllowOut: []string{"example.com", "198.51.100.1"}})
		if err := tcpEcho(t, a.NetNSPath, ap(uplinkB, 443), 3*time.Second); err != nil {
			t.Fatalf("TCP to %s:443 with a domain rule: %v, want it redirected to the proxy", uplinkB, err)
		}
		if got, want := proxy.next(t), ap(uplinkB, 443); got != want {
			t.Errorf("proxy saw original destination %s, want %s", got, want)
		}
		wantTCPDropped(t, a, ap(uplinkB, echoPort)) // other ports stay denied
		wantReach(t, a, uplinkA)                    // allowed IPs bypass the proxy
	})
	t.Run("domain policy cuts established direct web flows", func(t *testing.T) {
		apply(t, m, a, Policy{})
		c, err := dialTCP(t, a.NetNSPath, ap(uplinkB, 443), 3*time.Second)
		if err != nil {
			t.Fatalf("dial %s:443 under allow-all: %v", uplinkB, err)
		}
		defer c.Close()
		if err := echoOnce(c, 3*time.Second); err != nil {
			t.Fatalf("echo before policy change: %v", err)
		}
		apply(t, m, a, Policy{DenyOut: []string{"evil.example"}})
		if err := echoOnce(c, dropWait); err == nil {
			t.Errorf("direct flow to %s:443 still works after a domain rule sent web traffic to the proxy", uplinkB)
		}
	})
	t.Run("IPv6 off in slot", func(t *testing.T) {
		var got []byte
		var err error
		inNS(t, a.NetNSPath, func() { got, err = os.ReadFile("/proc/sys/net/ipv6/conf/all/disable_ipv6") })
		if err != nil || strings.TrimSpace(string(got)) != "1" {
			t.Errorf("disable_ipv6 in slot = %q, %v; want 1", got, err)
		}
	})
	if n.echo.seen(metadataIP.String()) {
		t.Errorf("the metadata stand-in saw traffic from a slot: %v", n.echo.peers)
	}
}

func mustNS(t *testing.T, path string) netns.NsHandle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	must(t, err)
	t.Cleanup(func() { ns.Close() })
	return ns
}

// slotFlows lists the tracked flows from the slot's guest to dst.
func slotFlows(t *testing.T, n *testNet, s *Slot, dst netip.Addr) []string {
	t.Helper()
	h, err := netlink.NewHandleAt(n.host)
	must(t, err)
	defer h.Close()
	flows, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	must(t, err)
	var out []string
	for _, f := range flows {
		if f.Forward.SrcIP.Equal(net.IP(s.GuestIP.AsSlice())) && f.Forward.DstIP.Equal(net.IP(dst.AsSlice())) {
			out = append(out, f.String())
		}
	}
	return out
}

// TestIPv6Dropped plays a sandbox root that switches IPv6 back on in its
// slot, on a host that forwards IPv6 and has IPv6 on the slot's host end:
// the table must still drop everything.
func TestIPv6Dropped(t *testing.T) {
	n := newTestNet(t)
	uh, err := netlink.NewHandleAt(n.up)
	must(t, err)
	defer uh.Close()
	hh, err := netlink.NewHandleAt(n.host)
	must(t, err)
	defer hh.Close()
	addr6 := func(h *netlink.Handle, ifname, cidr string) {
		t.Helper()
		l, err := h.LinkByName(ifname)
		must(t, err)
		a := mustAddr(cidr)
		a.Flags = unix.IFA_F_NODAD
		must(t, h.AddrAdd(l, a))
	}
	addr6(uh, "up0", "2001:db8::1/64")
	addr6(hh, "eth0", "2001:db8::2/64")
	must(t, writeSysctl(n.host, "net.ipv6.conf.all.forwarding", "1"))
	eth0, err := hh.LinkByName("eth0")
	must(t, err)
	must(t, hh.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: mustPrefixNet("::/0"), Gw: net.ParseIP("2001:db8::1")}))
	up0, err := uh.LinkByName("up0")
	must(t, err)
	// The uplink routes the slots' IPv6 range back (there is no IPv6 NAT).
	must(t, uh.RouteAdd(&netlink.Route{LinkIndex: up0.Attrs().Index, Dst: mustPrefixNet("2001:db8:5::/64"), Gw: net.ParseIP("2001:db8::2")}))
	up6 := netip.MustParseAddrPort("[2001:db8::1]:7")
	listenInNS(t, n.upPath, "tcp6", up6.String())
	if c, err := dialTCP6(t, n.hostPath, up6, 3*time.Second); err != nil {
		t.Fatalf("control: TCP from test-host to %s: %v", up6, err)
	} else {
		c.Close()
	}

	m := newTestManager(t, n, -1)
	s := acquire(t, m)
	apply(t, m, s, Policy{AllowOut: []string{"*", "::/0"}})
	must(t, writeSysctl(m.hostNS, "net.ipv6.conf."+s.HostIf+".disable_ipv6", "0"))
	addr6(hh, s.HostIf, "2001:db8:5::1/64")
	sns := mustNS(t, s.NetNSPath)
	for _, key := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.eth0.disable_ipv6"} {
		must(t, writeSysctl(sns, key, "0"))
	}
	gh, err := netlink.NewHandleAt(sns)
	must(t, err)
	defer gh.Close()
	addr6(gh, "eth0", "2001:db8:5::2/64")
	geth, err := gh.LinkByName("eth0")
	must(t, err)
	must(t, gh.RouteAdd(&netlink.Route{LinkIndex: geth.Attrs().Index, Dst: mustPrefixNet("::/0"), Gw: net.ParseIP("2001:db8:5::1")}))

	// Static neighbours: the input chain drops neighbour discovery from
	// the slot, which would hide what the forward chain does.
	hostEnd, err := hh.LinkByName(s.HostIf)
	must(t, err)
	must(t, gh.NeighAdd(&netlink.Neigh{LinkIndex: geth.Attrs().Index, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP("2001:db8:5::1"), HardwareAddr: hostEnd.Attrs().HardwareAddr}))
	must(t, hh.NeighAdd(&netlink.Neigh{LinkIndex: hostEnd.Attrs().Index, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP("2001:db8:5::2"), HardwareAddr: geth.Attrs().HardwareAddr}))

	for _, dst := range []netip.AddrPort{up6, netip.MustParseAddrPort("[2001:db8:5::1]:2222")} {
		c, err := dialTCP6(t, s.NetNSPath, dst, dropWait)
		if err == nil {
			c.Close()
			t.Errorf("IPv6 TCP from slot to %s succeeded, want dropped", dst)
		} else if !isTimeout(err) {
			t.Errorf("IPv6 TCP from slot to %s: %v, want timeout", dst, err)
		}
	}
}

func dialTCP6(t testing.TB, nsPath string, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	var err error
	inNS(t, nsPath, func() { c, err = net.DialTimeout("tcp6", dst.String(), timeout) })
	return c, err
}

func mustPrefixNet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}
