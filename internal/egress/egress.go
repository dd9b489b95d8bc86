// Package egress is Declaw's transparent egress proxy: the host-side end of
// the network engine's domain rules.
//
// # Where connections come from
//
// When a sandbox's policy has domain rules and is not allow-all, the
// network package redirects the slot's TCP to ports 80 and 443 (except to
// explicitly allowed prefixes) to [Config.Listen]'s port on the slot's
// gateway address; with network.Policy.Intercept (content-scanned
// sandboxes) it redirects all their allowed web traffic, allowed prefixes
// and default-allow policies included. The proxy therefore sees each connection with the
// sandbox's guest address as source, and recovers the address the sandbox
// dialed with SO_ORIGINAL_DST (IP6T_SO_ORIGINAL_DST for IPv6). The guest
// address identifies the sandbox: the server calls [Proxy.Register] when
// it creates the sandbox, [Proxy.Update] when the policy changes and
// [Proxy.Unregister] when the sandbox goes. The firewall drops
// packets whose source is not the slot's guest address, so the source
// cannot be forged from inside a sandbox. Connections from unregistered
// sources, or whose original destination port is not one of [Config.Ports],
// are reset.
//
// # Per connection
//
//  1. Peek at the first bytes (bounded by [Config.MaxPeek] and
//     [Config.PeekTimeout]): a TLS handshake record gives the ClientHello's
//     SNI ([ParseSNI]), anything else must be an HTTP/1.x request header
//     giving the Host ([ParseHost]). The protocol is sniffed, not inferred
//     from the port.
//  2. Decide with [DecideConn] on the sandbox's current policy and the
//     original destination address: when the address itself is allowed
//     (allow-all, an allow prefix, or the default allow of a policy without
//     a domain allow list) the connection is allowed whatever the name and
//     the proxy dials that address; otherwise the name decides ([Decide])
//     and the proxy resolves it. Blocked, nameless (where the name is
//     needed) and malformed connections are reset (RST, via SO_LINGER 0).
//  3. If the sandbox has content policy ([Proxy.SetContent]) that needs
//     to see content (policy.Security.RequiresTLSInterception), the
//     connection is intercepted (below). Otherwise it is offered to the
//     [Interceptor], if any.
//  4. Otherwise dial (the original address, or the NAME resolved with
//     [Config.Resolver], never the address the client dialed: a forged SNI
//     or Host cannot reach the address it was sent to), drop resolved
//     addresses in [Config.Blocked], in the sandbox CIDR and in the policy's
//     deny prefixes (no DNS rebinding into private or metadata ranges) and
//     this host's own addresses, dial the first that answers on the
//     original destination port, replay the peeked bytes and splice both
//     directions (splice(2) between TCP sockets) with half-close and an
//     idle timeout.
//
// # Interception
//
// For TLS the proxy first connects to the upstream and completes a TLS
// handshake with SNI = the client's SNI (or the original address when there
// was none), verifying the certificate against the system roots plus
// [Config.UpstreamCAs] and [Config.UpstreamCAFile]. A failure resets the
// sandbox's connection before its handshake completes (the sandbox sees a
// TLS error, never a silently trusted connection) and emits an HTTPEvent
// (Stage "upstream_tls"). Then it terminates the sandbox's TLS with a leaf
// certificate for the same name from the sandbox's CA (package ca), with
// ALPN h2 and http/1.1. HTTP/2 is served by golang.org/x/net/http2,
// HTTP/1.x by a loop of http.ReadRequest (keep-alive, pipelining, chunked,
// Expect: 100-continue); plain HTTP on port 80 likewise without TLS.
//
// Every request is decided again on the current policy (a Host the policy
// blocks gets 403; over TLS a Host other than the SNI gets 421), run through
// the sandbox's stage pipeline (package stage: outbound transformations →
// PII → injection → audit; inbound injection → transformations → PII
// rehydration → audit) and forwarded with an http.Transport private to the
// connection that dials only through the checks above. Every text-bearing
// part of a request is scanned (method, path, query, headers other than
// framing and routing, the body by its kind: JSON, form, multipart, text
// in its charset); docs/proxy.md is the exact boundary. Bodies are decoded
// (gzip, deflate, br, zstd) before scanning and sent on decoded with a
// fixed Content-Length; Accept-Encoding is narrowed to those codings. A
// request body over [Config.MaxScanBody] (8 MiB decoded) is scanned while
// it streams, in segments, with bounded memory, and sent on without a
// length. A request body the proxy cannot decode or parse is refused
// (415/413) or, with pii.unscannable "pass", passed with a note; a stalled
// one gets 408 after [Config.BodyIdleTimeout]. Responses over the limit or
// in another coding are passed unscanned with a note, or refused (502)
// when injection defense blocks. text/event-stream
// responses are processed event by event and flushed as they come. Blocked
// requests get 403 with {"error":"blocked by declaw: pii|injection", ...}
// and an X-Declaw-Blocked header; nothing is sent upstream. A response
// blocked for injection is replaced by such a 403. Malformed requests get
// 400, header blocks over [Config.MaxHeaderBytes] (or MaxPeek on port 80)
// 431, protocol upgrades (WebSocket) 501, each with an HTTPEvent.
//
// Each exchange ends in one [HTTPEvent] passed to [Config.HTTPEvents]
// (bodies only when the policy's audit asks, each capped at
// [Config.MaxAuditBody], and never with the PII the pipeline found: the
// request body redacted, also under log_only, the response body before
// rehydration); the
// connection still ends in one [Event] with Intercepted set.
//
// Every connection ends in exactly one [Event] passed to [Config.Events]:
// blocked ones when they are reset, allowed ones when they close (with byte
// counts and duration).
//
// [Proxy.Update] re-decides the open connections of the sandbox and cuts
// those the new policy blocks; Unregister cuts them all.
//
// # Wiring (internal/server)
//
// The proxy runs in the namespace holding the slots' host ends (the
// server's). Start it before the network Manager, whose ProxyPort is the
// port it bound:
//
//	p, err := egress.New(egress.Config{
//		Listen:         "0.0.0.0:0",        // or a fixed port
//		DNSUpstream:    cfg.DNSUpstream,    // --dns-upstream, host:port
//		SandboxCIDR:    cfg.SandboxCIDR,    // --sandbox-cidr
//		UpstreamCAFile: cfg.UpstreamCA,     // --upstream-ca FILE (PEM), optional
//		Events:         auditEgress,        // -> audit store (connections)
//		HTTPEvents:     auditHTTP,          // -> audit store (intercepted exchanges)
//		Logf:           logf,
//	})
//	addr, err := p.Start()
//	m, err := network.New(ctx, network.Config{ProxyPort: addr.Port(), CIDR: cfg.SandboxCIDR, ...})
//
// Per sandbox, at create: mint the CA (sandboxCA, err := ca.New(id)),
// install sandboxCA.CertPEM() in the sandbox before any user command (see
// package ca), m.Apply(ctx, slot, pol) with pol.Intercept =
// sec.RequiresTLSInterception(), then p.Register(slot.GuestIP, id, parsed)
// and p.SetContent(slot.GuestIP, &egress.Content{Security: sec, CA:
// sandboxCA}). On a policy change: m.Apply, p.Update(slot.GuestIP, parsed)
// and p.SetContent again. At kill: p.Unregister(slot.GuestIP) (which also
// drops the content policy and cuts every connection) before m.Release. On
// shutdown, Close the proxy, then the Manager.
//
// # Known limits of splicing
//
// Without interception (no content policy) the proxy sees only the first name: later requests
// on a kept-alive HTTP connection, and the HTTP Host inside TLS, reach the
// upstream it dialed for the first name, so a CDN serving both an allowed
// and a denied name on the same address can be fronted. An Encrypted Client
// Hello's outer SNI is what is matched (the inner name is hidden). Both need
// the interceptor.
package egress

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/declaw/declaw/internal/guard/injection"
	"github.com/declaw/declaw/internal/network"
)

