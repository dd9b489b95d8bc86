// Package network gives every sandbox its own network namespace ("slot")
// and enforces its egress policy on the host side of the slot's veth, where
// code inside the sandbox cannot reach it.
package network

import (
	"context"
	"net/netip"
)

// Slot is one sandbox network: a netns holding the guest end of a veth pair
// whose host end stays in the namespace the server runs in.
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
}
