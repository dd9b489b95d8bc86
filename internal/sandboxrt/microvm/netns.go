package microvm

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"

	"github.com/vishvananda/netlink"

	"github.com/declaw/declaw/internal/network/nsrun"
	"golang.org/x/sys/unix"
)

// The VM's network: the slot's netns keeps its veth end (Config.Iface, with
// the guest address) and gains a tap. Two tc ingress filters redirect every
// frame from the veth to the tap and back (mirred), so the netns's own IP
// stack sees nothing and the VM's NIC, which gets the veth's MAC address
// and the guest address on the kernel command line, stands where the
// sandbox's interface was. The host end of the veth and its nftables rules
// are untouched: every host-side policy applies to the VM unchanged.

// slotNet is what the driver reads from the slot's interface.
type slotNet struct {
	IP  netip.Prefix
	GW  netip.Addr
	MTU int
	MAC net.HardwareAddr
}

// inNetNS runs fn on an OS thread that has entered the netns at nsPath.
func inNetNS(nsPath string, fn func() error) error { return nsrun.Do(nsPath, fn) }

// startInNetNS starts cmd inside the netns at nsPath.
func startInNetNS(nsPath string, cmd *exec.Cmd) error { return nsrun.Start(nsPath, cmd) }

// readSlot reads the IPv4 address, default gateway, MTU and MAC of iface
// in the current thread's netns.
func readSlot(iface string) (slotNet, error) {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return slotNet{}, fmt.Errorf("find %s: %w", iface, err)
	}
	var s slotNet
	s.MTU = link.Attrs().MTU
	s.MAC = link.Attrs().HardwareAddr
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return slotNet{}, fmt.Errorf("addresses of %s: %w", iface, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		s.IP = netip.PrefixFrom(ip, ones)
		break
	}
	if !s.IP.IsValid() {
		return slotNet{}, fmt.Errorf("%s has no IPv4 address", iface)
	}
	routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		return slotNet{}, fmt.Errorf("routes of %s: %w", iface, err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw != nil {
			s.GW, _ = netip.AddrFromSlice(r.Gw.To4())
			break
		}
	}
	return s, nil
}

// addTap creates the persistent tap name (QEMU opens it by name) and
// wires it to iface with tc mirred in both directions.
func addTap(iface, name string, mtu int) (err error) {
	if err := createTap(name); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = delTap(iface, name)
		}
	}()
	tap, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	eth, err := netlink.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("find %s: %w", iface, err)
	}
	if mtu > 0 {
		if err := netlink.LinkSetMTU(tap, mtu); err != nil {
			return fmt.Errorf("mtu %s: %w", name, err)
		}
	}
	if err := netlink.LinkSetUp(tap); err != nil {
		return fmt.Errorf("up %s: %w", name, err)
	}
	for _, p := range [][2]netlink.Link{{eth, tap}, {tap, eth}} {
		from, to := p[0].Attrs().Index, p[1].Attrs().Index
		q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: from, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
		if err := netlink.QdiscAdd(q); err != nil {
			return fmt.Errorf("ingress qdisc on %s: %w", p[0].Attrs().Name, err)
		}
		f := &netlink.U32{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: from, Parent: netlink.MakeHandle(0xffff, 0), Priority: 1, Protocol: unix.ETH_P_ALL},
			Actions:     []netlink.Action{netlink.NewMirredAction(to)},
		}
		if err := netlink.FilterAdd(f); err != nil {
			return fmt.Errorf("redirect %s to %s: %w", p[0].Attrs().Name, p[1].Attrs().Name, err)
		}
	}
	return nil
}

func createTap(name string) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/net/tun: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("create tap %s: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("make tap %s persistent: %w", name, err)
	}
	return nil
}

// delTap removes the redirect from iface (its ingress qdisc) and the tap.
// Missing pieces are not errors.
func delTap(iface, name string) error {
	var errs []error
	if eth, err := netlink.LinkByName(iface); err == nil {
		q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: eth.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
		if err := netlink.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("remove ingress qdisc of %s: %w", iface, err))
		}
	}
	if tap, err := netlink.LinkByName(name); err == nil {
		if err := netlink.LinkDel(tap); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
