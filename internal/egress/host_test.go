package egress

import (
	"errors"
	"strings"
	"testing"
)

func TestParseHost(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
		err  error
	}{
		{"basic", "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n", "api.example.test", nil},
		{"port and case", "GET /x?y HTTP/1.1\r\nUser-Agent: t\r\nHOST: API.Example.Test:8080\r\nAccept: */*\r\n\r\nbody", "api.example.test", nil},
		{"bare LF", "POST / HTTP/1.1\nHost: a.test\n\n", "a.test", nil},
		{"ows", "GET / HTTP/1.1\r\nHost: \t a.test \t\r\n\r\n", "a.test", nil},
		{"trailing dot", "GET / HTTP/1.1\r\nHost: a.test.\r\n\r\n", "a.test", nil},
		{"ipv4", "GET / HTTP/1.1\r\nHost: 203.0.113.10\r\n\r\n", "203.0.113.10", nil},
		{"ipv6", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", "2001:db8::1", nil},
		{"absolute form", "GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n", "a.test", nil},
		{"absolute form no host header 1.0", "GET http://a.test:80/ HTTP/1.0\r\n\r\n", "a.test", nil},
		{"options star", "OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n", "a.test", nil},
		{"http10 no host", "GET / HTTP/1.0\r\n\r\n", "", ErrNoName},
		{"http11 no host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", "", ErrMalformed},
		{"absolute form mismatch", "GET http://evil.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", "", ErrMalformed},
		{"userinfo", "GET http://a.test@evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n", "", ErrMalformed},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a.test\r\nHost: evil.test\r\n\r\n", "", ErrMalformed},
		{"folding", "GET / HTTP/1.1\r\nX: y\r\n Host: evil.test\r\nHost: a.test\r\n\r\n", "", ErrMalformed},
		{"space before colon", "GET / HTTP/1.1\r\nHost : evil.test\r\n\r\n", "", ErrMalformed},
		{"cr inside line", "GET / HTTP/1.1\r\nHost: a.test\rHost: evil.test\r\n\r\n", "", ErrMalformed},
		{"nul in host", "GET / HTTP/1.1\r\nHost: a.test\x00evil\r\n\r\n", "", ErrMalformed},
		{"bad host chars", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", "", ErrMalformed},
		{"empty host", "GET / HTTP/1.1\r\nHost: \r\n\r\n", "", ErrMalformed},
		{"bad port", "GET / HTTP/1.1\r\nHost: a.test:8x\r\n\r\n", "", ErrMalformed},
		{"connect", "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n", "", ErrMalformed},
		{"http2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "", ErrMalformed},
		{"garbage", "\x00\x01\x02", "", ErrMalformed},
		{"ssh", "SSH-2.0-OpenSSH_9.2\r\n", "", ErrMalformed},
		{"relative target", "GET x HTTP/1.1\r\nHost: a.test\r\n\r\n", "", ErrMalformed},
		{"extra space", "GET  / HTTP/1.1\r\nHost: a.test\r\n\r\n", "", ErrMalformed},
		{"partial line", "GET /very/long", "", ErrIncomplete},
		{"partial method", "GE", "", ErrIncomplete},
		{"partial headers", "GET / HTTP/1.1\r\nHost: a.test\r\n", "", ErrIncomplete},
		{"empty", "", "", ErrIncomplete},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHost([]byte(tt.in))
			if got != tt.want || !errors.Is(err, tt.err) {
				t.Errorf("ParseHost(%q) = %q, %v; want %q, %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
}

func TestParseHostPrefixes(t *testing.T) {
	req := "GET /a HTTP/1.1\r\nHost: api.example.test\r\nX-Long: " + strings.Repeat("v", 300) + "\r\n\r\n"
	for i := range len(req) - 1 {
		if _, err := ParseHost([]byte(req[:i])); !errors.Is(err, ErrIncomplete) {
			t.Fatalf("ParseHost(req[:%d]) error %v, want ErrIncomplete", i, err)
		}
	}
	if got, err := ParseHost([]byte(req)); got != "api.example.test" || err != nil {
		t.Fatalf("ParseHost(req) = %q, %v", got, err)
	}
}

func FuzzParseHost(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
		"GET http://a.test/ HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
		"\x16\x03\x01",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		host, err := ParseHost(b)
		if err != nil {
			if host != "" {
				t.Fatalf("ParseHost returned %q with error %v", host, err)
			}
			return
		}
		if c, ok := canonicalHost(host); !ok || c != host {
			t.Fatalf("ParseHost returned non-canonical host %q", host)
		}
		if strings.ContainsAny(host, " \t\r\n:/@") && !strings.Contains(host, ":") {
			t.Fatalf("ParseHost returned host with separators %q", host)
		}
	})
}
