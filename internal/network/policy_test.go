package network

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		name string
		in   Policy
		want Parsed
	}{
		{"empty", Policy{}, Parsed{}},
		{"deny all", Policy{DenyOut: []string{"0.0.0.0/0"}}, Parsed{DenyAll: true}},
		{"deny star", Policy{DenyOut: []string{"*"}}, Parsed{DenyAll: true}},
		{"allow all", Policy{AllowOut: []string{"*"}, DenyOut: []string{"1.2.3.4"}}, Parsed{AllowAll: true, Deny: pfx("1.2.3.4/32")}},
		{
			"mixed",
			Policy{
				AllowOut: []string{"198.51.100.0/24", "8.8.8.8", "Example.COM.", "*.api.example.com", "2001:db8::1", "2001:db8::/32", "::ffff:1.2.3.4"},
				DenyOut:  []string{"*", "10.1.2.3/8", "evil.example"},
			},
			Parsed{
				DenyAll:      true,
				Allow:        pfx("198.51.100.0/24", "8.8.8.8/32", "2001:db8::1/128", "2001:db8::/32", "1.2.3.4/32"),
				Deny:         pfx("10.0.0.0/8"),
				AllowDomains: []Domain{{Name: "example.com"}, {Name: "api.example.com", Wildcard: true}},
				DenyDomains:  []Domain{{Name: "evil.example"}},
			},
		},
		{"duplicates collapse", Policy{AllowOut: []string{"1.1.1.1", "1.1.1.1/32", "a.com", "A.com"}},
			Parsed{Allow: pfx("1.1.1.1/32"), AllowDomains: []Domain{{Name: "a.com"}}}},
		{"mapped prefix", Policy{DenyOut: []string{"::ffff:10.0.0.0/104"}}, Parsed{Deny: pfx("10.0.0.0/8")}},
		{"underscore and punycode", Policy{AllowOut: []string{"_dmarc.example.com", "xn--bcher-kva.example"}},
			Parsed{AllowDomains: []Domain{{Name: "_dmarc.example.com"}, {Name: "xn--bcher-kva.example"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePolicy(tt.in)
			if err != nil {
				t.Fatalf("ParsePolicy(%+v): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParsePolicy(%+v)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParsePolicyErrors(t *testing.T) {
	tests := []struct {
		entry string
		deny  bool
	}{
		{entry: ""},
		{entry: "10.0.0.0/33"},
		{entry: "10.0.0.0/-1", deny: true},
		{entry: "300.1.1.1"},
		{entry: "1.2.3"},
		{entry: "1.2.3.4/"},
		{entry: "fe80::1%eth0"},
		{entry: "2001:db8::zz"},
		{entry: "*."},
		{entry: "**.example.com"},
		{entry: "a.*.example.com"},
		{entry: "*example.com"},
		{entry: "example.com/8"},
		{entry: " example.com"},
		{entry: "example .com"},
		{entry: "example.com\n"},
		{entry: "exämple.com"},
		{entry: "bad_chär.com", deny: true},
		{entry: "a..b"},
		{entry: "-a.com"},
		{entry: "a-.com"},
		{entry: "exa!mple.com"},
		{entry: "~.*\\.example\\.com"},
		{entry: "http://example.com"},
		{entry: "example.com:443"},
		{entry: "."},
		{entry: "a.123"},
		{entry: strings.Repeat("a", 64) + ".com"},
	}
	for _, tt := range tests {
		p := Policy{AllowOut: []string{"ok.example", tt.entry}}
		field := "allow_out"
		if tt.deny {
			p = Policy{DenyOut: []string{"ok.example", tt.entry}}
			field = "deny_out"
		}
		_, err := ParsePolicy(p)
		var pe *PolicyError
		if !errors.As(err, &pe) {
			t.Errorf("ParsePolicy(%q) = %v, want a *PolicyError", tt.entry, err)
			continue
		}
		if !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("ParsePolicy(%q): errors.Is(ErrInvalidPolicy) false", tt.entry)
		}
		if pe.Field != field || pe.Index != 1 || pe.Entry != tt.entry {
			t.Errorf("ParsePolicy(%q) error names %s[%d] %q, want %s[1] %q", tt.entry, pe.Field, pe.Index, pe.Entry, field, tt.entry)
		}
	}
	long := make([]string, MaxPolicyEntries+1)
	for i := range long {
		long[i] = "1.2.3.4"
	}
	if err := (Policy{DenyOut: long}).Validate(); !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("Validate with %d entries = %v, want ErrInvalidPolicy", len(long), err)
	}
}

func TestDomainMatch(t *testing.T) {
	exact, wild := Domain{Name: "example.com"}, Domain{Name: "example.com", Wildcard: true}
	tests := []struct {
		d    Domain
		host string
		want bool
	}{
		{exact, "example.com", true},
		{exact, "EXAMPLE.com.", true},
		{exact, "www.example.com", false},
		{exact, "notexample.com", false},
		{wild, "example.com", false}, // subdomains only
		{wild, "www.example.com", true},
		{wild, "a.b.example.com", true},
		{wild, "Www.Example.Com.", true},
		{wild, "wwwexample.com", false},
		{wild, ".example.com", false},
		{wild, "example.com.evil", false},
	}
	for _, tt := range tests {
		if got := tt.d.Match(tt.host); got != tt.want {
			t.Errorf("%s.Match(%q) = %v, want %v", tt.d, tt.host, got, tt.want)
		}
	}
}

func TestAllowsAddr(t *testing.T) {
	mustParse := func(p Policy) Parsed {
		t.Helper()
		got, err := ParsePolicy(p)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	tests := []struct {
		p    Policy
		addr string
		want bool
	}{
		{Policy{}, "203.0.113.1", true},
		{Policy{DenyOut: []string{"*"}}, "203.0.113.1", false},
		{Policy{DenyOut: []string{"*"}, AllowOut: []string{"198.51.100.0/24"}}, "198.51.100.7", true},
		{Policy{DenyOut: []string{"*"}, AllowOut: []string{"198.51.100.0/24"}}, "203.0.113.1", false},
		{Policy{DenyOut: []string{"198.51.100.0/24"}, AllowOut: []string{"198.51.100.1"}}, "198.51.100.1", true},
		{Policy{DenyOut: []string{"198.51.100.0/24"}, AllowOut: []string{"198.51.100.1"}}, "198.51.100.2", false},
		{Policy{DenyOut: []string{"198.51.100.0/24"}}, "::ffff:198.51.100.2", false},
		{Policy{AllowOut: []string{"*"}, DenyOut: []string{"*"}}, "203.0.113.1", true},
		{Policy{DenyOut: []string{"*"}, AllowOut: []string{"example.com"}}, "203.0.113.1", false},
	}
	for _, tt := range tests {
		if got := mustParse(tt.p).AllowsAddr(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("ParsePolicy(%+v).AllowsAddr(%s) = %v, want %v", tt.p, tt.addr, got, tt.want)
		}
	}
}

// FuzzParseEntry: classification never panics; an accepted domain renders
// back to an entry that parses to the same domain; accepted prefixes are
// masked.
func FuzzParseEntry(f *testing.F) {
	for _, s := range []string{"example.com", "*.example.com", "10.0.0.0/8", "::1", "*", "", "*.", "a..b", "xn--x.y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, e string) {
		kind, p, d, reason := classify(e)
		switch kind {
		case entryInvalid:
			if reason == "" {
				t.Errorf("classify(%q) invalid without a reason", e)
			}
		case entryPrefix:
			if p != p.Masked() {
				t.Errorf("classify(%q) = %s, not masked", e, p)
			}
		case entryDomain:
			k2, _, d2, _ := classify(d.String())
			if k2 != entryDomain || d2 != d {
				t.Errorf("classify(%q) = %v; reparsing %q gave %v", e, d, d.String(), d2)
			}
			if !d.Wildcard && !d.Match(d.Name) {
				t.Errorf("%v does not match its own name", d)
			}
			if d.Wildcard && (d.Match(d.Name) || !d.Match("x."+d.Name)) {
				t.Errorf("wildcard %v: Match(name)=%v Match(x.name)=%v", d, d.Match(d.Name), d.Match("x."+d.Name))
			}
		}
	})
}
