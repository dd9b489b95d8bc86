// Package dns is the resolver every sandbox uses: the server runs one
// listener pair (UDP and TCP port 53) on each slot's host-side address, so
// the sandbox's /etc/resolv.conf points at its own gateway and the listener
// it reaches tells which sandbox asks. Names are answered by forwarding to
// an upstream resolver only when the sandbox's network policy allows them
// (see Decide); everything else gets NXDOMAIN without leaving the host, so
// DNS cannot carry data out of a sandbox whose policy denies it. Every query
// is reported to an optional hook for the audit trail.
package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/declaw/declaw/internal/network"
)

// Query is one answered question, for the audit trail.
type Query struct {
	SandboxID string
	Name      string // as asked (case kept), no trailing dot
	Type      string // "A", "AAAA", ...
	Allowed   bool
	Rule      string // why: the matching rule or default
	Rcode     string // answer code sent to the sandbox
	Time      time.Time
}

// Config configures a Server. Upstream is required to resolve anything.
type Config struct {
	Upstream string                           // "host:port" of the upstream resolver (--dns-upstream)
	Timeout  time.Duration                    // per upstream exchange; default 3 s
	OnQuery  func(Query)                      // optional audit hook, called synchronously: keep it cheap
	Logf     func(format string, args ...any) // optional
}

// Server answers DNS for sandboxes. It is safe for concurrent use.
type Server struct {
	cfg Config

	mu    sync.Mutex
	slots map[netip.Addr]*slot
}

type slot struct {
	sandboxID string
	policy    network.Parsed
	udp, tcp  *mdns.Server
	mu        sync.RWMutex // guards policy
}

// New returns a Server; it serves nothing until Serve is called for a slot.
func New(cfg Config) *Server {
	if cfg.Timeout == 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	return &Server{cfg: cfg, slots: map[netip.Addr]*slot{}}
}

// Serve starts answering on addr:53 (UDP and TCP) for sandboxID with policy p.
// addr must be an address of the namespace the server runs in.
func (s *Server) Serve(addr netip.Addr, sandboxID string, p network.Parsed) error {
	sl := &slot{sandboxID: sandboxID, policy: p}
	ap := netip.AddrPortFrom(addr, 53).String()
	pc, err := net.ListenPacket("udp", ap)
	if err != nil {
		return fmt.Errorf("dns: listen udp %s: %w", ap, err)
	}
	ln, err := net.Listen("tcp", ap)
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns: listen tcp %s: %w", ap, err)
	}
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) { s.handle(sl, w, r) })
	sl.udp = &mdns.Server{PacketConn: pc, Handler: h, UDPSize: 4096}
	sl.tcp = &mdns.Server{Listener: ln, Handler: h, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	s.mu.Lock()
	if old := s.slots[addr]; old != nil {
		s.mu.Unlock()
		pc.Close()
		ln.Close()
		return fmt.Errorf("dns: %s is already served (sandbox %s)", addr, old.sandboxID)
	}
	s.slots[addr] = sl
	s.mu.Unlock()
	go sl.udp.ActivateAndServe()
	go sl.tcp.ActivateAndServe()
	return nil
}

// Update replaces the policy of the sandbox served on addr.
func (s *Server) Update(addr netip.Addr, p network.Parsed) error {
	s.mu.Lock()
	sl := s.slots[addr]
	s.mu.Unlock()
	if sl == nil {
		return fmt.Errorf("dns: %s is not served", addr)
	}
	sl.mu.Lock()
	sl.policy = p
	sl.mu.Unlock()
	return nil
}

// Stop stops answering on addr. Stopping an address not served is not an error.
func (s *Server) Stop(addr netip.Addr) error {
	s.mu.Lock()
	sl := s.slots[addr]
	delete(s.slots, addr)
	s.mu.Unlock()
	if sl == nil {
		return nil
	}
	return errors.Join(sl.udp.Shutdown(), sl.tcp.Shutdown())
}

