package egress

import (
	"bytes"
	"strings"
)

// ParseHost returns the host (lower-cased, without port or trailing dot) of
// the HTTP/1.x request whose header starts b. It needs the whole header
// block (up to the empty line) and returns ErrIncomplete until it has it;
// callers bound how much they read. A request without a Host gets
// ErrNoName. It is strict where a lenient upstream could read a different
// host than the proxy did: it rejects obsolete line folding, whitespace
// before a header colon, control characters, a repeated Host header, an
// absolute-form target whose host differs from Host, and CONNECT; the error
// then wraps ErrMalformed. Both CRLF and bare LF end lines, as in net/http.
func ParseHost(b []byte) (string, error) {
	line, rest, ok := cutLine(b)
	if !ok {
		if err := checkPartialRequestLine(b); err != nil {
			return "", err
		}
		return "", ErrIncomplete
	}
	method, target, version, err := parseRequestLine(line)
	if err != nil {
		return "", err
	}
	if method == "CONNECT" {
		return "", malformed("CONNECT request")
	}
	uriHost := ""
	if t := strings.ToLower(target); strings.HasPrefix(t, "http://") || strings.HasPrefix(t, "https://") {
		auth := target[strings.Index(target, "//")+2:]
		if i := strings.IndexAny(auth, "/?#"); i >= 0 {
			auth = auth[:i]
		}
		if strings.Contains(auth, "@") {
			return "", malformed("userinfo in request target")
		}
		h, ok := hostFromAuthority(auth)
		if !ok {
			return "", malformed("invalid host in request target %q", target)
		}
		uriHost = h
	} else if target != "*" && !strings.HasPrefix(target, "/") {
		return "", malformed("request target %q", target)
	}

	hostHdr, seen := "", false
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return "", ErrIncomplete
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return "", malformed("obsolete line folding")
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return "", malformed("header line without name")
		}
		name := line[:colon]
		for _, c := range name {
			if !isTokenChar(c) {
				return "", malformed("invalid header name %q", name)
			}
		}
		value := bytes.Trim(line[colon+1:], " \t")
		for _, c := range value {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return "", malformed("control character in header %q", name)
			}
		}
		if !strings.EqualFold(string(name), "host") {
			continue
		}
		if seen {
			return "", malformed("repeated Host header")
		}
		seen = true
		h, ok := hostFromAuthority(string(value))
		if !ok {
			return "", malformed("invalid Host %q", value)
		}
		hostHdr = h
	}
	switch {
	case uriHost != "" && seen && uriHost != hostHdr:
		return "", malformed("request target host %q differs from Host %q", uriHost, hostHdr)
	case uriHost != "":
		return uriHost, nil
	case !seen:
		if version == "HTTP/1.1" {
			return "", malformed("HTTP/1.1 request without Host")
		}
		return "", ErrNoName
	}
	return hostHdr, nil
}

// cutLine splits off one line ending in LF (CRLF or bare LF). A CR
// anywhere else in the line is not accepted: it is returned as part of the
// line and rejected by the callers' character checks.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, b, false
	}
	line = b[:i]
	line = bytes.TrimSuffix(line, []byte{'\r'})
	return line, b[i+1:], true
}

// checkPartialRequestLine fails early on bytes that cannot start a request
// line, so a non-HTTP client is reset without waiting for the peek timeout.
func checkPartialRequestLine(b []byte) error {
	for i, c := range b {
		if c == ' ' {
			if i == 0 {
				return malformed("empty method")
			}
			return nil
		}
		if !isTokenChar(c) {
			return malformed("invalid method character %q", c)
		}
		if i >= 32 {
			return malformed("method too long")
		}
	}
	return nil
}

func parseRequestLine(line []byte) (method, target, version string, err error) {
	parts := strings.Split(string(line), " ")
	if len(parts) != 3 {
		return "", "", "", malformed("request line %.64q", line)
	}
	method, target, version = parts[0], parts[1], parts[2]
	if method == "" || len(method) > 32 {
		return "", "", "", malformed("method %.40q", method)
	}
	for i := 0; i < len(method); i++ {
		if !isTokenChar(method[i]) {
			return "", "", "", malformed("method %.40q", method)
		}
	}
	if target == "" {
		return "", "", "", malformed("empty request target")
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return "", "", "", malformed("control character in request target")
		}
	}
	if version != "HTTP/1.1" && version != "HTTP/1.0" {
		return "", "", "", malformed("version %.20q", version)
	}
	return method, target, version, nil
}

// hostFromAuthority parses host[:port] or [v6]:port and returns the host
// in canonical form.
func hostFromAuthority(a string) (string, bool) {
	host, port := a, ""
	if strings.HasPrefix(a, "[") {
		end := strings.IndexByte(a, ']')
		if end < 0 {
			return "", false
		}
		host, port = a[1:end], a[end+1:]
		if !strings.Contains(host, ":") {
			return "", false
		}
		if port != "" {
			if port[0] != ':' {
				return "", false
			}
			port = port[1:]
		}
	} else if i := strings.LastIndexByte(a, ':'); i >= 0 {
		host, port = a[:i], a[i+1:]
		if strings.Contains(host, ":") {
			return "", false
		}
	}
	if len(port) > 5 {
		return "", false
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return "", false
		}
	}
	return canonicalHost(host)
}

// isTokenChar reports whether c is an RFC 9110 tchar.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
