package egress

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/declaw/declaw/internal/guard/injection"
	"github.com/declaw/declaw/internal/guard/pii"
	"github.com/declaw/declaw/internal/network"
)

// Proxy is the transparent egress proxy; see the package comment. Create it
// with New, start it with Start or Serve, stop it with Close. Its methods are
// safe for concurrent use.
type Proxy struct {
	cfg      Config
	resolver Resolver
	dial     DialFunc
	blocked  []netip.Prefix
	origDst  func(*net.TCPConn) (netip.AddrPort, error) // tests replace it
	reg      registry
	roots    []*x509.CertPool // upstream trust for intercepted TLS
	pii      pii.Scanner
	injOnce  sync.Once
	inj      *injection.Detector
	injErr   error

	ctx    context.Context // done at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // Serve loops and connection handlers

	mu        sync.Mutex
	closed    bool                      // +checklocks:mu
	listeners map[net.Listener]struct{} // +checklocks:mu
	sessions  map[*session]struct{}     // +checklocks:mu

	pools pools // upstream connections of intercepted sandboxes (own lock)
}

// New validates cfg and returns a Proxy that is not yet listening.
func New(cfg Config) (*Proxy, error) {
	if cfg.Resolver == nil && cfg.DNSUpstream == "" {
		return nil, errors.New("egress: Config needs a Resolver or a DNSUpstream")
	}
	if cfg.DNSUpstream != "" {
		if _, _, err := net.SplitHostPort(cfg.DNSUpstream); err != nil {
			return nil, fmt.Errorf("egress: DNS upstream %q: %w", cfg.DNSUpstream, err)
		}
	}
	if cfg.Listen == "" {
		cfg.Listen = ":0"
	}
	if cfg.Ports == nil {
		cfg.Ports = []uint16{80, 443}
	}
	if cfg.PeekTimeout <= 0 {
		cfg.PeekTimeout = DefaultPeekTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxPeek <= 0 {
		cfg.MaxPeek = DefaultMaxPeek
	}
	if cfg.MaxScanBody <= 0 {
		cfg.MaxScanBody = DefaultMaxScanBody
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.BodyIdleTimeout <= 0 {
		cfg.BodyIdleTimeout = DefaultBodyIdleTimeout
	}
	if cfg.MaxAuditBody <= 0 {
		cfg.MaxAuditBody = DefaultMaxAuditBody
	}
	roots, err := upstreamRoots(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	p := &Proxy{
		cfg:       cfg,
		resolver:  cfg.Resolver,
		dial:      cfg.Dial,
		origDst:   originalDst,
		roots:     roots,
		listeners: map[net.Listener]struct{}{},
		sessions:  map[*session]struct{}{},
	}
	if p.dial == nil {
		p.dial = (&net.Dialer{}).DialContext
	}
	if p.resolver == nil {
		p.resolver = &DNSResolver{Upstream: cfg.DNSUpstream, Dial: p.dial}
	}
	p.blocked = cfg.Blocked
	if p.blocked == nil {
		p.blocked = DefaultBlocked()
	}
	if cfg.SandboxCIDR.IsValid() {
		p.blocked = append(slices.Clone(p.blocked), cfg.SandboxCIDR.Masked())
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// Start listens on Config.Listen and serves in the background until Close.
// It returns the bound address (its port is network.Config.ProxyPort).
func (p *Proxy) Start() (netip.AddrPort, error) {
	ln, err := net.Listen("tcp", p.cfg.Listen)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("egress: listen %s: %w", p.cfg.Listen, err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	if err := p.track(ln); err != nil {
		ln.Close()
		return netip.AddrPort{}, err
	}
	p.wg.Go(func() {
		if err := p.serve(ln); err != nil && !errors.Is(err, ErrClosed) {
			p.cfg.Logf("egress: serve %s: %v", ap, err)
		}
	})
	return ap, nil
}

// Serve accepts connections on ln (which it closes) until Close, and
// returns ErrClosed then. Use it to listen somewhere Start cannot, e.g. in
// another network namespace.
func (p *Proxy) Serve(ln net.Listener) error {
	if err := p.track(ln); err != nil {
		ln.Close()
		return err
	}
	p.wg.Add(1)
	defer p.wg.Done()
	return p.serve(ln)
}

func (p *Proxy) track(ln net.Listener) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	p.listeners[ln] = struct{}{}
	return nil
}

func (p *Proxy) serve(ln net.Listener) error {
	defer func() {
		p.mu.Lock()
		delete(p.listeners, ln)
		p.mu.Unlock()
		ln.Close()
	}()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil {
				return ErrClosed
			}
			if isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				p.cfg.Logf("egress: accept: %v; retrying in %v", err, backoff)
				select {
				case <-time.After(backoff):
				case <-p.ctx.Done():
					return ErrClosed
				}
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		backoff = 0
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			continue
		}
		s := &session{client: tc}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			s.kill("proxy closed")
			return ErrClosed
		}
		p.sessions[s] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go func() {
			defer p.wg.Done()
			defer func() {
				p.mu.Lock()
				delete(p.sessions, s)
				p.mu.Unlock()
			}()
			p.handle(s)
		}()
	}
}

// isTemporary reports accept errors worth retrying (EMFILE, ENFILE,
// ECONNABORTED...), as net/http's Server does.
func isTemporary(err error) bool {
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

// Close stops accepting, resets every open connection and waits for their
// handlers (and events) to finish.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.cancel()
	for ln := range p.listeners {
		ln.Close()
	}
	var open []*session
	for s := range p.sessions {
		open = append(open, s)
	}
	p.mu.Unlock()
	for _, s := range open {
		s.kill("proxy closed")
	}
	p.wg.Wait()
	p.closePools()
	return nil
}

// session is one sandbox connection and, once dialed, its upstream.
type session struct {
	client  *net.TCPConn
	host    string         // set before admission, then read-only
	dst     netip.AddrPort // likewise
	entry   *entry         // set by registry.admit under the registry lock
	counted *entry         // set by registry.open under the registry lock

	mu       sync.Mutex
	cancel   context.CancelFunc // +checklocks:mu; the handler's context
	upstream []net.Conn         // +checklocks:mu; the Interceptor may dial several
	upAddr   netip.AddrPort     // +checklocks:mu
	dead     bool               // +checklocks:mu
	cut      string             // +checklocks:mu why kill was called
}

// kill resets the client and closes the upstream; the first reason sticks.
func (s *session) kill(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return
	}
	s.dead, s.cut = true, reason
	if s.cancel != nil {
		s.cancel()
	}
	reset(s.client)
	for _, u := range s.upstream {
		u.Close()
	}
}

func (s *session) killedFor() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cut
}

