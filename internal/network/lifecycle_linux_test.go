package network

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

// leftovers lists what a Manager with prefix still has in the test-host
// namespace and under /var/run/netns.
func leftovers(t testing.TB, n *testNet, prefix string) (nsNames, links []string, table bool) {
	t.Helper()
	entries, err := os.ReadDir(netnsDir)
	must(t, err)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			nsNames = append(nsNames, e.Name())
		}
	}
	h, err := netlink.NewHandleAt(n.host)
	must(t, err)
	defer h.Close()
	ls, err := h.LinkList()
	must(t, err)
	for _, l := range ls {
		if strings.HasPrefix(l.Attrs().Name, prefix) {
			links = append(links, l.Attrs().Name)
		}
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(n.host)))
	must(t, err)
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	must(t, err)
	for _, tb := range tables {
		table = table || tb.Name == prefix
	}
	return nsNames, links, table
}

func chainNames(t testing.TB, n *testNet, prefix string) []string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(n.host)))
	must(t, err)
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	must(t, err)
	var out []string
	for _, ch := range chains {
		if ch.Table.Name == prefix {
			out = append(out, ch.Name)
		}
	}
	return out
}

func TestReleaseAndCloseLeaveNothing(t *testing.T) {
	n := newTestNet(t)
	prefix := testPrefix(t)
	m, err := New(t.Context(), Config{Prefix: prefix, PoolSize: 2, HostNetNS: n.hostPath, Logf: t.Logf})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			m.Close(context.Background())
		}
	})
	s, err := m.Acquire(t.Context())
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if err := m.Apply(t.Context(), s, Policy{DenyOut: []string{"10.0.0.0/8"}}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := m.Release(t.Context(), s); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if _, err := os.Stat(s.NetNSPath); !os.IsNotExist(err) {
		t.Errorf("after Release, %s: %v, want it gone", s.NetNSPath, err)
	}
	_, links, _ := leftovers(t, n, prefix)
	for _, l := range links {
		if l == s.HostIf {
			t.Errorf("after Release, link %s still exists", l)
		}
	}
	for _, c := range chainNames(t, n, prefix) {
		if c == slotChain(s.Index) || strings.HasPrefix(c, slotChain(s.Index)+"-") {
			t.Errorf("after Release, chain %s still exists", c)
		}
	}
	if err := m.Release(t.Context(), s); err == nil {
		t.Errorf("second Release succeeded, want ErrUnknownSlot")
	}
	if err := m.Apply(t.Context(), s, Policy{}); err == nil {
		t.Errorf("Apply after Release succeeded, want ErrUnknownSlot")
	}

	// The pool refills in the background; hold one slot through Close.
	waitFor(t, func() bool { return m.readyCount() == 2 })
	if _, err := m.Acquire(t.Context()); err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if err := m.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true
	if ns, links, table := leftovers(t, n, prefix); len(ns)+len(links) > 0 || table {
		t.Errorf("after Close: netns %v, links %v, table %v; want none", ns, links, table)
	}
	if _, err := m.Acquire(t.Context()); err != ErrClosed {
		t.Errorf("Acquire after Close: %v, want ErrClosed", err)
	}
}

func TestNewRemovesLeftovers(t *testing.T) {
	n := newTestNet(t)
	prefix := testPrefix(t)
	cfg := Config{Prefix: prefix, PoolSize: 2, HostNetNS: n.hostPath, Logf: t.Logf}
	crashed, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := crashed.Acquire(t.Context()); err != nil { // slot 0 in use, refill makes 2 and 3
		t.Fatalf("Acquire: %v", err)
	}
	waitFor(t, func() bool { return crashed.readyCount() == 2 })
	// Crash: stop the background work without deleting anything.
	crashed.stop()
	crashed.workers.Wait()
	ns, links, table := leftovers(t, n, prefix)
	if len(ns) != 3 || len(links) != 3 || !table {
		t.Fatalf("before restart: netns %v, links %v, table %v; want 3, 3, true", ns, links, table)
	}

	cfg.PoolSize = -1
	m, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New after crash: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	ns, links, table = leftovers(t, n, prefix)
	if len(ns)+len(links) > 0 || !table {
		t.Errorf("after restart: netns %v, links %v, table %v; want none, none, true", ns, links, table)
	}
	for _, c := range chainNames(t, n, prefix) {
		if strings.HasPrefix(c, "slot-") {
			t.Errorf("after restart, chain %s survived", c)
		}
	}
	// And the fresh Manager works.
	s, err := m.Acquire(t.Context())
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if s.Index != 0 {
		t.Errorf("first slot after restart has index %d, want 0", s.Index)
	}
}

