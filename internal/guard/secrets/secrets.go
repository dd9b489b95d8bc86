// Package secrets finds credentials in text: provider API keys (OpenAI,
// Anthropic, AWS, GitHub, Slack, Stripe, Google), JWTs, private key blocks,
// bearer tokens and generic KEY=value / password: value assignments.
//
// The design follows gitleaks' rules: a keyword prefilter (plain substring
// search, so the regular expressions only run on short windows that start
// at a keyword), an anchored RE2 expression per rule, then a Shannon
// entropy floor and an allowlist of placeholders. The package is pure and
// safe for concurrent use.
package secrets

import (
	"math"
	"regexp"
	"sort"
	"strings"
)

// Finding is one secret: text[Start:End] is the secret value itself (for
// assignments, the value, not the variable name).
type Finding struct {
	Rule    string  `json:"rule"`
	Start   int     `json:"start"`
	End     int     `json:"end"`
	Score   float64 `json:"score"`
	Entropy float64 `json:"entropy"`
}

// Rule is a keyword-prefiltered, prefix-anchored pattern.
type Rule struct {
	ID string
	// Keywords are case-sensitive literals; the pattern is tried at each
	// occurrence, which must start a token.
	Keywords []string
	// Pattern is anchored at the keyword occurrence (it must start with ^).
	Pattern *regexp.Regexp
	// MaxLen bounds the window the pattern sees.
	MaxLen int
	// MinEntropy is the Shannon entropy floor (bits per byte) of the match.
	MinEntropy float64
	// Score is the confidence reported.
	Score float64
	// Deny rejects known placeholders, such as AWS's EXAMPLE keys.
	Deny func(s string) bool
}

// Rules are the built-in provider rules, in the spirit of gitleaks'
// configuration (regular expressions written for this package).
var Rules = []Rule{
	{ID: "anthropic-api-key", Keywords: []string{"sk-ant-"}, MaxLen: 256, MinEntropy: 3, Score: 0.99,
		Pattern: regexp.MustCompile(`^sk-ant-(?:api|admin|sid)\d\d-[A-Za-z0-9_\-]{32,200}`)},
	{ID: "openai-api-key", Keywords: []string{"sk-"}, MaxLen: 256, MinEntropy: 3, Score: 0.98,
		Pattern: regexp.MustCompile(`^sk-(?:(?:proj|svcacct|admin|None)-[A-Za-z0-9_\-]{40,220}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}|[A-Za-z0-9]{48})`)},
	{ID: "aws-access-key-id", Keywords: []string{"AKIA", "ASIA", "ABIA", "ACCA", "A3T"}, MaxLen: 20, MinEntropy: 3, Score: 0.97,
		Pattern: regexp.MustCompile(`^(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}`),
		Deny:    func(s string) bool { return strings.HasSuffix(s, "EXAMPLE") }},
	{ID: "github-token", Keywords: []string{"ghp_", "gho_", "ghu_", "ghs_", "ghr_"}, MaxLen: 40, MinEntropy: 3, Score: 0.99,
		Pattern: regexp.MustCompile(`^gh[pousr]_[A-Za-z0-9]{36}`)},
	{ID: "github-fine-grained-pat", Keywords: []string{"github_pat_"}, MaxLen: 100, MinEntropy: 3, Score: 0.99,
		Pattern: regexp.MustCompile(`^github_pat_[A-Za-z0-9_]{82}`)},
	{ID: "slack-token", Keywords: []string{"xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xoxe-", "xoxe."}, MaxLen: 256, MinEntropy: 2, Score: 0.97,
		Pattern: regexp.MustCompile(`^xox(?:[bpars]|e\.xox[bp]|e)-[0-9A-Za-z][0-9A-Za-z\-]{20,240}`)},
	{ID: "slack-webhook", Keywords: []string{"hooks.slack.com/"}, MaxLen: 160, MinEntropy: 2, Score: 0.97,
		Pattern: regexp.MustCompile(`^hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_\-]{40,120}`)},
	{ID: "stripe-key", Keywords: []string{"sk_live_", "sk_test_", "sk_prod_", "rk_live_", "rk_test_", "rk_prod_"}, MaxLen: 110, MinEntropy: 2, Score: 0.98,
		Pattern: regexp.MustCompile(`^[rs]k_(?:live|test|prod)_[A-Za-z0-9]{10,99}`)},
	{ID: "google-api-key", Keywords: []string{"AIza"}, MaxLen: 39, MinEntropy: 3, Score: 0.97,
		Pattern: regexp.MustCompile(`^AIza[0-9A-Za-z_\-]{35}`)},
	{ID: "jwt", Keywords: []string{"eyJ"}, MaxLen: 4096, MinEntropy: 3, Score: 0.9,
		Pattern: regexp.MustCompile(`^eyJ[A-Za-z0-9_\-]{15,}\.eyJ[A-Za-z0-9_\-]{15,}\.[A-Za-z0-9_\-]{10,}={0,2}`)},
	{ID: "private-key", Keywords: []string{"-----BEGIN"}, MaxLen: 16384, Score: 0.99,
		Pattern: regexp.MustCompile(`^-----BEGIN[ A-Z0-9_\-]{0,100}PRIVATE KEY(?: BLOCK)?-----[\s\S]{32,}?-----END[ A-Z0-9_\-]{0,100}PRIVATE KEY(?: BLOCK)?-----`)},
	{ID: "bearer-token", Keywords: []string{"Bearer ", "bearer ", "BEARER "}, MaxLen: 1100, MinEntropy: 3, Score: 0.85,
		Pattern: regexp.MustCompile(`^(?i:bearer) +([A-Za-z0-9_\-.=~+/]{16,1000})`)},
}

