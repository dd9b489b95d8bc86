// Package stage is the egress proxy's HTTP content pipeline: small ordered
// stages, each a pure core on (headers, decoded body) behind a thin
// adapter, returning a Verdict{Action, Reason}.
//
// The order is explicit ([Build]):
//
//	outbound: transformations (outbound|both) → PII (redact | block |
//	          log_only) → injection (block | log_only) → audit
//	inbound:  injection → transformations (inbound|both) → PII
//	          rehydration → audit
//
// A stage sees one [Message] (a request or a response, body already
// decoded from gzip/deflate/br/zstd by the caller, never more than the scan
// limit, or one segment of a streamed body) and an [Exchange], the per-request state shared by both
// directions: the PII redaction map (so the response's tokens can be put
// back) and the [Report] that becomes the audit event. A stage that blocks
// sets Exchange.Block (status and JSON body for the client) and returns
// ActionBlock; the pipeline stops there and nothing is sent on.
//
// Decisions documented here:
//   - PII is looked for in every text-bearing part of a request (see
//     docs/proxy.md): the method, each path segment and query name and
//     value (percent-decoded), header values other than the framing and
//     routing ones (ScannedHeader; credential headers skip api_key), and
//     the body by its kind (KindOf): JSON inside string values only, so it
//     stays valid JSON; forms and multipart field by field, re-encoded
//     validly; other bodies as text, in their charset (BodyCharset).
//     Bodies too large to hold are rewritten as they stream (Streamer).
//   - Injection is scored on the text of the body (the string values for
//     JSON). With no `domains` every intercepted host is scanned. A blocked
//     response is replaced by a 403 JSON error (X-Declaw-Blocked:
//     injection): the sandbox never sees the injected content.
//   - Rehydration replaces tokens of this request's redaction map only; in
//     JSON (and SSE) bodies the original is inserted JSON-escaped.
//   - Transformations are Go regexps applied in list order to the whole
//     body; `\1`-style references in the replacement become ${1} and a
//     literal `$` stays literal.
//
// Everything here is pure: no I/O, safe for concurrent use once built (an
// Exchange belongs to one request).
package stage

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/declaw/declaw/internal/guard/injection"
	"github.com/declaw/declaw/internal/guard/pii"
	"github.com/declaw/declaw/internal/guard/redact"
	"github.com/declaw/declaw/internal/policy"
)

// Direction of a message.
type Direction int

const (
	Outbound Direction = iota // sandbox -> upstream (request)
	Inbound                   // upstream -> sandbox (response)
)

func (d Direction) String() string {
	if d == Inbound {
		return "inbound"
	}
	return "outbound"
}

// Action is what a stage decided.
type Action int

const (
	Continue Action = iota // pass on (possibly modified)
	Block                  // stop: answer the client with Exchange.Block
)

func (a Action) String() string {
	if a == Block {
		return "block"
	}
	return "continue"
}

// Verdict is one stage's decision; Reason is user-safe and audited.
type Verdict struct {
	Action Action
	Reason string
}

// Message is one request or response as the stages see it.
type Message struct {
	Direction Direction
	Host      string      // the request's host (no port), for domain scoping
	Header    http.Header // the stages may read it; the adapter fixes framing headers
	Body      []byte      // decoded; stages replace it when they change it
	// Method, Path (escaped) and RawQuery are the request line (outbound
	// only); the PII stage scans them, and the request's header values
	// (see ScannedHeader), too.
	Method, Path, RawQuery string
	// Fragment marks a segment of a body too large to hold (see
	// StreamText): the stages read it as text, and only the body.
	// JSONRaw marks such a segment of a JSON body.
	Fragment, JSONRaw bool
}

