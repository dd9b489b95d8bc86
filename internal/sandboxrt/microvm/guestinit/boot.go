// Package guestinit is the first process of a declaw microVM: the /init of
// the initramfs the microvm driver builds. It loads the kernel modules the
// Debian kernel keeps outside its image, mounts the template's root image
// read-only under a tmpfs overlay, places the sandbox's files, configures
// the network, clock and entropy, and execs the sandbox's init (envd) as
// PID 1 inside the new root.
//
// It also defines the contract between the driver (host) and the guest:
// the kernel command line parameters (FormatCmdline / ParseCmdline), the
// config disk (a tar archive on a virtio-blk device, see Config) and the
// console markers the driver waits for. Both sides import this package, so
// they cannot drift apart.
package guestinit

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

const (
	// RootSerial and ConfigSerial are the virtio-blk serial numbers of the
	// template's root image and of the per-VM config disk; the guest finds
	// its disks by them (/sys/block/vdX/serial), not by probe order.
	RootSerial   = "declaw-root"
	ConfigSerial = "declaw-cfg"
	// DiskSerial is the sandbox's writable disk (Config.Disk): an empty
	// ext4 image whose size is the sandbox's disk limit.
	DiskSerial = "declaw-disk"
	// ModulesOrder lists, one per line, the .ko files under ModulesDir in load order.
	ModulesDir   = "/lib/modules"
	ModulesOrder = "/lib/modules/declaw.order"
	// ConfigFile is the name of the JSON Config inside the config disk's tar;
	// the sources of Config.Mounts are "files/<index>" (a file or a tree).
	ConfigFile = "config.json"
	FilesDir   = "files"
	// ReadyMarker is printed on the console right before the exec of the
	// sandbox's init; FailMarker precedes a fatal error (the VM then powers off).
	ReadyMarker = "declaw-init: exec "
	FailMarker  = "declaw-init: error: "
)

// Config is the per-VM configuration on the config disk.
type Config struct {
	Init     []string `json:"init"`     // argv of the sandbox's PID 1, resolved in the new root
	Env      []string `json:"env"`      // its whole environment
	Hostname string   `json:"hostname"` // hostname inside the guest
	Mounts   []Mount  `json:"mounts"`   // host files to bind into the new root
	Seed     []byte   `json:"seed"`     // entropy credited to the guest's pool
	// Disk: the overlay's upper layer is the ext4 disk DiskSerial (writes
	// past its size fail with ENOSPC) instead of a tmpfs in guest memory.
	Disk bool `json:"disk,omitempty"`
}

// Mount is one file or directory of the config disk bound at Target.
type Mount struct {
	Index    int    `json:"index"` // source is FilesDir/<Index> in the tar
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only"`
	Dir      bool   `json:"dir"`
}

// Boot is what the kernel command line carries: small, fixed-size facts.
type Boot struct {
	IP   netip.Prefix // guest address on eth0 (invalid: no network setup)
	GW   netip.Addr   // default gateway
	MTU  int          // 0: leave the default
	Time time.Time    // host clock when the VM was started (a floor for the guest clock)
	// PowerOff ("declaw.poweroff") makes the init reset the VM at once:
	// the driver's boot-floor probe (QEMU + kernel, no guest work).
	PowerOff bool
	// ModParams are "module.param=value" arguments, by module name
	// (dashes folded to underscores), passed to finit_module as modprobe would.
	ModParams map[string][]string
}

// FormatCmdline returns the declaw.* kernel parameters for b (ModParams are not written).
func FormatCmdline(b Boot) []string {
	var out []string
	if b.IP.IsValid() {
		out = append(out, "declaw.ip="+b.IP.String())
	}
	if b.GW.IsValid() {
		out = append(out, "declaw.gw="+b.GW.String())
	}
	if b.MTU > 0 {
		out = append(out, "declaw.mtu="+strconv.Itoa(b.MTU))
	}
	if !b.Time.IsZero() {
		out = append(out, "declaw.time="+strconv.FormatInt(b.Time.Unix(), 10))
	}
	if b.PowerOff {
		out = append(out, "declaw.poweroff")
	}
	return out
}

// ParseCmdline parses /proc/cmdline. Unknown words are ignored; a declaw.*
// parameter with a bad value is an error.
func ParseCmdline(s string) (Boot, error) {
	b := Boot{ModParams: map[string][]string{}}
	for _, w := range strings.Fields(s) {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			b.PowerOff = b.PowerOff || w == "declaw.poweroff"
			continue
		}
		var err error
		switch k {
		case "declaw.ip":
			b.IP, err = netip.ParsePrefix(v)
		case "declaw.gw":
			b.GW, err = netip.ParseAddr(v)
		case "declaw.mtu":
			b.MTU, err = strconv.Atoi(v)
		case "declaw.time":
			var n int64
			n, err = strconv.ParseInt(v, 10, 64)
			b.Time = time.Unix(n, 0)
		default:
			mod, param, ok := strings.Cut(k, ".")
			if ok && mod != "declaw" && mod != "" && param != "" {
				mod = strings.ReplaceAll(mod, "-", "_")
				b.ModParams[mod] = append(b.ModParams[mod], param+"="+v)
			}
			continue
		}
		if err != nil {
			return Boot{}, fmt.Errorf("kernel parameter %s: %w", k, err)
		}
	}
	return b, nil
}
