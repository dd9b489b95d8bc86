package network_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/declaw/declaw/internal/network"
	"github.com/declaw/declaw/internal/network/flowlog"
	"github.com/declaw/declaw/internal/testenv"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// testLogGroup is the NFLOG group of these tests. NFLOG groups are per
// network namespace, so every test-host has its own.
const testLogGroup = 7

// Rate limit of the log rules (network's logRate and logBurst): the kernel
// bucket starts full with rate+burst packets' worth of tokens.
const (
	logRate  = 20
	logBurst = 50
)

// events collects a listener's events.
type events struct {
	mu   sync.Mutex
	all  []flowlog.Event
	more chan struct{}
}

func (e *events) add(ev flowlog.Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
	select {
	case e.more <- struct{}{}:
	default:
	}
}

func (e *events) matching(pred func(flowlog.Event) bool) []flowlog.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []flowlog.Event
	for _, ev := range e.all {
		if pred(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// wait returns the first event pred accepts, waiting up to timeout.
func (e *events) wait(t *testing.T, timeout time.Duration, what string, pred func(flowlog.Event) bool) flowlog.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if got := e.matching(pred); len(got) > 0 {
			return got[0]
		}
		select {
		case <-e.more:
		case <-deadline:
			t.Fatalf("no %s event within %v; got %v", what, timeout, e.matching(func(flowlog.Event) bool { return true }))
			return flowlog.Event{}
		}
	}
}

// auditEnv is a test-host with a Manager logging to testLogGroup and a
// flowlog listener on that group, both inside test-host.
type auditEnv struct {
	net    *testenv.Net
	m      *network.Manager
	events *events
}

func newAuditEnv(t testing.TB, poolSize int) *auditEnv {
	t.Helper()
	n := testenv.NewNet(t)
	m, err := network.New(t.Context(), network.Config{
		Prefix:    fmt.Sprintf("a%05x", rand.Uint32()&0xfffff), // netns names are global: unique
		PoolSize:  poolSize,
		HostNetNS: n.Host.Path,
		LogGroup:  testLogGroup,
		Logf:      t.Logf,
	})
	if err != nil {
		t.Fatalf("network.New: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("Manager.Close: %v", err)
		}
	})
	ev := &events{more: make(chan struct{}, 1)}
	l, err := flowlog.Listen(t.Context(), flowlog.Config{Group: testLogGroup, NetNS: n.Host.Path, OnEvent: ev.add, Logf: t.Logf})
	if err != nil {
		t.Fatalf("flowlog.Listen: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Listener.Close: %v", err)
		}
	})
	return &auditEnv{net: n, m: m, events: ev}
}

func (a *auditEnv) slot(t testing.TB) *network.Slot {
	t.Helper()
	s, err := a.m.Acquire(t.Context())
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	t.Cleanup(func() {
		if err := a.m.Release(context.Background(), s); err != nil && !errors.Is(err, network.ErrUnknownSlot) {
			t.Errorf("Release: %v", err)
		}
	})
	return s
}

func (a *auditEnv) apply(t testing.TB, s *network.Slot, p network.Policy) {
	t.Helper()
	if err := a.m.Apply(t.Context(), s, p); err != nil {
		t.Fatalf("Apply(%+v): %v", p, err)
	}
}

func slotNS(s *network.Slot) testenv.Netns { return testenv.Netns{Name: s.NetNS, Path: s.NetNSPath} }

// dial connects over TCP from inside the slot (IP literals only).
func dial(t testing.TB, s *network.Slot, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	return slotNS(s).DialContext(ctx, "tcp4", dst.String())
}

