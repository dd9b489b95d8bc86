package network

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/declaw/declaw/internal/testenv"
)

// Addresses of the emulated internet (ARCHITECTURE §3).
var (
	uplinkA    = netip.MustParseAddr("198.51.100.1")
	uplinkB    = netip.MustParseAddr("203.0.113.1")
	metadataIP = netip.MustParseAddr("169.254.169.254")
	testHostIP = netip.MustParseAddr("198.51.100.2")
)

const echoPort = 7

func requireRoot(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)[:n]
}

// testPrefix is a unique Manager prefix: "n" + 5 hex digits.
func testPrefix(t testing.TB) string {
	return "n" + randHex(t, 5)
}

// testNet is a test-host namespace whose only way out is a veth to an
// uplink namespace playing the internet, with echo servers there.
type testNet struct {
	name     string
	hostPath string // test-host netns path
	upPath   string
	host     netns.NsHandle
	up       netns.NsHandle
	echo     *echoServer // in uplink, TCP+UDP on :7 (all addresses)
}

func newTestNet(t testing.TB) *testNet {
	t.Helper()
	requireRoot(t)
	name := "dtn" + randHex(t, 6)
	n := &testNet{name: name}
	hostName, upName := name+"-host", name+"-up"
	for _, ns := range []string{hostName, upName} {
		if err := createNamedNS(ns); err != nil {
			t.Fatalf("createNamedNS(%s): %v", ns, err)
		}
		t.Cleanup(func() {
			if err := deleteNamedNS(ns); err != nil {
				t.Errorf("deleteNamedNS(%s): %v", ns, err)
			}
		})
	}
	n.hostPath, n.upPath = netnsDir+"/"+hostName, netnsDir+"/"+upName
	var err error
	if n.host, err = netns.GetFromPath(n.hostPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.host.Close() })
	if n.up, err = netns.GetFromPath(n.upPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.up.Close() })

	hh, err := netlink.NewHandleAt(n.host)
	if err != nil {
		t.Fatal(err)
	}
	defer hh.Close()
	uh, err := netlink.NewHandleAt(n.up)
	if err != nil {
		t.Fatal(err)
	}
	defer uh.Close()
	// The veth lives and dies with the namespaces; no cleanup of its own.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(n.host)}
	must(t, uh.LinkAdd(veth))
	up0, err := uh.LinkByName("up0")
	must(t, err)
	for _, a := range []string{"198.51.100.1/24", "203.0.113.1/24"} {
		must(t, uh.AddrAdd(up0, mustAddr(a)))
	}
	must(t, uh.LinkSetUp(up0))
	ulo, err := uh.LinkByName("lo")
	must(t, err)
	must(t, uh.AddrAdd(ulo, mustAddr("169.254.169.254/32")))
	must(t, uh.LinkSetUp(ulo))

	hlo, err := hh.LinkByName("lo")
	must(t, err)
	must(t, hh.LinkSetUp(hlo))
	eth0, err := hh.LinkByName("eth0")
	must(t, err)
	must(t, hh.AddrAdd(eth0, mustAddr(testHostIP.String()+"/24")))
	must(t, hh.LinkSetUp(eth0))
	must(t, hh.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.IP(uplinkA.AsSlice())}))

	n.echo = startEcho(t, n.up, echoPort, uplinkA, uplinkB, metadataIP)
	return n
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustAddr(s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	if err != nil {
		panic(err)
	}
	return a
}

// inNS runs fn in the namespace at path, on a locked thread.
func inNS(t testing.TB, path string, fn func()) {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatalf("open netns %s: %v", path, err)
	}
	defer ns.Close()
	if err := inNetNS(ns, func() error { fn(); return nil }); err != nil {
		t.Fatalf("in netns %s: %v", path, err)
	}
}

// echoServer echoes TCP and UDP and records the peers it saw.
type echoServer struct {
	mu    sync.Mutex
	peers []string // "tcp 198.51.100.2:1234 -> 198.51.100.1:7", "udp 198.51.100.2:1234 -> 203.0.113.1:7"
}

