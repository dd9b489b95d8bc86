package declaw

// SecurityPolicy is the security policy of a sandbox, set at create
// (CreateRequest.Security). It is enforced on the host side, where code in
// the sandbox cannot switch it off. Nil and zero fields get the server's
// defaults (docs/api.md lists them): the server fills in what is missing.
type SecurityPolicy struct {
	PII              *PIIConfig              `json:"pii,omitempty"`
	InjectionDefense *InjectionDefenseConfig `json:"injection_defense,omitempty"`
	Transformations  []TransformationRule    `json:"transformations,omitempty"`
	// Network is used when the create has no top-level Network.
	Network     *NetworkPolicy     `json:"network,omitempty"`
	Audit       *AuditConfig       `json:"audit,omitempty"`
	EnvSecurity *EnvSecurityConfig `json:"env_security,omitempty"`
}

// PII types the detector knows.
const (
	PIISSN        = "ssn"
	PIICreditCard = "credit_card"
	PIIEmail      = "email"
	PIIPhone      = "phone"
	PIIPersonName = "person_name"
	PIIAPIKey     = "api_key"
	PIIAddress    = "address"
	PIIIPAddress  = "ip_address"
)

// PIIConfig scans HTTP(S) egress for personal data and secrets.
type PIIConfig struct {
	Enabled bool     `json:"enabled"`
	Types   []string `json:"types,omitempty"`  // the PII* constants; none: all
	Action  string   `json:"action,omitempty"` // redact (default), block or log_only
	// RehydrateResponse puts the original values back into responses
	// (nil: yes).
	RehydrateResponse *bool    `json:"rehydrate_response,omitempty"`
	Domains           []string `json:"domains,omitempty"` // none: all egress
	// Unscannable is block (default) or pass: what happens to a body the
	// proxy cannot decode.
	Unscannable string `json:"unscannable,omitempty"`
}

// InjectionDefenseConfig scans HTTP(S) traffic for prompt injection.
type InjectionDefenseConfig struct {
	Enabled     bool     `json:"enabled"`
	Action      string   `json:"action,omitempty"`      // log_only (default) or block
	Sensitivity string   `json:"sensitivity,omitempty"` // low, medium (default) or high
	Threshold   float64  `json:"threshold,omitempty"`   // 0..1; 0: from the sensitivity
	Domains     []string `json:"domains,omitempty"`     // exact, *.x or ~regex; opt-in
}

// TransformationRule rewrites matching text in HTTP(S) traffic.
type TransformationRule struct {
	Match     string `json:"match"` // a regular expression
	Replace   string `json:"replace"`
	Direction string `json:"direction,omitempty"` // outbound (default), inbound or both
}

// NetworkPolicy is the network part of a SecurityPolicy.
type NetworkPolicy struct {
	AllowOut           []string `json:"allow_out,omitempty"`
	DenyOut            []string `json:"deny_out,omitempty"`
	AllowPublicTraffic *bool    `json:"allow_public_traffic,omitempty"`
	MaskRequestHost    string   `json:"mask_request_host,omitempty"`
}

// AuditConfig sets what the audit trail records.
type AuditConfig struct {
	Enabled         *bool `json:"enabled,omitempty"` // nil: on
	LogRequestBody  bool  `json:"log_request_body,omitempty"`
	LogResponseBody bool  `json:"log_response_body,omitempty"`
	RetentionHours  int   `json:"retention_hours,omitempty"` // 0: the server's default
}

// EnvSecurityConfig names the environment variables that are secrets
// (masked in answers and in the audit trail).
type EnvSecurityConfig struct {
	MaskPatterns    []string `json:"mask_patterns,omitempty"` // fnmatch on the upper-cased name
	AutoMaskInAudit *bool    `json:"auto_mask_in_audit,omitempty"`
}

// Ptr returns a pointer to v, for the optional fields of requests:
// Timeout: declaw.Ptr(600).
func Ptr[T any](v T) *T { return &v }
