package pii

// Byte classes used by the candidate finders.
const (
	cDigit = 1 << iota
	cUpper
	cLower
	cHex
	cWord // letters, digits, '_' and non-ASCII bytes
)

var class = func() (t [256]uint8) {
	for c := '0'; c <= '9'; c++ {
		t[c] |= cDigit | cHex
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] |= cUpper
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] |= cLower
	}
	for _, c := range "abcdefABCDEF" {
		t[c] |= cHex
	}
	for c := 0; c < 256; c++ {
		if t[c]&(cDigit|cUpper|cLower) != 0 || c == '_' || c >= 0x80 {
			t[c] |= cWord
		}
	}
	return t
}()

func isDigit(c byte) bool { return class[c]&cDigit != 0 }
func isAlpha(c byte) bool { return class[c]&(cUpper|cLower) != 0 }
func isAlnum(c byte) bool { return class[c]&(cDigit|cUpper|cLower) != 0 }
func isHex(c byte) bool   { return class[c]&cHex != 0 }

// wordChar reports bytes that glue a token to its neighbours: letters,
// digits, '_' and any non-ASCII byte.
func wordChar(c byte) bool { return class[c]&cWord != 0 }

// contextWindow is how many bytes before a candidate are searched for
// context words; contextAfter is the window after it.
const (
	contextWindow = 48
	contextAfter  = 16
)

// hasWordBefore reports whether any of words (lower case) occurs in the
// contextWindow bytes before start, compared case-insensitively.
func hasWordBefore(text string, start int, words []string) bool {
	lo := start - contextWindow
	if lo < 0 {
		lo = 0
	}
	return containsFold(text[lo:start], words)
}

// containsFold reports whether hay contains any of words, ASCII
// case-insensitively. words must be lower case.
func containsFold(hay string, words []string) bool {
	var buf [contextWindow + contextAfter]byte
	b := buf[:0]
	for i := 0; i < len(hay) && len(b) < cap(b); i++ {
		c := hay[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	for _, w := range words {
		if containsWord(b, w) {
			return true
		}
	}
	return false
}

// containsWord reports whether w occurs in b as a word: not preceded by a
// letter or digit and, when w ends in one, not followed by one other than a
// plural 's'.
func containsWord(b []byte, w string) bool {
	n := len(w)
	if n == 0 {
		return false
	}
	for i := 0; i+n <= len(b); i++ {
		if b[i] != w[0] || string(b[i:i+n]) != w {
			continue
		}
		if isAlnum(w[0]) && i > 0 && isAlnum(b[i-1]) {
			continue
		}
		if j := i + n; isAlnum(w[n-1]) && j < len(b) && isAlnum(b[j]) {
			if !(b[j] == 's' && (j+1 == len(b) || !isAlnum(b[j+1]))) {
				continue
			}
		}
		return true
	}
	return false
}

// Context words that raise a type's score (Presidio-style hotwords) or, for
// the negative lists, lower it.
var (
	ctxEmail  = []string{"email", "e-mail", "mail", "contact"}
	ctxPhone  = []string{"phone", "tel", "call", "mobile", "cell", "fax", "number", "contact", "whatsapp", "sms"}
	ctxSSN    = []string{"ssn", "social security", "social sec", "ss#", "ss #", "taxpayer", "tin"}
	ctxCard   = []string{"card", "credit", "debit", "visa", "mastercard", "amex", "discover", "jcb", "diners", "maestro", "cc", "payment", "pan"}
	ctxIP     = []string{"ip", "address", "addr", "host", "server", "client", "remote", "proxy", "gateway", "dns", "subnet", "route", "ping"}
	ctxIBAN   = []string{"iban", "bank", "account", "transfer", "wire", "swift", "bic"}
	negIP     = []string{"version", "ver.", "ver ", "release", "build", "v.", "firmware", "oid", "sdk", "chrome/", "firefox/", "mozilla/", "python", "upgrade", "upgraded", "update", "updated", "patch", "kernel"}
	negNumber = []string{"order", "invoice", "tracking", "ref", "reference", "ticket", "isbn", "serial", "sku", "part", "po #", "po#", "case #", "confirmation", "transaction id", "id:", "id #", "upc", "ean"}
)