// finish closes the client normally (FIN: an RST would discard data the
// sandbox has not read yet) and the upstream.
func (s *session) finish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return
	}
	s.dead = true
	s.client.Close()
	for _, u := range s.upstream {
		u.Close()
	}
}

// setUpstream attaches c, or closes it if the session was killed meanwhile.
func (s *session) setUpstream(c net.Conn, addr netip.AddrPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		c.Close()
		return false
	}
	s.upstream, s.upAddr = append(s.upstream, c), addr
	return true
}

// noteUpstream records the address of a pooled upstream connection the
// session's requests used (for its Event).
func (s *session) noteUpstream(addr netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.upAddr = addr
}

func (s *session) upstreamAddr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.upAddr
}

// reset closes c with an RST rather than a FIN.
func reset(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

func (p *Proxy) emit(ev Event) {
	ev.Duration = time.Since(ev.Time)
	if p.cfg.Events != nil {
		p.cfg.Events(ev)
	}
}

// handle runs one connection from accept to its event.
func (p *Proxy) handle(s *session) {
	c := s.client
	ev := Event{Time: time.Now(), Decision: DecisionBlock}
	if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ev.Src = unmap(ra.AddrPort())
	}
	src := ev.Src.Addr().Unmap()
	block := func(reason string) {
		s.kill(reason)
		ev.Reason = reason
		p.emit(ev)
	}
	id, known, fits := p.reg.open(src, s, p.cfg.MaxConns)
	ev.SandboxID = id
	if !known {
		block("unknown source")
		return
	}
	defer p.reg.release(s)
	if !fits {
		block("too many connections")
		return
	}
	dst, err := p.origDst(c)
	if err != nil {
		p.cfg.Logf("egress: %s: %v", ev.Src, err)
		block("no original destination")
		return
	}
	ev.Dst = dst
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok && unmap(la.AddrPort()) == dst {
		block("not redirected")
		return
	}
	if !slices.Contains(p.cfg.Ports, dst.Port()) {
		block("port not served")
		return
	}

	peeked, proto, host, err := p.sniff(c)
	ev.Proto, ev.Host = proto, host
	if err != nil && !errors.Is(err, ErrNoName) {
		if proto == ProtoHTTP && p.refuseHTTP(s, src, ev, peeked, err) {
			return
		}
		block(peekReason(err))
		return
	}
	s.host, s.dst = host, dst
	id, pol, v, cs, known := p.reg.admit(src, s)
	ev.SandboxID, ev.Rule, ev.Reason = id, v.Rule, v.Reason
	if !known || !v.Allow {
		block(ev.Reason)
		return
	}

	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	s.mu.Lock()
	s.cancel = cancel
	dead := s.dead
	s.mu.Unlock()
	if dead {
		cancel()
	}
	dialUp := func(ctx context.Context) (net.Conn, netip.AddrPort, error) {
		var up net.Conn
		var addr netip.AddrPort
		var err error
		if v.DialOriginal {
			up, addr, err = p.dialAddr(ctx, pol, dst)
		} else {
			up, addr, err = p.dialUpstream(ctx, pol, host, dst.Port())
		}
		if err != nil {
			return nil, addr, err
		}
		if !s.setUpstream(up, addr) {
			return nil, addr, errors.New("connection cut: " + s.killedFor())
		}
		return up, addr, nil
	}

	if cs != nil && cs.intercepts() {
		client := &prefixConn{TCPConn: c, prefix: peeked}
		ic := &intercepted{
			p: p, s: s, cs: cs, id: id, proto: proto, src: ev.Src, dst: dst, host: host, client: client,
		}
		reason := ic.serve(ctx)
		ev.Intercepted = true
		ev.Upstream = s.upstreamAddr()
		ev.BytesUp, ev.BytesDown = client.read.Load(), client.written.Load()
		switch {
		case reason.block:
			ev.Decision, ev.Reason = DecisionError, reason.text
			s.kill(reason.text)
		default:
			ev.Decision = DecisionAllow
			if reason.text != "" {
				ev.Reason = v.Reason + "; " + reason.text
			}
			if cut := s.killedFor(); cut != "" {
				ev.Reason = v.Reason + "; cut: " + cut
			}
			s.finish()
		}
		p.emit(ev)
		return
	}

	if ic := p.cfg.Interceptor; ic != nil {
		client := &prefixConn{TCPConn: c, prefix: peeked}
		meta := &Conn{
			SandboxID: id, Proto: proto, Src: ev.Src, Dst: dst, Host: host, Rule: v.Rule, Policy: pol,
			Client: client,
			Dial: func(ctx context.Context) (net.Conn, error) {
				up, _, err := dialUp(ctx)
				return up, err
			},
		}
		handled := ic.Intercept(ctx, meta)
		if handled {
			ev.Decision, ev.Intercepted = DecisionAllow, true
			ev.Upstream = s.upstreamAddr()
			ev.BytesUp, ev.BytesDown = client.read.Load(), client.written.Load()
			s.finish()
			p.emit(ev)
			return
		}
	}

	up, addr, err := dialUp(ctx)
	ev.Upstream = addr
	if err != nil {
		p.cfg.Logf("egress: sandbox %s %s -> %s (%s): %v", id, ev.Src, dst, host, err)
		if errors.Is(err, ErrNoUpstream) {
			ev.Rule = ""
			block("no permitted address for the name")
			return
		}
		reason := "upstream unreachable"
		if errors.Is(err, errResolve) {
			reason = "name resolution failed"
		}
		s.kill(reason)
		ev.Decision, ev.Reason = DecisionError, reason
		p.emit(ev)
		return
	}
	ev.Decision = DecisionAllow
	ev.BytesUp, ev.BytesDown, err = p.splice(c, up, peeked)
	if cut := s.killedFor(); cut != "" {
		ev.Reason = v.Reason + "; cut: " + cut
	} else if errors.Is(err, errIdle) {
		ev.Reason = v.Reason + "; closed: idle timeout"
	}
	s.finish()
	p.emit(ev)
}

