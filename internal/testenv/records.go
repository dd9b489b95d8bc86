package testenv

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Service names used in records.
const (
	SvcHTTP     = "http"
	SvcHTTPS    = "https"
	SvcMetadata = "metadata" // port 80 on MetadataIP / MetadataIP6
	SvcTCPEcho  = "tcp-echo"
	SvcUDPEcho  = "udp-echo"
	SvcDNS      = "dns"
)

// maxRecorded caps the bytes kept per connection or body and the number of
// records of each kind, so a runaway test cannot exhaust memory.
const (
	maxRecordedBytes = 16 << 20
	maxRecords       = 100000
)

// Conn is one TCP connection accepted by an uplink service.
type Conn struct {
	Service string         // SvcHTTP, SvcHTTPS, SvcMetadata or SvcTCPEcho
	Local   netip.AddrPort // the address the client dialed
	Remote  netip.AddrPort // the client as the uplink saw it (after any NAT)
	SNI     string         // SvcHTTPS: the ClientHello's server name, if any
	Data    []byte         // every byte received (TLS records for SvcHTTPS)
	Time    time.Time      // accepted
}

// Datagram is one UDP datagram received by the UDP echo service.
type Datagram struct {
	Service string
	Local   netip.AddrPort
	Remote  netip.AddrPort
	Data    []byte
	Time    time.Time
}

// HTTPRequest is one request served over HTTP or HTTPS.
type HTTPRequest struct {
	Service string // SvcHTTP, SvcHTTPS or SvcMetadata
	Local   netip.AddrPort
	Remote  netip.AddrPort
	SNI     string // HTTPS only
	Method  string
	Host    string
	URI     string // request target as sent, e.g. "/v1/x?y=1"
	Header  http.Header
	Body    []byte
	Time    time.Time
}

// DNSQuery is one question received by the DNS service.
type DNSQuery struct {
	Proto  string // "udp" or "tcp"
	Local  netip.AddrPort
	Remote netip.AddrPort
	Name   string // lower case, no trailing dot
	Type   string // "A", "AAAA", "TXT", ...
	Time   time.Time
}

// Packet is one IP packet that arrived at the uplink from test-host.
// Neighbour discovery and MLD are left out; ARP is not IP.
type Packet struct {
	Src, Dst         netip.Addr
	Proto            string // "tcp", "udp", "icmp", "icmpv6" or the protocol number
	SrcPort, DstPort uint16 // TCP and UDP
	TCPFlags         uint8  // TCP: FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10
	ICMPType         uint8  // ICMP and ICMPv6
	Len              int    // IP packet length
	Time             time.Time
}

func (p Packet) String() string {
	switch p.Proto {
	case "tcp":
		var flags []byte
		for i, f := range "FSRPAU" {
			if p.TCPFlags&(1<<i) != 0 {
				flags = append(flags, byte(f))
			}
		}
		return fmt.Sprintf("tcp %s -> %s [%s]", netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort), flags)
	case "udp":
		return fmt.Sprintf("udp %s -> %s", netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort))
	case "icmp", "icmpv6":
		return fmt.Sprintf("%s type %d %s -> %s", p.Proto, p.ICMPType, p.Src, p.Dst)
	}
	return fmt.Sprintf("proto %s %s -> %s", p.Proto, p.Src, p.Dst)
}

// Records is a snapshot of everything the uplink saw, oldest first.
type Records struct {
	Conns     []Conn
	Datagrams []Datagram
	HTTP      []HTTPRequest
	DNS       []DNSQuery
	Packets   []Packet
}

// Empty reports whether nothing at all arrived.
func (r Records) Empty() bool {
	return len(r.Conns)+len(r.Datagrams)+len(r.HTTP)+len(r.DNS)+len(r.Packets) == 0
}