// wantTimeout asserts a TCP connect from the slot to dst is dropped
// silently: it times out rather than being refused.
func wantTimeout(t *testing.T, s *network.Slot, dst netip.AddrPort) {
	t.Helper()
	c, err := dial(t, s, dst, 1500*time.Millisecond)
	if err == nil {
		c.Close()
		t.Fatalf("TCP connect from slot %d to %s succeeded, want a timeout", s.Index, dst)
	}
	if !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		t.Fatalf("TCP connect from slot %d to %s: %v, want a timeout (silent drop)", s.Index, dst, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func match(s *network.Slot, d flowlog.Decision, reason string, proto flowlog.Proto, dst netip.AddrPort) func(flowlog.Event) bool {
	return func(ev flowlog.Event) bool {
		return ev.SlotIndex == s.Index && ev.Decision == d && ev.Reason == reason && ev.Proto == proto &&
			ev.Dst == dst && ev.Src.Addr() == s.GuestIP
	}
}

// TestAuditLog drives real traffic from a slot through a Manager with a
// log group and checks what the flowlog listener reports.
func TestAuditLog(t *testing.T) {
	a := newAuditEnv(t, 1)
	s := a.slot(t)
	echo := netip.AddrPortFrom(testenv.ServiceIP, testenv.PortTCPEcho)

	t.Run("deny-all", func(t *testing.T) {
		a.apply(t, s, network.Policy{DenyOut: []string{"0.0.0.0/0"}})
		wantTimeout(t, s, echo)
		ev := a.events.wait(t, 3*time.Second, "deny", match(s, flowlog.Block, "deny", flowlog.ProtoTCP, echo))
		if ev.Src.Port() == 0 || ev.Time.IsZero() {
			t.Errorf("block event %+v: want a source port and a time", ev)
		}
		if got := a.events.matching(func(ev flowlog.Event) bool { return ev.Decision == flowlog.Allow }); len(got) != 0 {
			t.Errorf("allow events under deny-all: %v", got)
		}
	})

	t.Run("allow", func(t *testing.T) {
		a.apply(t, s, network.Policy{DenyOut: []string{"*"}, AllowOut: []string{testenv.ServiceIP.String()}})
		c, err := dial(t, s, echo, 3*time.Second)
		if err != nil {
			t.Fatalf("TCP connect from slot to allowed %s: %v", echo, err)
		}
		defer c.Close()
		local := netip.MustParseAddrPort(c.LocalAddr().String())
		// Some traffic on the established connection: logged only once.
		c.SetDeadline(time.Now().Add(3 * time.Second))
		for range 5 {
			if _, err := c.Write([]byte("ping\n")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
				t.Fatalf("echo: %v", err)
			}
		}
		isConn := func(ev flowlog.Event) bool {
			return match(s, flowlog.Allow, "allow", flowlog.ProtoTCP, echo)(ev) && ev.Src == local
		}
		a.events.wait(t, 3*time.Second, "allow", isConn)
		time.Sleep(200 * time.Millisecond)
		if got := a.events.matching(isConn); len(got) != 1 {
			t.Errorf("allow events for one connection: %v, want exactly one (new connections only)", got)
		}
		// Still denied: the other uplink address.
		other := netip.AddrPortFrom(testenv.OtherIP, testenv.PortTCPEcho)
		wantTimeout(t, s, other)
		a.events.wait(t, 3*time.Second, "deny", match(s, flowlog.Block, "deny", flowlog.ProtoTCP, other))
	})

	t.Run("metadata", func(t *testing.T) {
		a.apply(t, s, network.Policy{}) // allow all: the metadata address stays blocked
		meta := netip.AddrPortFrom(testenv.MetadataIP, testenv.PortHTTP)
		wantTimeout(t, s, meta)
		a.events.wait(t, 3*time.Second, "metadata", match(s, flowlog.Block, "meta", flowlog.ProtoTCP, meta))
		if got := a.events.matching(func(ev flowlog.Event) bool { return ev.Dst == meta && ev.Decision == flowlog.Allow }); len(got) != 0 {
			t.Errorf("metadata connection logged as allowed: %v", got)
		}
	})

	t.Run("host", func(t *testing.T) {
		// The gateway's other ports belong to the host.
		gw := netip.AddrPortFrom(s.HostIP, 22)
		wantTimeout(t, s, gw)
		a.events.wait(t, 3*time.Second, "host", match(s, flowlog.Block, "host", flowlog.ProtoTCP, gw))
	})

	t.Run("other-slot", func(t *testing.T) {
		a.apply(t, s, network.Policy{})
		other := a.slot(t)
		a.apply(t, other, network.Policy{})
		dst := netip.AddrPortFrom(other.GuestIP, 9000)
		wantTimeout(t, s, dst)
		a.events.wait(t, 3*time.Second, "other slot", match(s, flowlog.Block, "slot", flowlog.ProtoTCP, dst))
	})

	t.Run("spoof", func(t *testing.T) {
		a.apply(t, s, network.Policy{})
		// Root in the sandbox adds an address of its own and uses it.
		spoofed := netip.MustParseAddr("10.200.255.250")
		h, err := netlink.NewHandleAt(mustNS(t, s.NetNSPath))
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		eth, err := h.LinkByName(s.GuestIf)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: spoofed.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
			t.Fatal(err)
		}
		defer h.AddrDel(eth, &netlink.Addr{IPNet: &net.IPNet{IP: spoofed.AsSlice(), Mask: net.CIDRMask(32, 32)}})
		ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
		defer cancel()
		var c net.Conn
		err = slotNS(s).Do(func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: spoofed.AsSlice()}}
			c, err = d.DialContext(ctx, "tcp4", echo.String())
			return err
		})
		if err == nil {
			c.Close()
			t.Fatalf("TCP connect from spoofed %s succeeded, want a timeout", spoofed)
		}
		a.events.wait(t, 3*time.Second, "spoof", func(ev flowlog.Event) bool {
			return ev.SlotIndex == s.Index && ev.Reason == "spoof" && ev.Decision == flowlog.Block && ev.Src.Addr() == spoofed && ev.Dst == echo
		})
	})

	t.Run("rate-limit", func(t *testing.T) {
		a.apply(t, s, network.Policy{DenyOut: []string{"*"}}) // fresh rules, full bucket
		dst := netip.AddrPortFrom(testenv.ServiceIP, testenv.PortUDPEcho)
		var c net.Conn
		if err := slotNS(s).Do(func() error {
			var err error
			c, err = net.Dial("udp4", dst.String())
			return err
		}); err != nil {
			t.Fatalf("UDP socket in slot: %v", err)
		}
		defer c.Close()
		const flood = 1000
		start := time.Now()
		for i := range flood {
			if _, err := c.Write([]byte("x")); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		elapsed := time.Since(start)
		flooded := match(s, flowlog.Block, "deny", flowlog.ProtoUDP, dst)
		a.events.wait(t, 3*time.Second, "flood", flooded)
		time.Sleep(500 * time.Millisecond) // let the listener drain
		got := len(a.events.matching(flooded))
		// The bucket holds rate+burst packets and refills at rate.
		most := logRate + logBurst + int(elapsed.Seconds()*logRate) + 1
		t.Logf("%d packets in %v: %d events (at most %d)", flood, elapsed.Round(time.Millisecond), got, most)
		if got > most || got < logBurst/2 {
			t.Errorf("%d UDP packets in %v gave %d deny events, want between %d and %d", flood, elapsed, got, logBurst/2, most)
		}
	})
}