// isSelf reports whether c connects this host to itself.
func isSelf(c net.Conn) bool {
	la, lok := c.LocalAddr().(*net.TCPAddr)
	ra, rok := c.RemoteAddr().(*net.TCPAddr)
	return lok && rok && la.AddrPort().Addr().Unmap() == ra.AddrPort().Addr().Unmap()
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func peekReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, ErrNoName):
		return "no server name"
	case errors.Is(err, errTooLarge):
		return "ClientHello or request header too large"
	case errors.Is(err, ErrMalformed):
		return "malformed ClientHello or request"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout waiting for ClientHello or request"
	case errors.Is(err, io.EOF), errors.Is(err, ErrIncomplete):
		return "closed before ClientHello or request"
	}
	return "read error before ClientHello or request"
}

var (
	errTooLarge = errors.New("peek limit exceeded")
	errResolve  = errors.New("resolve")
)

// sniff reads until the SNI or Host is known, within MaxPeek bytes and
// PeekTimeout. It returns the bytes read, for replay.
func (p *Proxy) sniff(c *net.TCPConn) (buf []byte, proto, host string, err error) {
	if err := c.SetReadDeadline(time.Now().Add(p.cfg.PeekTimeout)); err != nil {
		return nil, "", "", err
	}
	defer c.SetReadDeadline(time.Time{})
	buf = make([]byte, 0, min(4096, p.cfg.MaxPeek))
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= p.cfg.MaxPeek {
				return buf, proto, "", errTooLarge
			}
			buf = slices.Grow(buf, min(len(buf), p.cfg.MaxPeek-len(buf)))
			buf = buf[:len(buf):min(cap(buf), p.cfg.MaxPeek)]
		}
		n, rerr := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > 0 {
			if buf[0] == recordHandshake {
				proto = ProtoTLS
				host, err = ParseSNI(buf)
			} else {
				proto = ProtoHTTP
				host, err = ParseHost(buf)
			}
			if !errors.Is(err, ErrIncomplete) {
				return buf, proto, host, err
			}
		}
		if rerr != nil {
			return buf, proto, "", rerr
		}
	}
}

