package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Errors of the name parsers. ParseSNI and ParseHost wrap ErrMalformed with
// the detail.
var (
	// ErrIncomplete means the bytes so far are a valid prefix: read more.
	ErrIncomplete = errors.New("incomplete")
	// ErrMalformed means the bytes are not a well-formed ClientHello or
	// HTTP/1.x request header.
	ErrMalformed = errors.New("malformed")
	// ErrNoName means the ClientHello has no server_name, or the request no Host.
	ErrNoName = errors.New("no server name")
)

const (
	recordHandshake  = 22
	handshakeHello   = 1
	maxRecordLen     = 1 << 14
	maxClientHello   = 1 << 16 // far above any real ClientHello
	extServerName    = 0
	serverNameHostTy = 0
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// ParseSNI returns the server name of the TLS ClientHello at the start of b,
// lower-cased and without a trailing dot. b holds raw TLS records as a client
// sent them; the ClientHello may be fragmented over several handshake
// records. It returns ErrIncomplete when b is a valid prefix of a
// ClientHello, ErrNoName when the complete ClientHello has no host_name, and
// an error wrapping ErrMalformed otherwise. It never reads past len(b).
func ParseSNI(b []byte) (string, error) {
	body, err := clientHelloBody(b)
	if err != nil {
		return "", err
	}
	return sniFromHello(body)
}

// clientHelloBody reassembles the first handshake message from records and
// returns the ClientHello body (after the 4-byte handshake header).
func clientHelloBody(b []byte) ([]byte, error) {
	var hs []byte
	for {
		if len(b) >= 1 && b[0] != recordHandshake {
			return nil, malformed("record type %d, want handshake", b[0])
		}
		if len(b) >= 2 && b[1] != 3 {
			return nil, malformed("record version %d.x", b[1])
		}
		if len(b) < 5 {
			return nil, ErrIncomplete
		}
		n := int(b[3])<<8 | int(b[4])
		if n == 0 || n > maxRecordLen {
			return nil, malformed("record length %d", n)
		}
		if len(b) < 5+n {
			// Check what we can of a partial first fragment early, so a
			// non-ClientHello fails without waiting for the whole record.
			if len(hs) == 0 && len(b) > 5 && b[5] != handshakeHello {
				return nil, malformed("handshake type %d, want ClientHello", b[5])
			}
			return nil, ErrIncomplete
		}
		hs = append(hs, b[5:5+n]...)
		b = b[5+n:]
		if len(hs) >= 1 && hs[0] != handshakeHello {
			return nil, malformed("handshake type %d, want ClientHello", hs[0])
		}
		if len(hs) >= 4 {
			mlen := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
			if mlen > maxClientHello {
				return nil, malformed("ClientHello length %d", mlen)
			}
			if len(hs) >= 4+mlen {
				return hs[4 : 4+mlen], nil
			}
		}
	}
}

// reader reads big-endian TLS vectors; any short read sets bad.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) take(n int) []byte {
	if r.bad || n < 0 || n > len(r.b) {
		r.bad = true
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8() int {
	b := r.take(1)
	if b == nil {
		return 0
	}
	return int(b[0])
}

func (r *reader) u16() int {
	b := r.take(2)
	if b == nil {
		return 0
	}
	return int(b[0])<<8 | int(b[1])
}

func (r *reader) vec8() []byte  { return r.take(r.u8()) }
func (r *reader) vec16() []byte { return r.take(r.u16()) }

func sniFromHello(body []byte) (string, error) {
	r := &reader{b: body}
	r.take(2)  // legacy_version
	r.take(32) // random
	if sid := r.vec8(); len(sid) > 32 {
		return "", malformed("session id length %d", len(sid))
	}
	if cs := r.vec16(); !r.bad && (len(cs) < 2 || len(cs)%2 != 0) {
		return "", malformed("cipher suites length %d", len(cs))
	}
	if cm := r.vec8(); !r.bad && len(cm) < 1 {
		return "", malformed("no compression methods")
	}
	if r.bad {
		return "", malformed("truncated ClientHello")
	}
	if len(r.b) == 0 {
		return "", ErrNoName // no extensions at all
	}
	exts := &reader{b: r.vec16()}
	if r.bad || len(r.b) != 0 {
		return "", malformed("bad extensions length")
	}
	var seen []int
	name := ""
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.vec16()
		if exts.bad {
			return "", malformed("truncated extension")
		}
		for _, s := range seen {
			if s == typ {
				return "", malformed("duplicate extension %d", typ)
			}
		}
		seen = append(seen, typ)
		if typ != extServerName {
			continue
		}
		d := &reader{b: data}
		list := &reader{b: d.vec16()}
		if d.bad || len(d.b) != 0 || len(list.b) == 0 {
			return "", malformed("bad server_name extension")
		}
		for len(list.b) > 0 {
			nt := list.u8()
			v := list.vec16()
			if list.bad {
				return "", malformed("truncated server_name list")
			}
			if nt != serverNameHostTy {
				continue
			}
			if name != "" {
				return "", malformed("two host_name entries")
			}
			h, ok := canonicalHost(string(v))
			if !ok {
				return "", malformed("invalid host_name %q", v)
			}
			name = h
		}
	}
	if name == "" {
		return "", ErrNoName
	}
	return name, nil
}

// canonicalHost validates a DNS name or IP literal (as it appears in SNI or
// a Host header, without port or brackets) and returns it lower-cased
// without a trailing dot.
func canonicalHost(s string) (string, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return "", false
		}
		return a.String(), true
	}
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return "", false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 {
				return "", false
			}
			label = 0
			continue
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c >= 'A' && c <= 'Z':
		default:
			return "", false
		}
		label++
		if label > 63 {
			return "", false
		}
	}
	if label == 0 {
		return "", false
	}
	return strings.ToLower(s), true
}
