package flowlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// nlattr encodes one netlink attribute by hand: native-endian length and
// type, the value, padding to 4 bytes.
func nlattr(typ uint16, data []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// message builds an NFULNL_MSG_PACKET body as the kernel does: nfgenmsg,
// packet header, then the attributes.
func message(family byte, group uint16, attrs ...[]byte) []byte {
	b := []byte{family, 0, byte(group >> 8), byte(group)}
	b = append(b, nlattr(attrPacketHdr, []byte{0x08, 0x00, 2, 0})...)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

func prefixAttr(p string) []byte  { return nlattr(attrPrefix, append([]byte(p), 0)) }
func payloadAttr(p []byte) []byte { return nlattr(attrPayload, p) }

// ipv4 builds an IPv4 header (ihl words, no checksum) followed by l4.
func ipv4(proto byte, src, dst string, ihl int, fragOff uint16, l4 []byte) []byte {
	h := make([]byte, ihl*4)
	h[0] = 0x40 | byte(ihl)
	binary.BigEndian.PutUint16(h[2:], uint16(len(h)+len(l4)))
	binary.BigEndian.PutUint16(h[6:], fragOff)
	h[8], h[9] = 64, proto
	copy(h[12:], netip.MustParseAddr(src).AsSlice())
	copy(h[16:], netip.MustParseAddr(dst).AsSlice())
	return append(h, l4...)
}

// ipv6 builds an IPv6 header with next header next, followed by rest.
func ipv6(next byte, src, dst string, rest []byte) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(rest)))
	h[6], h[7] = next, 64
	copy(h[8:], netip.MustParseAddr(src).AsSlice())
	copy(h[24:], netip.MustParseAddr(dst).AsSlice())
	return append(h, rest...)
}

func ports(sp, dp uint16, tail ...byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, sp)
	return append(binary.BigEndian.AppendUint16(b, dp), tail...)
}

var now = time.Unix(1_800_000_000, 0)