// dialUpstream resolves host, filters the addresses and connects to the
// first permitted one that answers.
func (p *Proxy) dialUpstream(ctx context.Context, pol network.Parsed, host string, port uint16) (net.Conn, netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	addrs, err := p.resolver.Resolve(ctx, host)
	if err != nil {
		return nil, netip.AddrPort{}, fmt.Errorf("%w: %w", errResolve, err)
	}
	good, dropped := permitted(addrs, pol, p.blocked)
	if len(good) == 0 {
		return nil, netip.AddrPort{}, fmt.Errorf("%w: %s resolves only to refused addresses %v", ErrNoUpstream, host, dropped)
	}
	var errs []error
	local := 0
	for _, a := range good {
		ap := netip.AddrPortFrom(a, port)
		c, err := p.dial(ctx, "tcp", ap.String())
		if err == nil && !p.cfg.DialLocal && isSelf(c) {
			// One of this host's own addresses (a connection to a local
			// address takes it as its source): that would reach the
			// server's own services.
			c.Close()
			local++
			err = fmt.Errorf("%s is an address of this host", a)
		}
		if err == nil {
			return c, ap, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if local == len(good) {
		return nil, netip.AddrPort{}, fmt.Errorf("%w: %s resolves only to this host's addresses %v", ErrNoUpstream, host, good)
	}
	return nil, netip.AddrPortFrom(good[0], port), fmt.Errorf("dial %s: %w", host, errors.Join(errs...))
}

// dialAddr connects to the original destination dst, which the policy
// allows at L3, after the same address checks as dialUpstream.
func (p *Proxy) dialAddr(ctx context.Context, pol network.Parsed, dst netip.AddrPort) (net.Conn, netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	good, _ := permitted([]netip.Addr{dst.Addr()}, pol, p.blocked)
	if len(good) == 0 {
		return nil, netip.AddrPort{}, fmt.Errorf("%w: %s is a refused address", ErrNoUpstream, dst.Addr())
	}
	c, err := p.dial(ctx, "tcp", dst.String())
	if err != nil {
		return nil, dst, fmt.Errorf("dial %s: %w", dst, err)
	}
	if !p.cfg.DialLocal && isSelf(c) {
		c.Close()
		return nil, netip.AddrPort{}, fmt.Errorf("%w: %s is an address of this host", ErrNoUpstream, dst.Addr())
	}
	return c, dst, nil
}
