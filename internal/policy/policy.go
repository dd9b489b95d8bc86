// Package policy is the Go model of a sandbox's SecurityPolicy as the API
// receives it (either as an object or as {"policy_json": "<string>"}), with
// the defaults and validation of the public Declaw API. It only describes
// and checks policies; enforcement lives in network and egress.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"regexp/syntax"
	"strings"
)

// PII types accepted by PIIConfig.Types.
var PIITypes = []string{"ssn", "credit_card", "email", "phone", "person_name", "api_key", "address", "ip_address"}

// DefaultMaskPatterns are EnvSecurityConfig.MaskPatterns when none are given.
var DefaultMaskPatterns = []string{"*_KEY", "*_SECRET", "*_TOKEN", "*_PASSWORD", "*_CREDENTIALS", "API_KEY", "SECRET_KEY"}

// Security is a SecurityPolicy.
type Security struct {
	PII              PII              `json:"pii"`
	InjectionDefense Injection        `json:"injection_defense"`
	Transformations  []Transformation `json:"transformations"`
	Network          *Network         `json:"network,omitempty"`
	Audit            Audit            `json:"audit"`
	EnvSecurity      EnvSecurity      `json:"env_security"`
	Extra            map[string]any   `json:"extra,omitempty"` // toxicity, code_security, ... kept as given
}

// PII is PIIConfig.
type PII struct {
	Enabled           bool     `json:"enabled"`
	Types             []string `json:"types"`
	Action            string   `json:"action"` // redact | block | log_only
	RehydrateResponse bool     `json:"rehydrate_response"`
	Domains           []string `json:"domains,omitempty"` // nil = all egress
	// Unscannable is what the proxy does with a request body it cannot
	// read as it claims (unknown content or transfer coding, unknown
	// charset, malformed multipart, one field over the scan limit):
	// "block" (the default) refuses it, "pass" forwards it with an audit
	// note saying it was not scanned. A Declaw extension.
	Unscannable string `json:"unscannable,omitempty"`
}

// Injection is InjectionDefenseConfig.
type Injection struct {
	Enabled     bool     `json:"enabled"`
	Action      string   `json:"action"`      // log_only | block
	Sensitivity string   `json:"sensitivity"` // low | medium | high
	Threshold   *float64 `json:"threshold,omitempty"`
	Domains     []string `json:"domains,omitempty"`
}

// Transformation is TransformationRule.
type Transformation struct {
	Match     string `json:"match"`
	Replace   string `json:"replace"`
	Direction string `json:"direction"` // outbound | inbound | both
}

// Network is NetworkPolicy / SandboxNetworkOpts.
type Network struct {
	AllowOut           []string `json:"allow_out,omitempty"`
	DenyOut            []string `json:"deny_out,omitempty"`
	AllowPublicTraffic *bool    `json:"allow_public_traffic,omitempty"`
	MaskRequestHost    string   `json:"mask_request_host,omitempty"`
}

// Audit is AuditConfig.
type Audit struct {
	Enabled         bool `json:"enabled"`
	LogRequestBody  bool `json:"log_request_body"`
	LogResponseBody bool `json:"log_response_body"`
	RetentionHours  int  `json:"retention_hours,omitempty"`
}

// EnvSecurity is EnvSecurityConfig.
type EnvSecurity struct {
	MaskPatterns    []string `json:"mask_patterns"`
	AutoMaskInAudit bool     `json:"auto_mask_in_audit"`
}

// Error is a validation error naming the offending field; its text is safe to show users.
type Error struct {
	Field string
	Msg   string
}

func (e *Error) Error() string { return fmt.Sprintf("invalid security policy: %s: %s", e.Field, e.Msg) }

