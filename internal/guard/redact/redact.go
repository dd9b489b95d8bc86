// Package redact replaces detected spans with stable tokens of the form
// [REDACTED_<TYPE>_<n>] and puts the originals back afterwards.
//
// A Redactor belongs to one request: it numbers tokens with one counter, so
// the same value always gets the same token within the request, and its Map
// is what Rehydrate and the streaming Rehydrator need to restore the text in
// the response. JSON redacts only inside JSON string values, so a valid
// body stays valid. Nothing here does I/O. A Redactor is not safe for
// concurrent use; a Rehydrator neither.
package redact

import (
	"bytes"
	"errors"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Span is a region of text to replace; Type becomes part of the token.
type Span struct {
	Type  string
	Start int
	End   int
}

// TokenPrefix starts every token.
const TokenPrefix = "[REDACTED_"

// maxTokenLen bounds a token's length; longer bracketed text is never a token.
const maxTokenLen = 64

// Redactor assigns tokens for one request.
type Redactor struct {
	n       int
	byValue map[string]string // original -> token
	values  map[string]string // token -> original
	// avoid is the input being redacted; new tokens that already occur in
	// it are skipped so rehydration cannot touch the caller's own text.
	avoid string
}

// New returns an empty Redactor.
func New() *Redactor {
	return &Redactor{byValue: map[string]string{}, values: map[string]string{}}
}

// Token returns the token for value, assigning the next number the first
// time the value is seen.
func (r *Redactor) Token(typ, value string) string {
	if t, ok := r.byValue[value]; ok {
		return t
	}
	var t string
	for {
		r.n++
		t = TokenPrefix + tokenType(typ) + "_" + strconv.Itoa(r.n) + "]"
		if _, used := r.values[t]; !used && !strings.Contains(r.avoid, t) {
			break
		}
	}
	r.byValue[value] = t
	r.values[t] = value
	return t
}

// tokenType upper-cases typ and keeps only A-Z, 0-9 and '_'.
func tokenType(typ string) string {
	b := make([]byte, 0, len(typ))
	for i := 0; i < len(typ) && len(b) < 32; i++ {
		c := typ[i]
		switch {
		case c >= 'a' && c <= 'z':
			b = append(b, c-'a'+'A')
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
			b = append(b, c)
		case c == '-' || c == ' ':
			b = append(b, '_')
		}
	}
	if len(b) == 0 {
		return "PII"
	}
	return string(b)
}

// Map returns a copy of the token -> original map for rehydration.
func (r *Redactor) Map() map[string]string {
	m := make(map[string]string, len(r.values))
	for k, v := range r.values {
		m[k] = v
	}
	return m
}

// Len reports how many distinct values were redacted.
func (r *Redactor) Len() int { return len(r.values) }

// Text returns s with spans replaced by tokens. Spans out of range are
// ignored; overlapping spans keep the earlier one.
func (r *Redactor) Text(s string, spans []Span) string {
	if len(spans) == 0 {
		return s
	}
	if r.avoid == "" && strings.Contains(s, TokenPrefix) {
		r.avoid = s
		defer func() { r.avoid = "" }()
	}
	sp := append([]Span(nil), spans...)
	sort.SliceStable(sp, func(i, j int) bool { return sp[i].Start < sp[j].Start })
	var b strings.Builder
	b.Grow(len(s))
	last := 0
	for _, x := range sp {
		if x.Start < last || x.End > len(s) || x.Start >= x.End {
			continue
		}
		b.WriteString(s[last:x.Start])
		b.WriteString(r.Token(x.Type, s[x.Start:x.End]))
		last = x.End
	}
	b.WriteString(s[last:])
	return b.String()
}

// ErrInvalidJSON is returned by JSON for bodies that are not valid JSON.
var ErrInvalidJSON = errors.New("redact: body is not valid JSON")

// DetectFunc finds the spans to redact in one decoded JSON string value.
type DetectFunc func(s string) []Span

// JSON redacts inside the string values (not object keys) of a JSON body.
// The result is valid JSON with the same structure; values without
// findings are copied byte for byte.
func (r *Redactor) JSON(body []byte, detect DetectFunc) ([]byte, error) {
	if bytes.Contains(body, []byte(TokenPrefix)) {
		r.avoid = string(body)
		defer func() { r.avoid = "" }()
	}
	var out []byte
	last := 0
	ok := walkJSON(body, func(open, end int, key bool) {
		if key {
			return
		}
		raw := body[open+1 : end]
		var s string
		if bytes.IndexByte(raw, '\\') >= 0 {
			s = unquote(raw)
		} else {
			s = string(raw)
		}
		spans := detect(s)
		if len(spans) == 0 {
			return
		}
		red := r.Text(s, spans)
		if red == s {
			return
		}
		if out == nil {
			out = make([]byte, 0, len(body)+len(body)/8)
		}
		out = append(out, body[last:open]...)
		out = AppendQuoted(out, red)
		last = end + 1
	})
	if !ok {
		return nil, ErrInvalidJSON
	}
	if out == nil {
		return body, nil
	}
	return append(out, body[last:]...), nil
}

// unquote decodes the contents of a JSON string already known to be
// valid. Like encoding/json, a lone surrogate escape becomes U+FFFD; raw
// bytes (even invalid UTF-8) are kept as they are.
func unquote(raw []byte) string {
	b := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		k := bytes.IndexByte(raw[i:], '\\')
		if k < 0 {
			b = append(b, raw[i:]...)
			break
		}
		b = append(b, raw[i:i+k]...)
		i += k
		if i+1 >= len(raw) {
			b = append(b, raw[i])
			break
		}
		switch e := raw[i+1]; e {
		case 'n':
			b = append(b, '\n')
		case 't':
			b = append(b, '\t')
		case 'r':
			b = append(b, '\r')
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'u':
			r := hex4(raw[i+2:])
			i += 6
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if i+1 < len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					r2 = hex4(raw[i+2:])
				}
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					r = dec
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			b = utf8.AppendRune(b, r)
			continue
		default: // '"', '\\', '/'
			b = append(b, e)
		}
		i += 2
	}
	return string(b)
}

