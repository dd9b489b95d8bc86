package stage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/declaw/declaw/internal/guard/injection"
	"github.com/declaw/declaw/internal/guard/pii"
	"github.com/declaw/declaw/internal/guard/redact"
	"github.com/declaw/declaw/internal/policy"
)

// ---- transformations ----

// Transform is one compiled transformation rule.
type Transform struct {
	Index    int // position in the policy's list, for the audit
	Re       *regexp.Regexp
	Template []byte // Go Expand template
}

// CompileTransform compiles a policy rule; index is its position.
func CompileTransform(tr policy.Transformation, index int) (Transform, error) {
	if err := policy.ValidateRegex(tr.Match); err != nil {
		return Transform{}, fmt.Errorf("transformations[%d]: %w", index, err)
	}
	re, err := regexp.Compile(tr.Match)
	if err != nil {
		return Transform{}, fmt.Errorf("transformations[%d]: %w", index, err)
	}
	return Transform{Index: index, Re: re, Template: []byte(ConvertReplacement(tr.Replace))}, nil
}

// ConvertReplacement turns a `\1`-style replacement into a Go regexp
// template: `\N` (one digit, or `\{N}` / `\g<N>` forms are not special)
// becomes ${N}, `\\` a backslash, and `$` is escaped to stay literal.
func ConvertReplacement(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '$':
			b.WriteString("$$")
		case c == '\\' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			j := i + 1
			for j < len(s) && j < i+3 && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			b.WriteString("${" + s[i+1:j] + "}")
			i = j - 1
		case c == '\\' && i+1 < len(s) && s[i+1] == '\\':
			b.WriteByte('\\')
			i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// ApplyTransforms is the pure core: it applies rules in order to body and
// returns the result and the indexes of the rules that matched.
func ApplyTransforms(rules []Transform, body []byte) ([]byte, []int) {
	var applied []int
	for _, t := range rules {
		if !t.Re.Match(body) {
			continue
		}
		body = t.Re.ReplaceAll(body, t.Template)
		applied = append(applied, t.Index)
	}
	return body, applied
}

// TransformStage applies the transformations of one direction.
type TransformStage struct {
	Rules []Transform
	Dir   Direction
}

func (s *TransformStage) Name() string        { return "transform" }
func (s *TransformStage) Applies(string) bool { return len(s.Rules) > 0 }
func (s *TransformStage) Apply(ex *Exchange, m *Message) Verdict {
	out, applied := ApplyTransforms(s.Rules, m.Body)
	if len(applied) == 0 {
		return Verdict{}
	}
	m.Body = out
	for _, i := range applied {
		ex.Report.Transformations = append(ex.Report.Transformations, fmt.Sprintf("%s[%d]", m.Direction, i))
	}
	return Verdict{Reason: fmt.Sprintf("%d transformation(s) applied", len(applied))}
}

// ---- PII ----

// PIIResult is the pure core's outcome.
type PIIResult struct {
	Body        []byte         // redacted (action redact), else the input
	Counts      map[string]int // findings per type
	SlowSkipped bool           // person_name/address not scanned past SlowTypeBudget
}

// Types returns the found types, sorted.
func (r PIIResult) Types() []string {
	var ts []string
	for t := range r.Counts {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}

// SlowTypeBudget bounds how many bytes of one body the best-effort
// person_name and address recognisers see (they cost about 1 ms per KiB
// where the others cost microseconds): string values (or the text) past
// the budget are scanned for the other types only, and
// PIIResult.SlowSkipped is set.
const SlowTypeBudget = 64 << 10

// RedactPII is the pure core of the PII stage: it finds the given types in
// body (inside JSON string values when isJSON and the body is valid JSON,
// otherwise in the whole text) and, when redactWith is non-nil, replaces
// them with its tokens. Finding counts are per occurrence.
func RedactPII(sc *pii.Scanner, types []pii.Type, body []byte, isJSON bool, redactWith *redact.Redactor) PIIResult {
	res := PIIResult{Body: body, Counts: map[string]int{}}
	r := redactWith
	if r == nil {
		r = redact.New() // dry run: count only
	}
	var fast, slow []pii.Type
	for _, t := range types {
		if t == pii.PersonName || t == pii.Address {
			slow = append(slow, t)
		} else {
			fast = append(fast, t)
		}
	}
	budget := SlowTypeBudget
	detect := func(s string) []redact.Span {
		spans := ScanWindows(sc, s, fast)
		if len(slow) > 0 {
			if len(s) <= budget {
				budget -= len(s)
				spans = mergeSpans(spans, ScanWindows(sc, s, slow))
			} else {
				res.SlowSkipped = true
			}
		}
		out := make([]redact.Span, 0, len(spans))
		for _, sp := range spans {
			res.Counts[string(sp.Type)]++
			out = append(out, redact.Span{Type: tokenType(sp.Type), Start: sp.Start, End: sp.End})
		}
		return out
	}
	if isJSON {
		if out, err := r.JSON(body, detect); err == nil {
			if redactWith != nil {
				res.Body = out
			}
			return res
		}
		clear(res.Counts) // not valid JSON after all: treat as text
		budget, res.SlowSkipped = SlowTypeBudget, false
	}
	s := string(body)
	spans := detect(s)
	if len(spans) > 0 && redactWith != nil {
		res.Body = []byte(r.Text(s, spans))
	}
	return res
}

// mergeSpans merges two sorted non-overlapping span lists; where spans of
// the two overlap, the one of a (the validated types) wins.
func mergeSpans(a, b []pii.Span) []pii.Span {
	if len(b) == 0 {
		return a
	}
	out := append([]pii.Span(nil), a...)
	for _, sp := range b {
		overlaps := false
		for _, x := range a {
			if sp.Start < x.End && x.Start < sp.End {
				overlaps = true
				break
			}
		}
		if !overlaps {
			out = append(out, sp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out
}

// RedactQuery is the pure core for a query string: each value is
// unescaped, scanned, and (when redactWith is non-nil) replaced, escaped
// again, by its redacted text; names and values without findings keep
// their original bytes.
func RedactQuery(sc *pii.Scanner, types []pii.Type, rawQuery string, redactWith *redact.Redactor) (string, map[string]int) {
	counts := map[string]int{}
	parts := strings.Split(rawQuery, "&")
	changed := false
	for i, part := range parts {
		name, val, ok := strings.Cut(part, "=")
		if !ok || val == "" {
			continue
		}
		v, err := url.QueryUnescape(val)
		if err != nil {
			v = val
		}
		var spans []redact.Span
		for _, sp := range ScanWindows(sc, v, types) {
			counts[string(sp.Type)]++
			spans = append(spans, redact.Span{Type: tokenType(sp.Type), Start: sp.Start, End: sp.End})
		}
		if len(spans) == 0 || redactWith == nil {
			continue
		}
		parts[i] = name + "=" + url.QueryEscape(redactWith.Text(v, spans))
		changed = true
	}
	if !changed {
		return rawQuery, counts
	}
	return strings.Join(parts, "&"), counts
}

// Windows of ScanWindows.
const (
	ScanWindow  = 8 << 10
	ScanOverlap = 512
)

// ScanWindows is sc.Scan over long text in windows of ScanWindow bytes
// overlapping by ScanOverlap, so the cost stays linear in the body size
// (the best-effort person_name and address recognisers are superlinear on
// long inputs). A window keeps the spans starting before its overlap; a
// span starting inside a span already kept is dropped. PII longer than
// the overlap that straddles a window end, and context words farther than
// the overlap from a match, can be missed.
func ScanWindows(sc *pii.Scanner, s string, types []pii.Type) []pii.Span {
	if len(s) <= ScanWindow+ScanOverlap {
		return sc.Scan(s, types)
	}
	var out []pii.Span
	for start := 0; start < len(s); start += ScanWindow {
		end := min(len(s), start+ScanWindow+ScanOverlap)
		for _, sp := range sc.Scan(s[start:end], types) {
			sp.Start += start
			sp.End += start
			if sp.Start >= start+ScanWindow && end < len(s) {
				continue // the next window sees it whole
			}
			if n := len(out); n > 0 && sp.Start < out[n-1].End {
				continue
			}
			out = append(out, sp)
		}
	}
	return out
}

// tokenType is the TYPE in [REDACTED_<TYPE>_<n>].
func tokenType(t pii.Type) string { return strings.ToUpper(string(t)) }

// PIIStage finds personal data in outbound requests (body by its kind,
// method, path, query and the scanned headers) and redacts, blocks or only
// reports it per the policy's action.
type PIIStage struct {
	Scanner *pii.Scanner
	Types   []pii.Type
	Action  string // redact | block | log_only
	Domains *Domains
	// BlockUnscannable refuses a body the stage cannot read as its type
	// claims (unknown charset, malformed multipart, a field over MaxField);
	// otherwise it is passed with a note.
	BlockUnscannable bool
	// MaxField bounds one form pair or held multipart part (zero:
	// DefaultMaxScan).
	MaxField int
}

func (s *PIIStage) Name() string             { return "pii" }
func (s *PIIStage) Applies(host string) bool { return s.Domains.Match(host) }

// piiOut is what one run of the finder produced.
type piiOut struct {
	body            []byte
	contentType     string
	method, path, q string
	header          http.Header
	unscannable     error
	counts          map[string]int
	slowSkipped     bool
	methodHasPII    bool
}

func (s *PIIStage) find(ex *Exchange, m *Message, r *redact.Redactor) piiOut {
	f := &Finder{Scanner: s.Scanner, Types: s.Types, Redactor: r, MaxField: s.MaxField, JSONRaw: m.JSONRaw}
	if m.Fragment {
		f.SlowBudget = &ex.slowBudget // one budget for all the segments of a body
	}
	o := piiOut{body: m.Body, method: m.Method, path: m.Path, q: m.RawQuery}
	if len(m.Body) > 0 {
		if m.Fragment {
			if t := f.Text(string(m.Body)); t != string(m.Body) {
				o.body = []byte(t)
			}
		} else {
			ct := m.Header.Get("Content-Type")
			b, nct, err := f.Body(m.Body, ct)
			if err != nil {
				o.unscannable = err
			} else {
				o.body = b
				if nct != ct {
					o.contentType = nct
				}
			}
		}
	}
	if m.Direction == Outbound && !m.Fragment {
		if m.Method != "" && f.Text(m.Method) != m.Method {
			o.methodHasPII = true
		}
		o.path = RewritePath(m.Path, f.Text)
		o.q = RewriteQuery(m.RawQuery, f.Text)
		if m.Header != nil {
			o.header = m.Header.Clone()
			f.Headers(o.header)
		}
	}
	o.counts, o.slowSkipped = f.Counts, f.SlowSkipped
	return o
}

func (s *PIIStage) Apply(ex *Exchange, m *Message) Verdict {
	var with *redact.Redactor
	if s.Action == "redact" {
		with = ex.Redactor
	} else {
		with = redact.New() // found and counted; the message stays as it is
	}
	o := s.find(ex, m, with)
	if o.slowSkipped {
		ex.Report.Notes = appendOnce(ex.Report.Notes, "person_name/address scanned in the first 64 KiB only")
	}
	if o.unscannable != nil {
		what := "request body not scannable: " + clip(o.unscannable.Error(), 160)
		if s.BlockUnscannable {
			ex.Block = &BlockResponse{Status: UnscannableStatus(o.unscannable), Stage: "scan_limit", Body: blockJSON(what, nil)}
			return Verdict{Action: Block, Reason: what}
		}
		ex.Report.Notes = appendOnce(ex.Report.Notes, what+", not scanned")
	}
	if len(o.counts) == 0 {
		return Verdict{}
	}
	if ex.Report.PII == nil {
		ex.Report.PII = map[string]int{}
	}
	for t, n := range o.counts {
		ex.Report.PII[t] += n
	}
	ex.Report.PIIAction = s.Action
	types := PIIResult{Counts: o.counts}.Types()
	reason := "pii " + strings.Join(types, ",")
	if o.methodHasPII && s.Action != "log_only" {
		// A method is a token: there is nothing to redact it to.
		ex.Block = &BlockResponse{Status: 403, Stage: s.Name(), Body: blockJSON("pii", map[string]any{"types": types})}
		return Verdict{Action: Block, Reason: reason + " in the request method, blocked"}
	}
	switch s.Action {
	case "block":
		ex.Block = &BlockResponse{Status: 403, Stage: s.Name(), Body: blockJSON("pii", map[string]any{"types": types})}
		return Verdict{Action: Block, Reason: reason + " blocked"}
	case "redact":
		s.apply(m, o)
		return Verdict{Reason: reason + " redacted"}
	}
	// log_only: forwarded as is, but audited redacted.
	if m.Direction == Outbound {
		ex.auditOut = append([]byte{}, o.body...)
	}
	return Verdict{Reason: reason + " logged"}
}

func (s *PIIStage) apply(m *Message, o piiOut) {
	m.Body, m.Path, m.RawQuery = o.body, o.path, o.q
	if o.header != nil {
		for k := range m.Header {
			if _, ok := o.header[k]; !ok {
				delete(m.Header, k)
			}
		}
		for k, vs := range o.header {
			m.Header[k] = vs
		}
	}
	if o.contentType != "" {
		m.Header.Set("Content-Type", o.contentType)
	}
}

// UnscannableStatus is the status a refused unscannable request gets:
// 413 for a body too large, 415 for one that does not read as it claims.
func UnscannableStatus(err error) int {
	if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrFieldTooLarge) {
		return 413
	}
	return 415
}

func appendOnce(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// RehydrateStage puts this exchange's redacted values back into the response.
type RehydrateStage struct{}

func (s *RehydrateStage) Name() string        { return "rehydrate" }
func (s *RehydrateStage) Applies(string) bool { return true }
func (s *RehydrateStage) Apply(ex *Exchange, m *Message) Verdict {
	if ex.Redactor == nil || ex.Redactor.Len() == 0 {
		return Verdict{}
	}
	out, n := Rehydrate(m.Body, RehydrationMap(ex.Redactor.Map(), m.IsJSON() || m.IsSSE()))
	if n == 0 {
		return Verdict{}
	}
	ex.auditIn = m.Body // the audit keeps the tokens
	m.Body = out
	ex.Report.Rehydrated += n
	return Verdict{Reason: fmt.Sprintf("%d token(s) rehydrated", n)}
}

// RehydrateHeader puts redacted values back into response header values
// (a Location or a echoed header carrying a token) and reports how many
// tokens it restored. A value whose original holds a control character is
// left tokenised: a header cannot carry it.
func RehydrateHeader(h http.Header, m map[string]string) int {
	n := 0
	for k, vs := range h {
		for i, v := range vs {
			if !strings.Contains(v, redact.TokenPrefix) {
				continue
			}
			out, c := Rehydrate([]byte(v), m)
			if c == 0 || bytes.ContainsFunc(out, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				continue
			}
			h[k][i] = string(out)
			n += c
		}
	}
	return n
}

// RehydrationMap returns m, with values JSON-escaped (no quotes) when the
// tokens sit inside JSON strings.
func RehydrationMap(m map[string]string, jsonEscape bool) map[string]string {
	if !jsonEscape {
		return m
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		q := redact.AppendQuoted(nil, v)
		out[k] = string(q[1 : len(q)-1])
	}
	return out
}

// Rehydrate is the pure core: tokens of m in body replaced, and how many.
func Rehydrate(body []byte, m map[string]string) ([]byte, int) {
	if len(m) == 0 || !bytes.Contains(body, []byte(redact.TokenPrefix)) {
		return body, 0
	}
	n := 0
	for k := range m {
		n += bytes.Count(body, []byte(k))
	}
	if n == 0 {
		return body, 0
	}
	return []byte(redact.Rehydrate(string(body), m)), n
}

// ---- injection ----

// InjectionStage scores a body for prompt injection.
type InjectionStage struct {
	Detector *injection.Detector
	Options  injection.Options
	Action   string // block | log_only
	Domains  *Domains
	Dir      Direction
}

func (s *InjectionStage) Name() string             { return "injection" }
func (s *InjectionStage) Applies(host string) bool { return s.Domains.Match(host) }
func (s *InjectionStage) Apply(ex *Exchange, m *Message) Verdict {
	if len(m.Body) == 0 {
		return Verdict{}
	}
	res := ScanInjection(s.Detector, s.Options, m.Body, m.IsJSON())
	f := &InjectionFinding{Direction: m.Direction.String(), Score: res.Score, Threshold: res.Threshold, Verdict: "clean"}
	if res.Verdict {
		f.Verdict, f.Reasons = "detected", slices.Clone(res.Reasons)
		if len(f.Reasons) > 8 {
			f.Reasons = f.Reasons[:8]
		}
		if s.Action == "block" {
			f.Verdict = "blocked"
		}
	}
	if old := ex.Report.Injection; old == nil || f.Verdict != "clean" && old.Verdict == "clean" || f.Score > old.Score && (f.Verdict != "clean") == (old.Verdict != "clean") {
		ex.Report.Injection = f
	}
	if !res.Verdict {
		return Verdict{}
	}
	reason := fmt.Sprintf("injection score %.2f >= %.2f", res.Score, res.Threshold)
	if s.Action == "block" {
		ex.Block = &BlockResponse{Status: 403, Stage: s.Name(), Body: blockJSON("injection", map[string]any{
			"direction": m.Direction.String(), "score": round2(res.Score),
		})}
		return Verdict{Action: Block, Reason: reason + " blocked"}
	}
	return Verdict{Reason: reason + " logged"}
}

func round2(f float64) float64 { return float64(int(f*100+0.5)) / 100 }

// ScanInjection is the pure core: the detector's result on the body's text
// (for valid JSON, its string values joined by newlines).
func ScanInjection(d *injection.Detector, opts injection.Options, body []byte, isJSON bool) injection.Result {
	text := string(body)
	if isJSON {
		if s, ok := jsonStrings(body); ok {
			text = s
		}
	}
	return d.Score(text, opts)
}

// jsonStrings returns the string values (not keys) of a JSON document.
func jsonStrings(body []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var b strings.Builder
	// stack of containers: true = object; in objects, keys alternate.
	var stack []bool
	var expectKey []bool
	for {
		tok, err := dec.Token()
		if err != nil {
			return b.String(), err.Error() == "EOF"
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if n := len(stack); n > 0 && stack[n-1] {
					expectKey[n-1] = true // the container was a value
				}
				stack = append(stack, v == '{')
				expectKey = append(expectKey, v == '{')
			default:
				stack, expectKey = stack[:len(stack)-1], expectKey[:len(expectKey)-1]
			}
		case string:
			n := len(stack)
			if n > 0 && stack[n-1] && expectKey[n-1] {
				expectKey[n-1] = false
				continue
			}
			if n > 0 && stack[n-1] {
				expectKey[n-1] = true
			}
			if b.Len() > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(v)
		default:
			if n := len(stack); n > 0 && stack[n-1] {
				expectKey[n-1] = true
			}
		}
	}
}

// ---- audit ----

// AuditStage records the body as it leaves the pipeline, capped at Max
// bytes, except that the PII the pipeline found is never stored: the
// request body is the redacted one (also under log_only, where the
// original is forwarded) and the response body is the one before
// rehydration.
type AuditStage struct {
	Dir Direction
	Max int
}

func (s *AuditStage) Name() string        { return "audit" }
func (s *AuditStage) Applies(string) bool { return true }
func (s *AuditStage) Apply(ex *Exchange, m *Message) Verdict {
	b := m.Body
	if m.Direction == Outbound && ex.auditOut != nil {
		b, ex.auditOut = ex.auditOut, nil
	}
	if m.Direction == Inbound && ex.auditIn != nil {
		b, ex.auditIn = ex.auditIn, nil
	}
	// Appended: a streamed body comes in segments.
	dst := &ex.Report.RequestBody
	if m.Direction == Inbound {
		dst = &ex.Report.ResponseBody
	}
	room := s.Max - len(*dst)
	if len(b) > room {
		b = b[:max(room, 0)]
		ex.Report.BodiesTruncated = true
	}
	if len(b) > 0 {
		*dst = append(*dst, b...)
	}
	return Verdict{}
}

var (
	_ Stage = (*TransformStage)(nil)
	_ Stage = (*PIIStage)(nil)
	_ Stage = (*RehydrateStage)(nil)
	_ Stage = (*InjectionStage)(nil)
	_ Stage = (*AuditStage)(nil)
)
