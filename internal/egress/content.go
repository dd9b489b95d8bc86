package egress

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/declaw/declaw/internal/egress/ca"
	"github.com/declaw/declaw/internal/egress/stage"
	"github.com/declaw/declaw/internal/guard/injection"
	"github.com/declaw/declaw/internal/policy"
)

// Defaults of the content interception.
const (
	DefaultMaxScanBody    = stage.DefaultMaxScan      // 8 MiB decoded
	DefaultMaxHeaderBytes = 64 << 10                  // request header block; beyond: 431
	DefaultMaxAuditBody   = stage.DefaultMaxAuditBody // 64 KiB per stored body
)

// Content is the content policy the server attaches to a registered
// sandbox with [Proxy.SetContent].
type Content struct {
	// Security is the sandbox's SecurityPolicy. Connections are
	// intercepted (TLS terminated, HTTP parsed) only when
	// Security.RequiresTLSInterception(); otherwise they are spliced.
	Security *policy.Security
	// CA is the sandbox's CA (its certificate is in the sandbox's trust
	// store); leaf certificates for intercepted names are minted from it.
	CA *ca.CA
}

// contentState is a Content with its compiled pipeline; immutable.
type contentState struct {
	content  Content
	pipeline *stage.Pipeline
}

func (cs *contentState) intercepts() bool {
	return cs != nil && cs.content.Security != nil && cs.content.Security.RequiresTLSInterception()
}

// SetContent attaches (or, with nil, removes) content policy to the sandbox
// registered at guestIP. It applies to connections accepted afterwards and
// to later requests on intercepted connections already open. It fails with
// ErrNotRegistered for an unknown address, and when the policy needs
// interception but c.CA is nil or a stage cannot be built.
func (p *Proxy) SetContent(guestIP netip.Addr, c *Content) error {
	guestIP = guestIP.Unmap()
	if c == nil || c.Security == nil {
		p.dropPools(guestIP)
		return p.reg.setContent(guestIP, nil)
	}
	if c.Security.RequiresTLSInterception() && c.CA == nil {
		return fmt.Errorf("egress: content policy for %s needs interception but has no CA", guestIP)
	}
	deps := stage.Deps{PII: &p.pii, MaxAuditBody: p.cfg.MaxAuditBody, MaxScan: int(p.cfg.MaxScanBody)}
	if c.Security.InjectionDefense.Enabled {
		d, err := p.injectionDetector()
		if err != nil {
			return err
		}
		deps.Injection = d
	}
	pl, err := stage.Build(c.Security, deps)
	if err != nil {
		return fmt.Errorf("egress: content policy for %s: %w", guestIP, err)
	}
	if err := p.reg.setContent(guestIP, &contentState{content: *c, pipeline: pl}); err != nil {
		return err
	}
	p.dropPools(guestIP)
	return nil
}

func (p *Proxy) injectionDetector() (*injection.Detector, error) {
	p.injOnce.Do(func() {
		if p.cfg.Injection != nil {
			p.inj = p.cfg.Injection
			return
		}
		p.inj, p.injErr = injection.New()
		if p.injErr != nil {
			p.injErr = fmt.Errorf("egress: load injection model: %w", p.injErr)
		}
	})
	return p.inj, p.injErr
}

// upstreamRoots returns the pools an upstream certificate may chain to:
// the system roots, then Config.UpstreamCAs, then Config.UpstreamCAFile.
func upstreamRoots(cfg Config) ([]*x509.CertPool, error) {
	var pools []*x509.CertPool
	if sys, err := x509.SystemCertPool(); err == nil && sys != nil {
		pools = append(pools, sys)
	}
	if cfg.UpstreamCAs != nil {
		pools = append(pools, cfg.UpstreamCAs)
	}
	if cfg.UpstreamCAFile != "" {
		pem, err := os.ReadFile(cfg.UpstreamCAFile)
		if err != nil {
			return nil, fmt.Errorf("egress: upstream CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("egress: upstream CA file %s: no PEM certificate", cfg.UpstreamCAFile)
		}
		pools = append(pools, pool)
	}
	if len(pools) == 0 {
		return nil, errors.New("egress: no system roots and no upstream CAs")
	}
	return pools, nil
}

// HTTPEvent is the audit record of one intercepted HTTP exchange (or of an
// intercepted connection that failed before any exchange: malformed
// request, upstream certificate verification failure).
type HTTPEvent struct {
	Time      time.Time
	SandboxID string
	Src, Dst  netip.AddrPort
	TLS       bool
	Proto     string // client side: "HTTP/1.1", "HTTP/2.0"
	Method    string
	URL       string // scheme://host/path?query as the sandbox sent it
	Host      string
	Status    int // sent to the sandbox; 0 when no response was sent
	// Direction is where the exchange ended: "outbound" when it was
	// stopped before reaching upstream, "inbound" when the response was
	// blocked, "both" when it completed.
	Direction string
	Decision  Decision // allow, block (by a stage or the policy), error
	Stage     string   // the blocking stage or check: "pii", "injection", "policy", "scan_limit", "malformed", "upstream_tls"
	Reason    string
	// RequestBytes and ResponseBytes are the body sizes sent upstream and
	// to the sandbox (after the pipeline).
	RequestBytes, ResponseBytes int64
	Duration                    time.Duration

	PII             map[string]int // type -> count found in the request
	PIIAction       string         // redact | block | log_only
	Rehydrated      int            // tokens restored in the response
	Injection       *stage.InjectionFinding
	Transformations []string // "outbound[0]", "inbound[1]", ... in order applied
	Verdicts        []stage.StageVerdict
	Notes           []string // e.g. "request body too large, not scanned"
	// RequestBody and ResponseBody when the policy's audit.log_request_body
	// / log_response_body is on, each capped at Config.MaxAuditBody: the
	// request as redacted (also under log_only) and the response before
	// rehydration, so found PII is never stored.
	RequestBody, ResponseBody []byte
	BodiesTruncated           bool
}

func (p *Proxy) emitHTTP(ev HTTPEvent) {
	if ev.Duration == 0 {
		ev.Duration = time.Since(ev.Time)
	}
	if p.cfg.HTTPEvents != nil {
		p.cfg.HTTPEvents(ev)
	}
}