func TestParseMessage(t *testing.T) {
	ap := netip.MustParseAddrPort
	tcpSyn := ports(40000, 9000, make([]byte, 16)...)
	tests := []struct {
		name string
		body []byte
		want Event
	}{
		{"ipv4 tcp deny", message(2, 7, prefixAttr("dcl s3 deny"), payloadAttr(ipv4(6, "10.200.0.14", "198.51.100.10", 5, 0x4000, tcpSyn))),
			Event{3, Block, "deny", ProtoTCP, ap("10.200.0.14:40000"), ap("198.51.100.10:9000"), now}},
		{"ipv4 udp allow, options", message(2, 7, prefixAttr("dcl s12 allow"), payloadAttr(ipv4(17, "10.200.0.50", "203.0.113.10", 6, 0, ports(5353, 9001, 0, 8, 0, 0)))),
			Event{12, Allow, "allow", ProtoUDP, ap("10.200.0.50:5353"), ap("203.0.113.10:9001"), now}},
		{"ipv4 icmp meta", message(2, 7, prefixAttr("dcl s0 meta"), payloadAttr(ipv4(1, "10.200.0.2", "169.254.169.254", 5, 0, []byte{8, 0, 0, 0, 0, 1, 0, 1}))),
			Event{0, Block, "meta", ProtoICMP, ap("10.200.0.2:0"), ap("169.254.169.254:0"), now}},
		{"ipv4 later fragment: no ports", message(2, 7, prefixAttr("dcl s1 deny"), payloadAttr(ipv4(17, "10.200.0.6", "198.51.100.10", 5, 185, ports(1, 2)))),
			Event{1, Block, "deny", ProtoUDP, ap("10.200.0.6:0"), ap("198.51.100.10:0"), now}},
		{"ipv4 truncated transport header", message(2, 7, prefixAttr("dcl s1 deny"), payloadAttr(ipv4(6, "10.200.0.6", "198.51.100.10", 5, 0, []byte{0x9c, 0x40, 0x23}))),
			Event{1, Block, "deny", ProtoTCP, ap("10.200.0.6:0"), ap("198.51.100.10:0"), now}},
		{"ipv6 tcp", message(10, 7, prefixAttr("dcl s4 ip6"), payloadAttr(ipv6(6, "fd00::2", "2001:db8:1::10", tcpSyn))),
			Event{4, Block, "ip6", ProtoTCP, ap("[fd00::2]:40000"), ap("[2001:db8:1::10]:9000"), now}},
		{"ipv6 hop-by-hop, first fragment, udp", message(10, 7, prefixAttr("dcl s4 ip6"), payloadAttr(ipv6(0, "fd00::2", "fd00:ec2::254",
			append(append([]byte{44, 0, 1, 4, 0, 0, 0, 0}, 17, 0, 0, 1, 0, 0, 0, 9), ports(1000, 53)...)))),
			Event{4, Block, "ip6", ProtoUDP, ap("[fd00::2]:1000"), ap("[fd00:ec2::254]:53"), now}},
		{"ipv6 later fragment", message(10, 7, prefixAttr("dcl s4 ip6"), payloadAttr(ipv6(44, "fd00::2", "fd00::1",
			append([]byte{17, 0, 0, 8, 0, 0, 0, 9}, ports(1000, 53)...)))),
			Event{4, Block, "ip6", ProtoUDP, ap("[fd00::2]:0"), ap("[fd00::1]:0"), now}},
		{"kernel timestamp", message(2, 7,
			nlattr(attrTimestamp, binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, 1_700_000_000), 250_000)),
			prefixAttr("dcl s3 host"), payloadAttr(ipv4(6, "10.200.0.14", "10.200.0.13", 5, 0, tcpSyn))),
			Event{3, Block, "host", ProtoTCP, ap("10.200.0.14:40000"), ap("10.200.0.13:9000"), time.Unix(1_700_000_000, 250_000_000)}},
		{"unknown attributes are skipped", message(2, 7, nlattr(99, []byte{1, 2, 3}), prefixAttr("dcl s3 deny"), nlattr(4, []byte{0, 0, 0, 5}),
			payloadAttr(ipv4(6, "10.200.0.14", "198.51.100.10", 5, 0, tcpSyn))),
			Event{3, Block, "deny", ProtoTCP, ap("10.200.0.14:40000"), ap("198.51.100.10:9000"), now}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMessage(tt.body, now)
			if err != nil {
				t.Fatalf("ParseMessage: %v", err)
			}
			if !got.Time.Equal(tt.want.Time) {
				t.Errorf("ParseMessage time = %v, want %v", got.Time, tt.want.Time)
			}
			got.Time, tt.want.Time = time.Time{}, time.Time{}
			if got != tt.want {
				t.Errorf("ParseMessage = %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseMessageErrors(t *testing.T) {
	good := payloadAttr(ipv4(6, "10.200.0.14", "198.51.100.10", 5, 0, ports(1, 2)))
	tests := []struct {
		name string
		body []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"short nfgenmsg", []byte{2, 0, 0}, ErrMalformed},
		{"attribute longer than the message", append(message(2, 7), 0xff, 0, 10, 0), ErrMalformed},
		{"attribute shorter than its header", append(message(2, 7), 2, 0, 10, 0), ErrMalformed},
		{"no prefix", message(2, 7, good), ErrNotOurs},
		{"foreign prefix", message(2, 7, prefixAttr("IN=eth0 "), good), ErrNotOurs},
		{"prefix without index", message(2, 7, prefixAttr("dcl s deny"), good), ErrNotOurs},
		{"no payload", message(2, 7, prefixAttr("dcl s3 deny")), ErrMalformed},
		{"empty payload", message(2, 7, prefixAttr("dcl s3 deny"), payloadAttr(nil)), ErrMalformed},
		{"IP version 5", message(2, 7, prefixAttr("dcl s3 deny"), payloadAttr([]byte{0x50, 0, 0, 0})), ErrMalformed},
		{"short IPv4", message(2, 7, prefixAttr("dcl s3 deny"), payloadAttr(ipv4(6, "10.0.0.1", "10.0.0.2", 5, 0, nil)[:19])), ErrMalformed},
		{"IPv4 ihl 4", message(2, 7, prefixAttr("dcl s3 deny"), payloadAttr(append([]byte{0x44}, make([]byte, 30)...))), ErrMalformed},
		{"IPv4 ihl past the end", message(2, 7, prefixAttr("dcl s3 deny"), payloadAttr(ipv4(6, "10.0.0.1", "10.0.0.2", 15, 0, nil)[:40])), ErrMalformed},
		{"short IPv6", message(10, 7, prefixAttr("dcl s3 ip6"), payloadAttr(ipv6(6, "fd00::1", "fd00::2", nil)[:39])), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := ParseMessage(tt.body, now)
			if !errors.Is(err, tt.want) {
				t.Errorf("ParseMessage = %+v, %v; want error %v", ev, err, tt.want)
			}
		})
	}
}

