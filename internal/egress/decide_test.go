package egress

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/declaw/declaw/internal/network"
)

func mustParse(t testing.TB, allow, deny []string) network.Parsed {
	t.Helper()
	p, err := network.ParsePolicy(network.Policy{AllowOut: allow, DenyOut: deny})
	if err != nil {
		t.Fatalf("ParsePolicy(%q, %q): %v", allow, deny, err)
	}
	return p
}

func TestDecide(t *testing.T) {
	list := []string{"api.example.test", "*.allowed.test"}
	all := []string{"0.0.0.0/0"}
	tests := []struct {
		name        string
		allow, deny []string
		host        string
		want        bool
		rule        string
	}{
		{"exact", list, nil, "api.example.test", true, "api.example.test"},
		{"exact is not wildcard", list, nil, "x.api.example.test", false, ""},
		{"wildcard sub", list, nil, "a.allowed.test", true, "*.allowed.test"},
		{"wildcard deep", list, nil, "a.b.allowed.test", true, "*.allowed.test"},
		{"wildcard not apex", list, nil, "allowed.test", false, ""},
		{"suffix trick", list, nil, "evilallowed.test", false, ""},
		{"unlisted", list, nil, "evil.test", false, ""},
		{"unlisted with deny all", list, all, "evil.test", false, "0.0.0.0/0"},
		{"allowed with deny all", list, all, "api.example.test", true, "api.example.test"},
		{"allow beats deny", list, []string{"*.example.test"}, "api.example.test", true, "api.example.test"},
		{"deny domain only", nil, []string{"*.evil.test"}, "x.evil.test", false, "*.evil.test"},
		{"deny domain only other", nil, []string{"*.evil.test"}, "api.example.test", true, ""},
		{"deny domain with allow all", all, []string{"evil.test"}, "evil.test", false, "evil.test"},
		{"allow all", all, nil, "anything.test", true, "0.0.0.0/0"},
		{"empty name", list, nil, "", false, ""},
		{"ip literal", []string{"*"}, nil, "203.0.113.10", false, ""},
		{"ip literal v6", list, nil, "2001:db8::1", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Decide(mustParse(t, tt.allow, tt.deny), tt.host)
			if v.Allow != tt.want || v.Rule != tt.rule || v.Reason == "" {
				t.Errorf("Decide(allow %q deny %q, %q) = %+v; want Allow %v Rule %q and a reason", tt.allow, tt.deny, tt.host, v, tt.want, tt.rule)
			}
		})
	}
}

func TestPermitted(t *testing.T) {
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	sandbox := netip.MustParsePrefix("10.200.0.0/16")
	blocked := append(DefaultBlocked(), sandbox)
	tests := []struct {
		name        string
		allow, deny []string
		blocked     []netip.Prefix
		in          []netip.Addr
		ok, dropped []netip.Addr
	}{
		{"public kept in order", nil, nil, blocked,
			addrs("198.51.100.10", "2001:db8:1::10", "203.0.113.10"),
			addrs("198.51.100.10", "2001:db8:1::10", "203.0.113.10"), nil},
		{"private and metadata dropped", nil, nil, blocked,
			addrs("169.254.169.254", "10.1.2.3", "172.16.0.1", "192.168.1.1", "127.0.0.1", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "198.51.100.10"),
			addrs("198.51.100.10"),
			addrs("169.254.169.254", "10.1.2.3", "172.16.0.1", "192.168.1.1", "127.0.0.1", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255")},
		{"ipv6 private dropped", nil, nil, blocked,
			addrs("::1", "::", "fd00:ec2::254", "fe80::1", "ff02::1", "64:ff9b::a9fe:a9fe", "2001:db8::5"),
			addrs("2001:db8::5"),
			addrs("::1", "::", "fd00:ec2::254", "fe80::1", "ff02::1", "64:ff9b::a9fe:a9fe")},
		{"mapped unmapped then checked", nil, nil, blocked,
			addrs("::ffff:169.254.169.254", "::ffff:198.51.100.10"),
			addrs("198.51.100.10"), addrs("169.254.169.254")},
		{"sandbox cidr", nil, nil, blocked, addrs("10.200.0.6"), nil, addrs("10.200.0.6")},
		{"deny prefix", []string{"a.test"}, []string{"203.0.113.0/24"}, blocked,
			addrs("203.0.113.10", "198.51.100.10"), addrs("198.51.100.10"), addrs("203.0.113.10")},
		{"allow beats deny prefix", []string{"203.0.113.10"}, []string{"203.0.113.0/24"}, blocked,
			addrs("203.0.113.10"), addrs("203.0.113.10"), nil},
		{"deny all does not drop", []string{"a.test"}, []string{"*"}, blocked,
			addrs("198.51.100.10"), addrs("198.51.100.10"), nil},
		{"allow prefix does not unblock metadata", []string{"169.254.0.0/16"}, nil, blocked,
			addrs("169.254.169.254"), nil, addrs("169.254.169.254")},
		{"empty blocked list", nil, nil, []netip.Prefix{},
			addrs("127.0.0.1"), addrs("127.0.0.1"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, dropped := permitted(tt.in, mustParse(t, tt.allow, tt.deny), tt.blocked)
			if !slices.Equal(ok, tt.ok) || !slices.Equal(dropped, tt.dropped) {
				t.Errorf("permitted(%v) = %v, dropped %v; want %v, dropped %v", tt.in, ok, dropped, tt.ok, tt.dropped)
			}
		})
	}
}