// keywordIndex maps each keyword to the rules that use it.
var keywordIndex = func() map[string][]int {
	m := map[string][]int{}
	for i, r := range Rules {
		for _, k := range r.Keywords {
			m[k] = append(m[k], i)
		}
	}
	return m
}()

// byFirst groups keywords by their first byte for the single-pass
// prefilter.
var byFirst = func() (t [256][]string) {
	ks := make([]string, 0, len(keywordIndex))
	for k := range keywordIndex {
		ks = append(ks, k)
	}
	// Longer keywords first so "sk-ant-" is tried before "sk-".
	sort.Slice(ks, func(i, j int) bool {
		if len(ks[i]) != len(ks[j]) {
			return len(ks[i]) > len(ks[j])
		}
		return ks[i] < ks[j]
	})
	for _, k := range ks {
		t[k[0]] = append(t[k[0]], k)
	}
	return t
}()

// Scan returns the secrets in text, ordered by Start and not overlapping.
func Scan(text string) []Finding {
	var out []Finding
	n := len(text)
	for i := 0; i < n; i++ {
		if byFirst[text[i]] == nil {
			continue
		}
		if f, ok := MatchAt(text, i); ok {
			out = append(out, f)
			i = f.End - 1
		}
	}
	out = append(out, ScanAssignments(text)...)
	return dedupe(out)
}

// pairs is a bitset of the first two bytes of every keyword.
var pairs = func() (t [256][4]uint64) {
	for k := range keywordIndex {
		t[k[0]][k[1]>>6] |= 1 << (k[1] & 63)
	}
	return t
}()

// MayStart reports whether a provider keyword can start with byte c; it is
// the cheap test callers run before MatchAt.
func MayStart(c byte) bool { return mayStart[c] }

var mayStart = func() (t [256]bool) {
	for k := range keywordIndex {
		t[k[0]] = true
	}
	return t
}()

// MayStartPair reports whether some provider keyword starts with the two
// bytes c, d.
func MayStartPair(c, d byte) bool { return pairs[c][d>>6]&(1<<(d&63)) != 0 }

// MatchAt tries the provider rules whose keyword occurs at text[i:]. The
// keyword must start a token (except PEM dashes). Callers that already
// walk the text token by token (package pii) use it to share one pass.
func MatchAt(text string, i int) (Finding, bool) {
	c := text[i]
	cands := byFirst[c]
	if cands == nil || i+1 >= len(text) || pairs[c][text[i+1]>>6]&(1<<(text[i+1]&63)) == 0 ||
		i > 0 && tokenChar(text[i-1]) && c != '-' {
		return Finding{}, false
	}
	for _, kw := range cands {
		if !strings.HasPrefix(text[i:], kw) {
			continue
		}
		for _, ri := range keywordIndex[kw] {
			if f, ok := Rules[ri].try(text, i); ok {
				return f, true
			}
		}
	}
	return Finding{}, false
}

func (r *Rule) try(text string, p int) (Finding, bool) {
	hi := p + r.MaxLen
	if hi > len(text) {
		hi = len(text)
	}
	m := r.Pattern.FindStringSubmatchIndex(text[p:hi])
	if m == nil {
		return Finding{}, false
	}
	s, e := p+m[0], p+m[1]
	if len(m) >= 4 && m[2] >= 0 {
		s, e = p+m[2], p+m[3]
	}
	if e < len(text) && tokenChar(text[e]) && r.ID != "private-key" {
		return Finding{}, false
	}
	v := text[s:e]
	if r.Deny != nil && r.Deny(v) {
		return Finding{}, false
	}
	h := Entropy(v)
	if h < r.MinEntropy {
		return Finding{}, false
	}
	return Finding{Rule: r.ID, Start: s, End: e, Score: r.Score, Entropy: h}, true
}

func tokenChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}

// Entropy is the Shannon entropy of s in bits per byte.
func Entropy(s string) float64 {
	if len(s) == 0 {
		return 0
	}
	var counts [256]int
	for i := 0; i < len(s); i++ {
		counts[s[i]]++
	}
	n := float64(len(s))
	h := 0.0
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

func dedupe(fs []Finding) []Finding {
	if len(fs) < 2 {
		return fs
	}
	sort.Slice(fs, func(i, j int) bool {
		if fs[i].Start != fs[j].Start {
			return fs[i].Start < fs[j].Start
		}
		return fs[i].Score > fs[j].Score
	})
	out := fs[:1]
	for _, f := range fs[1:] {
		last := &out[len(out)-1]
		if f.Start < last.End {
			if f.Score > last.Score {
				*last = f
			}
			continue
		}
		out = append(out, f)
	}
	return out
}
