package egress

import (
	"net/netip"
	"slices"

	"github.com/declaw/declaw/internal/network"
)

// Verdict is the policy's answer for one server name.
type Verdict struct {
	Allow  bool
	Rule   string // the policy entry that decided, e.g. "*.example.com"; empty if none
	Reason string // short, user-safe, recorded in the audit event
}

// Decide is the pure policy decision for a server name seen in SNI or Host.
// It mirrors [network.Parsed.AllowsAddr] for names, with allow beating deny:
//
//  1. an empty name or an IP literal is blocked (domain rules cannot
//     vouch for an address; allowed addresses are not redirected to the
//     proxy in the first place);
//  2. a name matching an allow_out domain is allowed;
//  3. a name matching a deny_out domain is blocked;
//  4. ALL_TRAFFIC in allow_out allows, in deny_out blocks;
//  5. when allow_out lists domains, any other name is blocked (a domain
//     allow list is an allow list);
//  6. otherwise (only deny domains) the name is allowed.
func Decide(p network.Parsed, host string) Verdict {
	if host == "" {
		return Verdict{Reason: "no server name"}
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return Verdict{Reason: "IP address as server name"}
	}
	for _, d := range p.AllowDomains {
		if d.Match(host) {
			return Verdict{Allow: true, Rule: d.String(), Reason: "allowed domain"}
		}
	}
	for _, d := range p.DenyDomains {
		if d.Match(host) {
			return Verdict{Rule: d.String(), Reason: "denied domain"}
		}
	}
	switch {
	case p.AllowAll:
		return Verdict{Allow: true, Rule: "0.0.0.0/0", Reason: "all traffic allowed"}
	case p.DenyAll:
		return Verdict{Rule: "0.0.0.0/0", Reason: "domain not allowed"}
	case len(p.AllowDomains) > 0:
		return Verdict{Reason: "domain not allowed"}
	}
	return Verdict{Allow: true, Reason: "domain not denied"}
}

// DefaultBlocked are the ranges the proxy never dials, whatever DNS says:
// "this network", RFC 1918, CGNAT, loopback, link-local (cloud metadata),
// IETF protocol assignments, benchmarking, multicast, reserved and
// broadcast; IPv6 unspecified, loopback, IPv4-compatible/translated
// prefixes, discard, ULA (fd00:ec2::254 included), link-local and
// multicast. The documentation ranges (192.0.2.0/24, 198.51.100.0/24,
// 203.0.113.0/24, 2001:db8::/32) are not in it.
func DefaultBlocked() []netip.Prefix {
	return slices.Clone(defaultBlocked)
}

var defaultBlocked = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("::/96"),        // IPv4-compatible (deprecated)
	netip.MustParsePrefix("64:ff9b::/96"), // NAT64: could reach any IPv4 behind it
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("100::/64"), // discard
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// permitted splits resolved addresses into those the proxy may dial and
// those it drops: invalid or zoned addresses, addresses in blocked (always),
// and addresses in the policy's deny prefixes unless an allow prefix also
// covers them (allow beats deny). IPv4-mapped IPv6 addresses are unmapped
// first. Order is kept.
func permitted(addrs []netip.Addr, p network.Parsed, blocked []netip.Prefix) (ok, dropped []netip.Addr) {
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case !a.IsValid() || a.Zone() != "",
			inAny(blocked, a),
			inAny(p.Deny, a) && !inAny(p.Allow, a):
			dropped = append(dropped, a)
		default:
			ok = append(ok, a)
		}
	}
	return ok, dropped
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}

// ConnVerdict is the decision for one connection (or one intercepted
// request): the name verdict plus whether the proxy dials the address the
// sandbox dialed instead of resolving the name.
type ConnVerdict struct {
	Verdict
	// DialOriginal is set when the original destination address itself is
	// allowed at L3: the proxy then connects to it (the SNI or Host only
	// names the server for TLS and the Host header).
	DialOriginal bool
}

// DecideConn decides a connection to dst naming host, on the sandbox's
// policy. The address is allowed at L3 when the policy is allow-all, when
// an allow prefix covers dst, or by default (not deny-all, no deny prefix
// covering dst) when allow_out lists no domains; then the connection is
// allowed whatever the name (an empty or IP-literal name included) and
// dialed to dst, except that under the default allow a name matching a
// deny_out domain is still blocked. Otherwise the name decides ([Decide])
// and the proxy resolves it. The content-scanned sandboxes' web traffic
// reaches the proxy also when it is allowed by address, which is why the
// address matters here.
func DecideConn(p network.Parsed, dst netip.Addr, host string) ConnVerdict {
	dst = dst.Unmap()
	if p.AllowAll {
		return ConnVerdict{Verdict{Allow: true, Rule: "0.0.0.0/0", Reason: "all traffic allowed"}, true}
	}
	for _, pf := range p.Allow {
		if pf.Contains(dst) {
			return ConnVerdict{Verdict{Allow: true, Rule: pf.String(), Reason: "allowed address"}, true}
		}
	}
	v := Decide(p, host)
	if p.DenyAll || inAny(p.Deny, dst) || len(p.AllowDomains) > 0 {
		return ConnVerdict{Verdict: v}
	}
	if v.Rule != "" && !v.Allow { // a denied domain
		return ConnVerdict{Verdict: v}
	}
	return ConnVerdict{Verdict{Allow: true, Reason: "address not denied"}, true}
}
