package egress

import (
	"net/netip"
	"testing"
)

func TestDecideConn(t *testing.T) {
	pub := netip.MustParseAddr("203.0.113.10")
	other := netip.MustParseAddr("198.51.100.10")
	for _, tc := range []struct {
		name          string
		allow, deny   []string
		dst           netip.Addr
		host          string
		allowed, orig bool
		rule          string
	}{
		{"allow-all, any name", []string{"*"}, nil, pub, "evil.test", true, true, "0.0.0.0/0"},
		{"allow-all, no SNI", []string{"*"}, nil, pub, "", true, true, "0.0.0.0/0"},
		{"allowed prefix beats deny-all and names", []string{"203.0.113.0/24"}, []string{"0.0.0.0/0"}, pub, "whatever.test", true, true, "203.0.113.0/24"},
		{"allowed prefix with no name", []string{"203.0.113.10"}, []string{"0.0.0.0/0"}, pub, "", true, true, "203.0.113.10/32"},
		{"deny-all, allowed domain resolves", []string{"api.test"}, []string{"0.0.0.0/0"}, pub, "api.test", true, false, "api.test"},
		{"deny-all, other domain", []string{"api.test"}, []string{"0.0.0.0/0"}, pub, "evil.test", false, false, "0.0.0.0/0"},
		{"deny-all, no name", []string{"api.test"}, []string{"0.0.0.0/0"}, pub, "", false, false, ""},
		{"default allow, no rules", nil, nil, pub, "", true, true, ""},
		{"default allow, denied domain", nil, []string{"evil.test"}, pub, "evil.test", false, false, "evil.test"},
		{"default allow, other name", nil, []string{"evil.test"}, pub, "ok.test", true, true, ""},
		{"denied prefix, allowed domain", []string{"api.test"}, []string{"203.0.113.0/24"}, pub, "api.test", true, false, "api.test"},
		{"denied prefix, other name", nil, []string{"203.0.113.0/24"}, pub, "ok.test", true, false, ""},
		{"domain allow list is an allow list", []string{"api.test"}, nil, other, "ok.test", false, false, ""},
		{"domain allow list, allowed name", []string{"api.test"}, nil, other, "api.test", true, false, "api.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := DecideConn(mustParse(t, tc.allow, tc.deny), tc.dst, tc.host)
			if v.Allow != tc.allowed || v.DialOriginal != tc.orig || v.Rule != tc.rule || v.Reason == "" {
				t.Errorf("DecideConn(allow %q deny %q, %v, %q) = %+v; want allow %v original %v rule %q", tc.allow, tc.deny, tc.dst, tc.host, v, tc.allowed, tc.orig, tc.rule)
			}
		})
	}
}
