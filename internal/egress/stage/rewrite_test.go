package stage

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/unicode"

	"github.com/declaw/declaw/internal/guard/pii"
	"github.com/declaw/declaw/internal/guard/redact"
)

var (
	testTypes = []pii.Type{pii.Email, pii.SSN, pii.CreditCard, pii.APIKey, pii.Phone}
	secretSSN = "219-09-9999"
	secretEm  = "jane.doe@example.org"
)

func newFinder() *Finder {
	return &Finder{Scanner: &pii.Scanner{}, Types: testTypes, Redactor: redact.New()}
}

func TestRewriteForm(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "ssn=219-09-9999&page=2", "ssn=%5BREDACTED_SSN_1%5D&page=2"},
		{"encoded", "mail=jane.doe%40example.org&x=1", "mail=%5BREDACTED_EMAIL_1%5D&x=1"},
		{"plus spaces", "note=my+ssn+is+219-09-9999", "note=my+ssn+is+%5BREDACTED_SSN_1%5D"},
		{"in the name", "219-09-9999=yes&a=b", "%5BREDACTED_SSN_1%5D=yes&a=b"},
		{"bad escape kept", "a=%zz&ssn=219%2D09%2D9999", "a=%zz&ssn=%5BREDACTED_SSN_1%5D"},
		{"no value", "flag&x=", "flag&x="},
		{"clean", "a=1&b=two%20words", "a=1&b=two%20words"},
		{"empty pairs", "&&a=1&", "&&a=1&"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := RewriteForm(&out, strings.NewReader(tc.in), 1<<10, newFinder().Text); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("RewriteForm(%q) = %q, want %q", tc.in, out.String(), tc.want)
			}
		})
	}
	var out bytes.Buffer
	err := RewriteForm(&out, strings.NewReader("a="+strings.Repeat("x", 100)), 50, newFinder().Text)
	if err == nil || !IsUnscannable(err) {
		t.Errorf("a pair over the limit: %v, want ErrFieldTooLarge", err)
	}
}

func TestRewritePathAndQuery(t *testing.T) {
	f := newFinder()
	if got := RewritePath("/users/219-09-9999/mail/jane.doe%40example.org/x%2Fy", f.Text); got != "/users/%5BREDACTED_SSN_1%5D/mail/%5BREDACTED_EMAIL_2%5D/x%2Fy" {
		t.Errorf("RewritePath = %q", got)
	}
	if got := RewriteQuery("q=219-09-9999&jane.doe%40example.org", f.Text); strings.Contains(got, "219-09") || strings.Contains(got, "jane") {
		t.Errorf("RewriteQuery = %q", got)
	}
}

func TestFinderHeaders(t *testing.T) {
	f := newFinder()
	h := http.Header{
		"X-Note":        {"ssn 219-09-9999 mail " + secretEm},
		"Referer":       {"https://x.test/?mail=jane.doe%40example.org"},
		"Authorization": {"Bearer sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5kL7nP9rT1vX3"},
		"Cookie":        {"session=abc; ssn=219-09-9999"},
		"Content-Type":  {`multipart/form-data; boundary=b1; name="219-09-9999"`},
		"Host":          {"219-09-9999.example"}, // kept: routing
		"X-219-09-9999": {"1"},
		"X-Enc":         {"%0D%0Ajane.doe%40example.org"},
	}
	f.Headers(h)
	all := fmt.Sprint(h)
	for _, s := range []string{"X-Note", "Referer", "Cookie", "Content-Type", "X-Enc"} {
		if v := strings.Join(h[s], ","); strings.Contains(v, secretSSN) || strings.Contains(v, "jane") || strings.Contains(v, "jane.doe%40") {
			t.Errorf("%s = %q, want redacted", s, v)
		}
	}
	if !strings.Contains(h.Get("Authorization"), "sk-proj-") {
		t.Errorf("Authorization = %q: the credential header's API key must pass", h.Get("Authorization"))
	}
	if !strings.Contains(h.Get("Content-Type"), "boundary=b1") {
		t.Errorf("Content-Type = %q: the multipart boundary is the body rewriter's", h.Get("Content-Type"))
	}
	if h.Get("Host") != "219-09-9999.example" {
		t.Error("Host was rewritten")
	}
	if _, ok := h["X-219-09-9999"]; ok {
		t.Error("a header whose name is PII was kept")
	}
	if strings.ContainsAny(h.Get("X-Enc"), "\r\n") {
		t.Errorf("X-Enc = %q carries a line break", h.Get("X-Enc"))
	}
	_ = all
}

