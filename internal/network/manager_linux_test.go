package network

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

const (
	dropWait = 1500 * time.Millisecond // how long a dropped connect is given
	testDNS  = 53
	testProx = 15001
)

func newTestManager(t testing.TB, n *testNet, poolSize int) *Manager {
	t.Helper()
	m, err := New(t.Context(), Config{
		Prefix:    testPrefix(t),
		PoolSize:  poolSize,
		DNSPort:   testDNS,
		ProxyPort: testProx,
		HostNetNS: n.hostPath,
		Logf:      t.Logf,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

func acquire(t testing.TB, m *Manager) *Slot {
	t.Helper()
	s, err := m.Acquire(t.Context())
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	t.Cleanup(func() {
		m.mu.Lock()
		_, held := m.inUse[s.Index]
		m.mu.Unlock()
		if held {
			if err := m.Release(context.Background(), s); err != nil {
				t.Errorf("Release: %v", err)
			}
		}
	})
	return s
}

func apply(t testing.TB, m *Manager, s *Slot, p Policy) {
	t.Helper()
	if err := m.Apply(t.Context(), s, p); err != nil {
		t.Fatalf("Apply(%+v): %v", p, err)
	}
}

func ap(a netip.Addr, port int) netip.AddrPort { return netip.AddrPortFrom(a, uint16(port)) }

// wantReach asserts TCP and UDP echo from the slot to dst work.
func wantReach(t *testing.T, s *Slot, dst netip.Addr) {
	t.Helper()
	if err := tcpEcho(t, s.NetNSPath, ap(dst, echoPort), 3*time.Second); err != nil {
		t.Errorf("TCP from slot to %s: %v, want echo", dst, err)
	}
	if err := udpEcho(t, s.NetNSPath, ap(dst, echoPort), 3*time.Second); err != nil {
		t.Errorf("UDP from slot to %s: %v, want echo", dst, err)
	}
}

// wantTCPDropped asserts a TCP connect from the slot times out.
func wantTCPDropped(t *testing.T, s *Slot, dst netip.AddrPort) {
	t.Helper()
	c, err := dialTCP(t, s.NetNSPath, dst, dropWait)
	if err == nil {
		c.Close()
		t.Errorf("TCP connect from slot to %s succeeded, want timeout", dst)
		return
	}
	if !isTimeout(err) {
		t.Errorf("TCP connect from slot to %s: %v, want a timeout (silent drop)", dst, err)
	}
}

func wantUDPDropped(t *testing.T, s *Slot, dst netip.AddrPort) {
	t.Helper()
	err := udpEcho(t, s.NetNSPath, dst, dropWait/2)
	if !isTimeout(err) {
		t.Errorf("UDP from slot to %s: %v, want no answer (timeout)", dst, err)
	}
}

func TestSmoke(t *testing.T) {
	n := newTestNet(t)
	m := newTestManager(t, n, 1)
	s := acquire(t, m)
	apply(t, m, s, Policy{})
	wantReach(t, s, uplinkA)
}
