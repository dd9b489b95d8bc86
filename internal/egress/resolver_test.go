package egress

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeDNS is an authoritative test server on 127.0.0.1 (UDP and TCP, same port).
type fakeDNS struct {
	addr    string
	queries atomic.Int64
	tcp     atomic.Int64
}

func newFakeDNS(t *testing.T) *fakeDNS {
	t.Helper()
	f := &fakeDNS{}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = pc.LocalAddr().String()
	ln, err := net.Listen("tcp4", f.addr)
	if err != nil {
		pc.Close()
		t.Skipf("TCP port %s taken: %v", f.addr, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // runs after the Shutdowns below
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: f}, {Listener: ln, Handler: f}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Go(func() { srv.ActivateAndServe() })
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return f
}

func (f *fakeDNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	f.queries.Add(1)
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		f.tcp.Add(1)
	}
	m := new(dns.Msg)
	m.SetReply(req)
	q := req.Question[0]
	rr := func(s string) {
		r, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		m.Answer = append(m.Answer, r)
	}
	switch name := strings.ToLower(q.Name); {
	case name == "a.test.":
		if q.Qtype == dns.TypeA {
			rr("a.test. 30 IN A 198.51.100.10")
			rr("other.test. 30 IN A 203.0.113.66") // out-of-chain record: ignored
		} else if q.Qtype == dns.TypeAAAA {
			rr("a.test. 30 IN AAAA 2001:db8:1::10")
		}
	case name == "cname.test.":
		rr("cname.test. 30 IN CNAME b.test.")
		rr("b.test. 30 IN CNAME c.test.")
		if q.Qtype == dns.TypeA {
			rr("c.test. 30 IN A 198.51.100.20")
		}
	case name == "short.test.":
		if q.Qtype == dns.TypeA {
			rr("short.test. 1 IN A 198.51.100.30")
		}
	case name == "big.test.":
		if q.Qtype == dns.TypeA {
			if _, ok := w.RemoteAddr().(*net.UDPAddr); ok {
				m.Truncated = true
				break
			}
			rr("big.test. 30 IN A 198.51.100.40")
		}
	case name == "fail.test.":
		m.Rcode = dns.RcodeServerFailure
	default:
		m.Rcode = dns.RcodeNameError
		soa, _ := dns.NewRR("test. 30 IN SOA ns.test. h.test. 1 1 1 1 30")
		m.Ns = append(m.Ns, soa)
	}
	w.WriteMsg(m)
}

func TestDNSResolver(t *testing.T) {
	f := newFakeDNS(t)
	r := &DNSResolver{Upstream: f.addr, Timeout: 2 * time.Second}
	ctx := context.Background()
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	tests := []struct {
		host string
		want []netip.Addr
		err  error
	}{
		{"a.test", addrs("198.51.100.10", "2001:db8:1::10"), nil},
		{"A.Test.", addrs("198.51.100.10", "2001:db8:1::10"), nil},
		{"cname.test", addrs("198.51.100.20"), nil},
		{"big.test", addrs("198.51.100.40"), nil},
		{"nx.test", nil, ErrNotFound},
		{"203.0.113.5", addrs("203.0.113.5"), nil},
	}
	for _, tt := range tests {
		got, err := r.Resolve(ctx, tt.host)
		if !slices.Equal(got, tt.want) || !errors.Is(err, tt.err) {
			t.Errorf("Resolve(%q) = %v, %v; want %v, %v", tt.host, got, err, tt.want, tt.err)
		}
	}
	if f.tcp.Load() == 0 {
		t.Error("truncated answer was not retried over TCP")
	}
	if _, err := r.Resolve(ctx, "fail.test"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve(fail.test) = %v, want a SERVFAIL error", err)
	}
	if _, err := r.Resolve(ctx, "bad name.test"); err == nil {
		t.Error("Resolve(bad name) succeeded")
	}

	// Cached: answers and NXDOMAIN are not asked again within their TTL...
	n := f.queries.Load()
	r.Resolve(ctx, "a.test")
	r.Resolve(ctx, "nx.test")
	if got := f.queries.Load(); got != n {
		t.Errorf("cached names queried again: %d new queries", got-n)
	}
	// ...failures are, and a 1s TTL expires.
	r.Resolve(ctx, "fail.test")
	if f.queries.Load() == n {
		t.Error("SERVFAIL was cached")
	}
	r.Resolve(ctx, "short.test")
	n = f.queries.Load()
	time.Sleep(1100 * time.Millisecond)
	r.Resolve(ctx, "short.test")
	if f.queries.Load() == n {
		t.Error("expired TTL still served from cache")
	}

	// MaxTTL < 0 disables the cache.
	nc := &DNSResolver{Upstream: f.addr, MaxTTL: -1}
	nc.Resolve(ctx, "a.test")
	n = f.queries.Load()
	nc.Resolve(ctx, "a.test")
	if f.queries.Load() == n {
		t.Error("cache used with MaxTTL < 0")
	}
}

func TestDNSResolverUnreachable(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0") // never answers
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	r := &DNSResolver{Upstream: pc.LocalAddr().String(), Timeout: 200 * time.Millisecond}
	start := time.Now()
	if _, err := r.Resolve(context.Background(), "a.test"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve with a silent upstream = %v, want a timeout error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}
