package injection

import (
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Normalized is text prepared for detection.
type Normalized struct {
	// Text is the NFKC form with invisible, bidi and tag characters removed
	// (tag characters are mapped back to the ASCII they encode). It is
	// omitted from JSON when Changed is false.
	Text string `json:"text,omitempty"`
	// Changed reports whether Text differs from the input.
	Changed bool `json:"changed"`
	// Invisible counts removed format/private-use/unassigned/control runes.
	Invisible int `json:"invisible,omitempty"`
	// Bidi counts removed bidirectional controls.
	Bidi int `json:"bidi,omitempty"`
	// Tags counts Unicode tag characters (used for "ASCII smuggling").
	Tags int `json:"tags,omitempty"`
	// Decoded are payloads found encoded in Text.
	Decoded []Decoded `json:"decoded,omitempty"`
}

// Decoded is an encoded payload and its decoding.
type Decoded struct {
	Encoding string `json:"encoding"` // base64, hex or percent
	Text     string `json:"text"`
}

func isBidi(r rune) bool {
	return r >= 0x202A && r <= 0x202E || r >= 0x2066 && r <= 0x2069 || r == 0x200E || r == 0x200F || r == 0x061C
}

// Normalize strips and reports hidden characters, applies NFKC and decodes
// embedded base64, hex and percent-encoded payloads (one level; Score
// recurses).
func Normalize(s string) Normalized {
	var n Normalized
	ascii := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf || c < 0x20 && c != '\n' && c != '\r' && c != '\t' || c == 0x7f {
			ascii = false
			break
		}
	}
	if ascii {
		n.Text = s
		n.Decoded = decodePayloads(n.Text)
		return n
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			b.WriteRune(r)
		case r >= 0xE0000 && r <= 0xE007F:
			n.Tags++
			if r >= 0xE0020 && r <= 0xE007E {
				b.WriteByte(byte(r - 0xE0000))
			}
		case isBidi(r):
			n.Bidi++
		case r == utf8.RuneError:
			b.WriteRune(r)
		case unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Co, r) || unicode.Is(unicode.Cc, r) || !unicode.IsPrint(r) && !unicode.IsSpace(r) && !unicode.IsGraphic(r):
			n.Invisible++
		default:
			b.WriteRune(r)
		}
	}
	n.Text = norm.NFKC.String(b.String())
	n.Changed = n.Text != s
	n.Decoded = decodePayloads(n.Text)
	return n
}

// minEncoded is the shortest encoded run worth decoding.
const minEncoded = 16

// encClass marks base64 (1) and hex (2) alphabet bytes.
var encClass = func() (t [256]uint8) {
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_" {
		t[c] |= 1
	}
	for _, c := range "0123456789abcdefABCDEF" {
		t[c] |= 2
	}
	return t
}()

func b64Char(c byte) bool { return encClass[c]&1 != 0 }

// maxPayloads bounds the decoded payloads kept per text.
const maxPayloads = 16

func decodePayloads(s string) []Decoded {
	var out []Decoded
	// Percent-encoding: whitespace-delimited tokens with 3+ escapes.
	for rest := s; len(rest) > 0 && len(out) < maxPayloads; {
		k := strings.IndexByte(rest, '%')
		if k < 0 {
			break
		}
		a := strings.LastIndexAny(rest[:k], " \t\n\"'") + 1
		e := k
		for e < len(rest) && rest[e] > ' ' && rest[e] != '"' && rest[e] != '\'' {
			e++
		}
		tok := rest[a:e]
		rest = rest[e:]
		if strings.Count(tok, "%") < 3 {
			continue
		}
		if d, err := url.QueryUnescape(tok); err == nil && d != tok && printable(d) {
			out = append(out, Decoded{Encoding: "percent", Text: d})
		}
	}
	for i := 0; i < len(s) && len(out) < maxPayloads; {
		c := s[i]
		if !b64Char(c) {
			i++
			continue
		}
		j := i
		cls := uint8(3)
		for j < len(s) {
			e := encClass[s[j]]
			if e == 0 {
				break
			}
			cls &= e
			j++
		}
		allHex := cls&2 != 0
		k := j
		for k < len(s) && k-j < 2 && s[k] == '=' {
			k++
		}
		if j-i >= minEncoded {
			run := s[i:j]
			if allHex && len(run)%2 == 0 {
				if d, err := hex.DecodeString(run); err == nil && printable(string(d)) {
					out = append(out, Decoded{Encoding: "hex", Text: string(d)})
				}
			} else if d, ok := decodeB64(s[i:k]); ok {
				out = append(out, Decoded{Encoding: "base64", Text: d})
			}
		}
		i = k
		if i == j {
			i = j + 1
		}
	}
	return out
}

func decodeB64(s string) (string, bool) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		d, err := enc.DecodeString(s)
		if err == nil {
			if printable(string(d)) {
				return string(d), true
			}
			return "", false
		}
	}
	return "", false
}

// printable reports decodings that look like text: valid UTF-8, at least
// 8 bytes, mostly letters, digits, punctuation and spaces, some letters.
func printable(s string) bool {
	if len(s) < 8 || !utf8.ValidString(s) {
		return false
	}
	good, letters, total := 0, 0, 0
	for _, r := range s {
		total++
		if unicode.IsLetter(r) {
			letters++
		}
		if unicode.IsPrint(r) || r == '\n' || r == '\t' || r == '\r' {
			good++
		}
	}
	return good*100 >= total*95 && letters*2 >= total && strings.IndexByte(s, ' ') >= 0
}
