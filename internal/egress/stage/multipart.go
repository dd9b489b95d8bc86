package stage

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"strings"
)

// PartFunc rewrites one multipart part's body from r to w; h is the part's
// header as it was received.
type PartFunc func(h textproto.MIMEHeader, r io.Reader, w io.Writer) error

// ErrMultipart is returned for a multipart body that does not parse.
var ErrMultipart = errors.New("malformed multipart body")

// FreshBoundary returns a random multipart boundary.
func FreshBoundary() string {
	var b [16]byte
	rand.Read(b[:])
	return "declaw-" + hex.EncodeToString(b[:])
}

// KeepBoundary reports whether a multipart body can be re-encoded with its
// original boundary: one multipart.Writer accepts whose text fn does not
// change (a boundary is text the sandbox chose, so it is scanned too) and
// that a redaction token cannot complete ('[' never appears in a valid
// boundary, and every token starts with one).
func KeepBoundary(boundary string, fn TextFunc) bool {
	if err := multipart.NewWriter(io.Discard).SetBoundary(boundary); err != nil {
		return false
	}
	return fn == nil || fn(boundary) == boundary
}

// RewriteMultipart copies a multipart body (boundary in) from src to dst,
// re-encoded with boundary out: each part's header values go through
// hdr (RewritePartHeader) and its body through body. The preamble and
// epilogue (text outside the parts, which receivers ignore) are dropped.
// Memory is bounded by what body holds: parts are streamed.
func RewriteMultipart(dst io.Writer, src io.Reader, in, out string, hdr TextFunc, body PartFunc) error {
	mr := multipart.NewReader(src, in)
	mw := multipart.NewWriter(dst)
	if err := mw.SetBoundary(out); err != nil {
		return fmt.Errorf("multipart boundary: %w", err)
	}
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrMultipart, err)
		}
		h := RewritePartHeader(p.Header, hdr)
		w, err := mw.CreatePart(h)
		if err != nil {
			return err
		}
		if err := body(p.Header, p, w); err != nil {
			return err
		}
	}
	return mw.Close()
}

// RewritePartHeader returns a copy of a part header (or of a whole
// request's header) with the text in its values passed through fn:
// parameters of Content-Disposition and Content-Type (the field name and
// file name among them) one by one, other values whole. Content-Type's
// boundary parameter is left to the multipart rewriter, and values keep
// no CR or LF.
func RewritePartHeader(h textproto.MIMEHeader, fn TextFunc) textproto.MIMEHeader {
	out := make(textproto.MIMEHeader, len(h))
	for k, vs := range h {
		nk := k
		if fn(k) != k || fn(strings.ReplaceAll(k, "-", " ")) != strings.ReplaceAll(k, "-", " ") {
			continue // a header whose name carries PII is dropped
		}
		for _, v := range vs {
			out[nk] = append(out[nk], RewriteHeaderValue(k, v, fn))
		}
	}
	return out
}

// RewriteHeaderValue passes one header value through fn. Media-type
// values (Content-Type, Content-Disposition) are rewritten parameter by
// parameter; a value containing percent escapes is also read decoded (a
// Referer's query string, a URL-encoded note), and when that reading
// changes the whole value is written back decoded-and-redacted with its
// control characters escaped.
func RewriteHeaderValue(name, v string, fn TextFunc) string {
	switch textproto.CanonicalMIMEHeaderKey(name) {
	case "Content-Type", "Content-Disposition":
		if mt, params, err := mime.ParseMediaType(v); err == nil {
			changed := false
			if nm := fn(mt); nm != mt {
				mt, changed = "application/octet-stream", true
				if strings.EqualFold(name, "Content-Disposition") {
					mt = "attachment"
				}
			}
			for pk, pv := range params {
				if pk == "boundary" && strings.HasPrefix(strings.ToLower(mt), "multipart/") {
					continue
				}
				if np := fn(pv); np != pv {
					params[pk], changed = np, true
				}
			}
			if !changed {
				return v
			}
			if f := mime.FormatMediaType(mt, params); f != "" {
				return f
			}
			return mt
		}
	}
	out := fn(v)
	if strings.IndexByte(v, '%') >= 0 {
		if dec := UnescapeLenient(out, false); dec != out {
			if red := fn(dec); red != dec {
				out = red
			}
		}
	}
	if out == v {
		return v
	}
	return headerSafe(out)
}

// headerSafe percent-escapes the bytes a header value may not carry.
func headerSafe(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 && c != '\t' || c == 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
