package secrets

import "strings"

// Generic assignments (gitleaks' generic-api-key idea): an identifier that
// names a credential, an operator (=, :, :=, =>), and a value. Key-like
// names need a value of at least 10 bytes, a digit, and entropy >= 3.5;
// password-like names need 6 bytes and entropy >= 2.

// GenericMinEntropy is the entropy floor for key/token/secret values.
const GenericMinEntropy = 3.5

var (
	keyNames  = []string{"secret", "token", "apikey", "api_key", "api-key", "access_key", "accesskey", "auth", "credential", "private_key", "client_secret", "_key", "-key", "key_", "signing"}
	passNames = []string{"password", "passwd", "passphrase", "pwd", "pass"}
	// placeholders are values that are obviously not real secrets.
	placeholders = []string{"${", "{{", "<", "xxxx", "****", "...", "changeme", "change_me", "example", "placeholder", "redacted", "your_", "your-", "yourkey", "process.env", "getenv", "environ", "secrets.", "env.", "null", "none", "undefined", "true", "false", "[redacted"}
)

// ScanAssignments finds generic credential assignments (NAME=value,
// "name": "value") whose name mentions a key, token, secret or password.
func ScanAssignments(text string) []Finding {
	var out []Finding
	for _, op := range []byte{'=', ':'} {
		for off := 0; off < len(text); {
			k := strings.IndexByte(text[off:], op)
			if k < 0 {
				break
			}
			p := off + k
			off = p + 1
			if f, ok := assignmentAt(text, p); ok {
				out = append(out, f)
				off = f.End
			}
		}
	}
	return out
}

func identChar(c byte) bool { return tokenChar(c) || c == '-' || c == '.' }

func assignmentAt(t string, p int) (Finding, bool) {
	n := len(t)
	// Operator shapes: =, :, :=, =>; not ==, ://, ::.
	vs := p + 1
	if t[p] == ':' {
		if vs < n && (t[vs] == '/' || t[vs] == ':') {
			return Finding{}, false
		}
		if vs < n && t[vs] == '=' {
			vs++
		}
	} else {
		if vs < n && t[vs] == '=' || p > 0 && (t[p-1] == '=' || t[p-1] == '!' || t[p-1] == '<' || t[p-1] == '>') {
			return Finding{}, false
		}
		if vs < n && t[vs] == '>' {
			vs++
		}
		if p > 0 && t[p-1] == ':' {
			p--
		}
	}
	// Identifier before the operator, past closing quotes and spaces.
	q := p
	for q > 0 && p-q < 4 && (t[q-1] == ' ' || t[q-1] == '"' || t[q-1] == '\'' || t[q-1] == '`' || t[q-1] == '\\') {
		q--
	}
	ie := q
	for q > 0 && ie-q < 64 && identChar(t[q-1]) {
		q--
	}
	if q == ie {
		return Finding{}, false
	}
	var lb [64]byte
	id := lb[:0]
	for i := q; i < ie; i++ {
		c := t[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		id = append(id, c)
	}
	if !mentionsCredential(id) {
		return Finding{}, false
	}
	password := false
	switch {
	case hasAny(id, keyNames) || string(id) == "key":
	case hasAny(id, passNames):
		password = true
	default:
		return Finding{}, false
	}
	// Value: skip spaces, opening quotes and an auth scheme.
	for vs < n && vs-p < 8 && (t[vs] == ' ' || t[vs] == '"' || t[vs] == '\'' || t[vs] == '`' || t[vs] == '\\') {
		vs++
	}
	for _, scheme := range []string{"Bearer ", "bearer ", "Basic ", "Token ", "token "} {
		if strings.HasPrefix(t[vs:], scheme) {
			vs += len(scheme)
			break
		}
	}
	ve := vs
	for ve < n && ve-vs <= 200 && valueChar(t[ve]) {
		ve++
	}
	if ve-vs > 200 {
		return Finding{}, false
	}
	v := t[vs:ve]
	if password {
		if len(v) < 6 {
			return Finding{}, false
		}
	} else if len(v) < 10 || !strings.ContainsAny(v, "0123456789") {
		return Finding{}, false
	}
	if isPlaceholder(v) {
		return Finding{}, false
	}
	h := Entropy(v)
	floor, score, rule := GenericMinEntropy, 0.75, "generic-api-key"
	if password {
		floor, score, rule = 2.0, 0.7, "password-assignment"
	}
	if h < floor {
		return Finding{}, false
	}
	return Finding{Rule: rule, Start: vs, End: ve, Score: score, Entropy: h}, true
}

func valueChar(c byte) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	switch c {
	case '"', '\'', '`', ',', ';', '}', ')', ']', '[', '(', '{', '<', '>', '\\':
		return false
	}
	return true
}

func hasAny(id []byte, names []string) bool {
	for _, w := range names {
		if indexOf(id, w) >= 0 {
			return true
		}
	}
	return false
}

func indexOf(b []byte, w string) int {
	for i := 0; i+len(w) <= len(b); i++ {
		if string(b[i:i+len(w)]) == w {
			return i
		}
	}
	return -1
}

func isPlaceholder(v string) bool {
	lv := strings.ToLower(v)
	for _, p := range placeholders {
		if strings.Contains(lv, p) {
			return true
		}
	}
	same := true
	for i := 1; i < len(v); i++ {
		if v[i] != v[0] {
			same = false
			break
		}
	}
	return same
}

// credentialStems cover every keyName and passName; mentionsCredential is
// the quick rejection for the common case (JSON keys like "role",
// "content", "model").
var credentialStems = []string{"key", "secret", "token", "auth", "credential", "signing", "pass", "pwd"}

func mentionsCredential(id []byte) bool {
	for i, c := range id {
		switch c {
		case 'k', 's', 't', 'a', 'c', 'p':
			for _, w := range credentialStems {
				if w[0] == c && len(id)-i >= len(w) && string(id[i:i+len(w)]) == w {
					return true
				}
			}
		}
	}
	return false
}
