package network

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// render prints a ruleset in the style of `nft --debug=netlink`: every set
// with its elements decoded back to ranges, every chain with its rules as
// the exact expressions sent to the kernel.
func render(rs ruleset) string {
	var b strings.Builder
	for _, sd := range rs.sets {
		fmt.Fprintf(&b, "set %s interval=%v { %s }\n", sd.set.Name, sd.set.Interval, renderElems(sd.elems))
	}
	for _, cd := range rs.chains {
		c := cd.chain
		if c.Hooknum != nil {
			fmt.Fprintf(&b, "chain %s (type %s hook %d priority %d policy %v)\n", c.Name, c.Type, *c.Hooknum, *c.Priority, *c.Policy)
		} else {
			fmt.Fprintf(&b, "chain %s\n", c.Name)
		}
		for _, r := range cd.rules {
			b.WriteString(renderRule(r))
		}
	}
	for _, r := range rs.rules {
		fmt.Fprintf(&b, "into %s\n", r.Chain.Name)
		b.WriteString(renderRule(r))
	}
	return b.String()
}

func renderElems(es []nftables.SetElement) string {
	var parts []string
	for _, e := range es {
		a, _ := netip.AddrFromSlice(e.Key)
		if e.IntervalEnd {
			parts = append(parts, "end "+a.String())
		} else {
			parts = append(parts, a.String())
		}
	}
	return strings.Join(parts, ", ")
}

func renderRule(r *nftables.Rule) string {
	var parts []string
	for _, e := range r.Exprs {
		parts = append(parts, renderExpr(e))
	}
	s := "  [ " + strings.Join(parts, " ] [ ") + " ]"
	if len(r.UserData) > 0 {
		s += fmt.Sprintf(" userdata=%q", r.UserData)
	}
	return s + "\n"
}

var metaNames = map[expr.MetaKey]string{
	expr.MetaKeyIIFNAME: "iifname", expr.MetaKeyOIFNAME: "oifname", expr.MetaKeyNFPROTO: "nfproto",
	expr.MetaKeyL4PROTO: "l4proto", expr.MetaKeyPKTTYPE: "pkttype",
}

var cmpNames = map[expr.CmpOp]string{expr.CmpOpEq: "eq", expr.CmpOpNeq: "neq"}

var verdictNames = map[expr.VerdictKind]string{
	expr.VerdictAccept: "accept", expr.VerdictDrop: "drop", expr.VerdictReturn: "return", expr.VerdictJump: "jump",
}

func renderExpr(e expr.Any) string {
	switch e := e.(type) {
	case *expr.Meta:
		return fmt.Sprintf("meta load %s => reg %d", metaNames[e.Key], e.Register)
	case *expr.Cmp:
		return fmt.Sprintf("cmp %s reg %d %s", cmpNames[e.Op], e.Register, renderData(e.Data))
	case *expr.Payload:
		base := map[expr.PayloadBase]string{expr.PayloadBaseNetworkHeader: "network", expr.PayloadBaseTransportHeader: "transport"}[e.Base]
		return fmt.Sprintf("payload load %db @ %s header + %d => reg %d", e.Len, base, e.Offset, e.DestRegister)
	case *expr.Lookup:
		return fmt.Sprintf("lookup reg %d set %s", e.SourceRegister, e.SetName)
	case *expr.Bitwise:
		return fmt.Sprintf("bitwise reg %d = (reg %d & %x) ^ %x", e.DestRegister, e.SourceRegister, e.Mask, e.Xor)
	case *expr.Ct:
		return fmt.Sprintf("ct load %d => reg %d", e.Key, e.Register)
	case *expr.Immediate:
		return fmt.Sprintf("immediate reg %d %x", e.Register, e.Data)
	case *expr.Redir:
		return fmt.Sprintf("redir proto_min reg %d flags %#x", e.RegisterProtoMin, e.Flags)
	case *expr.Masq:
		return "masq"
	case *expr.Verdict:
		if e.Kind == expr.VerdictJump {
			return "jump " + e.Chain
		}
		return verdictNames[e.Kind]
	}
	return fmt.Sprintf("%T%+v", e, e)
}

