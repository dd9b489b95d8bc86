package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Defaults for a zero Config.
const (
	DefaultCIDR     = "10.200.0.0/16"
	DefaultPrefix   = "declaw"
	DefaultPoolSize = 4
)

// slotBits is the size of each slot's link subnet: a /30 holds the network
// address, the host end, the guest end and the broadcast address.
const slotBits = 30

// Config configures a Manager. The zero value is valid.
type Config struct {
	// CIDR is the IPv4 range slots are carved from (--sandbox-cidr).
	// Zero means DefaultCIDR.
	CIDR netip.Prefix
	// Prefix names everything the Manager owns: netns "<Prefix>-s<i>",
	// host veth "<Prefix>h<i>", nftables table "<Prefix>". Lower-case
	// letters and digits, starting with a letter. Zero means DefaultPrefix.
	// Two Managers must never share a prefix (New deletes its leftovers),
	// and no prefix may start with another's prefix followed by "h" (the
	// table matches host ends by name prefix).
	Prefix string
	// PoolSize is the number of ready slots kept. Zero means
	// DefaultPoolSize; negative keeps none.
	PoolSize int
	// DNSPort and ProxyPort are the ports a slot may reach on its gateway
	// address (UDP+TCP for DNS, TCP for the proxy). Zero allows neither.
	DNSPort   uint16
	ProxyPort uint16
	// HostNetNS is the path of the namespace the host ends live in and
	// the table is installed in. Empty means the namespace of the thread
	// calling New (the root namespace for a normal server process).
	HostNetNS string
	// LogGroup, when not zero, adds audit log rules to the table: every
	// packet a slot's rules drop and every new connection they accept is
	// also logged, rate-limited per slot and rule, to this NFLOG group with
	// the prefix "dcl s<slot index> <reason>" (see LogPrefix). Read it with
	// package flowlog in the HostNetNS. Zero adds no log rules.
	LogGroup uint16
	// Logf logs background events; nil discards them.
	Logf func(format string, args ...any)
}

// Manager owns the slots, the host forwarding setup and the nftables table.
// Its methods are safe for concurrent use; Apply and Release of the same
// slot must not race each other.
type Manager struct {
	cfg      Config
	fw       *firewall
	maxSlots int
	hostNS   netns.NsHandle
	host     *netlink.Handle
	stop     context.CancelFunc
	refill   chan struct{}
	workers  sync.WaitGroup // refill loop and in-flight slot creations

	mu sync.Mutex
	// +checklocks:mu
	closed bool
	// +checklocks:mu
	ready []*Slot
	// +checklocks:mu
	inUse map[int]*Slot
	// +checklocks:mu
	taken map[int]bool // ready, in use, being created or deleted
	// +checklocks:mu
	creating int // refill creations in flight
	// +checklocks:mu
	applied map[int]bool // in-use slots that had a policy applied
}

// New sets up host forwarding and the table in the host namespace, after
// removing what a previous Manager with the same prefix left behind, then
// fills the pool and keeps it filled in the background.
func New(ctx context.Context, cfg Config) (m *Manager, err error) {
	cfg, err = resolveConfig(cfg)
	if err != nil {
		return nil, err
	}
	hostNS, err := openHostNS(cfg.HostNetNS)
	if err != nil {
		return nil, err
	}
	host, err := netlink.NewHandleAt(hostNS)
	if err != nil {
		hostNS.Close()
		return nil, fmt.Errorf("netlink handle in host netns: %w", err)
	}
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	fw := newFirewall(cfg.Prefix, cfg.CIDR, cfg.DNSPort, cfg.ProxyPort)
	fw.logGroup = cfg.LogGroup
	m = &Manager{
		cfg:      cfg,
		fw:       fw,
		maxSlots: 1 << (slotBits - cfg.CIDR.Bits()),
		hostNS:   hostNS,
		host:     host,
		stop:     stop,
		refill:   make(chan struct{}, 1),
		inUse:    map[int]*Slot{},
		taken:    map[int]bool{},
		applied:  map[int]bool{},
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, m.Close(context.WithoutCancel(ctx)))
			m = nil
		}
	}()
	if err := m.removeLeftovers(); err != nil {
		return m, fmt.Errorf("remove leftovers: %w", err)
	}
	if err := writeSysctl(hostNS, "net.ipv4.ip_forward", "1"); err != nil {
		return m, err
	}
	if err := m.batch(func(c *nftables.Conn) error { return addRuleset(c, m.fw.base(), true) }); err != nil {
		return m, fmt.Errorf("create table %s: %w", cfg.Prefix, err)
	}
	for range max(cfg.PoolSize, 0) {
		idx, ok := m.allocIndex()
		if !ok {
			break
		}
		s, err := m.createSlot(ctx, idx)
		if err != nil {
			m.freeIndex(idx)
			return m, err
		}
		m.mu.Lock()
		m.ready = append(m.ready, s)
		m.mu.Unlock()
	}
	m.workers.Add(1)
	go m.refillLoop(bg)
	return m, nil
}

