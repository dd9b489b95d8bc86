package network

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// This file is the pure core of the firewall: it builds nftables objects
// and never talks to the kernel. The adapter in manager_linux.go adds them
// to a batch.

// Chain names of the table (see the package doc).
const (
	chainForward     = "forward"
	chainInput       = "input"
	chainPrerouting  = "prerouting"
	chainPostrouting = "postrouting"
	chainFwdSlots    = "fwd-slots"
	chainInSlots     = "in-slots"
	chainNatSlots    = "nat-slots"
	setBlocked4      = "blocked4"
)

// alwaysBlocked4 are destinations a slot never reaches; the sandbox CIDR is
// added at table creation.
var alwaysBlocked4 = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"), // link-local, cloud metadata
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, limited broadcast
}

// ruleset is a set of nftables objects to add in one batch.
type ruleset struct {
	sets   []setDef
	chains []chainDef
	rules  []*nftables.Rule // rules into chains that exist already (dispatch jumps)
}

type setDef struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

type chainDef struct {
	chain *nftables.Chain
	rules []*nftables.Rule
}

// firewall names the table and the slot interfaces; it builds rules.
type firewall struct {
	table    *nftables.Table
	ifPrefix string       // host-side veth names start with it
	cidr     netip.Prefix // sandbox CIDR
	dnsPort  uint16
	proxy    uint16
	logGroup uint16 // NFLOG group of the audit log rules; 0: none
}

func newFirewall(prefix string, cidr netip.Prefix, dnsPort, proxyPort uint16) *firewall {
	return &firewall{
		table:    &nftables.Table{Name: prefix, Family: nftables.TableFamilyINet},
		ifPrefix: prefix + "h",
		cidr:     cidr,
		dnsPort:  dnsPort,
		proxy:    proxyPort,
	}
}

func (f *firewall) chain(name string) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: f.table}
}

func (f *firewall) set(name string) *nftables.Set {
	return &nftables.Set{Table: f.table, Name: name, KeyType: nftables.TypeIPAddr, Interval: true}
}

func slotChain(i int) string      { return fmt.Sprintf("slot-%d", i) }
func slotInChain(i int) string    { return fmt.Sprintf("slot-%d-in", i) }
func slotNatChain(i int) string   { return fmt.Sprintf("slot-%d-nat", i) }
func slotAllowSet(i int) string   { return fmt.Sprintf("slot-%d-allow", i) }
func slotDenySet(i int) string    { return fmt.Sprintf("slot-%d-deny", i) }
func slotGuardChain(i int) string { return fmt.Sprintf("slot-%d-guard", i) }

