//go:build !linux

package egress

import (
	"errors"
	"net"
	"net/netip"
)

func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.ErrUnsupported
}