func resolveConfig(cfg Config) (Config, error) {
	if !cfg.CIDR.IsValid() {
		cfg.CIDR = netip.MustParsePrefix(DefaultCIDR)
	}
	if !cfg.CIDR.Addr().Is4() || cfg.CIDR.Bits() > slotBits {
		return cfg, fmt.Errorf("sandbox CIDR %s: want IPv4, /%d or larger", cfg.CIDR, slotBits)
	}
	cfg.CIDR = cfg.CIDR.Masked()
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	for i, c := range cfg.Prefix {
		if !(c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return cfg, fmt.Errorf("network prefix %q: want lower-case letters and digits, starting with a letter", cfg.Prefix)
		}
	}
	maxIf := fmt.Sprintf("%sh%d", cfg.Prefix, 1<<(slotBits-cfg.CIDR.Bits())-1)
	if len(maxIf) >= unix.IFNAMSIZ {
		return cfg, fmt.Errorf("network prefix %q with CIDR %s: interface name %q longer than %d", cfg.Prefix, cfg.CIDR, maxIf, unix.IFNAMSIZ-1)
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = DefaultPoolSize
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	return cfg, nil
}

func openHostNS(path string) (netns.NsHandle, error) {
	if path == "" {
		ns, err := netns.Get()
		if err != nil {
			return ns, fmt.Errorf("get current netns: %w", err)
		}
		return ns, nil
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return ns, fmt.Errorf("open host netns %s: %w", path, err)
	}
	return ns, nil
}

// slotAt computes slot idx's names and addresses.
func (m *Manager) slotAt(idx int) *Slot {
	base := m.cfg.CIDR.Addr().As4()
	n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	n += uint32(idx) << (32 - slotBits)
	addr := func(off uint32) netip.Addr {
		v := n + off
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	name := fmt.Sprintf("%s-s%d", m.cfg.Prefix, idx)
	return &Slot{
		Index:     idx,
		NetNS:     name,
		NetNSPath: filepath.Join(netnsDir, name),
		HostIf:    fmt.Sprintf("%sh%d", m.cfg.Prefix, idx),
		GuestIf:   "eth0",
		HostIP:    addr(1),
		GuestIP:   addr(2),
		Prefix:    netip.PrefixFrom(addr(0), slotBits),
	}
}

// Acquire returns a ready slot, creating one when the pool is empty. The
// slot denies all egress until Apply gives it a policy.
func (m *Manager) Acquire(ctx context.Context) (*Slot, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	if len(m.ready) > 0 {
		s := m.ready[0]
		m.ready = m.ready[1:]
		m.inUse[s.Index] = s
		m.mu.Unlock()
		m.kickRefill()
		return s, nil
	}
	idx, ok := m.allocIndexLocked()
	if !ok {
		m.mu.Unlock()
		return nil, ErrNoSlots
	}
	m.workers.Add(1)
	m.mu.Unlock()
	defer m.workers.Done()

	s, err := m.createSlot(ctx, idx)
	if err != nil {
		m.freeIndex(idx)
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, errors.Join(ErrClosed, m.deleteSlot(s, false))
	}
	m.inUse[s.Index] = s
	m.mu.Unlock()
	m.kickRefill()
	return s, nil
}

// Release scrubs a slot returned by Acquire: its conntrack entries, policy
// chains and sets, veth and netns are deleted (a slot is never reused; the
// pool is refilled with fresh ones). The runtime using it must be gone.
func (m *Manager) Release(ctx context.Context, s *Slot) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil // Close deleted every slot
	}
	if got, ok := m.inUse[s.Index]; !ok || got != s {
		m.mu.Unlock()
		return fmt.Errorf("release slot %d: %w", s.Index, ErrUnknownSlot)
	}
	delete(m.inUse, s.Index)
	delete(m.applied, s.Index)
	m.workers.Add(1) // Close waits for this deletion before dropping the table
	m.mu.Unlock()
	defer m.workers.Done()
	err := m.deleteSlot(s, true)
	if err != nil {
		// Keep the index reserved: its leftovers would collide.
		m.cfg.Logf("network: release slot %d: %v", s.Index, err)
		return fmt.Errorf("release slot %d: %w", s.Index, err)
	}
	m.freeIndex(s.Index)
	m.kickRefill()
	return nil
}

