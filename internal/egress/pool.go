package egress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Upstream connections of intercepted sandboxes are pooled per (sandbox,
// scheme, server name, original destination): a sandbox that opens a new
// connection per request (urllib) reuses a kept-alive upstream connection
// (HTTP/2 where the upstream speaks it, so several sandbox connections
// share one), and a new upstream handshake resumes a TLS session. The
// pools of a sandbox are closed when its network policy or content policy
// changes and when it is unregistered; every request is still decided on
// the current policy before it is sent, and every new upstream connection
// is dialled through the same checks as the splice path.

// verifiedFor is how long a successful upstream certificate verification
// lets a new sandbox connection skip the pre-dial (the check that fails
// the sandbox's own handshake when the upstream certificate is bad): within
// it, a bad certificate on a new upstream dial fails the request (502).
const verifiedFor = time.Minute

type poolKey struct {
	guest netip.Addr
	tls   bool
	name  string // TLS server name; empty for plain HTTP (the request host is dialled)
	dst   netip.AddrPort
}

// upstreamPool is one key's transport.
type upstreamPool struct {
	p        *Proxy
	key      poolKey
	tr       *http.Transport
	sessions tls.ClientSessionCache
	verified atomic.Int64 // unix nanoseconds of the last verified handshake

	mu    sync.Mutex
	spare net.Conn // +checklocks:mu; a verified connection from the pre-dial, used first
}

type pools struct {
	mu sync.Mutex
	m  map[poolKey]*upstreamPool // +checklocks:mu
}

// pool returns key's pool, creating it.
func (p *Proxy) pool(key poolKey) *upstreamPool {
	p.pools.mu.Lock()
	defer p.pools.mu.Unlock()
	if up, ok := p.pools.m[key]; ok {
		return up
	}
	if p.pools.m == nil {
		p.pools.m = map[poolKey]*upstreamPool{}
	}
	up := &upstreamPool{p: p, key: key, sessions: tls.NewLRUClientSessionCache(16)}
	up.tr = &http.Transport{
		Proxy:                  nil,
		DialContext:            up.dialPlain,
		DialTLSContext:         up.dialTLS,
		ForceAttemptHTTP2:      true,
		DisableCompression:     true,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
	}
	p.pools.m[key] = up
	return up
}

// dropPools closes the pools of the sandbox at guest (idle connections now,
// busy ones when their exchange ends).
func (p *Proxy) dropPools(guest netip.Addr) {
	p.pools.mu.Lock()
	var drop []*upstreamPool
	for k, up := range p.pools.m {
		if k.guest == guest {
			drop = append(drop, up)
			delete(p.pools.m, k)
		}
	}
	p.pools.mu.Unlock()
	for _, up := range drop {
		up.close()
	}
}

func (p *Proxy) closePools() {
	p.pools.mu.Lock()
	m := p.pools.m
	p.pools.m = nil
	p.pools.mu.Unlock()
	for _, up := range m {
		up.close()
	}
}

func (up *upstreamPool) close() {
	up.mu.Lock()
	if up.spare != nil {
		up.spare.Close()
		up.spare = nil
	}
	up.mu.Unlock()
	up.tr.CloseIdleConnections()
}

// recentlyVerified reports a verified upstream handshake within verifiedFor.
func (up *upstreamPool) recentlyVerified() bool {
	return time.Since(time.Unix(0, up.verified.Load())) < verifiedFor
}

// putSpare offers a verified connection for the next dial.
func (up *upstreamPool) putSpare(c net.Conn) {
	up.mu.Lock()
	old := up.spare
	up.spare = c
	up.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

// dial decides host on the sandbox's current policy and connects as the
// splice path does.
func (up *upstreamPool) dial(ctx context.Context, host string) (net.Conn, error) {
	p := up.p
	_, pol, _, ok := p.reg.current(up.key.guest)
	if !ok {
		return nil, errors.New("sandbox unregistered")
	}
	v := DecideConn(pol, up.key.dst.Addr(), host)
	if !v.Allow {
		return nil, fmt.Errorf("%s: %s", host, v.Reason)
	}
	var c net.Conn
	var err error
	if v.DialOriginal {
		c, _, err = p.dialAddr(ctx, pol, up.key.dst)
	} else {
		c, _, err = p.dialUpstream(ctx, pol, host, up.key.dst.Port())
	}
	return c, err
}

func (up *upstreamPool) dialPlain(ctx context.Context, _, addr string) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(addr)
	return up.dial(ctx, host)
}

func (up *upstreamPool) dialTLS(ctx context.Context, _, _ string) (net.Conn, error) {
	up.mu.Lock()
	spare := up.spare
	up.spare = nil
	up.mu.Unlock()
	if spare != nil {
		return spare, nil
	}
	raw, err := up.dial(ctx, up.key.name)
	if err != nil {
		return nil, err
	}
	return up.handshake(ctx, raw)
}

// handshake runs the client TLS handshake to the upstream, verifying its
// certificate against the system roots and the configured upstream CAs,
// resuming a session of this pool where it can.
func (up *upstreamPool) handshake(ctx context.Context, raw net.Conn) (*tls.Conn, error) {
	p := up.p
	name := up.key.name
	conf := &tls.Config{
		ServerName:         name,
		NextProtos:         []string{"h2", "http/1.1"},
		MinVersion:         tls.VersionTLS12,
		ClientSessionCache: up.sessions,
		// Verification is done below against several pools (crypto/tls
		// takes one); InsecureSkipVerify only moves it to VerifyConnection.
		// A resumed session was verified when it was first established.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.DidResume && len(cs.PeerCertificates) > 0 && time.Now().Before(cs.PeerCertificates[0].NotAfter) {
				return nil
			}
			return verifyChain(p.roots, cs.PeerCertificates, name)
		},
	}
	c := tls.Client(raw, conf)
	hctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	if err := c.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, upstreamTLSError(name, err)
	}
	up.verified.Store(time.Now().UnixNano())
	return c, nil
}