func TestFinderCharsets(t *testing.T) {
	text := "Kontakt: " + secretEm + ", Nummer " + secretSSN + ", Grüße"
	for _, tc := range []struct {
		name, ct string
		enc      func(string) []byte
		dec      func([]byte) string
	}{
		{"latin1", "text/plain; charset=iso-8859-1", encWith(charmap.ISO8859_1), decWith(charmap.ISO8859_1)},
		{"utf-16le declared", "text/plain; charset=utf-16le", encWith(unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM)), decWith(unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM))},
		{"utf-16be with BOM", "text/plain", encWith(unicode.UTF16(unicode.BigEndian, unicode.ExpectBOM)), decWith(unicode.UTF16(unicode.BigEndian, unicode.ExpectBOM))},
		{"utf-16le sniffed", "application/octet-stream", encWith(unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM)), decWith(unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM))},
		{"shift_jis", "text/plain; charset=Shift_JIS", encWith(japanese.ShiftJIS), decWith(japanese.ShiftJIS)},
		{"utf-16 json", "application/json; charset=utf-16le", func(s string) []byte {
			b, _ := json.Marshal(map[string]string{"m": s})
			return encWith(unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM))(string(b))
		}, decWith(unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.enc(text)
			out, _, err := newFinder().Body(in, tc.ct)
			if err != nil {
				t.Fatal(err)
			}
			got := tc.dec(out)
			if strings.Contains(got, secretEm) || strings.Contains(got, secretSSN) || !strings.Contains(got, "[REDACTED_EMAIL_1]") {
				t.Errorf("decoded output %q, want both redacted", got)
			}
			if !strings.Contains(got, "Grüße") && tc.name != "shift_jis" {
				t.Errorf("output %q lost the non-ASCII text", got)
			}
		})
	}
	if _, _, err := newFinder().Body([]byte("x"), "text/plain; charset=x-no-such"); !IsUnscannable(err) {
		t.Errorf("unknown charset: %v, want unscannable", err)
	}
}

func encWith(e encoding.Encoding) func(string) []byte {
	return func(s string) []byte {
		b, err := encoding.ReplaceUnsupported(e.NewEncoder()).Bytes([]byte(s))
		if err != nil {
			panic(err)
		}
		return b
	}
}

func decWith(e encoding.Encoding) func([]byte) string {
	return func(b []byte) string {
		s, err := e.NewDecoder().Bytes(b)
		if err != nil {
			return "undecodable: " + err.Error()
		}
		return string(s)
	}
}

func base64Reader(b []byte) io.Reader {
	return base64.NewDecoder(base64.StdEncoding, &crlfStripper{r: bytes.NewReader(b)})
}

func TestFinderMultipart(t *testing.T) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.SetBoundary("XyZ")
	mw.WriteField("ssn", secretSSN)
	fw, _ := mw.CreateFormFile("file", "mail jane.doe@example.org")
	io.WriteString(fw, "hello "+secretEm)
	h := textproto.MIMEHeader{"Content-Type": {"application/json"}, "Content-Disposition": {`form-data; name="meta"`}}
	pw, _ := mw.CreatePart(h)
	io.WriteString(pw, `{"note":"ssn \u0032`+secretSSN[1:]+`"}`)
	h = textproto.MIMEHeader{"Content-Type": {"text/plain"}, "Content-Transfer-Encoding": {"base64"}, "Content-Disposition": {`form-data; name="b64"`}}
	pw, _ = mw.CreatePart(h)
	io.WriteString(pw, "bWFpbCBqYW5lLmRvZUBleGFtcGxlLm9yZw==") // "mail jane.doe@example.org"
	mw.Close()

	out, ct, err := newFinder().Body(body.Bytes(), mw.FormDataContentType())
	if err != nil {
		t.Fatal(err)
	}
	if ct != mw.FormDataContentType() {
		t.Errorf("content type changed to %q", ct)
	}
	parts := readParts(t, out, ct)
	if len(parts) != 4 {
		t.Fatalf("%d parts, want 4", len(parts))
	}
	for _, p := range parts {
		if strings.Contains(p, secretSSN) || strings.Contains(p, "jane.doe") {
			t.Errorf("part leaks: %q", p)
		}
	}
	if !json.Valid([]byte(partBody(parts[2]))) {
		t.Errorf("JSON part is no longer JSON: %q", parts[2])
	}

	// A boundary that is PII itself is replaced.
	body.Reset()
	mw = multipart.NewWriter(&body)
	mw.SetBoundary(secretSSN)
	mw.WriteField("a", "b")
	mw.Close()
	out, ct, err = newFinder().Body(body.Bytes(), mw.FormDataContentType())
	if err != nil || strings.Contains(ct, secretSSN) || bytes.Contains(out, []byte(secretSSN)) {
		t.Errorf("PII boundary: ct %q body %q err %v", ct, out, err)
	}
	if len(readParts(t, out, ct)) != 1 {
		t.Error("rewritten body lost its part")
	}
	if _, _, err := newFinder().Body([]byte("--x\r\nbroken"), `multipart/form-data; boundary=x`); !IsUnscannable(err) {
		t.Errorf("malformed multipart: %v, want unscannable", err)
	}
}

