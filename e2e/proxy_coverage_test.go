package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/text/encoding/unicode"
)

// coverageScript sends PII in every place a request carries text, from
// inside the sandbox, with Python's http.client (HTTP/1.1) over HTTPS and
// plain HTTP: form body, custom header, chunked JSON (a generator, as
// streaming SDKs send), multipart, gzip, br and zstd bodies (pre-encoded
// by the test, in files), a UTF-16 body, path and query, and the issue's
// hang (a body sent unframed under "Transfer-Encoding: chunked"). Each
// request goes to /cov/<scheme>/<case>; it prints "CASE scheme case
// status seconds".
const coverageScript = `import base64, gzip, http.client, json, socket, ssl, sys, time, urllib.parse
SSN, MAIL = "219-09-9999", "jane.doe@example.org"
text = "ssn " + SSN + " mail " + MAIL
jbody = json.dumps({"note": text}).encode()
files = {n: base64.b64decode(open("/tmp/cov-" + n + ".b64").read()) for n in ("br", "zstd", "utf16")}
def conn(scheme):
    if scheme == "https":
        return http.client.HTTPSConnection("api.example.test", 443, timeout=20, context=ssl.create_default_context())
    return http.client.HTTPConnection("api.example.test", 80, timeout=20)
def gen():
    yield jbody[:7]
    time.sleep(0.1)
    yield jbody[7:]
def send(scheme, case, method, path, body=None, headers={}, **kw):
    t = time.time()
    c = conn(scheme)
    try:
        c.request(method, "/cov/%s/%s%s" % (scheme, case, path), body=body, headers=headers, **kw)
        r = c.getresponse()
        r.read()
        status = r.status
    except Exception as e:
        status = type(e).__name__
    finally:
        c.close()
    print("CASE", scheme, case, status, "%.1f" % (time.time() - t), flush=True)
boundary = "cov" + "b0undary"
multipart = ("--%s\r\nContent-Disposition: form-data; name=\"ssn\"\r\n\r\n%s\r\n"
             "--%s\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"mail %s\"\r\nContent-Type: text/plain\r\n\r\n%s\r\n"
             "--%s--\r\n") % (boundary, SSN, boundary, MAIL, text, boundary)
for scheme in ("https", "http"):
    send(scheme, "form", "POST", "", "ssn=%s&mail=%s" % (SSN, urllib.parse.quote(MAIL)), {"Content-Type": "application/x-www-form-urlencoded"})
    send(scheme, "header", "GET", "", None, {"X-Note": text})
    send(scheme, "chunked", "POST", "", gen(), {"Content-Type": "application/json"})
    send(scheme, "chunked-explicit", "POST", "", gen(), {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, encode_chunked=True)
    send(scheme, "multipart", "POST", "", multipart.encode(), {"Content-Type": "multipart/form-data; boundary=" + boundary})
    send(scheme, "gzip", "POST", "", gzip.compress(jbody), {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    send(scheme, "br", "POST", "", files["br"], {"Content-Type": "application/json", "Content-Encoding": "br"})
    send(scheme, "zstd", "POST", "", files["zstd"], {"Content-Type": "application/json", "Content-Encoding": "zstd"})
    send(scheme, "utf16", "POST", "", files["utf16"], {"Content-Type": "text/plain; charset=utf-16le"})
    send(scheme, "path", "GET", "/users/%s/%s?mail=%s&q=%s" % (SSN, urllib.parse.quote(MAIL), urllib.parse.quote(MAIL), SSN))
    # The issue's hang: "Transfer-Encoding: chunked" with the body unframed.
    send(scheme, "unframed", "POST", "", jbody, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
`

// curlCases are HTTP/2 requests (curl --http2 over HTTPS): header, form,
// multipart, a chunked upload from stdin.
var curlCases = map[string]string{
	"form":      `curl -sS --http2 -o /dev/null -w '%{http_version} %{http_code}' --data 'ssn=219-09-9999&mail=jane.doe%40example.org' https://api.example.test/cov/h2/form`,
	"header":    `curl -sS --http2 -o /dev/null -w '%{http_version} %{http_code}' -H 'X-Note: ssn 219-09-9999 mail jane.doe@example.org' https://api.example.test/cov/h2/header`,
	"multipart": `curl -sS --http2 -o /dev/null -w '%{http_version} %{http_code}' -F 'ssn=219-09-9999' -F 'doc=mail jane.doe@example.org;filename=a.txt' https://api.example.test/cov/h2/multipart`,
	"chunked":   `printf '{"note":"ssn 219-09-9999 mail jane.doe@example.org"}' | curl -sS --http2 -o /dev/null -w '%{http_version} %{http_code}' -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' --data-binary @- https://api.example.test/cov/h2/chunked`,
	"path":      `curl -sS --http2 -o /dev/null -w '%{http_version} %{http_code}' 'https://api.example.test/cov/h2/path/users/219-09-9999?mail=jane.doe%40example.org'`,
}