// ContentType returns the media type, lower-cased, without parameters.
func (m *Message) ContentType() string {
	ct := m.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// IsJSON reports a JSON media type (application/json, application/*+json, ...).
func (m *Message) IsJSON() bool { return strings.Contains(m.ContentType(), "json") }

// IsSSE reports a text/event-stream body.
func (m *Message) IsSSE() bool { return m.ContentType() == "text/event-stream" }

// BlockResponse is what the client gets instead of the upstream exchange.
type BlockResponse struct {
	Status int
	Stage  string // the blocking stage
	Body   []byte // JSON
}

// Report is the audit record a pipeline builds for one exchange.
type Report struct {
	PII             map[string]int    `json:"pii,omitempty"` // type -> count, outbound
	PIIAction       string            `json:"pii_action,omitempty"`
	Rehydrated      int               `json:"rehydrated,omitempty"` // tokens put back inbound
	Injection       *InjectionFinding `json:"injection,omitempty"`
	Transformations []string          `json:"transformations,omitempty"` // "outbound[0]", ...
	Verdicts        []StageVerdict    `json:"verdicts,omitempty"`        // non-trivial verdicts, in order
	Notes           []string          `json:"notes,omitempty"`
	RequestBody     []byte            `json:"-"` // as sent upstream (redacted), capped
	ResponseBody    []byte            `json:"-"` // as sent to the sandbox, capped
	BodiesTruncated bool              `json:"-"`
}

// InjectionFinding is the highest-scoring injection scan of an exchange.
type InjectionFinding struct {
	Direction string   `json:"direction"`
	Score     float64  `json:"score"`
	Threshold float64  `json:"threshold"`
	Verdict   string   `json:"verdict"` // "clean", "detected" (log_only) or "blocked"
	Reasons   []string `json:"reasons,omitempty"`
}

// StageVerdict is a stage's verdict as audited.
type StageVerdict struct {
	Stage     string `json:"stage"`
	Direction string `json:"direction"`
	Action    string `json:"action"`
	Reason    string `json:"reason"`
}

// Exchange is the state of one request/response pair.
type Exchange struct {
	Redactor *redact.Redactor
	Report   Report
	Block    *BlockResponse
	// auditOut and auditIn, when set, are what the AuditStage of that
	// direction stores instead of
	// the message body: the redacted request under log_only, the response
	// before rehydration. The audit never holds the PII the pipeline found.
	auditOut, auditIn []byte
	// slowBudget is what is left of SlowTypeBudget for a streamed body.
	slowBudget int
}

// NewExchange returns an empty Exchange.
func NewExchange() *Exchange { return &Exchange{Redactor: redact.New(), slowBudget: SlowTypeBudget} }

// Stage is one step of the pipeline.
type Stage interface {
	Name() string
	// Applies reports whether the stage has work on host in this
	// direction (domain scoping); the adapter skips buffering bodies when
	// no stage applies.
	Applies(host string) bool
	Apply(ex *Exchange, m *Message) Verdict
}

// Pipeline is the ordered outbound and inbound stages of one policy.
type Pipeline struct {
	Outbound []Stage
	Inbound  []Stage
	// BlockOnUnscannable is true when PII scanning is on with
	// unscannable "block" (the default), or a scanning stage has a block
	// action: a request body the proxy cannot decode or parse is then
	// refused (413/415) instead of passed unscanned with a note.
	BlockOnUnscannable bool
	// BlockUnscannableResponse is true when injection defense blocks: a
	// response the proxy cannot decode is then replaced by a 502.
	BlockUnscannableResponse bool
	// LogRequestBody and LogResponseBody mirror the audit policy.
	LogRequestBody, LogResponseBody bool
	// Rehydrate is on when PII redaction runs with rehydrate_response.
	Rehydrate bool
}

// Deps are the shared detectors (built once per process).
type Deps struct {
	PII       *pii.Scanner
	Injection *injection.Detector
	// MaxAuditBody caps each stored body; zero means DefaultMaxAuditBody.
	MaxAuditBody int
	// MaxScan bounds a held body or field; zero means DefaultMaxScan.
	MaxScan int
}

// DefaultMaxAuditBody caps a body stored in the audit report.
const DefaultMaxAuditBody = 64 << 10

// Build compiles sec into a pipeline. A nil sec gives an empty pipeline.
func Build(sec *policy.Security, deps Deps) (*Pipeline, error) {
	p := &Pipeline{}
	if sec == nil {
		return p, nil
	}
	if deps.PII == nil {
		deps.PII = &pii.Scanner{}
	}
	if deps.MaxAuditBody <= 0 {
		deps.MaxAuditBody = DefaultMaxAuditBody
	}
	var outT, inT []Transform
	for i, tr := range sec.Transformations {
		t, err := CompileTransform(tr, i)
		if err != nil {
			return nil, err
		}
		if tr.Direction == "outbound" || tr.Direction == "both" || tr.Direction == "" {
			outT = append(outT, t)
		}
		if tr.Direction == "inbound" || tr.Direction == "both" {
			inT = append(inT, t)
		}
	}
	var piiStage *PIIStage
	if sec.PII.Enabled {
		dom, err := NewDomains(sec.PII.Domains)
		if err != nil {
			return nil, fmt.Errorf("pii.domains: %w", err)
		}
		var types []pii.Type
		for _, s := range sec.PII.Types {
			if t, ok := pii.ParseType(s); ok {
				types = append(types, t)
			}
		}
		if len(types) == 0 {
			types = pii.DefaultTypes
		}
		piiStage = &PIIStage{Scanner: deps.PII, Types: types, Action: sec.PII.Action, Domains: dom,
			BlockUnscannable: sec.PII.Unscannable != "pass", MaxField: deps.MaxScan}
		if piiStage.BlockUnscannable {
			p.BlockOnUnscannable = true
		}
		p.Rehydrate = sec.PII.Action == "redact" && sec.PII.RehydrateResponse
	}
	var injOut, injIn *InjectionStage
	if sec.InjectionDefense.Enabled {
		if deps.Injection == nil {
			return nil, fmt.Errorf("stage: injection defense needs a detector")
		}
		dom, err := NewDomains(sec.InjectionDefense.Domains)
		if err != nil {
			return nil, fmt.Errorf("injection_defense.domains: %w", err)
		}
		sens, err := injection.ParseSensitivity(sec.InjectionDefense.Sensitivity)
		if err != nil {
			return nil, err
		}
		opts := injection.Options{Sensitivity: sens}
		if th := sec.InjectionDefense.Threshold; th != nil {
			opts.Threshold = *th
		}
		injOut = &InjectionStage{Detector: deps.Injection, Options: opts, Action: sec.InjectionDefense.Action, Domains: dom, Dir: Outbound}
		injIn = &InjectionStage{Detector: deps.Injection, Options: opts, Action: sec.InjectionDefense.Action, Domains: dom, Dir: Inbound}
		if sec.InjectionDefense.Action == "block" {
			p.BlockOnUnscannable = true
			p.BlockUnscannableResponse = true
		}
	}
	audit := sec.Audit.Enabled
	p.LogRequestBody = audit && sec.Audit.LogRequestBody
	p.LogResponseBody = audit && sec.Audit.LogResponseBody

	// Outbound, in order.
	if len(outT) > 0 {
		p.Outbound = append(p.Outbound, &TransformStage{Rules: outT, Dir: Outbound})
	}
	if piiStage != nil {
		p.Outbound = append(p.Outbound, piiStage)
	}
	if injOut != nil {
		p.Outbound = append(p.Outbound, injOut)
	}
	if p.LogRequestBody {
		p.Outbound = append(p.Outbound, &AuditStage{Dir: Outbound, Max: deps.MaxAuditBody})
	}
	// Inbound, in order.
	if injIn != nil {
		p.Inbound = append(p.Inbound, injIn)
	}
	if len(inT) > 0 {
		p.Inbound = append(p.Inbound, &TransformStage{Rules: inT, Dir: Inbound})
	}
	if p.Rehydrate {
		p.Inbound = append(p.Inbound, &RehydrateStage{})
	}
	if p.LogResponseBody {
		p.Inbound = append(p.Inbound, &AuditStage{Dir: Inbound, Max: deps.MaxAuditBody})
	}
	return p, nil
}

// Stages returns the stages of direction dir that apply to host.
func (p *Pipeline) Stages(dir Direction, host string) []Stage {
	all := p.Outbound
	if dir == Inbound {
		all = p.Inbound
	}
	var out []Stage
	for _, s := range all {
		if s.Applies(host) {
			out = append(out, s)
		}
	}
	return out
}

// Run applies stages to m in order and stops at the first Block.
func Run(stages []Stage, ex *Exchange, m *Message) Verdict {
	for _, s := range stages {
		v := s.Apply(ex, m)
		if v.Reason != "" || v.Action == Block {
			sv := StageVerdict{Stage: s.Name(), Direction: m.Direction.String(), Action: v.Action.String(), Reason: v.Reason}
			// A streamed body repeats its segments' verdicts: once each.
			if !slices.Contains(ex.Report.Verdicts, sv) {
				ex.Report.Verdicts = append(ex.Report.Verdicts, sv)
			}
		}
		if v.Action == Block {
			return v
		}
	}
	return Verdict{Action: Continue}
}

// blockJSON builds the 403 body {"error": "blocked by declaw: <what>", ...}.
func blockJSON(what string, extra map[string]any) []byte {
	m := map[string]any{"error": "blocked by declaw: " + what}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return append(b, '\n')
}

// Domains scopes a stage to hosts: exact names, "*.x" (strict subdomains)
// and "~regex" (RE2, matched against the whole host). A nil *Domains (no
// list) matches every host.
type Domains struct {
	exact []string
	wild  []string
	res   []*regexp.Regexp
}

// NewDomains compiles a policy domain list; an empty list gives nil (all hosts).
func NewDomains(list []string) (*Domains, error) {
	if len(list) == 0 {
		return nil, nil
	}
	d := &Domains{}
	for _, e := range list {
		e = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(e)), ".")
		switch {
		case strings.HasPrefix(e, "~"):
			re, err := regexp.Compile(`^(?:` + e[1:] + `)$`)
			if err != nil {
				return nil, fmt.Errorf("domain pattern %q: %w", e, err)
			}
			d.res = append(d.res, re)
		case strings.HasPrefix(e, "*."):
			d.wild = append(d.wild, e[1:]) // ".x"
		case e != "":
			d.exact = append(d.exact, e)
		}
	}
	return d, nil
}

// Match reports whether host is in scope.
func (d *Domains) Match(host string) bool {
	if d == nil {
		return true
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, e := range d.exact {
		if host == e {
			return true
		}
	}
	for _, w := range d.wild {
		if strings.HasSuffix(host, w) && len(host) > len(w) {
			return true
		}
	}
	for _, re := range d.res {
		if re.MatchString(host) {
			return true
		}
	}
	return false
}
