package dns

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/declaw/declaw/internal/network"
	"github.com/declaw/declaw/internal/testenv"
)

func parse(t *testing.T, allow, deny []string) network.Parsed {
	t.Helper()
	p, err := network.ParsePolicy(network.Policy{AllowOut: allow, DenyOut: deny})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDecide(t *testing.T) {
	all := []string{"0.0.0.0/0"}
	for _, tc := range []struct {
		allow, deny []string
		name        string
		want        bool
	}{
		{nil, nil, "example.com", true},
		{nil, all, "example.com", false},
		{[]string{"api.example.com"}, nil, "api.example.com", true},
		{[]string{"api.example.com"}, nil, "API.Example.com.", true},
		{[]string{"api.example.com"}, nil, "evil.com", false},
		{[]string{"*.example.com"}, all, "a.b.example.com", true},
		{[]string{"*.example.com"}, all, "example.com", false},
		{[]string{"*.example.com"}, all, "c2VjcmV0.evil.com", false},
		{[]string{"198.51.100.0/24"}, all, "example.com", false},
		{all, []string{"bad.com"}, "bad.com", false},
		{all, nil, "anything.test", true},
		{[]string{"ok.bad.com"}, []string{"*.bad.com"}, "ok.bad.com", true},
		{nil, []string{"*.bad.com"}, "x.bad.com", false},
		{nil, []string{"*.bad.com"}, "good.com", true},
	} {
		got, rule := Decide(parse(t, tc.allow, tc.deny), tc.name)
		if got != tc.want {
			t.Errorf("Decide(allow=%v deny=%v, %q) = %v (%s), want %v", tc.allow, tc.deny, tc.name, got, rule, tc.want)
		}
	}
}

// TestServe runs a Server on a loopback address against a fake upstream,
// also on loopback (no packet leaves the host).
func TestServe(t *testing.T) {
	testenv.RequireRoot(t) // port 53
	up, upAddr := fakeUpstream(t)
	var (
		mu   sync.Mutex
		seen []Query
	)
	s := New(Config{Upstream: upAddr, OnQuery: func(q Query) { mu.Lock(); seen = append(seen, q); mu.Unlock() }})
	t.Cleanup(func() { s.Close() })
	addr := netip.MustParseAddr("127.0.0.153")
	if err := s.Serve(addr, "sbx-test", parse(t, []string{"*.allowed.test"}, nil)); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(addr, "sbx-other", network.Parsed{}); err == nil {
		t.Fatal("serving the same address twice succeeded")
	}
	ask := func(proto, name string) *mdns.Msg {
		t.Helper()
		c := &mdns.Client{Net: proto, Timeout: 2 * time.Second}
		m := new(mdns.Msg)
		m.SetQuestion(mdns.Fqdn(name), mdns.TypeA)
		r, _, err := c.Exchange(m, "127.0.0.153:53")
		if err != nil {
			t.Fatalf("%s query %s: %v", proto, name, err)
		}
		return r
	}
	r := ask("udp", "api.allowed.test")
	if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "198.51.100.10" {
		t.Fatalf("allowed name over UDP: %v", r)
	}
	if r := ask("tcp", "api.allowed.test"); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("allowed name over TCP: %v", r)
	}
	exfil := "c2VjcmV0LWRhdGEtZnJvbS1zYW5kYm94.evil.test"
	if r := ask("udp", exfil); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("denied name: rcode %s, want NXDOMAIN", mdns.RcodeToString[r.Rcode])
	}
	if n := up.count(exfil); n != 0 {
		t.Fatalf("denied name reached the upstream %d times", n)
	}
	// Runtime update: now everything is denied.
	if err := s.Update(addr, parse(t, nil, []string{"0.0.0.0/0"})); err != nil {
		t.Fatal(err)
	}
	if r := ask("udp", "api.allowed.test"); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("after update to deny-all: rcode %s", mdns.RcodeToString[r.Rcode])
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 4 || !seen[0].Allowed || seen[2].Allowed || seen[2].SandboxID != "sbx-test" || seen[2].Rcode != "NXDOMAIN" {
		t.Fatalf("audit hook saw %+v", seen)
	}
	if err := s.Stop(addr); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", "127.0.0.153:53"); err == nil {
		t.Fatal("listener still accepts after Stop")
	}
}

type upstream struct {
	mu    sync.Mutex
	names map[string]int
}

func (u *upstream) count(name string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.names[mdns.Fqdn(name)]
}

func fakeUpstream(t *testing.T) (*upstream, string) {
	u := &upstream{names: map[string]int{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		u.mu.Lock()
		u.names[r.Question[0].Name]++
		u.mu.Unlock()
		m := new(mdns.Msg)
		m.SetReply(r)
		rr, _ := mdns.NewRR(r.Question[0].Name + " 60 IN A 198.51.100.10")
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
	})
	us, ts := &mdns.Server{PacketConn: pc, Handler: h}, &mdns.Server{Listener: ln, Handler: h}
	go us.ActivateAndServe()
	go ts.ActivateAndServe()
	t.Cleanup(func() { us.Shutdown(); ts.Shutdown() })
	return u, pc.LocalAddr().String()
}
