package network

import (
	"net/netip"
	"testing"
)

func TestResolveConfig(t *testing.T) {
	got, err := resolveConfig(Config{})
	if err != nil {
		t.Fatalf("resolveConfig(zero): %v", err)
	}
	if got.CIDR != netip.MustParsePrefix(DefaultCIDR) || got.Prefix != DefaultPrefix || got.PoolSize != DefaultPoolSize || got.Logf == nil {
		t.Errorf("resolveConfig(zero) = %+v, want defaults", got)
	}
	if got.DNSPort != 0 || got.ProxyPort != 0 {
		t.Errorf("resolveConfig(zero) opened ports: %+v", got)
	}
	got, err = resolveConfig(Config{CIDR: netip.MustParsePrefix("10.9.8.7/24"), PoolSize: -1})
	if err != nil || got.CIDR.String() != "10.9.8.0/24" || got.PoolSize != -1 {
		t.Errorf("resolveConfig(10.9.8.7/24, pool -1) = %+v, %v; want masked CIDR, pool -1", got, err)
	}
	for _, bad := range []Config{
		{CIDR: netip.MustParsePrefix("fd00::/64")},
		{CIDR: netip.MustParsePrefix("10.0.0.0/31")},
		{Prefix: "Declaw"},
		{Prefix: "1abc"},
		{Prefix: "de-claw"},
		{Prefix: "averylongprefix"},                                     // interface names over 15 bytes
		{Prefix: "declawxx", CIDR: netip.MustParsePrefix("10.0.0.0/8")}, // declawxxh4194303
	} {
		if _, err := resolveConfig(bad); err == nil {
			t.Errorf("resolveConfig(%+v) succeeded, want an error", bad)
		}
	}
}

func TestSlotAt(t *testing.T) {
	m := &Manager{cfg: Config{CIDR: netip.MustParsePrefix("10.200.0.0/16"), Prefix: "declaw"}}
	s := m.slotAt(300)
	want := Slot{Index: 300, NetNS: "declaw-s300", NetNSPath: "/var/run/netns/declaw-s300", HostIf: "declawh300", GuestIf: "eth0",
		HostIP: netip.MustParseAddr("10.200.4.177"), GuestIP: netip.MustParseAddr("10.200.4.178"), Prefix: netip.MustParsePrefix("10.200.4.176/30")}
	if *s != want {
		t.Errorf("slotAt(300) = %+v, want %+v", *s, want)
	}
}