// TestSecurityProxyCoverage (issue 24): from inside a secured sandbox, PII
// in every place a request carries text, in every framing and encoding,
// over HTTPS (HTTP/1.1 and HTTP/2) and HTTP, arrives redacted at the
// upstream; a chunked body streams; the unframed "chunked" body of the
// issue gets a 400 at once instead of hanging.
func TestSecurityProxyCoverage(t *testing.T) {
	s := startServer(t)
	pj, _ := json.Marshal(map[string]any{"pii": map[string]any{"enabled": true, "types": []string{"email", "ssn"}, "action": "redact"}})
	id := s.create(map[string]any{"security": map[string]any{"policy_json": string(pj)},
		"network": map[string]any{"allow_out": []string{"api.example.test"}, "deny_out": []string{"0.0.0.0/0"}}})

	jbody, _ := json.Marshal(map[string]string{"note": "ssn 219-09-9999 mail jane.doe@example.org"})
	var br, zs bytes.Buffer
	bw := brotli.NewWriter(&br)
	bw.Write(jbody)
	bw.Close()
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(jbody)
	zw.Close()
	u16, _ := unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM).NewEncoder().Bytes([]byte("ssn 219-09-9999 mail jane.doe@example.org"))
	for name, b := range map[string][]byte{"br": br.Bytes(), "zstd": zs.Bytes(), "utf16": u16} {
		s.must(200, "POST", "/sandboxes/"+id+"/files", map[string]any{"path": "/tmp/cov-" + name + ".b64", "data": base64.StdEncoding.EncodeToString(b)}, nil)
	}
	s.must(200, "POST", "/sandboxes/"+id+"/files", map[string]any{"path": "/tmp/cov.py", "data": coverageScript}, nil)

	s.net.Reset()
	res := s.run(id, "python3 /tmp/cov.py", "timeout", 120)
	statuses := map[string]string{}
	for _, line := range strings.Split(res.Stdout, "\n") {
		if f := strings.Fields(line); len(f) == 5 && f[0] == "CASE" {
			statuses[f[1]+"/"+f[2]] = f[3] + " in " + f[4] + "s"
		}
	}
	for _, scheme := range []string{"https", "http"} {
		for _, c := range []string{"form", "header", "chunked", "chunked-explicit", "multipart", "gzip", "br", "zstd", "utf16", "path"} {
			if st := statuses[scheme+"/"+c]; !strings.HasPrefix(st, "200 ") {
				t.Errorf("%s %s: %q, want 200 (script output: %s %s)", scheme, c, st, res.Stdout, res.Stderr)
			}
		}
		// The hang answered at once.
		if st := statuses[scheme+"/unframed"]; !strings.HasPrefix(st, "400 ") {
			t.Errorf("%s unframed chunked body: %q, want a prompt 400", scheme, st)
		}
	}
	for c, cmd := range curlCases {
		if r := s.run(id, cmd, "timeout", 30); r.Stdout != "2 200" {
			t.Errorf("curl --http2 %s: %+v, want HTTP/2 and 200", c, r)
		}
	}

	seen := map[string]bool{}
	for _, h := range s.net.Records().HTTP {
		if !strings.HasPrefix(h.URI, "/cov/") {
			continue
		}
		parts := strings.SplitN(strings.TrimPrefix(h.URI, "/cov/"), "/", 3)
		if len(parts) < 2 {
			continue
		}
		name := parts[0] + "/" + strings.SplitN(parts[1], "?", 2)[0]
		seen[name] = true
		body := h.Body
		if strings.HasSuffix(name, "/utf16") {
			body, _ = unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM).NewDecoder().Bytes(body)
		}
		hdr, _ := json.Marshal(h.Header)
		uri, _ := url.PathUnescape(h.URI)
		for _, where := range []struct {
			what string
			b    []byte
		}{{"body", body}, {"headers", hdr}, {"URI", []byte(uri)}, {"raw URI", []byte(h.URI)}} {
			for _, secret := range []string{"219-09-9999", "jane.doe@example.org", "jane.doe%40example.org"} {
				if bytes.Contains(where.b, []byte(secret)) {
					t.Errorf("%s: the upstream got %q in the %s: %.400s", name, secret, where.what, where.b)
				}
			}
		}
		if strings.HasSuffix(name, "/unframed") {
			t.Errorf("the unframed body reached the upstream: %q", body)
		}
	}
	for _, want := range []string{"https/form", "http/form", "https/header", "https/chunked", "http/chunked", "https/multipart", "https/zstd", "h2/form", "h2/chunked", "h2/multipart"} {
		if !seen[want] {
			t.Errorf("the upstream never got %s (saw %v)", want, seen)
		}
	}
}
