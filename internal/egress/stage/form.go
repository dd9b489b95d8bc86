package stage

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
)

// TextFunc scans one piece of text (a form value, a header value, a path
// segment...) and returns it, redacted where the policy says so. It
// returns s itself when it changes nothing.
type TextFunc func(s string) string

// ErrFieldTooLarge is returned for one form pair (or multipart part
// header) longer than the limit: it cannot be scanned within bounded memory.
var ErrFieldTooLarge = errors.New("field too large to scan")

// RewriteForm copies an application/x-www-form-urlencoded body from src to
// dst one pair at a time (so memory stays bounded by maxPair whatever the
// body's size). Every name and value is percent-decoded ('+' is a space,
// malformed escapes are kept literally, as lenient servers read them) and
// passed through fn; a pair fn changes is written back escaped
// (url.QueryEscape), so the output is a valid form; other pairs keep their
// bytes. A pair longer than maxPair bytes fails with ErrFieldTooLarge.
func RewriteForm(dst io.Writer, src io.Reader, maxPair int, fn TextFunc) error {
	br := bufio.NewReaderSize(src, 32<<10)
	var pair []byte
	for {
		chunk, err := br.ReadSlice('&')
		pair = append(pair, chunk...)
		if len(pair) > maxPair+1 {
			return fmt.Errorf("%w: form pair over %d bytes", ErrFieldTooLarge, maxPair)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && err != io.EOF {
			return err
		}
		last := err == io.EOF
		amp := !last // ReadSlice found the delimiter
		if amp {
			pair = pair[:len(pair)-1]
		}
		if _, werr := dst.Write(RewritePair(pair, fn)); werr != nil {
			return werr
		}
		if amp {
			if _, werr := dst.Write([]byte{'&'}); werr != nil {
				return werr
			}
		}
		if last {
			return nil
		}
		pair = pair[:0]
	}
}

// RewritePair is RewriteForm for one name[=value] pair.
func RewritePair(pair []byte, fn TextFunc) []byte {
	if len(pair) == 0 {
		return pair
	}
	rawName, rawVal, hasEq := bytes.Cut(pair, []byte{'='})
	name := UnescapeLenient(string(rawName), true)
	newName := fn(name)
	var val, newVal string
	if hasEq {
		val = UnescapeLenient(string(rawVal), true)
		newVal = fn(val)
	}
	if newName == name && newVal == val {
		return pair
	}
	out := url.QueryEscape(newName)
	if hasEq {
		out += "=" + url.QueryEscape(newVal)
	}
	return []byte(out)
}

// RewriteQuery is RewriteForm for a URL query string (in memory: its
// size is bounded by the request header limit).
func RewriteQuery(rawQuery string, fn TextFunc) string {
	if rawQuery == "" {
		return rawQuery
	}
	var b strings.Builder
	for i, pair := range strings.Split(rawQuery, "&") {
		if i > 0 {
			b.WriteByte('&')
		}
		b.Write(RewritePair([]byte(pair), fn))
	}
	return b.String()
}

// UnescapeLenient percent-decodes s, turning '+' into a space when plus is
// set; a '%' not followed by two hex digits is kept as it is.
func UnescapeLenient(s string, plus bool) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%' && i+2 < len(s) && isHexDigit(s[i+1]) && isHexDigit(s[i+2]):
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		case c == '+' && plus:
			b = append(b, ' ')
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// RewritePath passes every segment of an escaped URL path, percent-decoded,
// through fn; a segment fn changes is escaped again (url.PathEscape), the
// others keep their bytes.
func RewritePath(escapedPath string, fn TextFunc) string {
	if escapedPath == "" || escapedPath == "/" {
		return escapedPath
	}
	segs := strings.Split(escapedPath, "/")
	changed := false
	for i, seg := range segs {
		if seg == "" {
			continue
		}
		dec := UnescapeLenient(seg, false)
		if out := fn(dec); out != dec {
			segs[i] = url.PathEscape(out)
			changed = true
		}
	}
	if !changed {
		return escapedPath
	}
	return strings.Join(segs, "/")
}