// Defaults for the zero Config.
const (
	DefaultPeekTimeout = 10 * time.Second
	DefaultDialTimeout = 10 * time.Second
	DefaultIdleTimeout = 10 * time.Minute
	DefaultMaxPeek     = 32 << 10
	DefaultMaxConns    = 1024
)

// Config configures a Proxy. The zero value is usable except that either
// Resolver or DNSUpstream must be set.
type Config struct {
	// Listen is the TCP address Start binds, e.g. "0.0.0.0:15001". Zero
	// means ":0" (a free port; read it from Start's result). The network
	// package redirects to the slot's gateway address, so listen on all
	// addresses (or on every gateway address).
	Listen string
	// Resolver resolves allowed names. Nil means a DNSResolver querying
	// DNSUpstream through Dial.
	Resolver Resolver
	// DNSUpstream is the upstream DNS server (--dns-upstream), host:port.
	DNSUpstream string
	// Dial dials upstreams (with an IP literal address) and, for the
	// default resolver, DNSUpstream. Nil means a net.Dialer.
	Dial DialFunc
	// Blocked are ranges never dialed whatever DNS answers. Nil means
	// DefaultBlocked(); a non-nil empty slice blocks nothing (tests).
	Blocked []netip.Prefix
	// SandboxCIDR (--sandbox-cidr) is never dialed either.
	SandboxCIDR netip.Prefix
	// DialLocal lets upstream connections reach this host's own addresses
	// (detected after connecting: local and remote address are equal).
	// Only tests over loopback set it.
	DialLocal bool
	// Ports are the original destination ports served; nil means 80 and 443.
	Ports []uint16
	// PeekTimeout bounds the wait for the ClientHello or request header,
	// DialTimeout the upstream resolution and connect, and IdleTimeout a
	// spliced connection with no bytes in either direction. Zero means the
	// Default values.
	PeekTimeout, DialTimeout, IdleTimeout time.Duration
	// MaxPeek bounds the bytes read before a decision (ClientHello records
	// or HTTP request header). Zero means DefaultMaxPeek.
	MaxPeek int
	// MaxConns bounds one sandbox's open connections through the proxy
	// (beyond it new ones are reset). Zero means DefaultMaxConns.
	MaxConns int
	// Interceptor, if set, is offered every allowed connection that the
	// built-in content interception (Proxy.SetContent) does not serve.
	Interceptor Interceptor

	// UpstreamCAs and UpstreamCAFile (--upstream-ca, PEM) are roots an
	// intercepted connection's upstream certificate may chain to, in
	// addition to the system roots.
	UpstreamCAs    *x509.CertPool
	UpstreamCAFile string
	// HTTPEvents receives one HTTPEvent per intercepted exchange,
	// synchronously (for streamed responses, when the body ends): it must
	// not block for long.
	HTTPEvents func(HTTPEvent)
	// MaxScanBody bounds a decoded body the pipeline buffers and scans
	// (zero: DefaultMaxScanBody); see package stage for what happens
	// above it. MaxHeaderBytes bounds an intercepted request's header
	// block (zero: DefaultMaxHeaderBytes; beyond it the sandbox gets 431).
	// MaxAuditBody caps each body stored in an HTTPEvent (zero:
	// DefaultMaxAuditBody).
	MaxScanBody    int64
	MaxHeaderBytes int
	MaxAuditBody   int
	// BodyIdleTimeout bounds the wait for the next bytes of a request body
	// (zero: DefaultBodyIdleTimeout); a stalled body gets 408.
	BodyIdleTimeout time.Duration
	// Injection is the prompt-injection detector; nil loads the embedded
	// model on first use.
	Injection *injection.Detector
	// Events receives one Event per connection, synchronously from the
	// connection's goroutine: it must not block for long.
	Events func(Event)
	// Logf logs operational errors; nil discards them.
	Logf func(format string, args ...any)
}

