package stage

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/declaw/declaw/internal/guard/pii"
	"github.com/declaw/declaw/internal/guard/redact"
)

// BodyKind is how the PII stage reads a body.
type BodyKind int

const (
	KindText      BodyKind = iota // the whole text (in its charset)
	KindJSON                      // string values only; stays valid JSON
	KindForm                      // application/x-www-form-urlencoded names and values
	KindMultipart                 // multipart/*: part headers and bodies, each by its own type
)

// KindOf classifies a Content-Type.
func KindOf(contentType string) BodyKind {
	mt := strings.ToLower(strings.TrimSpace(contentType))
	if i := strings.IndexByte(mt, ';'); i >= 0 {
		mt = strings.TrimSpace(mt[:i])
	}
	switch {
	case mt == "application/x-www-form-urlencoded":
		return KindForm
	case strings.HasPrefix(mt, "multipart/"):
		return KindMultipart
	case strings.Contains(mt, "json"):
		return KindJSON
	}
	return KindText
}

// boundaryOf returns the boundary parameter of a multipart Content-Type.
func boundaryOf(contentType string) (string, error) {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return "", fmt.Errorf("%w: content type: %v", ErrMultipart, err)
	}
	b := params["boundary"]
	if b == "" {
		return "", fmt.Errorf("%w: no boundary", ErrMultipart)
	}
	return b, nil
}

// MaxMultipartDepth bounds nested multipart bodies.
const MaxMultipartDepth = 4

// Finder finds (and, into its Redactor, redacts) PII in every text-bearing
// part of one message. It accumulates per-type counts. A Finder belongs to
// one message; it is not safe for concurrent use.
type Finder struct {
	Scanner  *pii.Scanner
	Types    []pii.Type
	Redactor *redact.Redactor
	// MaxField bounds what one form pair or buffered multipart part may
	// hold (zero: DefaultMaxScan).
	MaxField int

	Counts      map[string]int
	SlowSkipped bool

	// SlowBudget, when set, is the person_name/address budget shared by
	// every Finder of one body (the segments of a streamed body);
	// otherwise each Finder has SlowTypeBudget of its own.
	SlowBudget *int

	fast, slow []pii.Type
	budget     int
	init       bool
	// noCreds drops api_key findings (credential headers).
	noCreds bool
	// JSONRaw is set when the text is raw JSON (a segment of a streamed
	// JSON body): findings are split around quotes and escapes, so the
	// tokens never touch JSON syntax.
	JSONRaw bool
}

func (f *Finder) setup() {
	if f.init {
		return
	}
	f.init = true
	if f.Counts == nil {
		f.Counts = map[string]int{}
	}
	if f.Redactor == nil {
		f.Redactor = redact.New()
	}
	if f.MaxField <= 0 {
		f.MaxField = DefaultMaxScan
	}
	for _, t := range f.Types {
		if t == pii.PersonName || t == pii.Address {
			f.slow = append(f.slow, t)
		} else {
			f.fast = append(f.fast, t)
		}
	}
	f.budget = SlowTypeBudget
	if f.SlowBudget == nil {
		f.SlowBudget = &f.budget
	}
}

// Detect returns the spans in s (counted), as redaction spans.
func (f *Finder) Detect(s string) []redact.Span {
	f.setup()
	spans := ScanWindows(f.Scanner, s, f.fast)
	if len(f.slow) > 0 {
		if len(s) <= *f.SlowBudget {
			*f.SlowBudget -= len(s)
			spans = mergeSpans(spans, ScanWindows(f.Scanner, s, f.slow))
		} else {
			f.SlowSkipped = true
		}
	}
	out := make([]redact.Span, 0, len(spans))
	for _, sp := range spans {
		if f.noCreds && sp.Type == pii.APIKey {
			continue
		}
		f.Counts[string(sp.Type)]++
		rs := redact.Span{Type: tokenType(sp.Type), Start: sp.Start, End: sp.End}
		if f.JSONRaw {
			out = append(out, splitJSON(s, rs)...)
			continue
		}
		out = append(out, rs)
	}
	return out
}

// splitJSON splits a span of raw JSON text into the pieces between quotes
// and backslash escapes (which stay as they are).
func splitJSON(s string, sp redact.Span) []redact.Span {
	var out []redact.Span
	start := sp.Start
	for i := sp.Start; i < sp.End; {
		c := s[i]
		if c != '"' && c != '\\' {
			i++
			continue
		}
		if i > start {
			out = append(out, redact.Span{Type: sp.Type, Start: start, End: i})
		}
		n := 1
		if c == '\\' {
			n = 2
			if i+1 < len(s) && s[i+1] == 'u' {
				n = 6
			}
		}
		i += n
		start = i
	}
	if start < sp.End {
		out = append(out, redact.Span{Type: sp.Type, Start: start, End: sp.End})
	}
	return out
}