func invalid(field, format string, args ...any) error {
	return &Error{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Default returns the policy used when none is given: audit on, everything else off.
func Default() *Security {
	return &Security{
		PII:              PII{Types: append([]string(nil), PIITypes...), Action: "redact", RehydrateResponse: true},
		InjectionDefense: Injection{Action: "log_only", Sensitivity: "medium"},
		Audit:            Audit{Enabled: true},
		EnvSecurity:      EnvSecurity{MaskPatterns: append([]string(nil), DefaultMaskPatterns...), AutoMaskInAudit: true},
	}
}

// Parse reads a policy as the API receives it: null/absent, an object, or
// {"policy_json": "<JSON string>"}. Missing fields get their defaults. The
// result is validated.
func Parse(raw json.RawMessage) (*Security, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return Default(), nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, invalid("security", "must be an object: %v", err)
	}
	if pj, ok := top["policy_json"]; ok {
		var s string
		if err := json.Unmarshal(pj, &s); err != nil {
			return nil, invalid("security.policy_json", "must be a JSON string")
		}
		top = nil
		if err := json.Unmarshal([]byte(s), &top); err != nil {
			return nil, invalid("security.policy_json", "is not a JSON object: %v", err)
		}
	}
	p := Default()
	for k, v := range top {
		var err error
		switch k {
		case "pii":
			err = decodeStrict(v, &p.PII, "pii")
		case "injection_defense":
			err = decodeBoolOr(v, &p.InjectionDefense, &p.InjectionDefense.Enabled, "injection_defense")
		case "transformations":
			if !isNull(v) {
				err = decodeStrict(v, &p.Transformations, "transformations")
			}
		case "network":
			if !isNull(v) {
				p.Network = &Network{}
				err = decodeStrict(v, p.Network, "network")
			}
		case "audit":
			err = decodeBoolOr(v, &p.Audit, &p.Audit.Enabled, "audit")
		case "env_security":
			err = decodeStrict(v, &p.EnvSecurity, "env_security")
		default:
			var anyv any
			if err = json.Unmarshal(v, &anyv); err == nil && anyv != nil {
				if p.Extra == nil {
					p.Extra = map[string]any{}
				}
				p.Extra[k] = anyv
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

func isNull(v json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(v), []byte("null")) }

// decodeStrict decodes v over dst (keeping defaults for absent fields),
// naming the field in errors.
func decodeStrict(v json.RawMessage, dst any, field string) error {
	if isNull(v) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	if err := dec.Decode(dst); err != nil {
		return invalid(field, "%v", err)
	}
	return nil
}

// decodeBoolOr accepts either a bool (setting *enabled) or an object.
func decodeBoolOr(v json.RawMessage, dst any, enabled *bool, field string) error {
	var b bool
	if err := json.Unmarshal(v, &b); err == nil {
		*enabled = b
		return nil
	}
	return decodeStrict(v, dst, field)
}

// Validate checks every field and normalises aliases.
func (p *Security) Validate() error {
	if p.PII.Action == "" {
		p.PII.Action = "redact"
	}
	switch p.PII.Action {
	case "redact", "block", "log_only":
	default:
		return invalid("pii.action", "%q is not one of redact, block, log_only", p.PII.Action)
	}
	switch p.PII.Unscannable {
	case "", "block", "pass": // "" is block
	default:
		return invalid("pii.unscannable", "%q is not one of block, pass", p.PII.Unscannable)
	}
	if len(p.PII.Types) == 0 {
		p.PII.Types = append([]string(nil), PIITypes...)
	}
	for _, t := range p.PII.Types {
		if !contains(PIITypes, t) {
			return invalid("pii.types", "unknown type %q (valid: %s)", t, strings.Join(PIITypes, ", "))
		}
	}
	if err := validateDomains("pii.domains", p.PII.Domains); err != nil {
		return err
	}
	inj := &p.InjectionDefense
	switch inj.Action {
	case "":
		inj.Action = "log_only"
	case "audit":
		inj.Action = "log_only"
	case "log_only", "block":
	default:
		return invalid("injection_defense.action", "%q is not one of log_only, block", inj.Action)
	}
	switch inj.Sensitivity {
	case "":
		inj.Sensitivity = "medium"
	case "low", "medium", "high":
	default:
		return invalid("injection_defense.sensitivity", "%q is not one of low, medium, high", inj.Sensitivity)
	}
	if inj.Threshold != nil && (*inj.Threshold < 0 || *inj.Threshold > 1) {
		return invalid("injection_defense.threshold", "%v is not in [0, 1]", *inj.Threshold)
	}
	if err := validateDomains("injection_defense.domains", inj.Domains); err != nil {
		return err
	}
	for i := range p.Transformations {
		tr := &p.Transformations[i]
		field := fmt.Sprintf("transformations[%d]", i)
		if err := ValidateRegex(tr.Match); err != nil {
			return invalid(field+".match", "%v", err)
		}
		switch tr.Direction {
		case "":
			tr.Direction = "outbound"
		case "out":
			tr.Direction = "outbound"
		case "in":
			tr.Direction = "inbound"
		case "outbound", "inbound", "both":
		default:
			return invalid(field+".direction", "%q is not one of outbound, inbound, both", tr.Direction)
		}
	}
	if p.Audit.RetentionHours < 0 {
		return invalid("audit.retention_hours", "must be positive, got %d", p.Audit.RetentionHours)
	}
	if p.EnvSecurity.MaskPatterns == nil {
		p.EnvSecurity.MaskPatterns = append([]string(nil), DefaultMaskPatterns...)
	}
	for i, pat := range p.EnvSecurity.MaskPatterns {
		if _, err := path.Match(strings.ToUpper(pat), "X"); err != nil {
			return invalid(fmt.Sprintf("env_security.mask_patterns[%d]", i), "bad pattern %q", pat)
		}
	}
	return nil
}

// RequiresTLSInterception reports whether the egress proxy must see content.
func (p *Security) RequiresTLSInterception() bool {
	return p.PII.Enabled || p.InjectionDefense.Enabled || len(p.Transformations) > 0 ||
		(p.Audit.Enabled && (p.Audit.LogRequestBody || p.Audit.LogResponseBody))
}

// MaskEnv reports whether the env var name matches a mask pattern
// (fnmatch-style on the upper-cased name).
func (p *Security) MaskEnv(name string) bool {
	up := strings.ToUpper(name)
	for _, pat := range p.EnvSecurity.MaskPatterns {
		if ok, _ := path.Match(strings.ToUpper(pat), up); ok {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var domainRe = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func validateDomains(field string, ds []string) error {
	for i, d := range ds {
		if strings.HasPrefix(d, "~") {
			if err := ValidateRegex(d[1:]); err != nil {
				return invalid(fmt.Sprintf("%s[%d]", field, i), "%v", err)
			}
			continue
		}
		if d == "" || len(d) > 253 || !domainRe.MatchString(strings.ToLower(d)) {
			return invalid(fmt.Sprintf("%s[%d]", field, i), "%q is not a domain", d)
		}
	}
	return nil
}

// ErrNestedQuantifier is returned for patterns like (a+)+.
var ErrNestedQuantifier = errors.New("nested quantifiers are not allowed")

// ValidateRegex checks a user regex: non-empty, at most 1000 characters,
// valid RE2 syntax and no quantifier applied to an expression that already
// contains one.
func ValidateRegex(re string) error {
	if re == "" {
		return errors.New("empty pattern")
	}
	if len(re) > 1000 {
		return fmt.Errorf("pattern is %d characters, the limit is 1000", len(re))
	}
	t, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		return fmt.Errorf("bad pattern %q: %v", re, err)
	}
	if nested(t, false) {
		return fmt.Errorf("pattern %q: %w", re, ErrNestedQuantifier)
	}
	return nil
}

func nested(t *syntax.Regexp, inRepeat bool) bool {
	isRepeat := false
	switch t.Op {
	case syntax.OpStar, syntax.OpPlus:
		isRepeat = true
	case syntax.OpRepeat:
		isRepeat = t.Max == -1 || t.Max > 1
	}
	if isRepeat && inRepeat {
		return true
	}
	for _, s := range t.Sub {
		if nested(s, inRepeat || isRepeat) {
			return true
		}
	}
	return false
}