func hex4(b []byte) rune {
	if len(b) < 4 {
		return utf8.RuneError
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return utf8.RuneError
		}
		r = r<<4 | rune(c)
	}
	return r
}

// AppendQuoted appends s as a JSON string literal.
func AppendQuoted(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		// Copy the run of bytes that need no escaping in one go.
		j := i
		for j < len(s) && s[j] >= 0x20 && s[j] < utf8.RuneSelf && s[j] != '"' && s[j] != '\\' {
			j++
		}
		dst = append(dst, s[i:j]...)
		if i = j; i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, w := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && w == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+w]...)
		}
		i += w
	}
	return append(dst, '"')
}

// Rehydrate replaces every token found in m with its original value;
// unknown tokens are left as they are.
func Rehydrate(s string, m map[string]string) string {
	if len(m) == 0 || !strings.Contains(s, TokenPrefix) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for {
		k := strings.Index(s, TokenPrefix)
		if k < 0 {
			break
		}
		b.WriteString(s[:k])
		s = s[k:]
		e := strings.IndexByte(s, ']')
		if e > 0 && e < maxTokenLen {
			if v, ok := m[s[:e+1]]; ok {
				b.WriteString(v)
				s = s[e+1:]
				continue
			}
		}
		b.WriteString(TokenPrefix)
		s = s[len(TokenPrefix):]
	}
	b.WriteString(s)
	return b.String()
}

// Rehydrator restores tokens in a stream of text chunks (for example the
// deltas of a server-sent-events response), holding back a trailing
// partial token until the next chunk completes or refutes it.
type Rehydrator struct {
	m       map[string]string
	pending string
}

// NewRehydrator returns a Rehydrator for the token map m.
func NewRehydrator(m map[string]string) *Rehydrator { return &Rehydrator{m: m} }

// Write consumes chunk and returns the text that is safe to emit now.
func (h *Rehydrator) Write(chunk string) string {
	s := h.pending + chunk
	cut := partialTokenStart(s)
	h.pending = s[cut:]
	return Rehydrate(s[:cut], h.m)
}

// Flush returns any held-back text; call it at the end of the stream.
func (h *Rehydrator) Flush() string {
	s := h.pending
	h.pending = ""
	return Rehydrate(s, h.m)
}

// partialTokenStart returns the index where a possibly incomplete token
// starts at the end of s, or len(s) when the tail cannot begin a token.
func partialTokenStart(s string) int {
	lo := len(s) - maxTokenLen
	if lo < 0 {
		lo = 0
	}
	k := strings.LastIndexByte(s[lo:], '[')
	if k < 0 {
		return len(s)
	}
	k += lo
	tail := s[k:]
	if strings.IndexByte(tail, ']') >= 0 {
		return len(s)
	}
	if len(tail) <= len(TokenPrefix) {
		if strings.HasPrefix(TokenPrefix, tail) {
			return k
		}
		return len(s)
	}
	if !strings.HasPrefix(tail, TokenPrefix) {
		return len(s)
	}
	for i := len(TokenPrefix); i < len(tail); i++ {
		c := tail[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return len(s)
		}
	}
	return k
}
