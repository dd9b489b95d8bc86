// Package flowlog turns the audit log of a sandbox's firewall into events.
//
// With network.Config.LogGroup set, the table of package network logs every
// packet a slot's rules drop and every new connection they accept to an
// NFLOG group, rate-limited per slot and rule, with a prefix naming the slot
// and the reason: "dcl s<index> <reason>" (network.LogPrefix), e.g.
// "dcl s3 deny", "dcl s3 meta", "dcl s3 allow". [Listen] reads that group
// over nfnetlink_log in the namespace the table lives in and hands every
// message, parsed into an [Event], to a callback. Blocked connections are
// logged once per dropped packet (a TCP connect that times out shows up once
// per SYN retransmission); allowed ones once per new conntrack entry.
//
// The parser ([ParseMessage], [ParsePrefix], [ParsePacket]) is pure and
// never panics on malformed input; the listener skips what it cannot parse.
//
// The wire format is the kernel's include/uapi/linux/netfilter/nfnetlink_log.h:
// a nfgenmsg (family, version, group) followed by netlink attributes, whose
// values are big-endian.
package flowlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/mdlayher/netlink"
)

// Decision is what the firewall did with a connection.
type Decision string

const (
	Allow Decision = "allow"
	Block Decision = "block"
)

// ReasonAllow is the reason of every Allow event; every other reason
// (network.Reason*: "deny", "spoof", "ip6", "bcast", "meta", "slot",
// "block", "host") is a Block.
const ReasonAllow = "allow"

// Proto is an IP protocol number (unix.IPPROTO_TCP, ...).
type Proto uint8

// Protocol numbers with names.
const (
	ProtoICMP   Proto = 1
	ProtoTCP    Proto = 6
	ProtoUDP    Proto = 17
	ProtoICMPv6 Proto = 58
	ProtoSCTP   Proto = 132
)

func (p Proto) String() string {
	switch p {
	case ProtoICMP:
		return "icmp"
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMPv6:
		return "icmpv6"
	case ProtoSCTP:
		return "sctp"
	}
	return "proto-" + strconv.Itoa(int(p))
}

// Event is one logged decision on a packet from a sandbox's slot.
type Event struct {
	SlotIndex int      // network.Slot.Index of the sandbox
	Decision  Decision // Allow or Block
	Reason    string   // the rule that decided: "allow", "deny", "meta", ...
	Proto     Proto
	// Src and Dst are the packet's addresses; ports are zero for
	// protocols without ports (ICMP) and for non-first fragments.
	Src, Dst netip.AddrPort
	Time     time.Time // the kernel's timestamp if it sent one, else the time of parsing
}

func (e Event) String() string {
	return fmt.Sprintf("slot %d %s (%s) %s %s -> %s", e.SlotIndex, e.Decision, e.Reason, e.Proto, e.Src, e.Dst)
}

// Errors of the parser. ErrNotOurs marks messages of other log rules on the
// same group, which a listener ignores.
var (
	ErrMalformed = errors.New("malformed nflog message")
	ErrNotOurs   = errors.New("nflog message without a declaw prefix")
)

// nfnetlink_log attribute types (NFULA_*).
const (
	attrPacketHdr = 1
	attrTimestamp = 3
	attrPayload   = 9
	attrPrefix    = 10
)

// ParseMessage parses the body of an NFULNL_MSG_PACKET message (the
// nfgenmsg and the attributes after it). now is the event time when the
// message carries no timestamp.
func ParseMessage(body []byte, now time.Time) (Event, error) {
	if len(body) < 4 {
		return Event{}, fmt.Errorf("%w: %d-byte body", ErrMalformed, len(body))
	}
	ad, err := netlink.NewAttributeDecoder(body[4:])
	if err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var prefix, payload []byte
	var havePrefix bool
	ev := Event{Time: now}
	for ad.Next() {
		switch ad.Type() {
		case attrPrefix:
			prefix, havePrefix = ad.Bytes(), true
		case attrPayload:
			payload = ad.Bytes()
		case attrTimestamp:
			if b := ad.Bytes(); len(b) == 16 {
				sec, usec := binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])
				if sec < 1<<40 && usec < 1e6 {
					ev.Time = time.Unix(int64(sec), int64(usec)*1000)
				}
			}
		}
	}
	if err := ad.Err(); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !havePrefix {
		return Event{}, ErrNotOurs
	}
	// The kernel NUL-terminates the prefix.
	if i := strings.IndexByte(string(prefix), 0); i >= 0 {
		prefix = prefix[:i]
	}
	idx, reason, ok := ParsePrefix(string(prefix))
	if !ok {
		return Event{}, fmt.Errorf("%w: %q", ErrNotOurs, prefix)
	}
	ev.SlotIndex, ev.Reason, ev.Decision = idx, reason, Block
	if reason == ReasonAllow {
		ev.Decision = Allow
	}
	if ev.Proto, ev.Src, ev.Dst, err = ParsePacket(payload); err != nil {
		return Event{}, err
	}
	return ev, nil
}