// Decision is an Event's outcome.
type Decision string

const (
	DecisionAllow Decision = "allow" // allowed and forwarded (or intercepted)
	DecisionBlock Decision = "block" // reset by policy, or unidentifiable
	DecisionError Decision = "error" // allowed, but the upstream could not be reached
)

// Protocols of an Event.
const (
	ProtoTLS  = "tls"
	ProtoHTTP = "http"
)

// Event is the audit record of one connection.
type Event struct {
	Time        time.Time      // accepted
	SandboxID   string         // empty when the source is not registered
	Proto       string         // ProtoTLS, ProtoHTTP, or empty before sniffing
	Src         netip.AddrPort // the sandbox's address
	Dst         netip.AddrPort // the original destination the sandbox dialed
	Host        string         // SNI or Host, when read
	Upstream    netip.AddrPort // the address dialed, when allowed
	Decision    Decision
	Rule        string // policy entry that decided, if any
	Reason      string // why, user-safe
	Intercepted bool   // handed to the Interceptor
	BytesUp     int64  // sandbox -> upstream, peeked bytes included
	BytesDown   int64  // upstream -> sandbox
	Duration    time.Duration
}

// Interceptor is the seam for content inspection (issue 5: TLS termination
// with the sandbox's CA and the HTTP stage pipeline). The proxy calls
// Intercept for every connection the policy allowed, after the decision and
// before any upstream dial, on the connection's goroutine.
//
// Intercept returns false, without having read from or written to c.Client,
// to let the proxy splice the connection as usual. It returns true when it
// served the connection: it then owns c.Client until it returns and must
// have closed it. It must return when ctx is done (proxy Close, or a policy
// update that blocks the name) or when c.Client is closed under it. It must
// reach the upstream only through c.Dial, which applies the same address
// checks as the splice path.
type Interceptor interface {
	Intercept(ctx context.Context, c *Conn) bool
}

// Conn is an allowed connection offered to an Interceptor.
type Conn struct {
	SandboxID string
	Proto     string // ProtoTLS or ProtoHTTP
	Src, Dst  netip.AddrPort
	Host      string         // SNI or Host that was allowed
	Rule      string         // the allowing rule
	Policy    network.Parsed // the policy at decision time
	// Client is the sandbox's connection; reads return the peeked bytes
	// first. Closing it resets nothing: it closes normally.
	Client net.Conn
	// Dial resolves Host and connects to the first permitted address on
	// Dst's port, as the splice path does. It may be called more than
	// once; the proxy closes every such connection when the sandbox's
	// connection is cut or ends.
	Dial func(ctx context.Context) (net.Conn, error)
}

// Errors.
var (
	ErrClosed        = errors.New("egress proxy closed")
	ErrRegistered    = errors.New("source address already registered")
	ErrNotRegistered = errors.New("source address not registered")
	ErrNoUpstream    = errors.New("no permitted upstream address")
)
