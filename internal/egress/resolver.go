package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Resolver resolves a host name to addresses for the proxy's upstream dial.
// Implementations must be safe for concurrent use.
type Resolver interface {
	Resolve(ctx context.Context, host string) ([]netip.Addr, error)
}

// ErrNotFound is returned by DNSResolver when a name has no A or AAAA record.
var ErrNotFound = errors.New("no addresses for name")

// DialFunc dials a network address, as net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// DNSResolver asks one upstream DNS server (the server's --dns-upstream)
// for A and AAAA records, over UDP with a TCP retry on truncation, follows
// CNAME chains inside the answer, and caches answers (and NXDOMAIN) for
// their TTL, at most MaxTTL. IPv4 addresses come first. The zero value
// needs only Upstream. Safe for concurrent use.
type DNSResolver struct {
	Upstream string        // host:port of the upstream server, e.g. "1.1.1.1:53"
	Dial     DialFunc      // nil means a net.Dialer
	Timeout  time.Duration // per query; zero means 5s
	MaxTTL   time.Duration // cache cap; zero means 60s, negative disables the cache

	mu    sync.Mutex
	cache map[string]cacheEntry // +checklocks:mu
}

type cacheEntry struct {
	addrs   []netip.Addr
	err     error
	expires time.Time
}

const maxCacheEntries = 4096

var _ Resolver = (*DNSResolver)(nil)

// Resolve implements Resolver.
func (r *DNSResolver) Resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if _, ok := canonicalHost(name); !ok || name == "" {
		return nil, fmt.Errorf("resolve %q: invalid name", host)
	}
	if a, err := netip.ParseAddr(name); err == nil {
		return []netip.Addr{a}, nil
	}
	now := time.Now()
	if e, ok := r.cached(name, now); ok {
		return e.addrs, e.err
	}
	type result struct {
		addrs []netip.Addr
		ttl   uint32
		err   error
	}
	var res [2]result
	var wg sync.WaitGroup
	for i, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		wg.Go(func() {
			res[i].addrs, res[i].ttl, res[i].err = r.query(ctx, name, qt)
		})
	}
	wg.Wait()
	var addrs []netip.Addr
	ttl := uint32(1 << 31)
	nx := 0
	for _, x := range res {
		switch {
		case errors.Is(x.err, ErrNotFound):
			nx++
			ttl = min(ttl, x.ttl)
		case x.err != nil:
			return nil, fmt.Errorf("resolve %s: %w", name, x.err)
		default:
			addrs = append(addrs, x.addrs...)
			if len(x.addrs) > 0 {
				ttl = min(ttl, x.ttl)
			}
		}
	}
	var err error
	if len(addrs) == 0 {
		err = fmt.Errorf("resolve %s: %w", name, ErrNotFound)
	}
	r.store(name, cacheEntry{addrs: addrs, err: err}, now, time.Duration(ttl)*time.Second)
	return addrs, err
}

func (r *DNSResolver) cached(name string, now time.Time) (cacheEntry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[name]
	if !ok || now.After(e.expires) {
		return cacheEntry{}, false
	}
	return e, true
}

func (r *DNSResolver) store(name string, e cacheEntry, now time.Time, ttl time.Duration) {
	maxTTL := r.MaxTTL
	if maxTTL == 0 {
		maxTTL = 60 * time.Second
	}
	if maxTTL < 0 || ttl <= 0 {
		return
	}
	e.expires = now.Add(min(ttl, maxTTL))
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cache == nil {
		r.cache = make(map[string]cacheEntry)
	}
	if len(r.cache) >= maxCacheEntries {
		for k, v := range r.cache {
			if now.After(v.expires) || len(r.cache) >= maxCacheEntries {
				delete(r.cache, k)
			}
		}
	}
	r.cache[name] = e
}

// query asks for one type and returns the addresses of name (following
// CNAMEs in the answer) and the smallest TTL involved. NXDOMAIN and
// NOERROR/NODATA both give ErrNotFound, with the SOA minimum as TTL.
func (r *DNSResolver) query(ctx context.Context, name string, qtype uint16) ([]netip.Addr, uint32, error) {
	if r.Upstream == "" {
		return nil, 0, errors.New("no upstream DNS server configured")
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	resp, err := r.exchange(ctx, m, "udp")
	if err == nil && resp.Truncated {
		resp, err = r.exchange(ctx, m, "tcp")
	}
	if err != nil {
		return nil, 0, err
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, m.Question[0].Name) || resp.Question[0].Qtype != qtype {
		return nil, 0, errors.New("DNS answer for another question")
	}
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		return nil, 0, fmt.Errorf("DNS %s for %s", dns.RcodeToString[resp.Rcode], dns.TypeToString[qtype])
	}
	names := map[string]bool{strings.ToLower(dns.Fqdn(name)): true}
	ttl := uint32(1 << 31)
	for range 8 { // CNAME hops
		grew := false
		for _, rr := range resp.Answer {
			if c, ok := rr.(*dns.CNAME); ok && names[strings.ToLower(c.Hdr.Name)] && !names[strings.ToLower(c.Target)] {
				names[strings.ToLower(c.Target)] = true
				ttl = min(ttl, c.Hdr.Ttl)
				grew = true
			}
		}
		if !grew {
			break
		}
	}
	var addrs []netip.Addr
	for _, rr := range resp.Answer {
		var ip net.IP
		var hdr *dns.RR_Header
		switch v := rr.(type) {
		case *dns.A:
			ip, hdr = v.A, &v.Hdr
		case *dns.AAAA:
			ip, hdr = v.AAAA, &v.Hdr
		default:
			continue
		}
		if hdr.Rrtype != qtype || !names[strings.ToLower(hdr.Name)] {
			continue
		}
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		addrs = append(addrs, a.Unmap())
		ttl = min(ttl, hdr.Ttl)
	}
	if len(addrs) == 0 {
		neg := uint32(5)
		for _, rr := range resp.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				neg = min(soa.Minttl, soa.Hdr.Ttl)
			}
		}
		return nil, neg, ErrNotFound
	}
	return addrs, ttl, nil
}

func (r *DNSResolver) exchange(ctx context.Context, m *dns.Msg, network string) (*dns.Msg, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dial := r.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	c, err := dial(ctx, network, r.Upstream)
	if err != nil {
		return nil, fmt.Errorf("dial DNS upstream %s/%s: %w", network, r.Upstream, err)
	}
	defer c.Close()
	client := &dns.Client{Net: network, Timeout: timeout}
	resp, _, err := client.ExchangeWithConnContext(ctx, m, &dns.Conn{Conn: c})
	if err != nil {
		return nil, fmt.Errorf("DNS query %s/%s: %w", network, r.Upstream, err)
	}
	return resp, nil
}