// base is the table with its base chains, dispatch chains and blocked set.
func (f *firewall) base() ruleset {
	accept := nftables.ChainPolicyAccept
	hook := func(name string, typ nftables.ChainType, h *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{Name: name, Table: f.table, Type: typ, Hooknum: h, Priority: prio, Policy: &accept}
	}
	fwd := hook(chainForward, nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	in := hook(chainInput, nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	pre := hook(chainPrerouting, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest)
	post := hook(chainPostrouting, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)

	blocked := f.set(setBlocked4)
	blocked.ID = 1 // set explicitly: see slot
	fromSlot := ifname(expr.MetaKeyIIFNAME, f.ifPrefix, true)
	toSlot := ifname(expr.MetaKeyOIFNAME, f.ifPrefix, true)
	rule := func(c *nftables.Chain, parts ...[]expr.Any) *nftables.Rule {
		return &nftables.Rule{Table: f.table, Chain: c, Exprs: slices.Concat(parts...)}
	}
	fwdRules := []*nftables.Rule{
		rule(fwd, fromSlot, nfproto(expr.CmpOpNeq, unix.NFPROTO_IPV4), verdict(expr.VerdictDrop)),
		rule(fwd, fromSlot, pkttypeNotHost(), verdict(expr.VerdictDrop)),
		rule(fwd, fromSlot, ip4Addr(16), lookup(blocked), verdict(expr.VerdictDrop)),
		rule(fwd, toSlot, ctEstablished(), verdict(expr.VerdictAccept)),
		rule(fwd, toSlot, verdict(expr.VerdictDrop)),
		rule(fwd, fromSlot, jump(chainFwdSlots)),
		rule(fwd, fromSlot, verdict(expr.VerdictDrop)),
	}
	if f.logGroup != 0 {
		// The drops above cannot name the slot in a log prefix. With
		// logging, every slot's traffic goes to fwd-slots first, where the
		// slot's guard chain repeats these drops with a log each, then its
		// policy chain judges the rest; both always end in a verdict, so
		// the drop after the jump only catches a host end without a slot
		// (between the deletion of its rules and of its veth).
		fwdRules = []*nftables.Rule{
			rule(fwd, fromSlot, jump(chainFwdSlots)),
			rule(fwd, fromSlot, verdict(expr.VerdictDrop)),
			rule(fwd, toSlot, ctEstablished(), verdict(expr.VerdictAccept)),
			rule(fwd, toSlot, verdict(expr.VerdictDrop)),
		}
	}
	return ruleset{
		sets: []setDef{{set: blocked, elems: intervalElems(append(slices.Clone(alwaysBlocked4), f.cidr.Masked()))}},
		chains: []chainDef{
			{chain: f.chain(chainFwdSlots)},
			{chain: f.chain(chainInSlots)},
			{chain: f.chain(chainNatSlots)},
			{chain: fwd, rules: fwdRules},
			{chain: in, rules: []*nftables.Rule{
				rule(in, fromSlot, ctEstablished(), verdict(expr.VerdictAccept)),
				rule(in, fromSlot, jump(chainInSlots)),
				rule(in, fromSlot, verdict(expr.VerdictDrop)),
			}},
			{chain: pre, rules: []*nftables.Rule{
				rule(pre, fromSlot, jump(chainNatSlots)),
			}},
			{chain: post, rules: []*nftables.Rule{
				rule(post, nfproto(expr.CmpOpEq, unix.NFPROTO_IPV4), ip4InPrefix(12, f.cidr),
					ifnameNeq(expr.MetaKeyOIFNAME, f.ifPrefix), []expr.Any{&expr.Masq{}}),
			}},
		},
	}
}

// slot is what a new slot adds: its chains (policy chain denying all until
// Apply), its empty sets and the dispatch jumps, tagged with the slot chain
// name in UserData so deleteSlot can find them.
func (f *firewall) slot(s *Slot) ruleset {
	fromIf := ifname(expr.MetaKeyIIFNAME, s.HostIf, false)
	tag := []byte(slotChain(s.Index))
	dispatch := func(from, to string) *nftables.Rule {
		return &nftables.Rule{Table: f.table, Chain: f.chain(from), UserData: tag,
			Exprs: slices.Concat(fromIf, jump(to))}
	}
	in := f.chain(slotInChain(s.Index))
	var inRules []*nftables.Rule
	hostIP := ip4Addr(16)
	hostIP = append(hostIP, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: s.HostIP.AsSlice()})
	port := func(proto byte, p uint16) *nftables.Rule {
		return &nftables.Rule{Table: f.table, Chain: in,
			Exprs: slices.Concat(nfproto(expr.CmpOpEq, unix.NFPROTO_IPV4), hostIP, dport(proto, p), verdict(expr.VerdictAccept))}
	}
	if f.dnsPort != 0 {
		inRules = append(inRules, port(unix.IPPROTO_UDP, f.dnsPort), port(unix.IPPROTO_TCP, f.dnsPort))
	}
	if f.proxy != 0 {
		inRules = append(inRules, port(unix.IPPROTO_TCP, f.proxy))
	}
	if f.logGroup != 0 {
		// Everything else a slot sends to the host is dropped by the
		// input chain after slot-<i>-in returns: log it as "host".
		inRules = append(inRules, f.logDrop(in, s, ReasonHost)...)
	}
	pol := f.chain(slotChain(s.Index))
	// Set IDs only need to be unique within a batch. Setting them keeps
	// AddSet off google/nftables' unsynchronised global ID counter.
	allow, deny := f.set(slotAllowSet(s.Index)), f.set(slotDenySet(s.Index))
	allow.ID, deny.ID = 1, 2
	rs := ruleset{
		sets: []setDef{{set: allow}, {set: deny}},
		chains: []chainDef{
			{chain: pol, rules: f.logDrop(pol, s, ReasonDeny)},
			{chain: in, rules: inRules},
			{chain: f.chain(slotNatChain(s.Index))},
		},
		rules: []*nftables.Rule{
			dispatch(chainFwdSlots, slotChain(s.Index)),
			dispatch(chainInSlots, slotInChain(s.Index)),
			dispatch(chainNatSlots, slotNatChain(s.Index)),
		},
	}
	if f.logGroup == 0 {
		return rs
	}
	// The guard chain repeats the forward chain's drops (see base) with
	// the slot's log prefix; its dispatch jump precedes the policy's.
	guard := f.chain(slotGuardChain(s.Index))
	blocked := f.set(setBlocked4)
	var guardRules []*nftables.Rule
	for _, g := range []struct {
		match  []expr.Any
		reason string
	}{
		{nfproto(expr.CmpOpNeq, unix.NFPROTO_IPV4), ReasonIPv6},
		{pkttypeNotHost(), ReasonBroadcast},
		{ip4InPrefix(16, metadataPrefix), ReasonMetadata},
		{ip4InPrefix(16, f.cidr), ReasonSlot},
		{slices.Concat(ip4Addr(16), lookup(blocked)), ReasonBlocked},
	} {
		guardRules = append(guardRules, f.logDrop(guard, s, g.reason, g.match)...)
	}
	rs.chains = append(rs.chains, chainDef{chain: guard, rules: guardRules})
	rs.rules = append([]*nftables.Rule{dispatch(chainFwdSlots, slotGuardChain(s.Index))}, rs.rules...)
	return rs
}

// Reasons in the log prefixes ("dcl s<i> <reason>") of the audit log rules.
const (
	ReasonAllow     = "allow" // a new connection the policy accepts
	ReasonDeny      = "deny"  // denied by the policy (deny-all, deny_out, no policy yet)
	ReasonSpoof     = "spoof" // source is not the slot's guest address
	ReasonIPv6      = "ip6"   // any non-IPv4 packet
	ReasonBroadcast = "bcast" // link-layer broadcast or multicast
	ReasonMetadata  = "meta"  // 169.254.0.0/16, cloud metadata
	ReasonSlot      = "slot"  // the sandbox CIDR: other slots
	ReasonBlocked   = "block" // other always-blocked ranges (0/8, 127/8, 224/4, 240/4)
	ReasonHost      = "host"  // the host's own addresses and ports
)

// LogPrefix is the prefix of slot index's log rules for reason, e.g.
// "dcl s3 deny"; package flowlog parses it back.
func LogPrefix(index int, reason string) string {
	return fmt.Sprintf("dcl s%d %s", index, reason)
}

// Log rate limit of each log rule: a slot cannot flood the log group. The
// limit is per rule, so a slot emits at most logRate per second (after a
// burst of logBurst) per reason.
const (
	logRate  = 20
	logBurst = 50
	logSnap  = 96 // bytes of each packet copied: IPv4 with options plus ports
)

var metadataPrefix = netip.MustParsePrefix("169.254.0.0/16")

// logDrop returns the rules that drop what match matches in c, preceded
// (when logging is on) by a rate-limited log of it with reason.
func (f *firewall) logDrop(c *nftables.Chain, s *Slot, reason string, match ...[]expr.Any) []*nftables.Rule {
	m := slices.Concat(match...)
	drop := &nftables.Rule{Table: f.table, Chain: c, Exprs: slices.Concat(m, verdict(expr.VerdictDrop))}
	if f.logGroup == 0 {
		return []*nftables.Rule{drop}
	}
	return []*nftables.Rule{f.logRule(c, s, reason, m), drop}
}

// logRule logs what match matches in c (no verdict), rate-limited.
func (f *firewall) logRule(c *nftables.Chain, s *Slot, reason string, match []expr.Any) *nftables.Rule {
	prefix := LogPrefix(s.Index, reason)
	return &nftables.Rule{Table: f.table, Chain: c, Exprs: slices.Concat(match, []expr.Any{
		&expr.Limit{Type: expr.LimitTypePkts, Rate: logRate, Unit: expr.LimitTimeSecond, Burst: logBurst},
		&expr.Log{
			Key:     1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_SNAPLEN,
			Group:   f.logGroup,
			Snaplen: logSnap,
			Data:    []byte(prefix),
		},
	})}
}

// logAccept returns the rule accepting what match matches in c, preceded
// (when logging is on) by a rate-limited log of its new connections.
func (f *firewall) logAccept(c *nftables.Chain, s *Slot, match ...[]expr.Any) []*nftables.Rule {
	m := slices.Concat(match...)
	accept := &nftables.Rule{Table: f.table, Chain: c, Exprs: slices.Concat(m, verdict(expr.VerdictAccept))}
	if f.logGroup == 0 {
		return []*nftables.Rule{accept}
	}
	// ct state first: established packets skip the rest of the log rule.
	return []*nftables.Rule{f.logRule(c, s, ReasonAllow, slices.Concat(ctNew(), m)), accept}
}

// policy is the content Apply writes into the slot's (flushed) policy
// chain, nat chain and sets. The sets are listed with their new elements.
func (f *firewall) policy(s *Slot, p Parsed) ruleset {
	allow4, deny4 := only4(p.Allow), only4(p.Deny)
	allowSet, denySet := f.set(slotAllowSet(s.Index)), f.set(slotDenySet(s.Index))
	pol, nat := f.chain(slotChain(s.Index)), f.chain(slotNatChain(s.Index))
	add := func(rs *[]*nftables.Rule, c *nftables.Chain, parts ...[]expr.Any) {
		*rs = append(*rs, &nftables.Rule{Table: f.table, Chain: c, Exprs: slices.Concat(parts...)})
	}

	var polRules []*nftables.Rule
	// Base chains already drop non-IPv4; repeat it so the payload matches
	// below never read an IPv6 header. Then drop spoofed sources.
	polRules = append(polRules, f.logDrop(pol, s, ReasonIPv6, nfproto(expr.CmpOpNeq, unix.NFPROTO_IPV4))...)
	polRules = append(polRules, f.logDrop(pol, s, ReasonSpoof,
		ip4Addr(12), []expr.Any{&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: s.GuestIP.AsSlice()}})...)
	switch {
	case p.AllowAll:
		polRules = append(polRules, f.logAccept(pol, s)...)
	default:
		if len(allow4) > 0 {
			polRules = append(polRules, f.logAccept(pol, s, ip4Addr(16), lookup(allowSet))...)
		}
		if p.DenyAll {
			polRules = append(polRules, f.logDrop(pol, s, ReasonDeny)...)
			break
		}
		if len(deny4) > 0 {
			polRules = append(polRules, f.logDrop(pol, s, ReasonDeny, ip4Addr(16), lookup(denySet))...)
		}
		polRules = append(polRules, f.logAccept(pol, s)...)
	}

	var natRules []*nftables.Rule
	v4 := nfproto(expr.CmpOpEq, unix.NFPROTO_IPV4)
	switch {
	case f.redirectsWeb(p):
		// Domain rules: web traffic goes to the proxy, which matches
		// names; explicitly allowed prefixes bypass it unless content
		// must be inspected.
		if len(allow4) > 0 && !p.Intercept {
			add(&natRules, nat, v4, ip4Addr(16), lookup(allowSet), verdict(expr.VerdictReturn))
		}
		for _, port := range webPorts {
			add(&natRules, nat, v4, dport(unix.IPPROTO_TCP, port), redirect(f.proxy))
		}
	case f.proxy != 0 && p.Intercept:
		// Content inspection without domain rules: redirect only the web
		// traffic the address policy lets through (allow beats deny); the
		// rest is dropped by the filter chain, so a denied connect still
		// times out instead of reaching the proxy.
		redirectAllowed := func() {
			if len(allow4) == 0 {
				return
			}
			for _, port := range webPorts {
				add(&natRules, nat, v4, ip4Addr(16), lookup(allowSet), dport(unix.IPPROTO_TCP, port), redirect(f.proxy))
			}
		}
		switch {
		case p.AllowAll:
		case p.DenyAll:
			redirectAllowed()
			return f.slotRuleset(allowSet, denySet, allow4, deny4, pol, nat, polRules, natRules)
		default:
			redirectAllowed()
			if len(deny4) > 0 {
				add(&natRules, nat, v4, ip4Addr(16), lookup(denySet), verdict(expr.VerdictReturn))
			}
		}
		for _, port := range webPorts {
			add(&natRules, nat, v4, dport(unix.IPPROTO_TCP, port), redirect(f.proxy))
		}
	}
	return f.slotRuleset(allowSet, denySet, allow4, deny4, pol, nat, polRules, natRules)
}

