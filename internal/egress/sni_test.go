package egress

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

// clientHello runs a crypto/tls client against one end of a net.Pipe and
// returns its first flight, exactly as it went on the wire.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	cli, srv := net.Pipe()
	defer srv.Close()
	go func() {
		defer cli.Close()
		tls.Client(cli, cfg).Handshake()
	}()
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	var buf []byte
	tmp := make([]byte, 4096)
	for {
		n, err := srv.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if _, perr := ParseSNI(buf); !errors.Is(perr, ErrIncomplete) {
			return buf
		}
		if err != nil {
			t.Fatalf("reading ClientHello: %v (have %d bytes)", err, len(buf))
		}
	}
}

// refragment re-records the handshake bytes of rec into records carrying
// at most size bytes each.
func refragment(t testing.TB, rec []byte, size int) []byte {
	t.Helper()
	var hs []byte
	for len(rec) > 0 {
		n := int(rec[3])<<8 | int(rec[4])
		hs = append(hs, rec[5:5+n]...)
		rec = rec[5+n:]
	}
	var out []byte
	for len(hs) > 0 {
		k := min(size, len(hs))
		out = append(out, recordHandshake, 3, 1, byte(k>>8), byte(k))
		out = append(out, hs[:k]...)
		hs = hs[k:]
	}
	return out
}

func TestParseSNIRealClientHellos(t *testing.T) {
	tests := []struct {
		name string
		cfg  *tls.Config
		want string
		err  error
	}{
		{"sni", &tls.Config{ServerName: "api.example.test"}, "api.example.test", nil},
		{"mixed case", &tls.Config{ServerName: "API.Example.TEST"}, "api.example.test", nil},
		{"tls12 only", &tls.Config{ServerName: "a.allowed.test", MaxVersion: tls.VersionTLS12}, "a.allowed.test", nil},
		{"tls13 only", &tls.Config{ServerName: "a.allowed.test", MinVersion: tls.VersionTLS13}, "a.allowed.test", nil},
		{"alpn", &tls.Config{ServerName: "h2.example.test", NextProtos: []string{"h2", "http/1.1"}}, "h2.example.test", nil},
		{"no sni", &tls.Config{InsecureSkipVerify: true}, "", ErrNoName},
		{"ip literal not sent", &tls.Config{ServerName: "203.0.113.10"}, "", ErrNoName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hello := clientHello(t, tt.cfg)
			got, err := ParseSNI(hello)
			if got != tt.want || !errors.Is(err, tt.err) {
				t.Fatalf("ParseSNI(hello) = %q, %v; want %q, %v", got, err, tt.want, tt.err)
			}
			// Every strict prefix is incomplete, never another answer.
			for i := range len(hello) {
				if _, err := ParseSNI(hello[:i]); !errors.Is(err, ErrIncomplete) {
					t.Fatalf("ParseSNI(hello[:%d]) error %v, want ErrIncomplete", i, err)
				}
			}
			// Trailing bytes (the client's next records) do not matter.
			if got2, err2 := ParseSNI(append(bytes.Clone(hello), 23, 3, 3, 0, 1, 0)); got2 != got || !errors.Is(err2, tt.err) {
				t.Errorf("ParseSNI(hello+junk) = %q, %v; want %q, %v", got2, err2, got, tt.err)
			}
			for _, size := range []int{1, 2, 3, 7, 100, 512} {
				frag := refragment(t, hello, size)
				if got, err := ParseSNI(frag); got != tt.want || !errors.Is(err, tt.err) {
					t.Errorf("ParseSNI(fragmented by %d) = %q, %v; want %q, %v", size, got, err, tt.want, tt.err)
				}
			}
		})
	}
}

// hello builds a ClientHello record around the given extensions block.
func hello(exts []byte, withExts bool) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...) // random
	body = append(body, 0)                   // session id
	body = append(body, 0, 2, 0x13, 0x01)    // one cipher suite
	body = append(body, 1, 0)                // null compression
	if withExts {
		body = append(body, byte(len(exts)>>8), byte(len(exts)))
		body = append(body, exts...)
	}
	hs := append([]byte{handshakeHello, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{recordHandshake, 3, 1, byte(len(hs) >> 8), byte(len(hs))}, hs...)
}

