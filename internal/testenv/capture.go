package testenv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// capture records every IP packet arriving on one interface (an AF_PACKET
// socket; a test-only sniffer, no BPF filter needed at these rates).
type capture struct {
	f    *os.File
	done chan struct{}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// startCapture opens the packet socket inside ns, bound to ifindex, and
// records incoming packets into rec until close.
func startCapture(ns Netns, ifindex int, rec *recorder) (*capture, error) {
	var fd int
	err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := checkSocketNetns(fd, ns.Path); err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind packet socket to ifindex %d: %w", ifindex, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	c := &capture{f: os.NewFile(uintptr(fd), "capture"), done: make(chan struct{})}
	rc, err := c.f.SyscallConn()
	if err != nil {
		c.f.Close()
		return nil, err
	}
	go func() {
		defer close(c.done)
		buf := make([]byte, 65536)
		for {
			var (
				n    int
				from unix.Sockaddr
				rerr error
			)
			err := rc.Read(func(fd uintptr) bool {
				n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
				return !errors.Is(rerr, unix.EAGAIN)
			})
			if err != nil { // closed
				return
			}
			if rerr != nil {
				continue
			}
			ll, ok := from.(*unix.SockaddrLinklayer)
			if !ok || ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			if p, ok := parsePacket(htons(ll.Protocol), buf[:n]); ok {
				p.Time = time.Now()
				rec.addPacket(p)
			}
		}
	}()
	return c, nil
}

func (c *capture) close() {
	c.f.Close()
	<-c.done
}

// parsePacket decodes the IP header (and TCP/UDP ports, ICMP type) of an
// IPv4 or IPv6 packet. It reports false for non-IP frames and for the
// neighbour discovery and MLD chatter that links produce on their own.
func parsePacket(ethertype uint16, b []byte) (Packet, bool) {
	var (
		p       Packet
		proto   uint8
		payload []byte
	)
	switch ethertype {
	case unix.ETH_P_IP:
		if len(b) < 20 || b[0]>>4 != 4 {
			return p, false
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return p, false
		}
		p.Len = int(binary.BigEndian.Uint16(b[2:4]))
		proto = b[9]
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		if binary.BigEndian.Uint16(b[6:8])&0x1fff == 0 { // first fragment carries the ports
			payload = b[ihl:]
		}
	case unix.ETH_P_IPV6:
		if len(b) < 40 || b[0]>>4 != 6 {
			return p, false
		}
		p.Len = 40 + int(binary.BigEndian.Uint16(b[4:6]))
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		proto = b[6]
		payload = b[40:]
		// Walk the common extension headers (hop-by-hop carries MLD).
	ext:
		for range 8 {
			switch proto {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(payload) < 8 {
					payload = nil
					break ext
				}
				proto, payload = payload[0], payload[min(len(payload), 8+int(payload[1])*8):]
			case 44: // fragment: only the first one carries the ports
				if len(payload) < 8 {
					payload = nil
					break ext
				}
				first := binary.BigEndian.Uint16(payload[2:4])&0xfff8 == 0
				proto, payload = payload[0], payload[8:]
				if !first {
					payload = nil
					break ext
				}
			default:
				break ext
			}
		}
	default:
		return p, false
	}
	switch proto {
	case unix.IPPROTO_TCP:
		p.Proto = "tcp"
		if len(payload) >= 14 {
			p.SrcPort = binary.BigEndian.Uint16(payload[0:2])
			p.DstPort = binary.BigEndian.Uint16(payload[2:4])
			p.TCPFlags = payload[13]
		}
	case unix.IPPROTO_UDP:
		p.Proto = "udp"
		if len(payload) >= 4 {
			p.SrcPort = binary.BigEndian.Uint16(payload[0:2])
			p.DstPort = binary.BigEndian.Uint16(payload[2:4])
		}
	case unix.IPPROTO_ICMP:
		p.Proto = "icmp"
		if len(payload) >= 1 {
			p.ICMPType = payload[0]
		}
	case unix.IPPROTO_ICMPV6:
		p.Proto = "icmpv6"
		if len(payload) >= 1 {
			p.ICMPType = payload[0]
			switch p.ICMPType {
			case 130, 131, 132, 133, 134, 135, 136, 137, 143: // MLD, RS, RA, NS, NA, redirect, MLDv2
				return p, false
			}
		}
	default:
		p.Proto = strconv.Itoa(int(proto))
	}
	return p, true
}