// slotRuleset assembles the sets and chains of one slot.
func (f *firewall) slotRuleset(allowSet, denySet *nftables.Set, allow4, deny4 []netip.Prefix, pol, nat *nftables.Chain, polRules, natRules []*nftables.Rule) ruleset {
	return ruleset{
		sets: []setDef{
			{set: allowSet, elems: intervalElems(allow4)},
			{set: denySet, elems: intervalElems(deny4)},
		},
		chains: []chainDef{{chain: pol, rules: polRules}, {chain: nat, rules: natRules}},
	}
}

// redirectsWeb reports whether p sends TCP to ports 80 and 443 (outside
// its allowed prefixes) to the egress proxy.
func (f *firewall) redirectsWeb(p Parsed) bool {
	return f.proxy != 0 && p.HasDomains() && !p.AllowAll
}

// webPorts are the TCP ports redirected to the egress proxy.
var webPorts = []uint16{80, 443}

func only4(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is4() {
			out = append(out, p)
		}
	}
	return out
}

// intervalElems turns IPv4 prefixes into the elements of an interval set
// the way nft does: overlapping and adjacent ranges merged, each range as a
// start key and an end key (one past the range, flagged IntervalEnd), and a
// leading 0.0.0.0 end marker when the first range does not start at 0.
func intervalElems(ps []netip.Prefix) []nftables.SetElement {
	if len(ps) == 0 {
		return nil
	}
	type span struct{ lo, hi uint64 } // hi exclusive
	spans := make([]span, 0, len(ps))
	for _, p := range ps {
		p = p.Masked()
		lo := uint64(binary.BigEndian.Uint32(p.Addr().AsSlice()))
		spans = append(spans, span{lo, lo + 1<<(32-p.Bits())})
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
	merged := spans[:1]
	for _, s := range spans[1:] {
		last := &merged[len(merged)-1]
		if s.lo <= last.hi {
			last.hi = max(last.hi, s.hi)
			continue
		}
		merged = append(merged, s)
	}
	key := func(v uint64) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }
	var out []nftables.SetElement
	if merged[0].lo != 0 {
		out = append(out, nftables.SetElement{Key: key(0), IntervalEnd: true})
	}
	for _, s := range merged {
		out = append(out, nftables.SetElement{Key: key(s.lo)})
		if s.hi <= 0xffffffff {
			out = append(out, nftables.SetElement{Key: key(s.hi), IntervalEnd: true})
		}
	}
	return out
}

// Expression helpers. Register 1 throughout.

// ifname matches an interface name exactly, or by prefix when wildcard
// (nft's "name*").
func ifname(key expr.MetaKey, name string, wildcard bool) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameData(name, wildcard)},
	}
}

func ifnameNeq(key expr.MetaKey, prefix string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifnameData(prefix, true)},
	}
}

func ifnameData(name string, wildcard bool) []byte {
	if wildcard {
		return []byte(name)
	}
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func nfproto(op expr.CmpOp, proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: []byte{proto}},
	}
}

func pkttypeNotHost() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPKTTYPE, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.PACKET_HOST}},
	}
}

// ip4Addr loads the IPv4 source (offset 12) or destination (16) address.
func ip4Addr(offset uint32) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4}}
}

func ip4InPrefix(offset uint32, p netip.Prefix) []expr.Any {
	p = p.Masked()
	mask := binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-p.Bits()))
	return append(ip4Addr(offset),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
	)
}

func lookup(s *nftables.Set) []expr.Any {
	return []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID}}
}

func dport(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func ctNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func redirect(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Redir{RegisterProtoMin: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func jump(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}
