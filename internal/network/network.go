// Package network gives every sandbox its own network namespace ("slot")
// and enforces its egress policy on the host side of the slot's veth, where
// code inside the sandbox cannot reach it.
//
// # Slots
//
// A [Manager] keeps a pool of ready slots. Slot i is the named netns
// "<prefix>-s<i>" (bind-mounted under /var/run/netns, as `ip netns add`
// does), a veth pair whose host end "<prefix>h<i>" stays in the namespace the
// server runs in and whose guest end is "eth0" inside the slot, and the i-th
// /30 of the sandbox CIDR: the host end holds the first usable address (the
// sandbox's gateway, DNS resolver and proxy address), the guest the second.
// IPv6 is switched off inside the slot. A released slot is never reused: a
// tenant had root in it, so it is deleted and the pool is refilled with
// fresh slots in the background.
//
// # Policy
//
// A [Policy] lists allow_out and deny_out entries: IPv4/IPv6 addresses,
// CIDRs, domains ("example.com", "*.example.com") and ALL_TRAFFIC
// ("0.0.0.0/0" or "*"). Allow beats deny; the empty policy allows
// everything; deny_out ["0.0.0.0/0"] denies everything. A wildcard domain
// "*.example.com" matches strict subdomains only ("a.example.com",
// "a.b.example.com"), never "example.com" itself: list both to allow both.
//
// Denied packets are dropped silently (never rejected), so a connect times
// out, for TCP, UDP and ICMP alike. Whatever the policy, a slot never
// reaches: link-local 169.254.0.0/16 (cloud metadata), 0.0.0.0/8,
// 127.0.0.0/8, multicast and the reserved/broadcast range 240.0.0.0/4, other
// slots (the whole sandbox CIDR), any address of the host namespace except
// the DNS and proxy ports on its own gateway address, and anything over
// IPv6 (all IPv6 forwarded from a slot is dropped, which also covers
// fd00:ec2::254). Packets whose source is not the slot's guest address are
// dropped too, so re-addressing the guest opens nothing.
//
// Domains cannot be enforced on addresses. When a policy has domain rules,
// is not allow-all and [Config.ProxyPort] is set, TCP to ports 80 and 443
// (except to explicitly allowed prefixes) is redirected to the egress proxy
// on the slot's gateway address, which matches SNI/Host against the domains.
// Without a proxy, domain-allowed traffic is simply not allowed (fail
// closed). IPv6 entries are accepted and kept but have no effect while IPv6
// is off.
//
// # nftables layout
//
// Everything lives in one table, family inet, named after the prefix:
//
//	chain forward      filter/forward, policy accept: drop IPv6, non-unicast
//	                   and @blocked4 from slots; let established traffic into
//	                   slots and nothing else; jump fwd-slots; drop the rest
//	chain input        filter/input, policy accept: established from slots
//	                   accepted; jump in-slots; drop the rest from slots
//	chain prerouting   nat/dstnat: jump nat-slots
//	chain postrouting  nat/srcnat: masquerade the CIDR leaving by a non-slot
//	                   interface
//	chain fwd-slots    iifname "<prefix>h<i>" jump slot-<i>   (one per slot)
//	chain in-slots     iifname "<prefix>h<i>" jump slot-<i>-in
//	chain nat-slots    iifname "<prefix>h<i>" jump slot-<i>-nat
//	chain slot-<i>     the policy, replaced atomically by Apply: drop
//	                   non-IPv4 and spoofed sources; ip daddr @slot-<i>-allow
//	                   accept; then drop (deny-all) or ip daddr
//	                   @slot-<i>-deny drop, accept. Until the first Apply:
//	                   drop.
//	chain slot-<i>-in  accept UDP+TCP DNSPort and TCP ProxyPort to the
//	                   slot's gateway address (static)
//	chain slot-<i>-nat the proxy redirect of TCP 80/443 (replaced by Apply)
//	set blocked4       0/8, 127/8, 169.254/16, 224/3 and the sandbox CIDR
//	set slot-<i>-allow, slot-<i>-deny   IPv4 interval sets of the policy
//
// Per-slot rules in the dispatch chains carry the slot chain's name as
// UserData, so a slot's objects can be found and deleted by name.
package network

import (
	"errors"
	"net/netip"
)

// Slot is one sandbox network: a netns holding the guest end of a veth pair
// whose host end stays in the namespace the server runs in.
//
// A Slot is immutable once returned by [Manager.Acquire].
type Slot struct {
	Index     int
	NetNS     string       // netns name, e.g. "declaw-s3"
	NetNSPath string       // e.g. /var/run/netns/declaw-s3
	HostIf    string       // host-side veth name (policy is keyed on it)
	GuestIf   string       // guest-side interface name inside the netns ("eth0")
	HostIP    netip.Addr   // host side of the link: gateway, DNS resolver, proxy
	GuestIP   netip.Addr   // sandbox address; envd listens here
	Prefix    netip.Prefix // the slot's link subnet
}

// Policy is the desired egress policy of one sandbox. The zero value allows everything.
// Entries are as the API takes them: IPs, CIDRs, domains ("example.com",
// "*.example.com") and ALL_TRAFFIC ("0.0.0.0/0" or "*"). Allow beats deny.
type Policy struct {
	AllowOut []string `json:"allow_out,omitempty"`
	DenyOut  []string `json:"deny_out,omitempty"`
	// Intercept sends the sandbox's web traffic (TCP 80/443) that the
	// policy allows to the egress proxy even without domain rules, because
	// its security policy needs to see content (PII, injection, ...).
	// Traffic the policy denies is still dropped, never redirected.
	Intercept bool `json:"intercept,omitempty"`
}

var (
	// ErrInvalidPolicy is matched (errors.Is) by every [PolicyError].
	ErrInvalidPolicy = errors.New("invalid network policy")
	// ErrClosed is returned by a Manager after Close.
	ErrClosed = errors.New("network manager closed")
	// ErrNoSlots is returned by Acquire when every slot of the CIDR is in use.
	ErrNoSlots = errors.New("no free network slot")
	// ErrUnknownSlot is returned for a slot this Manager does not hold.
	ErrUnknownSlot = errors.New("unknown network slot")
)
