package stage

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"strings"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/unicode"
)

// ErrCharset is returned for a charset the proxy does not know: such a
// body cannot be scanned.
var ErrCharset = errors.New("unknown charset")

// BodyCharset returns the character encoding of a text body, or nil for
// UTF-8 (and US-ASCII), which the detectors read as is. It comes from, in
// order: the Content-Type charset parameter (WHATWG labels: "latin1",
// "shift_jis", "utf-16le", ...), a UTF-16 byte order mark, or, without
// either, the NUL pattern of UTF-16 text in the first bytes (ASCII text
// in UTF-16 has a zero byte in every other position), so that an
// undeclared UTF-16 body is not read as bytes with PII hidden between
// NULs.
func BodyCharset(contentType string, head []byte) (encoding.Encoding, error) {
	if cs := charsetParam(contentType); cs != "" {
		switch cs {
		case "utf-8", "utf8", "us-ascii", "ascii":
			return nil, nil
		}
		enc, err := htmlindex.Get(cs)
		if err != nil {
			return nil, fmt.Errorf("%w %q", ErrCharset, cs)
		}
		if enc == unicode.UTF8 {
			return nil, nil
		}
		if strings.HasPrefix(cs, "utf-16") {
			// The declared endianness; a BOM stays a character of the text,
			// so it is written back as it came.
			return utf16For(cs), nil
		}
		return enc, nil
	}
	switch {
	case bytes.HasPrefix(head, []byte{0xFF, 0xFE}):
		return unicode.UTF16(unicode.LittleEndian, unicode.ExpectBOM), nil
	case bytes.HasPrefix(head, []byte{0xFE, 0xFF}):
		return unicode.UTF16(unicode.BigEndian, unicode.ExpectBOM), nil
	}
	return sniffUTF16(head), nil
}

func utf16For(label string) encoding.Encoding {
	if strings.HasSuffix(label, "be") {
		return unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM)
	}
	return unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM)
}

// sniffUTF16 recognises BOM-less UTF-16 by its zero bytes: at least 8
// code units, a zero in at least 40% of one parity's positions and in
// under 5% of the other's.
func sniffUTF16(b []byte) encoding.Encoding {
	b = b[:min(len(b), 4096)&^1]
	if len(b) < 16 {
		return nil
	}
	var even, odd int
	for i := 0; i < len(b); i += 2 {
		if b[i] == 0 {
			even++
		}
		if b[i+1] == 0 {
			odd++
		}
	}
	units := len(b) / 2
	switch {
	case odd*10 >= units*4 && even*20 < units:
		return unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM)
	case even*10 >= units*4 && odd*20 < units:
		return unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM)
	}
	return nil
}

// charsetParam is the lower-cased charset parameter of a Content-Type.
func charsetParam(contentType string) string {
	if contentType == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		// Be lenient: find charset= by hand.
		i := strings.Index(strings.ToLower(contentType), "charset=")
		if i < 0 {
			return ""
		}
		v := contentType[i+len("charset="):]
		if j := strings.IndexAny(v, ";, "); j >= 0 {
			v = v[:j]
		}
		return strings.ToLower(strings.Trim(v, `"'`))
	}
	return strings.ToLower(strings.TrimSpace(params["charset"]))
}

// WithCharset runs fn on body's text decoded to UTF-8 and encodes what fn
// returns back into the body's charset. When fn changes nothing, body is
// returned as is (the same bytes).
func WithCharset(body []byte, enc encoding.Encoding, fn func([]byte) []byte) ([]byte, error) {
	if enc == nil {
		return fn(body), nil
	}
	text, err := enc.NewDecoder().Bytes(body)
	if err != nil {
		return nil, fmt.Errorf("decode charset: %w", err)
	}
	out := fn(text)
	if bytes.Equal(out, text) {
		return body, nil
	}
	b, err := encoding.ReplaceUnsupported(enc.NewEncoder()).Bytes(out)
	if err != nil {
		return nil, fmt.Errorf("encode charset: %w", err)
	}
	return b, nil
}