// startEcho serves TCP on all addresses and UDP on each of udpAddrs (one
// socket per address, so replies leave from the address asked).
func startEcho(t testing.TB, ns netns.NsHandle, port int, udpAddrs ...netip.Addr) *echoServer {
	t.Helper()
	e := &echoServer{}
	var tcp net.Listener
	var udps []net.PacketConn
	err := inNetNS(ns, func() error {
		var err error
		if tcp, err = net.Listen("tcp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(port))); err != nil {
			return err
		}
		for _, a := range udpAddrs {
			pc, err := net.ListenPacket("udp4", netip.AddrPortFrom(a, uint16(port)).String())
			if err != nil {
				return err
			}
			udps = append(udps, pc)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("start echo: %v", err)
	}
	t.Cleanup(func() {
		tcp.Close()
		for _, pc := range udps {
			pc.Close()
		}
	})
	go func() {
		for {
			c, err := tcp.Accept()
			if err != nil {
				return
			}
			e.record("tcp " + c.RemoteAddr().String() + " -> " + c.LocalAddr().String())
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	for _, pc := range udps {
		go func() {
			buf := make([]byte, 4096)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				e.record("udp " + from.String() + " -> " + pc.LocalAddr().String())
				pc.WriteTo(buf[:n], from)
			}
		}()
	}
	return e
}

func (e *echoServer) reset() {
	e.mu.Lock()
	e.peers = nil
	e.mu.Unlock()
}

func (e *echoServer) record(s string) {
	e.mu.Lock()
	e.peers = append(e.peers, s)
	e.mu.Unlock()
}

// seen reports whether any recorded peer line contains substr.
func (e *echoServer) seen(substr string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range e.peers {
		if strings.Contains(p, substr) {
			return true
		}
	}
	return false
}

// dialTCP dials from the namespace at nsPath.
func dialTCP(t testing.TB, nsPath string, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	var err error
	inNS(t, nsPath, func() { c, err = net.DialTimeout("tcp4", dst.String(), timeout) })
	return c, err
}

// tcpEcho connects, sends a line and expects it back.
func tcpEcho(t testing.TB, nsPath string, dst netip.AddrPort, timeout time.Duration) error {
	t.Helper()
	c, err := dialTCP(t, nsPath, dst, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	return echoOnce(c, timeout)
}

func echoOnce(c net.Conn, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	msg := []byte("ping\n")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return err
}

// udpEcho sends a datagram from the namespace and waits for the echo.
func udpEcho(t testing.TB, nsPath string, dst netip.AddrPort, timeout time.Duration) error {
	t.Helper()
	var c net.Conn
	var err error
	inNS(t, nsPath, func() { c, err = net.Dial("udp4", dst.String()) })
	if err != nil {
		return err
	}
	defer c.Close()
	return echoOnce(c, timeout)
}

// ping sends one ICMP echo request over a raw socket from the namespace
// and waits for a reply from dst.
func ping(t testing.TB, nsPath string, dst netip.Addr, timeout time.Duration) error {
	t.Helper()
	var pc net.PacketConn
	var err error
	inNS(t, nsPath, func() { pc, err = net.ListenPacket("ip4:icmp", "0.0.0.0") })
	if err != nil {
		return err
	}
	defer pc.Close()
	id := uint16(os.Getpid())
	req := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'd', 'c'}
	sum := icmpChecksum(req)
	req[2], req[3] = byte(sum>>8), byte(sum)
	if _, err := pc.WriteTo(req, &net.IPAddr{IP: net.IP(dst.AsSlice())}); err != nil {
		return err
	}
	pc.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		// Raw ip4:icmp sockets deliver the ICMP message without the IP header.
		if n >= 8 && buf[0] == 0 && from.(*net.IPAddr).IP.Equal(net.IP(dst.AsSlice())) {
			return nil
		}
	}
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// isTimeout reports whether err is a network timeout (a silent drop), as
// opposed to a refusal or an unreachable error.
func isTimeout(err error) bool {
	var ne net.Error
	return err != nil && errors.As(err, &ne) && ne.Timeout()
}