// Apply makes p the slot's policy. It is desired state: the slot's policy
// chain, nat chain and prefix sets are replaced in one atomic batch, so
// calling it again replaces everything. An invalid p is a *PolicyError and
// changes nothing.
//
// Established connections are cut too: the forward chain judges every
// packet, not only the first, so packets to a newly denied destination are
// dropped at once. Apply then deletes the conntrack entries of the slot's
// flows the new policy denies (and, when web traffic now goes to the
// proxy, its direct web flows, whose next packet the proxy then resets).
// That sweep dumps the host's conntrack table, so it is skipped on the
// slot's first Apply (nothing was forwarded yet) and for allow-all; its
// failure is logged, not returned.
func (m *Manager) Apply(ctx context.Context, s *Slot, p Policy) error {
	parsed, err := ParsePolicy(p)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	got, ok := m.inUse[s.Index]
	closed, hadPolicy := m.closed, m.applied[s.Index]
	m.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if !ok || got != s {
		return fmt.Errorf("apply policy to slot %d: %w", s.Index, ErrUnknownSlot)
	}
	rs := m.fw.policy(s, parsed)
	err = m.batch(func(c *nftables.Conn) error {
		for _, cd := range rs.chains {
			c.FlushChain(cd.chain)
		}
		for _, sd := range rs.sets {
			c.FlushSet(sd.set)
		}
		return addContent(c, rs)
	})
	if err != nil {
		return fmt.Errorf("apply policy to slot %d: %w", s.Index, err)
	}
	m.mu.Lock()
	m.applied[s.Index] = true
	m.mu.Unlock()
	// Flows can only exist if an earlier policy let them through, and an
	// allow-all policy cuts nothing. Skipping those cases matters: the sweep
	// dumps the host's whole conntrack table (tens of ms).
	if !hadPolicy || parsed.AllowAll {
		return nil
	}
	// The forward chain already drops every packet the policy denies, so a
	// failed sweep (no nf_conntrack_netlink) leaves stale NAT state only.
	filter := &cutFilter{slot: s, policy: parsed, blocked: m.blocked(), redirectWeb: m.fw.redirectsWeb(parsed)}
	if _, err := m.host.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filter); err != nil {
		m.cfg.Logf("network: slot %d: cut denied connections: %v", s.Index, err)
	}
	return nil
}

// Close deletes every slot (ready or in use) and the table; Release of a
// slot afterwards is a no-op. It does not switch ip_forward back off: other
// software may rely on it.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.stop()
	m.workers.Wait()

	m.mu.Lock()
	slots := m.ready
	for _, s := range m.inUse {
		slots = append(slots, s)
	}
	m.ready, m.inUse = nil, map[int]*Slot{}
	m.mu.Unlock()

	var errs []error
	for _, s := range slots {
		errs = append(errs, m.deleteSlot(s, false))
	}
	errs = append(errs, m.deleteTable())
	m.host.Close()
	m.hostNS.Close()
	return errors.Join(errs...)
}

func (m *Manager) kickRefill() {
	select {
	case m.refill <- struct{}{}:
	default:
	}
}

func (m *Manager) refillLoop(ctx context.Context) {
	defer m.workers.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.refill:
		}
		for ctx.Err() == nil {
			m.mu.Lock()
			if m.closed || len(m.ready)+m.creating >= m.cfg.PoolSize {
				m.mu.Unlock()
				break
			}
			idx, ok := m.allocIndexLocked()
			if !ok {
				m.mu.Unlock()
				break
			}
			m.creating++
			m.mu.Unlock()

			s, err := m.createSlot(ctx, idx)
			m.mu.Lock()
			m.creating--
			if err != nil {
				delete(m.taken, idx)
				m.mu.Unlock()
				m.cfg.Logf("network: refill pool: %v", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
					m.kickRefill()
				}
				break
			}
			if m.closed {
				m.mu.Unlock()
				if err := m.deleteSlot(s, false); err != nil {
					m.cfg.Logf("network: %v", err)
				}
				return
			}
			m.ready = append(m.ready, s)
			m.mu.Unlock()
		}
	}
}

func (m *Manager) allocIndex() (int, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.allocIndexLocked()
}

// +checklocks:m.mu
func (m *Manager) allocIndexLocked() (int, bool) {
	for i := range m.maxSlots {
		if !m.taken[i] {
			m.taken[i] = true
			return i, true
		}
	}
	return 0, false
}

func (m *Manager) freeIndex(idx int) {
	m.mu.Lock()
	delete(m.taken, idx)
	m.mu.Unlock()
}

// readyCount is the number of slots in the pool.
func (m *Manager) readyCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.ready)
}