// Text is the TextFunc of the Finder: s with its findings replaced by tokens.
func (f *Finder) Text(s string) string {
	spans := f.Detect(s)
	if len(spans) == 0 {
		return s
	}
	return f.Redactor.Text(s, spans)
}

// Found reports whether anything was found so far.
func (f *Finder) Found() bool {
	for _, n := range f.Counts {
		if n > 0 {
			return true
		}
	}
	return false
}

// Body redacts a whole (decoded) body by its kind. It returns the new body
// and Content-Type (changed only when a multipart boundary had to be
// replaced). An error means the body could not be read as its type claims
// (unknown charset, malformed multipart, a field over MaxField): the
// caller treats it as unscannable.
func (f *Finder) Body(body []byte, contentType string) ([]byte, string, error) {
	f.setup()
	return f.body(body, contentType, 0)
}

func (f *Finder) body(body []byte, contentType string, depth int) ([]byte, string, error) {
	kind := KindOf(contentType)
	if kind == KindMultipart {
		if depth >= MaxMultipartDepth {
			return nil, "", fmt.Errorf("%w: nested deeper than %d", ErrMultipart, MaxMultipartDepth)
		}
		var out bytes.Buffer
		ct, err := f.multipart(&out, bytes.NewReader(body), contentType, depth)
		if err != nil {
			return nil, "", err
		}
		return out.Bytes(), ct, nil
	}
	enc, err := BodyCharset(contentType, body)
	if err != nil {
		return nil, "", err
	}
	var ferr error
	out, err := WithCharset(body, enc, func(text []byte) []byte {
		switch kind {
		case KindForm:
			var b bytes.Buffer
			if err := RewriteForm(&b, bytes.NewReader(text), f.MaxField, f.Text); err != nil {
				ferr = err
				return text
			}
			return b.Bytes()
		case KindJSON:
			if out, err := f.Redactor.JSON(text, f.Detect); err == nil {
				return out
			}
			// Not valid JSON after all: read as text.
		}
		s := string(text)
		if r := f.Text(s); r != s {
			return []byte(r)
		}
		return text
	})
	if ferr != nil {
		return nil, "", ferr
	}
	if err != nil {
		return nil, "", err
	}
	return out, contentType, nil
}

// multipart rewrites a multipart body from src to dst and returns the
// Content-Type to send (with a fresh boundary when the original could not
// be kept).
func (f *Finder) multipart(dst io.Writer, src io.Reader, contentType string, depth int) (string, error) {
	in, err := boundaryOf(contentType)
	if err != nil {
		return "", err
	}
	out := in
	ct := contentType
	if !KeepBoundary(in, f.Text) {
		out = FreshBoundary()
		mt, params, _ := mime.ParseMediaType(contentType)
		params["boundary"] = out
		ct = mime.FormatMediaType(mt, params)
	}
	err = RewriteMultipart(dst, src, in, out, f.Text, func(h textproto.MIMEHeader, r io.Reader, w io.Writer) error {
		return f.part(h, r, w, depth)
	})
	return ct, err
}

// part rewrites one part body: its Content-Transfer-Encoding undone and
// redone, its content read by its own Content-Type (text/plain when it
// has none). Parts up to MaxField are read whole; larger ones are
// streamed as text (see StreamText).
func (f *Finder) part(h textproto.MIMEHeader, r io.Reader, w io.Writer, depth int) error {
	ct := h.Get("Content-Type")
	if ct == "" {
		ct = "text/plain"
	}
	r, enc := transferCoding(h, ct, r, w)
	head, err := io.ReadAll(io.LimitReader(r, int64(f.MaxField)+1))
	if err != nil {
		return fmt.Errorf("%w: part: %v", ErrMultipart, err)
	}
	if len(head) <= f.MaxField {
		out, _, err := f.body(head, ct, depth+1)
		if err != nil {
			return err
		}
		if _, err := enc.Write(out); err != nil {
			return err
		}
		return enc.Close()
	}
	// Too large to hold: streamed as text (a nested multipart part by
	// part), in segments through f.
	st := &Streamer{Field: f.Text, MaxField: f.MaxField, depth: depth + 1,
		Segment: func(seg []byte, jsonRaw bool) ([]byte, error) {
			f.JSONRaw = jsonRaw
			defer func() { f.JSONRaw = false }()
			return []byte(f.Text(string(seg))), nil
		},
		Spans: f.spans,
	}
	if _, err := st.stream(enc, io.MultiReader(bytes.NewReader(head), r), ct, true); err != nil {
		return err
	}
	return enc.Close()
}

// spans is a SpanFunc over the finder's fast types.
func (f *Finder) spans(b []byte) [][2]int {
	f.setup()
	var out [][2]int
	for _, sp := range ScanWindows(f.Scanner, string(b), f.fast) {
		out = append(out, [2]int{sp.Start, sp.End})
	}
	return out
}