func ext(typ int, data []byte) []byte {
	return append([]byte{byte(typ >> 8), byte(typ), byte(len(data) >> 8), byte(len(data))}, data...)
}

func sniExt(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = append(list, 0, byte(len(n)>>8), byte(len(n)))
		list = append(list, n...)
	}
	return ext(0, append([]byte{byte(len(list) >> 8), byte(len(list))}, list...))
}

func TestParseSNIHandmade(t *testing.T) {
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	tests := []struct {
		name string
		in   []byte
		want string
		err  error
	}{
		{"ok", hello(sniExt("x.example.test"), true), "x.example.test", nil},
		{"trailing dot", hello(sniExt("x.example.test."), true), "x.example.test", nil},
		{"other extensions first", hello(cat(ext(10, []byte{0, 2, 0, 29}), sniExt("b.test")), true), "b.test", nil},
		{"no extensions block", hello(nil, false), "", ErrNoName},
		{"empty extensions", hello(nil, true), "", ErrNoName},
		{"two host names", hello(sniExt("a.test", "b.test"), true), "", ErrMalformed},
		{"duplicate extension", hello(cat(sniExt("a.test"), sniExt("a.test")), true), "", ErrMalformed},
		{"empty name", hello(sniExt(""), true), "", ErrMalformed},
		{"bad char", hello(sniExt("a b.test"), true), "", ErrMalformed},
		{"nul", hello(sniExt("a.test\x00.evil.test"), true), "", ErrMalformed},
		{"empty label", hello(sniExt("a..test"), true), "", ErrMalformed},
		{"empty name list", hello(ext(0, []byte{0, 0}), true), "", ErrMalformed},
		{"list overruns ext", hello(ext(0, []byte{0, 9, 0, 0, 1, 'a'}), true), "", ErrMalformed},
		{"ext overruns block", hello([]byte{0, 0, 0, 50, 1}, true), "", ErrMalformed},
		{"http", []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), "", ErrMalformed},
		{"alert record", []byte{21, 3, 1, 0, 2, 2, 40}, "", ErrMalformed},
		{"sslv2", []byte{0x80, 0x2e, 1, 0, 2}, "", ErrMalformed},
		{"zero length record", []byte{22, 3, 1, 0, 0}, "", ErrMalformed},
		{"oversized record", []byte{22, 3, 1, 0x48, 0x01}, "", ErrMalformed},
		{"server hello", []byte{22, 3, 3, 0, 4, 2, 0, 0, 0}, "", ErrMalformed},
		{"partial non-hello", []byte{22, 3, 3, 0, 40, 2}, "", ErrMalformed},
		{"empty", nil, "", ErrIncomplete},
		{"header only", []byte{22, 3, 1}, "", ErrIncomplete},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSNI(tt.in)
			if got != tt.want || !errors.Is(err, tt.err) {
				t.Errorf("ParseSNI(%x) = %q, %v; want %q, %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
}

func FuzzParseSNI(f *testing.F) {
	f.Add(hello(sniExt("x.example.test"), true))
	f.Add(hello(nil, false))
	f.Add(refragment(f, hello(sniExt("frag.test"), true), 3))
	f.Add(clientHello(f, &tls.Config{ServerName: "api.example.test"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, err := ParseSNI(b)
		if err != nil {
			if name != "" {
				t.Fatalf("ParseSNI returned %q with error %v", name, err)
			}
			return
		}
		if c, ok := canonicalHost(name); !ok || c != name {
			t.Fatalf("ParseSNI returned non-canonical name %q", name)
		}
		// A valid hello stays valid and equal with bytes appended.
		if again, err := ParseSNI(append(bytes.Clone(b), 0xff, 0)); again != name || err != nil {
			t.Fatalf("ParseSNI(b+junk) = %q, %v; want %q", again, err, name)
		}
	})
}