func TestSlotLimits(t *testing.T) {
	n := newTestNet(t)
	m, err := New(t.Context(), Config{
		CIDR: mustPrefix("10.77.0.0/29"), Prefix: testPrefix(t), PoolSize: -1, HostNetNS: n.hostPath,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	s0, err := m.Acquire(t.Context())
	must(t, err)
	s1, err := m.Acquire(t.Context())
	must(t, err)
	if s0.GuestIP.String() != "10.77.0.2" || s1.HostIP.String() != "10.77.0.5" || s1.GuestIP.String() != "10.77.0.6" {
		t.Errorf("slots %+v %+v: want 10.77.0.1/.2 and 10.77.0.5/.6", s0, s1)
	}
	if _, err := m.Acquire(t.Context()); err != ErrNoSlots {
		t.Errorf("third Acquire in a /29: %v, want ErrNoSlots", err)
	}
	must(t, m.Release(t.Context(), s0))
	s2, err := m.Acquire(t.Context())
	must(t, err)
	if s2.Index != 0 {
		t.Errorf("Acquire after Release got index %d, want 0 reused", s2.Index)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkAcquire compares taking a slot from a warm pool with creating
// one on demand (PoolSize < 0). Each iteration acquires and releases one
// slot; with the pool, the timer stops while the pool refills.
func BenchmarkAcquire(b *testing.B) {
	for _, bc := range []struct {
		name string
		pool int
	}{{"warm-pool", 1}, {"fresh", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			n := newTestNet(b)
			m, err := New(b.Context(), Config{Prefix: testPrefix(b), PoolSize: bc.pool, HostNetNS: n.hostPath})
			if err != nil {
				b.Fatalf("New: %v", err)
			}
			b.Cleanup(func() { m.Close(context.Background()) })
			var total time.Duration
			for b.Loop() {
				if bc.pool > 0 {
					b.StopTimer()
					waitFor(b, func() bool { return m.readyCount() == bc.pool })
					b.StartTimer()
				}
				start := time.Now()
				s, err := m.Acquire(b.Context())
				if err != nil {
					b.Fatalf("Acquire: %v", err)
				}
				total += time.Since(start)
				b.StopTimer()
				if err := m.Release(b.Context(), s); err != nil {
					b.Fatalf("Release: %v", err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/acquire")
		})
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// BenchmarkApply measures replacing a slot's policy (one nftables batch
// plus the conntrack sweep), alternating between two policies.
func BenchmarkApply(b *testing.B) {
	n := newTestNet(b)
	m, err := New(b.Context(), Config{Prefix: testPrefix(b), PoolSize: -1, HostNetNS: n.hostPath})
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	b.Cleanup(func() { m.Close(context.Background()) })
	s, err := m.Acquire(b.Context())
	if err != nil {
		b.Fatalf("Acquire: %v", err)
	}
	policies := []Policy{
		{DenyOut: []string{"*"}, AllowOut: []string{"198.51.100.0/24", "203.0.113.7", "example.com"}},
		{DenyOut: []string{"10.0.0.0/8", "192.168.0.0/16"}},
	}
	i := 0
	for b.Loop() {
		if err := m.Apply(b.Context(), s, policies[i%2]); err != nil {
			b.Fatalf("Apply: %v", err)
		}
		i++
	}
}

// TestConcurrentSlots acquires, applies and releases from several
// goroutines while the pool refills, then checks nothing is left.
func TestConcurrentSlots(t *testing.T) {
	n := newTestNet(t)
	prefix := testPrefix(t)
	m, err := New(t.Context(), Config{Prefix: prefix, PoolSize: 2, HostNetNS: n.hostPath, Logf: t.Logf})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 4 {
				s, err := m.Acquire(t.Context())
				if err != nil {
					errs <- err
					return
				}
				p := Policy{DenyOut: []string{"*"}, AllowOut: []string{fmt.Sprintf("198.51.%d.%d", g, i)}}
				if err := m.Apply(t.Context(), s, p); err != nil {
					errs <- err
				}
				if err := m.Apply(t.Context(), s, Policy{}); err != nil {
					errs <- err
				}
				if err := m.Release(t.Context(), s); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := chainNames(t, n, prefix); len(got) > 7+3*2 {
		t.Errorf("chains after all releases: %v, want the 7 base chains and at most the pool's", got)
	}
	if err := m.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if ns, links, table := leftovers(t, n, prefix); len(ns)+len(links) > 0 || table {
		t.Errorf("after Close: netns %v, links %v, table %v; want none", ns, links, table)
	}
}