// ParsePrefix parses a log prefix "dcl s<index> <reason>".
func ParsePrefix(p string) (index int, reason string, ok bool) {
	rest, ok := strings.CutPrefix(p, "dcl s")
	if !ok {
		return 0, "", false
	}
	num, reason, ok := strings.Cut(rest, " ")
	if !ok || reason == "" || strings.ContainsAny(reason, " \x00") || num == "" || len(num) > 9 {
		return 0, "", false
	}
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, "", false
		}
	}
	if len(num) > 1 && num[0] == '0' {
		return 0, "", false
	}
	index, err := strconv.Atoi(num)
	return index, reason, err == nil
}

// ParsePacket reads the protocol, addresses and ports of an IPv4 or IPv6
// packet, which may be truncated after its network header (the log rules
// copy only its start): ports of a truncated transport header are zero.
func ParsePacket(b []byte) (proto Proto, src, dst netip.AddrPort, err error) {
	if len(b) < 1 {
		return 0, src, dst, fmt.Errorf("%w: no packet", ErrMalformed)
	}
	var l4 []byte
	var s, d netip.Addr
	switch b[0] >> 4 {
	case 4:
		ihl := int(b[0]&0x0f) * 4
		if len(b) < 20 || ihl < 20 || len(b) < ihl {
			return 0, src, dst, fmt.Errorf("%w: IPv4 header of %d bytes in %d", ErrMalformed, ihl, len(b))
		}
		proto = Proto(b[9])
		s, d = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		if binary.BigEndian.Uint16(b[6:8])&0x1fff == 0 { // first fragment or none
			l4 = b[ihl:]
		}
	case 6:
		if len(b) < 40 {
			return 0, src, dst, fmt.Errorf("%w: IPv6 header in %d bytes", ErrMalformed, len(b))
		}
		s, d = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		proto, l4 = ipv6Transport(b[6], b[40:])
	default:
		return 0, src, dst, fmt.Errorf("%w: IP version %d", ErrMalformed, b[0]>>4)
	}
	var sp, dp uint16
	switch proto {
	case ProtoTCP, ProtoUDP, ProtoSCTP, 136 /* UDP-Lite */, 33 /* DCCP */ :
		if len(l4) >= 4 {
			sp, dp = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		}
	}
	return proto, netip.AddrPortFrom(s, sp), netip.AddrPortFrom(d, dp), nil
}

// ipv6Transport skips IPv6 extension headers. It returns the last next
// header value and the bytes after the headers it could skip (nil when
// truncated or a non-first fragment).
func ipv6Transport(next byte, b []byte) (Proto, []byte) {
	for range 8 { // a bound: extension headers can chain
		var n int
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(b) < 2 {
				return Proto(next), nil
			}
			n = (int(b[1]) + 1) * 8
		case 51: // authentication header
			if len(b) < 2 {
				return Proto(next), nil
			}
			n = (int(b[1]) + 2) * 4
		case 44: // fragment
			if len(b) < 8 {
				return Proto(next), nil
			}
			if binary.BigEndian.Uint16(b[2:4])>>3 != 0 {
				return Proto(b[0]), nil
			}
			n = 8
		default:
			return Proto(next), b
		}
		if len(b) < n {
			return Proto(next), nil
		}
		next, b = b[0], b[n:]
	}
	return Proto(next), nil
}
