package network

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// batch runs fill on a fresh nftables connection in the host namespace and
// sends what it queued as one transaction.
func (m *Manager) batch(fill func(*nftables.Conn) error) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(m.hostNS)))
	if err != nil {
		return fmt.Errorf("nftables connection: %w", err)
	}
	if err := fill(c); err != nil {
		return err
	}
	return c.Flush()
}

// addRuleset queues rs: the table (withTable), its sets with their
// elements, its chains with their rules, then the rules into other chains.
func addRuleset(c *nftables.Conn, rs ruleset, withTable bool) error {
	if withTable && len(rs.chains) > 0 {
		c.AddTable(rs.chains[0].chain.Table)
	}
	for _, sd := range rs.sets {
		if err := c.AddSet(sd.set, nil); err != nil {
			return fmt.Errorf("add set %s: %w", sd.set.Name, err)
		}
	}
	for _, cd := range rs.chains {
		c.AddChain(cd.chain)
	}
	return addContent(c, rs)
}

// addContent queues the set elements and rules of rs into existing sets
// and chains.
func addContent(c *nftables.Conn, rs ruleset) error {
	for _, sd := range rs.sets {
		if len(sd.elems) == 0 {
			continue
		}
		if err := c.SetAddElements(sd.set, sd.elems); err != nil {
			return fmt.Errorf("add elements to %s: %w", sd.set.Name, err)
		}
	}
	for _, cd := range rs.chains {
		for _, r := range cd.rules {
			c.AddRule(r)
		}
	}
	for _, r := range rs.rules {
		c.AddRule(r)
	}
	return nil
}

// blocked returns the always-blocked IPv4 prefixes of this Manager.
func (m *Manager) blocked() []netip.Prefix {
	return append(append([]netip.Prefix(nil), alwaysBlocked4...), m.cfg.CIDR)
}

// cutFilter matches the tracked flows Apply deletes: started by the slot's
// guest and not ending at the host (DNS, proxy), to a destination the new
// policy no longer allows, or, when the policy now sends web traffic to the
// proxy, direct TCP flows to ports 80/443 outside the allowed prefixes (the
// next packet of such a flow is then redirected to the proxy, which resets
// it).
type cutFilter struct {
	slot        *Slot
	policy      Parsed
	blocked     []netip.Prefix
	redirectWeb bool
}

func (f *cutFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	src, ok1 := netip.AddrFromSlice(flow.Forward.SrcIP)
	dst, ok2 := netip.AddrFromSlice(flow.Forward.DstIP)
	replySrc, ok3 := netip.AddrFromSlice(flow.Reverse.SrcIP)
	if !ok1 || !ok2 || !ok3 || src.Unmap() != f.slot.GuestIP {
		return false
	}
	if replySrc.Unmap() == f.slot.HostIP {
		return false
	}
	dst = dst.Unmap()
	if containsAddr(f.blocked, dst) || !f.policy.AllowsAddr(dst) {
		return true
	}
	return f.redirectWeb && flow.Forward.Protocol == unix.IPPROTO_TCP &&
		slices.Contains(webPorts, flow.Forward.DstPort) && !containsAddr(f.policy.Allow, dst)
}

var _ netlink.CustomConntrackFilter = (*cutFilter)(nil)
