package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// createSlot builds slot idx: netns, IPv6 off, nftables objects, veth,
// addresses, routes. A failure undoes what was done, in reverse.
func (m *Manager) createSlot(ctx context.Context, idx int) (_ *Slot, err error) {
	s := m.slotAt(idx)
	var undo []func() error
	defer func() {
		if err == nil {
			return
		}
		for i := len(undo) - 1; i >= 0; i-- {
			err = errors.Join(err, undo[i]())
		}
		err = fmt.Errorf("create slot %d: %w", idx, err)
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	if err := createNamedNS(s.NetNS); err != nil {
		return nil, err
	}
	undo = append(undo, func() error { return deleteNamedNS(s.NetNS) })
	guestNS, err := netns.GetFromPath(s.NetNSPath)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", s.NetNS, err)
	}
	defer guestNS.Close()
	guest, err := netlink.NewHandleAt(guestNS)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", s.NetNS, err)
	}
	defer guest.Close()
	// IPv6 off before any interface exists, so none gets an address.
	for _, key := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
		if err := writeSysctl(guestNS, key, "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}

	if err := m.batch(func(c *nftables.Conn) error { return addRuleset(c, m.fw.slot(s), false) }); err != nil {
		return nil, fmt.Errorf("add nftables chains: %w", err)
	}
	undo = append(undo, func() error { return m.deleteSlotRules(s) })

	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: s.HostIf},
		PeerName:      s.GuestIf,
		PeerNamespace: netlink.NsFd(guestNS),
	}
	if err := m.host.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("add veth %s: %w", s.HostIf, err)
	}
	undo = append(undo, func() error { return m.deleteLink(s.HostIf) })

	hostLink, err := m.host.LinkByName(s.HostIf)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", s.HostIf, err)
	}
	// No IPv6 on the host end either (the table drops it anyway).
	if err := writeSysctl(m.hostNS, "net.ipv6.conf."+s.HostIf+".disable_ipv6", "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := m.host.AddrAdd(hostLink, &netlink.Addr{IPNet: ipNet(s.HostIP, slotBits)}); err != nil {
		return nil, fmt.Errorf("address %s: %w", s.HostIf, err)
	}
	if err := m.host.LinkSetUp(hostLink); err != nil {
		return nil, fmt.Errorf("up %s: %w", s.HostIf, err)
	}

	lo, err := guest.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo in %s: %w", s.NetNS, err)
	}
	if err := guest.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("up lo in %s: %w", s.NetNS, err)
	}
	eth, err := guest.LinkByName(s.GuestIf)
	if err != nil {
		return nil, fmt.Errorf("find %s in %s: %w", s.GuestIf, s.NetNS, err)
	}
	if err := guest.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(s.GuestIP, slotBits)}); err != nil {
		return nil, fmt.Errorf("address %s in %s: %w", s.GuestIf, s.NetNS, err)
	}
	if err := guest.LinkSetUp(eth); err != nil {
		return nil, fmt.Errorf("up %s in %s: %w", s.GuestIf, s.NetNS, err)
	}
	route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.IP(s.HostIP.AsSlice())}
	if err := guest.RouteAdd(route); err != nil {
		return nil, fmt.Errorf("default route in %s: %w", s.NetNS, err)
	}
	return s, nil
}

// deleteSlot removes a slot. withRules also deletes its nftables objects
// (Close skips that: the table goes as a whole).
func (m *Manager) deleteSlot(s *Slot, withRules bool) error {
	var errs []error
	if withRules {
		errs = append(errs, m.deleteSlotRules(s))
	}
	// Conntrack is tidying only (nothing forwards to a deleted veth): log.
	if err := m.flushConntrack(s); err != nil {
		m.cfg.Logf("network: slot %d: %v", s.Index, err)
	}
	errs = append(errs, m.deleteLink(s.HostIf), deleteNamedNS(s.NetNS))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete slot %d: %w", s.Index, err)
	}
	return nil
}

// deleteSlotRules removes the slot's dispatch jumps (found by their
// UserData tag), chains and sets in one batch.
func (m *Manager) deleteSlotRules(s *Slot) error {
	rs := m.fw.slot(s)
	return m.batch(func(c *nftables.Conn) error {
		tag := slotChain(s.Index)
		for _, name := range []string{chainFwdSlots, chainInSlots, chainNatSlots} {
			rules, err := c.GetRules(m.fw.table, m.fw.chain(name))
			if err != nil {
				return fmt.Errorf("list %s: %w", name, err)
			}
			for _, r := range rules {
				if string(r.UserData) == tag {
					if err := c.DelRule(r); err != nil {
						return fmt.Errorf("delete jump to %s: %w", tag, err)
					}
				}
			}
		}
		for _, cd := range rs.chains {
			c.FlushChain(cd.chain)
			c.DelChain(cd.chain)
		}
		for _, sd := range rs.sets {
			c.DelSet(sd.set)
		}
		return nil
	})
}

func (m *Manager) deleteLink(name string) error {
	l, err := m.host.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := m.host.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// flushConntrack forgets every tracked flow from or to the slot's guest.
func (m *Manager) flushConntrack(s *Slot) error {
	from, to := &netlink.ConntrackFilter{}, &netlink.ConntrackFilter{}
	ip := net.IP(s.GuestIP.AsSlice())
	if err := from.AddIP(netlink.ConntrackOrigSrcIP, ip); err != nil {
		return err
	}
	if err := to.AddIP(netlink.ConntrackOrigDstIP, ip); err != nil {
		return err
	}
	if _, err := m.host.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, from, to); err != nil {
		return fmt.Errorf("flush conntrack of %s: %w", s.GuestIP, err)
	}
	return nil
}

func (m *Manager) deleteTable() error {
	return m.batch(func(c *nftables.Conn) error {
		t, err := c.ListTableOfFamily(m.fw.table.Name, m.fw.table.Family)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) {
				return nil
			}
			return fmt.Errorf("list table %s: %w", m.fw.table.Name, err)
		}
		c.DelTable(t)
		return nil
	})
}

// removeLeftovers deletes what a crashed Manager with this prefix left:
// the table, host veths "<prefix>h<N>", namespaces "<prefix>-s<N>".
func (m *Manager) removeLeftovers() error {
	var errs []error
	errs = append(errs, m.deleteTable())
	links, err := m.host.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range links {
		if name := l.Attrs().Name; hasIndexSuffix(name, m.cfg.Prefix+"h") {
			m.cfg.Logf("network: removing leftover link %s", name)
			errs = append(errs, m.deleteLink(name))
		}
	}
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("list %s: %w", netnsDir, err))
	}
	for _, e := range entries {
		if hasIndexSuffix(e.Name(), m.cfg.Prefix+"-s") {
			m.cfg.Logf("network: removing leftover netns %s", e.Name())
			errs = append(errs, deleteNamedNS(e.Name()))
		}
	}
	return errors.Join(errs...)
}

func hasIndexSuffix(name, prefix string) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok || rest == "" {
		return false
	}
	_, err := strconv.ParseUint(rest, 10, 32)
	return err == nil
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, a.BitLen())}
}