// renderData shows interface names as strings, 4-byte values as IPv4
// addresses when they look like one, the rest in hex.
func renderData(d []byte) string {
	if len(d) > 1 && bytes.IndexFunc(bytes.TrimRight(d, "\x00"), func(r rune) bool { return r < 0x20 || r > 0x7e }) < 0 && d[0] >= 'a' {
		return fmt.Sprintf("%q", bytes.TrimRight(d, "\x00"))
	}
	if len(d) == 4 && d[0] >= 10 {
		return netip.AddrFrom4([4]byte(d)).String()
	}
	return fmt.Sprintf("%x", d)
}

func goldenCompare(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (run with -update after checking):\n--- got\n%s\n--- want\n%s", name, path, got, want)
	}
}

func testFirewall() (*firewall, *Slot) {
	fw := newFirewall("declaw", netip.MustParsePrefix("10.200.0.0/16"), 53, 15001)
	s := &Slot{
		Index: 3, NetNS: "declaw-s3", HostIf: "declawh3", GuestIf: "eth0",
		HostIP: netip.MustParseAddr("10.200.0.13"), GuestIP: netip.MustParseAddr("10.200.0.14"),
		Prefix: netip.MustParsePrefix("10.200.0.12/30"),
	}
	return fw, s
}

func TestGoldenBase(t *testing.T) {
	fw, s := testFirewall()
	goldenCompare(t, "base", render(fw.base()))
	goldenCompare(t, "slot", render(fw.slot(s)))
	noPorts := newFirewall("declaw", netip.MustParsePrefix("10.200.0.0/16"), 0, 0)
	goldenCompare(t, "slot-noports", render(noPorts.slot(s)))
}

func TestGoldenPolicy(t *testing.T) {
	tests := []struct {
		name  string
		p     Policy
		proxy bool
	}{
		{"allow-all-default", Policy{}, true},
		{"deny-all", Policy{DenyOut: []string{"0.0.0.0/0"}}, true},
		{"allow-beats-deny", Policy{DenyOut: []string{"*"}, AllowOut: []string{"198.51.100.0/24", "198.51.100.7", "2001:db8::/32"}}, true},
		{"deny-cidrs", Policy{DenyOut: []string{"203.0.113.0/24", "203.0.112.0/24", "10.0.0.0/8"}}, true},
		{"explicit-allow-all", Policy{AllowOut: []string{"*"}, DenyOut: []string{"*", "example.com"}}, true},
		{"domains-proxy", Policy{DenyOut: []string{"*"}, AllowOut: []string{"*.example.com", "198.51.100.1"}}, true},
		{"domains-noproxy", Policy{DenyOut: []string{"*"}, AllowOut: []string{"*.example.com"}}, false},
		{"intercept-default", Policy{Intercept: true}, true},
		{"intercept-deny-all", Policy{DenyOut: []string{"*"}, Intercept: true}, true},
		{"intercept-allow-beats-deny", Policy{DenyOut: []string{"*"}, AllowOut: []string{"198.51.100.0/24"}, Intercept: true}, true},
		{"intercept-deny-cidrs", Policy{DenyOut: []string{"203.0.113.0/24"}, AllowOut: []string{"203.0.113.7"}, Intercept: true}, true},
		{"intercept-domains", Policy{DenyOut: []string{"*"}, AllowOut: []string{"*.example.com", "198.51.100.1"}, Intercept: true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fw, s := testFirewall()
			if !tt.proxy {
				fw.proxy = 0
			}
			p, err := ParsePolicy(tt.p)
			if err != nil {
				t.Fatal(err)
			}
			goldenCompare(t, "policy-"+tt.name, fmt.Sprintf("# %+v proxy=%v\n%s", tt.p, tt.proxy, render(fw.policy(s, p))))
		})
	}
}