// readParts returns each part as "name|filename|body" (body decoded).
func readParts(t *testing.T, body []byte, ct string) []string {
	t.Helper()
	_, params, err := mime.ParseMediaType(ct)
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var out []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("output does not parse: %v\n%s", err, body)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("part body: %v", err)
		}
		if p.Header.Get("Content-Transfer-Encoding") == "base64" {
			b, _ = io.ReadAll(base64Reader(b))
		}
		out = append(out, p.FormName()+"|"+p.FileName()+"|"+string(b))
	}
}

func partBody(p string) string { return p[strings.LastIndex(p, "|")+1:] }

func TestStreamTextBoundaries(t *testing.T) {
	// PII at every offset around the window ends is redacted.
	for _, pad := range []int{StreamWindow - StreamHoldback - 5, StreamWindow - 5, StreamWindow + 3, 2*StreamWindow - 700} {
		in := strings.Repeat("a", pad) + " mail " + secretEm + " ssn " + secretSSN + " " + strings.Repeat("b ", 70000)
		var out bytes.Buffer
		f := newFinder()
		seg := func(b []byte) ([]byte, error) { return []byte(f.Text(string(b))), nil }
		if err := StreamText(&out, strings.NewReader(in), "text/plain", seg, f.spans); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), secretEm) || strings.Contains(out.String(), secretSSN) {
			t.Errorf("pad %d: PII across a window end leaked", pad)
		}
		if want := strings.Replace(strings.Replace(in, secretEm, "[REDACTED_EMAIL_1]", 1), secretSSN, "[REDACTED_SSN_2]", 1); out.String() != want {
			t.Errorf("pad %d: output differs beyond the redactions", pad)
		}
	}
}

func TestStreamJSON(t *testing.T) {
	// Escaped PII in a streamed JSON body is found; the output stays the same JSON value otherwise.
	val := strings.Repeat("x", 3*StreamWindow) + ` jane.doe\u0040example.org \u0032\u0031\u0039-09-9999 \"quoted\" \\ end \ud83d\ude00`
	in := `{"a":"` + val + `","n":[1,2,3]}`
	var out bytes.Buffer
	f := newFinder()
	st := &Streamer{Field: f.Text, Spans: f.spans, Segment: func(b []byte, raw bool) ([]byte, error) {
		f.JSONRaw = raw
		return []byte(f.Text(string(b))), nil
	}}
	ct := "application/json"
	if err := st.Stream(&out, strings.NewReader(in), ct, ct); err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("streamed JSON no longer valid: %v", err)
	}
	s := v["a"].(string)
	if strings.Contains(s, "jane.doe@example.org") || strings.Contains(s, "219-09-9999") {
		t.Errorf("escaped PII leaked: %q", s[len(s)-80:])
	}
	if !strings.HasSuffix(s, "\"quoted\" \\ end \U0001F600") {
		t.Errorf("value changed beyond the redactions: %q", s[len(s)-40:])
	}
}

func TestStreamMultipartAndForm(t *testing.T) {
	f := newFinder()
	st := &Streamer{Field: f.Text, Spans: f.spans, MaxField: 1 << 10, Segment: func(b []byte, raw bool) ([]byte, error) {
		f.JSONRaw = raw
		return []byte(f.Text(string(b))), nil
	}}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("upload", "big.txt")
	io.WriteString(fw, strings.Repeat("line of text\n", 20000)+"ssn "+secretSSN+"\n"+strings.Repeat("z", 5000))
	mw.WriteField("mail", secretEm)
	mw.Close()
	ct := mw.FormDataContentType()
	send, err := st.Prepare(ct)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := st.Stream(&out, &body, ct, send); err != nil {
		t.Fatal(err)
	}
	parts := readParts(t, out.Bytes(), send)
	if len(parts) != 2 || strings.Contains(out.String(), secretSSN) || strings.Contains(out.String(), secretEm) {
		t.Errorf("streamed multipart: %d parts, leaks: %v", len(parts), strings.Contains(out.String(), secretSSN))
	}
	out.Reset()
	form := "a=" + strings.Repeat("x", 900) + "&mail=" + url.QueryEscape(secretEm) + strings.Repeat("&k=v", 5000)
	if err := st.Stream(&out, strings.NewReader(form), "application/x-www-form-urlencoded", "application/x-www-form-urlencoded"); err != nil {
		t.Fatal(err)
	}
	if q, err := url.ParseQuery(out.String()); err != nil || strings.Contains(q.Get("mail"), "jane") {
		t.Errorf("streamed form: %v mail=%q", err, q.Get("mail"))
	}
}

func TestDecoderZstd(t *testing.T) {
	raw := encode(t, "zstd", []byte("ssn "+secretSSN))
	dec, _, err := ReadBody(bytes.NewReader(raw), "zstd", 1<<20)
	if err != nil || string(dec) != "ssn "+secretSSN {
		t.Errorf("zstd: %q %v", dec, err)
	}
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write([]byte("x"))
	zw.Close()
	if _, _, err := ReadBody(bytes.NewReader(zb.Bytes()[:10]), "gzip", 1<<20); !IsUnscannable(err) {
		t.Errorf("truncated gzip: %v, want unscannable", err)
	}
}