func TestParsePrefix(t *testing.T) {
	tests := []struct {
		in     string
		index  int
		reason string
		ok     bool
	}{
		{"dcl s3 deny", 3, "deny", true},
		{"dcl s0 allow", 0, "allow", true},
		{"dcl s16383 meta", 16383, "meta", true},
		{"dcl s03 deny", 0, "", false},
		{"dcl s deny", 0, "", false},
		{"dcl s3", 0, "", false},
		{"dcl s3 ", 0, "", false},
		{"dcl s3 deny more", 0, "", false},
		{"dcl s-1 deny", 0, "", false},
		{"dcl s+1 deny", 0, "", false},
		{"dcl s1234567890 deny", 0, "", false},
		{"xdcl s3 deny", 0, "", false},
		{"DCL s3 deny", 0, "", false},
		{"", 0, "", false},
	}
	for _, tt := range tests {
		index, reason, ok := ParsePrefix(tt.in)
		if index != tt.index || reason != tt.reason || ok != tt.ok {
			t.Errorf("ParsePrefix(%q) = %d, %q, %v; want %d, %q, %v", tt.in, index, reason, ok, tt.index, tt.reason, tt.ok)
		}
	}
}

func TestProtoString(t *testing.T) {
	for p, want := range map[Proto]string{ProtoTCP: "tcp", ProtoUDP: "udp", ProtoICMP: "icmp", ProtoICMPv6: "icmpv6", 99: "proto-99"} {
		if got := p.String(); got != want {
			t.Errorf("Proto(%d).String() = %q, want %q", uint8(p), got, want)
		}
	}
}

// FuzzParseMessage checks the parser never panics and that what it
// accepts is consistent: a known decision matching the reason, valid
// addresses of one family, and the prefix it was given.
func FuzzParseMessage(f *testing.F) {
	tcp := ports(40000, 9000, make([]byte, 16)...)
	f.Add(message(2, 7, prefixAttr("dcl s3 deny"), payloadAttr(ipv4(6, "10.200.0.14", "198.51.100.10", 5, 0, tcp))))
	f.Add(message(2, 7, prefixAttr("dcl s3 allow"), payloadAttr(ipv4(17, "10.200.0.14", "198.51.100.10", 7, 0, ports(1, 2)))))
	f.Add(message(10, 7, prefixAttr("dcl s4 ip6"), payloadAttr(ipv6(0, "fd00::2", "fd00:ec2::254",
		append(append([]byte{44, 0, 1, 4, 0, 0, 0, 0}, 17, 0, 0, 1, 0, 0, 0, 9), ports(1000, 53)...)))))
	f.Add(message(2, 7, nlattr(attrTimestamp, make([]byte, 16)), prefixAttr("dcl s1 meta"), payloadAttr([]byte{0x45})))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := ParseMessage(body, now)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotOurs) {
				t.Fatalf("ParseMessage error %v is neither ErrMalformed nor ErrNotOurs", err)
			}
			return
		}
		if want := map[bool]Decision{true: Allow, false: Block}[ev.Reason == ReasonAllow]; ev.Decision != want {
			t.Fatalf("reason %q with decision %q, want %q", ev.Reason, ev.Decision, want)
		}
		if ev.SlotIndex < 0 || !ev.Src.Addr().IsValid() || !ev.Dst.Addr().IsValid() || ev.Src.Addr().Is4() != ev.Dst.Addr().Is4() {
			t.Fatalf("ParseMessage = %+v: bad index or addresses", ev)
		}
		if idx, reason, ok := ParsePrefix(fmt.Sprintf("dcl s%d %s", ev.SlotIndex, ev.Reason)); !ok || idx != ev.SlotIndex || reason != ev.Reason {
			t.Fatalf("event %+v does not round-trip its prefix", ev)
		}
	})
}

// FuzzParsePacket checks the packet parser alone: no panic, and an
// accepted packet's address family follows its version nibble.
func FuzzParsePacket(f *testing.F) {
	f.Add(ipv4(6, "10.200.0.14", "198.51.100.10", 5, 0, ports(1, 2)))
	f.Add(ipv6(60, "fd00::2", "fd00::1", []byte{6, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2}))
	f.Add(ipv6(51, "fd00::2", "fd00::1", []byte{6, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2}))
	f.Fuzz(func(t *testing.T, b []byte) {
		proto, src, dst, err := ParsePacket(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParsePacket error %v is not ErrMalformed", err)
			}
			return
		}
		want4 := b[0]>>4 == 4
		if src.Addr().Is4() != want4 || dst.Addr().Is4() != want4 {
			t.Fatalf("ParsePacket(version %d) = %v %v -> %v", b[0]>>4, proto, src, dst)
		}
	})
}