func mustNS(t testing.TB, path string) netns.NsHandle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// TestAuditLogReleaseLeavesNothing checks that a released slot's log rules
// (guard chain, its dispatch jump) go with it, and Close leaves no table.
func TestAuditLogReleaseLeavesNothing(t *testing.T) {
	a := newAuditEnv(t, -1)
	s, err := a.m.Acquire(t.Context())
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	a.apply(t, s, network.Policy{DenyOut: []string{"10.0.0.0/8"}})
	c, err := nftables.New(nftables.WithNetNSFd(int(mustNS(t, a.net.Host.Path))))
	if err != nil {
		t.Fatal(err)
	}
	chains := func() []string {
		cs, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, ch := range cs {
			names = append(names, ch.Name)
		}
		slices.Sort(names)
		return names
	}
	guard := fmt.Sprintf("slot-%d-guard", s.Index)
	if got := chains(); !slices.Contains(got, guard) {
		t.Fatalf("chains with a slot: %v, want %s among them", got, guard)
	}
	if err := a.m.Release(t.Context(), s); err != nil {
		t.Fatalf("Release: %v", err)
	}
	want := []string{"forward", "fwd-slots", "in-slots", "input", "nat-slots", "postrouting", "prerouting"}
	if got := chains(); !slices.Equal(got, want) {
		t.Errorf("chains after Release: %v, want %v", got, want)
	}
}
