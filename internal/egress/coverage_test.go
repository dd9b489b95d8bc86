package egress

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"crypto/tls"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/text/encoding/unicode"
)

// Issue 24: every text-bearing part of a request is scanned, in every
// framing and encoding. These run over loopback (HTTP/1.1 and HTTP/2 from
// the sandbox side); the root end-to-end twins are in
// coverage_e2e_linux_test.go and e2e/proxy_test.go.

const (
	covSSN   = "219-09-9999"
	covEmail = "jane.doe@example.org"
	covPII   = `{"pii":{"enabled":true,"types":["email","ssn"],"action":"redact"}}`
)

// covCase is one request shape; check inspects what the upstream got.
type covCase struct {
	name  string
	build func(u string) *http.Request
	check func(t *testing.T, got recorded)
}

func noPII(t *testing.T, where string, b []byte) {
	t.Helper()
	for _, s := range []string{covSSN, covEmail, url.QueryEscape(covEmail)} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("%s carries %q: %.300q", where, s, b)
		}
	}
	if !bytes.Contains(b, []byte("REDACTED_")) {
		t.Errorf("%s has no redaction token: %.300q", where, b)
	}
}

func encodeBody(t testing.TB, coding string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch coding {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "deflate":
		w, _ = flate.NewWriter(&buf, flate.BestSpeed)
	case "br":
		w = brotli.NewWriter(&buf)
	case "zstd":
		w, _ = zstd.NewWriter(&buf)
	default:
		t.Fatalf("coding %s", coding)
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func covCases(t *testing.T) []covCase {
	text := "note: ssn " + covSSN + " mail " + covEmail + " end"
	jsonBody := `{"m":"ssn ` + covSSN + `","e":"` + covEmail + `"}`
	mk := func(method, u, ct string, body io.Reader, hdr ...string) *http.Request {
		req, err := http.NewRequest(method, u, body)
		if err != nil {
			t.Fatal(err)
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		return req
	}
	var cases []covCase
	// Locations.
	cases = append(cases,
		covCase{"header", func(u string) *http.Request {
			return mk("GET", u+"/echo", "", nil, "X-Note", "ssn "+covSSN+" mail "+covEmail, "Referer", "https://x.test/?m="+url.QueryEscape(covEmail))
		}, func(t *testing.T, got recorded) {
			noPII(t, "X-Note", []byte(got.Header.Get("X-Note")))
			noPII(t, "Referer", []byte(got.Header.Get("Referer")))
		}},
		covCase{"path", func(u string) *http.Request {
			return mk("GET", u+"/echo/users/"+covSSN+"/"+url.PathEscape(covEmail), "", nil)
		}, func(t *testing.T, got recorded) { noPII(t, "path", []byte(got.Path)) }},
		covCase{"query", func(u string) *http.Request {
			return mk("GET", u+"/echo?ssn="+covSSN+"&"+url.QueryEscape(covEmail)+"=1", "", nil)
		}, func(t *testing.T, got recorded) { noPII(t, "query", []byte(got.Query)) }},
		covCase{"form", func(u string) *http.Request {
			return mk("POST", u+"/echo", "application/x-www-form-urlencoded", strings.NewReader("ssn="+covSSN+"&mail="+url.QueryEscape(covEmail)))
		}, func(t *testing.T, got recorded) {
			noPII(t, "form", got.Body)
			if _, err := url.ParseQuery(string(got.Body)); err != nil {
				t.Errorf("form no longer valid: %q", got.Body)
			}
		}},
		covCase{"multipart", func(u string) *http.Request {
			var b bytes.Buffer
			mw := multipart.NewWriter(&b)
			mw.WriteField("ssn", covSSN)
			fw, _ := mw.CreateFormFile("doc", "mail "+covEmail)
			io.WriteString(fw, text)
			mw.Close()
			return mk("POST", u+"/echo", mw.FormDataContentType(), &b)
		}, func(t *testing.T, got recorded) {
			noPII(t, "multipart", got.Body)
			req := &http.Request{Header: got.Header, Body: io.NopCloser(bytes.NewReader(got.Body)), Method: "POST"}
			if err := req.ParseMultipartForm(1 << 20); err != nil || len(req.MultipartForm.Value["ssn"]) != 1 {
				t.Errorf("multipart no longer valid: %v", err)
			}
		}},
	)
	// Framings: Content-Length, chunked (unknown length; on HTTP/2 data frames without a length).
	cases = append(cases,
		covCase{"chunked json", func(u string) *http.Request {
			req := mk("POST", u+"/echo", "application/json", io.MultiReader(strings.NewReader(jsonBody[:10]), strings.NewReader(jsonBody[10:])))
			req.ContentLength = -1
			return req
		}, func(t *testing.T, got recorded) { noPII(t, "chunked body", got.Body) }},
		covCase{"chunked form", func(u string) *http.Request {
			req := mk("POST", u+"/echo", "application/x-www-form-urlencoded", io.MultiReader(strings.NewReader("ssn="+covSSN)))
			req.ContentLength = -1
			return req
		}, func(t *testing.T, got recorded) { noPII(t, "chunked form", got.Body) }},
	)
	// Encodings.
	for _, coding := range []string{"gzip", "deflate", "br", "zstd"} {
		cases = append(cases, covCase{"encoded " + coding, func(u string) *http.Request {
			return mk("POST", u+"/echo", "application/json", bytes.NewReader(encodeBody(t, coding, []byte(jsonBody))), "Content-Encoding", coding)
		}, func(t *testing.T, got recorded) {
			noPII(t, coding+" body", got.Body)
			if got.Header.Get("Content-Encoding") != "" {
				t.Errorf("sent on with Content-Encoding %q, want decoded", got.Header.Get("Content-Encoding"))
			}
		}})
	}
	utf16 := unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM)
	cases = append(cases,
		covCase{"utf-16 declared", func(u string) *http.Request {
			b, _ := utf16.NewEncoder().Bytes([]byte(text))
			return mk("POST", u+"/echo", "text/plain; charset=utf-16le", bytes.NewReader(b))
		}, func(t *testing.T, got recorded) {
			dec, _ := utf16.NewDecoder().Bytes(got.Body)
			noPII(t, "utf-16 body (decoded)", dec)
		}},
		covCase{"utf-16 undeclared", func(u string) *http.Request {
			b, _ := utf16.NewEncoder().Bytes([]byte(text + " " + strings.Repeat("padding ", 4)))
			return mk("POST", u+"/echo", "application/octet-stream", bytes.NewReader(b))
		}, func(t *testing.T, got recorded) {
			dec, _ := utf16.NewDecoder().Bytes(got.Body)
			noPII(t, "sniffed utf-16 body (decoded)", dec)
		}},
	)
	return cases
}

func TestInterceptCoverage(t *testing.T) {
	ih := newICHarness(t, covPII, true)
	for _, h2 := range []bool{false, true} {
		c := ih.client(h2)
		for _, tc := range covCases(t) {
			t.Run(fmt.Sprintf("h2=%v/%s", h2, tc.name), func(t *testing.T) {
				before := len(ih.up.requests())
				resp, err := c.Do(tc.build(ih.url("")))
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				reqs := ih.up.requests()
				if resp.StatusCode != 200 || len(reqs) != before+1 {
					t.Fatalf("status %d, %d upstream requests, want 200 and one", resp.StatusCode, len(reqs)-before)
				}
				if want := "HTTP/2.0"; reqs[len(reqs)-1].Proto != want {
					t.Logf("upstream protocol %s", reqs[len(reqs)-1].Proto)
				}
				tc.check(t, reqs[len(reqs)-1])
				if ev := ih.httpEvent(t); ev.PII["ssn"]+ev.PII["email"] == 0 || strings.Contains(ev.URL, covSSN) {
					t.Errorf("event PII %v URL %q", ev.PII, ev.URL)
				}
			})
		}
	}
}

// TestInterceptCredentialHeaders: an API key in Authorization reaches the
// upstream (it is what the header is for); PII in it does not.
func TestInterceptCredentialHeaders(t *testing.T) {
	ih := newICHarness(t, `{"pii":{"enabled":true,"action":"redact"}}`, true)
	key := "sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5kL7nP9rT1vX3"
	req, _ := http.NewRequest("GET", ih.url("/echo"), nil)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("X-Api-Key", key)
	req.Header.Set("Cookie", "sid=1; ssn="+covSSN)
	req.Header.Set("X-Other", "key "+key)
	resp, err := ih.client(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	reqs := ih.up.requests()
	got := reqs[len(reqs)-1].Header
	if got.Get("Authorization") != "Bearer "+key || got.Get("X-Api-Key") != key {
		t.Errorf("credential headers changed: %q %q", got.Get("Authorization"), got.Get("X-Api-Key"))
	}
	if strings.Contains(got.Get("Cookie"), covSSN) || strings.Contains(got.Get("X-Other"), key) {
		t.Errorf("Cookie %q X-Other %q, want the SSN and the stray key redacted", got.Get("Cookie"), got.Get("X-Other"))
	}
}

// TestInterceptMethodPII: a method carrying PII cannot be redacted: 403.
func TestInterceptMethodPII(t *testing.T) {
	ih := newICHarness(t, covPII, true)
	c := tls.Client(ih.dial(t), &tls.Config{ServerName: "example.com", RootCAs: ih.ca.Pool(), NextProtos: []string{"http/1.1"}})
	before := len(ih.up.requests())
	io.WriteString(c, covSSN+" /echo HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 403") || len(ih.up.requests()) != before {
		t.Errorf("PII method: %q, want 403 and nothing upstream", b)
	}
}

// TestInterceptUnframedChunked: the hang. A body sent unframed
// under "Transfer-Encoding: chunked" gets a 400 at once; one that stops
// mid-way gets a 408 after the body idle timeout; neither hangs.
func TestInterceptUnframedChunked(t *testing.T) {
	ih := newICHarnessWith(t, covPII, true, func(c *Config) { c.BodyIdleTimeout = 500 * time.Millisecond })
	for _, tc := range []struct {
		name, send, want string
	}{
		{"unframed", `{"a":"ssn ` + covSSN + `"}`, "HTTP/1.1 400"},
		{"stalled", "10\r\n{\"a\":\"ssn", "HTTP/1.1 408"},
		{"stalled length", "", "HTTP/1.1 408"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tls.Client(ih.dial(t), &tls.Config{ServerName: "example.com", RootCAs: ih.ca.Pool(), NextProtos: []string{"http/1.1"}})
			framing := "Transfer-Encoding: chunked"
			if tc.name == "stalled length" {
				framing = "Content-Length: 100"
			}
			io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/json\r\n"+framing+"\r\n\r\n"+tc.send)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 512)
			n, _ := io.ReadAtLeast(c, b, 12)
			if !strings.HasPrefix(string(b[:n]), tc.want) {
				t.Errorf("got %q, want %s", b[:n], tc.want)
			}
		})
	}
	for _, r := range ih.up.requests() {
		if bytes.Contains(r.Body, []byte(covSSN)) {
			t.Errorf("upstream got %q", r.Body)
		}
	}
}

// TestInterceptStreamedUpload: a chunked upload far over the scan buffer
// is scanned in segments while it streams, with the PII placed across
// segment ends redacted, and memory stays bounded (the proxy holds no
// more than its windows).
func TestInterceptStreamedUpload(t *testing.T) {
	if testing.Short() {
		t.Skip("large upload")
	}
	const size = 64 << 20
	ih := newICHarnessWith(t, covPII, true, func(c *Config) { c.MaxScanBody = 1 << 20 })
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			body := &piiStream{size: size}
			req, _ := http.NewRequest("POST", ih.url("/sink"), body)
			req.ContentLength = -1
			req.Header.Set("Content-Type", "text/plain")
			// Collect often, so the heap shows what is live rather than the
			// pacer's headroom over what earlier tests left.
			defer debug.SetGCPercent(debug.SetGCPercent(20))
			runtime.GC()
			var ms0 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			var peak atomic.Uint64
			stop := make(chan struct{})
			go func() {
				var ms runtime.MemStats
				for {
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peak.Load() {
						peak.Store(ms.HeapInuse)
					}
				}
			}()
			c := ih.client(h2)
			c.Timeout = 5 * time.Minute
			resp, err := c.Do(req)
			close(stop)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			sinks := ih.up.sinkResults()
			got := sinks[len(sinks)-1]
			if resp.StatusCode != 200 || got.Err != nil || len(got.Leaked) > 0 || got.Tokens < body.planted/2 {
				t.Errorf("status %d, upstream read %d bytes (err %v), leaked %v, %d tokens for %d planted",
					resp.StatusCode, got.Bytes, got.Err, got.Leaked, got.Tokens, body.planted)
			}
			if got.Bytes < size {
				t.Errorf("upstream got %d bytes of %d", got.Bytes, size)
			}
			// The whole test process (client, proxy, upstream) stays far
			// below the body's size.
			if p := peak.Load(); p > ms0.HeapInuse+48<<20 {
				t.Errorf("peak heap %d MiB (%d MiB before) while streaming %d MiB", p>>20, ms0.HeapInuse>>20, size>>20)
			}
			ev := ih.httpEvent(t)
			if ev.PII["ssn"] == 0 || ev.PII["email"] == 0 {
				t.Errorf("event PII %v", ev.PII)
			}
		})
	}
}

