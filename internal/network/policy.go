package network

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// MaxPolicyEntries bounds each of allow_out and deny_out.
const MaxPolicyEntries = 1024

// Parsed is a validated [Policy], its entries classified by kind.
type Parsed struct {
	AllowAll     bool           // allow_out holds ALL_TRAFFIC
	DenyAll      bool           // deny_out holds ALL_TRAFFIC
	Allow        []netip.Prefix // masked; ALL_TRAFFIC is not listed here
	Deny         []netip.Prefix
	AllowDomains []Domain
	DenyDomains  []Domain
	Intercept    bool // Policy.Intercept
}

// Domain is a domain rule: Name is lower-case, without a trailing dot.
// A Wildcard domain ("*.example.com") matches strict subdomains of Name only.
type Domain struct {
	Name     string
	Wildcard bool
}

func (d Domain) String() string {
	if d.Wildcard {
		return "*." + d.Name
	}
	return d.Name
}

// Match reports whether host (any case, optional trailing dot) is covered by d.
func (d Domain) Match(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if !d.Wildcard {
		return host == d.Name
	}
	return strings.HasSuffix(host, "."+d.Name) && len(host) > len(d.Name)+1
}

// PolicyError names the policy entry that failed validation.
type PolicyError struct {
	Field  string // "allow_out" or "deny_out"
	Index  int
	Entry  string
	Reason string
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("%s[%d] %q: %s", e.Field, e.Index, e.Entry, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidPolicy) true.
func (e *PolicyError) Is(target error) bool { return target == ErrInvalidPolicy }

// ParsePolicy validates p and classifies its entries. The error is a
// *PolicyError naming the first bad entry.
func ParsePolicy(p Policy) (Parsed, error) {
	var out Parsed
	var err error
	out.AllowAll, out.Allow, out.AllowDomains, err = parseList("allow_out", p.AllowOut)
	if err != nil {
		return Parsed{}, err
	}
	out.DenyAll, out.Deny, out.DenyDomains, err = parseList("deny_out", p.DenyOut)
	if err != nil {
		return Parsed{}, err
	}
	out.Intercept = p.Intercept
	return out, nil
}

// Validate reports whether p is well formed; see [ParsePolicy].
func (p Policy) Validate() error {
	_, err := ParsePolicy(p)
	return err
}

// AllowsAddr is the address-level verdict of the policy for a destination:
// allow-all, then allowed prefixes, then deny-all, then denied prefixes,
// otherwise allowed. Domains play no part, and the ranges a slot never
// reaches (see the package doc) are not considered.
func (p Parsed) AllowsAddr(a netip.Addr) bool {
	a = a.Unmap()
	if p.AllowAll || containsAddr(p.Allow, a) {
		return true
	}
	if p.DenyAll || containsAddr(p.Deny, a) {
		return false
	}
	return true
}

// HasDomains reports whether any domain rule is present.
func (p Parsed) HasDomains() bool {
	return len(p.AllowDomains)+len(p.DenyDomains) > 0
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}

func parseList(field string, entries []string) (all bool, prefixes []netip.Prefix, domains []Domain, err error) {
	if len(entries) > MaxPolicyEntries {
		return false, nil, nil, &PolicyError{Field: field, Index: MaxPolicyEntries, Entry: entries[MaxPolicyEntries],
			Reason: fmt.Sprintf("more than %d entries", MaxPolicyEntries)}
	}
	for i, e := range entries {
		kind, pfx, dom, reason := classify(e)
		switch kind {
		case entryInvalid:
			return false, nil, nil, &PolicyError{Field: field, Index: i, Entry: e, Reason: reason}
		case entryAll:
			all = true
		case entryPrefix:
			if !slices.Contains(prefixes, pfx) {
				prefixes = append(prefixes, pfx)
			}
		case entryDomain:
			if !slices.Contains(domains, dom) {
				domains = append(domains, dom)
			}
		}
	}
	return all, prefixes, domains, nil
}

type entryKind int

const (
	entryInvalid entryKind = iota
	entryAll
	entryPrefix
	entryDomain
)

// classify is the pure core of ParsePolicy for one entry.
func classify(e string) (entryKind, netip.Prefix, Domain, string) {
	switch {
	case e == "":
		return entryInvalid, netip.Prefix{}, Domain{}, "empty entry"
	case strings.TrimSpace(e) != e || strings.ContainsAny(e, " \t\r\n"):
		return entryInvalid, netip.Prefix{}, Domain{}, "contains whitespace"
	case e == "*" || e == "0.0.0.0/0":
		return entryAll, netip.Prefix{}, Domain{}, ""
	case strings.HasPrefix(e, "~"):
		return entryInvalid, netip.Prefix{}, Domain{}, "regular expressions are not supported"
	}
	if strings.Contains(e, "/") {
		p, err := netip.ParsePrefix(e)
		if err != nil {
			return entryInvalid, netip.Prefix{}, Domain{}, "invalid CIDR"
		}
		if p.Addr().Zone() != "" {
			return entryInvalid, netip.Prefix{}, Domain{}, "zoned address"
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return entryInvalid, netip.Prefix{}, Domain{}, "IPv4-mapped prefix shorter than /96"
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return entryPrefix, p.Masked(), Domain{}, ""
	}
	if strings.Contains(e, ":") {
		a, err := netip.ParseAddr(e)
		if err != nil {
			return entryInvalid, netip.Prefix{}, Domain{}, "invalid IPv6 address"
		}
		if a.Zone() != "" {
			return entryInvalid, netip.Prefix{}, Domain{}, "zoned address"
		}
		a = a.Unmap()
		return entryPrefix, netip.PrefixFrom(a, a.BitLen()), Domain{}, ""
	}
	if a, err := netip.ParseAddr(e); err == nil {
		return entryPrefix, netip.PrefixFrom(a, a.BitLen()), Domain{}, ""
	}
	d, reason := parseDomain(e)
	if reason != "" {
		return entryInvalid, netip.Prefix{}, Domain{}, reason
	}
	return entryDomain, netip.Prefix{}, d, ""
}

// parseDomain accepts "name" or "*.name" where name is an ASCII hostname
// (IDNs in punycode). It returns a reason when e is not one.
func parseDomain(e string) (Domain, string) {
	var d Domain
	name := strings.ToLower(e)
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		d.Wildcard = true
		name = rest
	}
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return Domain{}, "empty domain"
	}
	if strings.Contains(name, "*") {
		return Domain{}, `wildcard only allowed as a leading "*."`
	}
	if len(name) > 253 {
		return Domain{}, "domain longer than 253 characters"
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if reason := checkLabel(l); reason != "" {
			return Domain{}, reason
		}
	}
	if tld := labels[len(labels)-1]; strings.Trim(tld, "0123456789") == "" {
		return Domain{}, "not an IP address and not a domain (numeric top-level label)"
	}
	d.Name = name
	return d, ""
}

func checkLabel(l string) string {
	if l == "" {
		return "empty label in domain"
	}
	if len(l) > 63 {
		return "domain label longer than 63 characters"
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return "domain label starts or ends with '-'"
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		if !ok {
			if c >= 0x80 {
				return "non-ASCII domain (use punycode)"
			}
			return fmt.Sprintf("invalid character %q in domain", c)
		}
	}
	return ""
}