// Close stops every listener.
func (s *Server) Close() error {
	s.mu.Lock()
	addrs := make([]netip.Addr, 0, len(s.slots))
	for a := range s.slots {
		addrs = append(addrs, a)
	}
	s.mu.Unlock()
	var errs []error
	for _, a := range addrs {
		errs = append(errs, s.Stop(a))
	}
	return errors.Join(errs...)
}

// Decide is the DNS verdict of a policy for a name: allow-listed domains
// win, then denied domains, then allow-all, then deny-all; a policy that
// allow-lists domains denies every other name; otherwise names are allowed.
func Decide(p network.Parsed, name string) (bool, string) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	for _, d := range p.AllowDomains {
		if d.Match(name) {
			return true, "allow_out " + d.String()
		}
	}
	for _, d := range p.DenyDomains {
		if d.Match(name) {
			return false, "deny_out " + d.String()
		}
	}
	switch {
	case p.AllowAll:
		return true, "allow_out ALL_TRAFFIC"
	case p.DenyAll:
		return false, "deny_out ALL_TRAFFIC"
	case len(p.AllowDomains) > 0:
		return false, "not in allow_out"
	}
	return true, "default allow"
}

func (s *Server) handle(sl *slot, w mdns.ResponseWriter, r *mdns.Msg) {
	defer w.Close()
	m := new(mdns.Msg)
	if r.Opcode != mdns.OpcodeQuery || len(r.Question) != 1 {
		m.SetRcode(r, mdns.RcodeRefused)
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.TrimSuffix(strings.ToLower(q.Name), ".")
	sl.mu.RLock()
	allowed, rule := Decide(sl.policy, name)
	sl.mu.RUnlock()
	if _, ok := mdns.IsDomainName(q.Name); !ok || len(name) > 253 {
		allowed, rule = false, "malformed name"
	}
	ev := Query{SandboxID: sl.sandboxID, Name: strings.TrimSuffix(q.Name, "."), Type: mdns.TypeToString[q.Qtype], Allowed: allowed, Rule: rule, Time: time.Now().UTC()}
	var resp *mdns.Msg
	if allowed {
		var err error
		resp, err = s.forward(r, w.RemoteAddr().Network())
		if err != nil {
			s.cfg.Logf("dns: sandbox %s: %s %s: upstream: %v", sl.sandboxID, ev.Type, name, err)
			resp = new(mdns.Msg)
			resp.SetRcode(r, mdns.RcodeServerFailure)
		}
		resp.Id = r.Id
	} else {
		resp = new(mdns.Msg)
		resp.SetRcode(r, mdns.RcodeNameError)
		resp.RecursionAvailable = true
	}
	ev.Rcode = mdns.RcodeToString[resp.Rcode]
	if s.cfg.OnQuery != nil {
		s.cfg.OnQuery(ev)
	}
	w.WriteMsg(resp)
}

// forward sends r upstream (UDP, retrying over TCP when truncated).
func (s *Server) forward(r *mdns.Msg, network string) (*mdns.Msg, error) {
	if s.cfg.Upstream == "" {
		return nil, errors.New("no upstream resolver configured (--dns-upstream)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	c := &mdns.Client{Net: "udp", Timeout: s.cfg.Timeout, UDPSize: 4096}
	if network == "tcp" {
		c.Net = "tcp"
	}
	q := r.Copy()
	resp, _, err := c.ExchangeContext(ctx, q, s.cfg.Upstream)
	if err == nil && resp.Truncated && c.Net == "udp" {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, q, s.cfg.Upstream)
	}
	return resp, err
}

// UpstreamFromResolvConf returns the first nameserver of a resolv.conf as host:53.
func UpstreamFromResolvConf(path string) (string, error) {
	cc, err := mdns.ClientConfigFromFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(cc.Servers) == 0 {
		return "", fmt.Errorf("%s lists no nameserver", path)
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port), nil
}