// piiStream is a text body of size bytes with an SSN and an email planted
// every ~1 MiB at offsets that move across the proxy's window ends.
type piiStream struct {
	size, off int64
	planted   int
	pending   []byte
}

func (p *piiStream) Read(b []byte) (int, error) {
	if p.off >= p.size {
		return 0, io.EOF
	}
	if len(p.pending) == 0 {
		line := bytes.Repeat([]byte("lorem ipsum dolor sit amet "), 38) // ~1 KiB
		if (p.off/1024)%1000 == 999 {
			k := int(p.off/1024/1000) % 900
			line = append(append(line[:k], " ssn "+covSSN+" mail "+covEmail+" "...), line[k:]...)
			p.planted += 2
		}
		p.pending = append(line, '\n')
	}
	n := copy(b, p.pending)
	if rem := p.size - p.off; int64(n) > rem {
		n = int(rem)
	}
	p.pending = p.pending[n:]
	p.off += int64(n)
	return n, nil
}

// TestInterceptRehydrateHeaders: a token the upstream echoes in a response
// header comes back to the sandbox as the original value.
func TestInterceptRehydrateHeaders(t *testing.T) {
	ih := newICHarness(t, `{"pii":{"enabled":true,"types":["email"],"action":"redact","rehydrate_response":true}}`, true)
	req, _ := http.NewRequest("GET", ih.url("/hdr"), nil)
	req.Header.Set("X-Mail", covEmail)
	resp, err := ih.client(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Echo"); got != covEmail {
		t.Errorf("X-Echo = %q, want the rehydrated %q", got, covEmail)
	}
	reqs := ih.up.requests()
	if v := reqs[len(reqs)-1].Header.Get("X-Mail"); v == covEmail {
		t.Error("the upstream got the email in clear")
	}
}