func TestIntervalElems(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"10.0.0.0/8"}, "end 0.0.0.0, 10.0.0.0, end 11.0.0.0"},
		// overlapping, contained and adjacent prefixes merge
		{[]string{"10.1.0.0/16", "10.0.0.0/8", "11.0.0.0/8", "1.2.3.4/32"},
			"end 0.0.0.0, 1.2.3.4, end 1.2.3.5, 10.0.0.0, end 12.0.0.0"},
		// starting at 0: no leading end marker; reaching the top: no end key
		{[]string{"0.0.0.0/8", "240.0.0.0/4"}, "0.0.0.0, end 1.0.0.0, 240.0.0.0"},
		{[]string{"128.0.0.0/1", "0.0.0.0/1"}, "0.0.0.0"},
	}
	for _, tt := range tests {
		if got := renderElems(intervalElems(pfx(tt.in...))); got != tt.want {
			t.Errorf("intervalElems(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCutFilter(t *testing.T) {
	_, s := testFirewall()
	p, err := ParsePolicy(Policy{DenyOut: []string{"*"}, AllowOut: []string{"198.51.100.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	f := &cutFilter{slot: s, policy: p, blocked: append(alwaysBlocked4, netip.MustParsePrefix("10.200.0.0/16"))}
	flow := func(src, dst, replySrc string) *netlink.ConntrackFlow {
		ip := func(s string) net.IP { return net.IP(netip.MustParseAddr(s).AsSlice()) }
		return &netlink.ConntrackFlow{
			Forward: netlink.IPTuple{SrcIP: ip(src), DstIP: ip(dst)},
			Reverse: netlink.IPTuple{SrcIP: ip(replySrc), DstIP: ip("198.51.100.2")},
		}
	}
	tests := []struct {
		flow *netlink.ConntrackFlow
		want bool
	}{
		{flow("10.200.0.14", "203.0.113.1", "203.0.113.1"), true},    // now denied
		{flow("10.200.0.14", "198.51.100.1", "198.51.100.1"), false}, // still allowed
		{flow("10.200.0.14", "169.254.169.254", "169.254.169.254"), true},
		{flow("10.200.0.14", "203.0.113.1", "10.200.0.13"), false}, // redirected to the proxy
		{flow("10.200.0.14", "10.200.0.13", "10.200.0.13"), false}, // DNS on the gateway
		{flow("10.200.0.18", "203.0.113.1", "203.0.113.1"), false}, // another slot
	}
	for i, tt := range tests {
		if got := f.MatchConntrackFlow(tt.flow); got != tt.want {
			t.Errorf("case %d: MatchConntrackFlow(%v -> %v) = %v, want %v", i, tt.flow.Forward.SrcIP, tt.flow.Forward.DstIP, got, tt.want)
		}
	}

	// Default allow, a denied domain, a proxy: direct web flows are cut so
	// they go through the proxy; other ports and allowed prefixes stay.
	p, err = ParsePolicy(Policy{DenyOut: []string{"evil.example"}, AllowOut: []string{"198.51.100.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	f = &cutFilter{slot: s, policy: p, redirectWeb: true}
	web := func(dst string, proto uint8, port uint16) *netlink.ConntrackFlow {
		fl := flow("10.200.0.14", dst, dst)
		fl.Forward.Protocol, fl.Forward.DstPort = proto, port
		return fl
	}
	webTests := []struct {
		flow *netlink.ConntrackFlow
		want bool
	}{
		{web("203.0.113.1", 6, 443), true},
		{web("203.0.113.1", 6, 80), true},
		{web("203.0.113.1", 6, 22), false},
		{web("203.0.113.1", 17, 443), false},
		{web("198.51.100.1", 6, 443), false},
	}
	for i, tt := range webTests {
		if got := f.MatchConntrackFlow(tt.flow); got != tt.want {
			t.Errorf("web case %d: MatchConntrackFlow(%v proto %d port %d) = %v, want %v", i, tt.flow.Forward.DstIP, tt.flow.Forward.Protocol, tt.flow.Forward.DstPort, got, tt.want)
		}
	}
	f.redirectWeb = false
	if f.MatchConntrackFlow(web("203.0.113.1", 6, 443)) {
		t.Errorf("without a proxy redirect, a web flow to an allowed address was cut")
	}
}
