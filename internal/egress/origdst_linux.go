package egress

import (
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h
// (x/sys does not define it).
const ip6tSOOriginalDst = 80

// originalDst returns the destination c's client dialed before a netfilter
// NAT redirect: SO_ORIGINAL_DST for IPv4, IP6T_SO_ORIGINAL_DST for IPv6.
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	la, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination: local address %v", c.LocalAddr())
	}
	is4 := la.IP.To4() != nil
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	var out netip.AddrPort
	var serr error
	err = rc.Control(func(fd uintptr) {
		if is4 {
			// A sockaddr_in fits in the 16 bytes of an IPv6Mreq.
			m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
			if err != nil {
				serr = err
				return
			}
			b := m.Multiaddr
			out = netip.AddrPortFrom(netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]}), uint16(b[2])<<8|uint16(b[3]))
			return
		}
		// A sockaddr_in6 fits in an IPv6MTUInfo (sockaddr_in6 + mtu).
		m, err := unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSOOriginalDst)
		if err != nil {
			serr = err
			return
		}
		p := (*[2]byte)(unsafe.Pointer(&m.Addr.Port))
		out = netip.AddrPortFrom(netip.AddrFrom16(m.Addr.Addr), uint16(p[0])<<8|uint16(p[1]))
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	return out, nil
}