// Headers rewrites the scanned header values of h in place (see
// ScannedHeader for which are kept as they are). Credential headers
// (Authorization, Cookie, ...) are scanned for every type but api_key: a
// credential is what they are for.
func (f *Finder) Headers(h http.Header) {
	f.setup()
	for k, vs := range h {
		if !ScannedHeader(k) {
			continue
		}
		if f.NameHasPII(k) {
			delete(h, k) // a name carrying PII: the header is dropped
			continue
		}
		f.noCreds = CredentialHeader(k)
		for i, v := range vs {
			vs[i] = RewriteHeaderValue(k, v, f.Text)
		}
		f.noCreds = false
	}
}

// NameHasPII reports (and counts) PII in a header or field name. Names
// are tokens joined by '-' or '_' ("X-219-09-9999"), which the detectors
// read as one word: every tail after a separator is scanned too.
func (f *Finder) NameHasPII(name string) bool {
	f.setup()
	for i := -1; i < len(name); i++ {
		if i >= 0 && name[i] != '-' && name[i] != '_' && name[i] != '.' {
			continue
		}
		if sp := f.Scanner.Scan(name[i+1:], f.fast); len(sp) > 0 {
			f.Counts[string(sp[0].Type)]++
			return true
		}
	}
	return false
}

// keptHeaders are the request headers the proxy reads or rewrites itself
// and never scans: framing and routing. Everything else is scanned.
var keptHeaders = map[string]bool{
	"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Content-Encoding": true,
	"Connection": true, "Keep-Alive": true, "Te": true, "Trailer": true, "Upgrade": true, "Expect": true,
	"Proxy-Connection": true,
}

// ScannedHeader reports whether the PII stage scans header k.
func ScannedHeader(k string) bool { return !keptHeaders[textproto.CanonicalMIMEHeaderKey(k)] }

// CredentialHeader reports headers that carry the sandbox's credentials for
// the upstream (API keys, session cookies), where api_key findings are
// left alone.
func CredentialHeader(k string) bool {
	k = strings.ToLower(k)
	switch k {
	case "authorization", "proxy-authorization", "cookie":
		return true
	}
	for _, w := range []string{"api-key", "apikey", "api_key", "token", "secret", "auth"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// transferCoding undoes a part's Content-Transfer-Encoding (base64,
// quoted-printable) on r and returns the writer that redoes it on w.
func transferCoding(h textproto.MIMEHeader, ct string, r io.Reader, w io.Writer) (io.Reader, io.WriteCloser) {
	switch strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))) {
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, &crlfStripper{r: r}), newBase64Lines(w)
	case "quoted-printable":
		qw := quotedprintable.NewWriter(w)
		qw.Binary = !strings.HasPrefix(strings.ToLower(ct), "text/")
		return quotedprintable.NewReader(r), qw
	}
	return r, nopWriteCloser{w}
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// crlfStripper drops CR and LF (base64 bodies are line-wrapped).
type crlfStripper struct{ r io.Reader }

func (c *crlfStripper) Read(p []byte) (int, error) {
	for {
		n, err := c.r.Read(p)
		j := 0
		for _, b := range p[:n] {
			if b != '\r' && b != '\n' {
				p[j] = b
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}

// base64Lines encodes base64 in 76-character lines (RFC 2045).
type base64Lines struct {
	w    io.Writer
	enc  io.WriteCloser
	line *lineWrapper
}

func newBase64Lines(w io.Writer) *base64Lines {
	lw := &lineWrapper{w: w, max: 76}
	return &base64Lines{w: w, enc: base64.NewEncoder(base64.StdEncoding, lw), line: lw}
}

func (b *base64Lines) Write(p []byte) (int, error) { return b.enc.Write(p) }
func (b *base64Lines) Close() error                { return b.enc.Close() }

type lineWrapper struct {
	w   io.Writer
	max int
	col int
}

func (l *lineWrapper) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		room := l.max - l.col
		k := min(room, len(p))
		if _, err := l.w.Write(p[:k]); err != nil {
			return n, err
		}
		n += k
		l.col += k
		p = p[k:]
		if l.col == l.max && len(p) > 0 {
			if _, err := l.w.Write([]byte("\r\n")); err != nil {
				return n, err
			}
			l.col = 0
		}
	}
	return n, nil
}

// IsUnscannable reports errors that mean "this body cannot be read as it
// claims": the policy then blocks it or passes it unscanned.
func IsUnscannable(err error) bool {
	return errors.Is(err, ErrTooLarge) || errors.Is(err, ErrUnsupported) || errors.Is(err, ErrCharset) ||
		errors.Is(err, ErrMultipart) || errors.Is(err, ErrFieldTooLarge) || errors.Is(err, ErrDecode)
}