// String summarises r for failure messages.
func (r Records) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d packets, %d conns, %d http, %d datagrams, %d dns", len(r.Packets), len(r.Conns), len(r.HTTP), len(r.Datagrams), len(r.DNS))
	const most = 10
	for i, c := range r.Conns {
		if i == most {
			b.WriteString("\n  ...")
			break
		}
		fmt.Fprintf(&b, "\n  conn %s %s -> %s sni=%q %d bytes: %.60q", c.Service, c.Remote, c.Local, c.SNI, len(c.Data), c.Data)
	}
	for i, h := range r.HTTP {
		if i == most {
			b.WriteString("\n  ...")
			break
		}
		fmt.Fprintf(&b, "\n  http %s %s %s host=%q from %s", h.Service, h.Method, h.URI, h.Host, h.Remote)
	}
	for i, d := range r.Datagrams {
		if i == most {
			b.WriteString("\n  ...")
			break
		}
		fmt.Fprintf(&b, "\n  udp %s -> %s: %.60q", d.Remote, d.Local, d.Data)
	}
	for i, q := range r.DNS {
		if i == most {
			b.WriteString("\n  ...")
			break
		}
		fmt.Fprintf(&b, "\n  dns %s %s %s from %s", q.Proto, q.Type, q.Name, q.Remote)
	}
	for i, p := range r.Packets {
		if i == most {
			b.WriteString("\n  ...")
			break
		}
		fmt.Fprintf(&b, "\n  packet %s", p)
	}
	return b.String()
}

// recorder collects records from all services; safe for concurrent use.
type recorder struct {
	mu        sync.Mutex
	conns     []*connRecord
	datagrams []Datagram
	http      []HTTPRequest
	dns       []DNSQuery
	packets   []Packet
}

// connRecord is a Conn still being written to by its connection.
type connRecord struct {
	mu sync.Mutex
	c  Conn
}

func (r *recorder) newConn(c Conn) *connRecord {
	cr := &connRecord{c: c}
	r.mu.Lock()
	if len(r.conns) < maxRecords {
		r.conns = append(r.conns, cr)
	}
	r.mu.Unlock()
	return cr
}

func (cr *connRecord) add(p []byte) {
	cr.mu.Lock()
	if room := maxRecordedBytes - len(cr.c.Data); room > 0 {
		cr.c.Data = append(cr.c.Data, p[:min(len(p), room)]...)
	}
	cr.mu.Unlock()
}

func (cr *connRecord) setSNI(sni string) {
	cr.mu.Lock()
	cr.c.SNI = sni
	cr.mu.Unlock()
}

func addCapped[T any](mu *sync.Mutex, s *[]T, v T) {
	mu.Lock()
	if len(*s) < maxRecords {
		*s = append(*s, v)
	}
	mu.Unlock()
}

func (r *recorder) addDatagram(d Datagram) { addCapped(&r.mu, &r.datagrams, d) }
func (r *recorder) addHTTP(h HTTPRequest)  { addCapped(&r.mu, &r.http, h) }
func (r *recorder) addDNS(q DNSQuery)      { addCapped(&r.mu, &r.dns, q) }
func (r *recorder) addPacket(p Packet)     { addCapped(&r.mu, &r.packets, p) }
func (r *recorder) snapshot() (out Records) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, cr := range r.conns {
		cr.mu.Lock()
		c := cr.c
		c.Data = slices.Clone(c.Data)
		cr.mu.Unlock()
		out.Conns = append(out.Conns, c)
	}
	// Records are never mutated after append; callers may still modify the copy.
	out.Datagrams = slices.Clone(r.datagrams)
	out.HTTP = slices.Clone(r.http)
	for i := range out.HTTP {
		out.HTTP[i].Header = out.HTTP[i].Header.Clone()
	}
	out.DNS = slices.Clone(r.dns)
	out.Packets = slices.Clone(r.packets)
	return out
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.conns, r.datagrams, r.http, r.dns, r.packets = nil, nil, nil, nil, nil
	r.mu.Unlock()
}
