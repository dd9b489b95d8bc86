package microvm

import (
	"bytes"
	"compress/gzip"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/sandboxrt"
	"github.com/declaw/declaw/internal/sandboxrt/microvm/guestinit"
)

// readCPIO parses a newc archive (enough for the tests).
type cpioFile struct {
	name         string
	mode         uint32
	major, minor uint32
	data         []byte
}

func readCPIO(t *testing.T, b []byte) []cpioFile {
	t.Helper()
	var out []cpioFile
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off+110 > len(b) {
			t.Fatalf("cpio: truncated header at %d", off)
		}
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("cpio: bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(h[6+8*i:6+8*i+8], 16, 32)
			if err != nil {
				t.Fatalf("cpio: field %d: %v", i, err)
			}
			return uint32(v)
		}
		mode, size, rmaj, rmin, nameSize := field(1), field(6), field(9), field(10), field(11)
		nameEnd := off + 110 + int(nameSize)
		name := string(b[off+110 : nameEnd-1])
		dataStart := align(nameEnd)
		data := b[dataStart : dataStart+int(size)]
		off = align(dataStart + int(size))
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Errorf("cpio: %d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, cpioFile{name, mode, rmaj, rmin, data})
	}
}

func TestCPIOWriter(t *testing.T) {
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Dir("dev", 0o755))
	must(c.CharDev("dev/console", 0o600, 5, 1))
	must(c.File("init", 0o755, []byte("abcde"))) // odd length: padding
	must(c.Symlink("sbin", "bin"))
	must(c.File("empty", 0o644, nil))
	must(c.Close())
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d, want a multiple of 4", buf.Len())
	}
	got := readCPIO(t, buf.Bytes())
	want := []cpioFile{
		{"dev", cpioDir | 0o755, 0, 0, nil},
		{"dev/console", cpioChar | 0o600, 5, 1, nil},
		{"init", cpioReg | 0o755, 0, 0, []byte("abcde")},
		{"sbin", cpioLink | 0o777, 0, 0, []byte("bin")},
		{"empty", cpioReg | 0o644, 0, 0, nil},
	}
	if len(got) != len(want) {
		t.Fatalf("readCPIO = %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.name != w.name || g.mode != w.mode || g.major != w.major || g.minor != w.minor || !bytes.Equal(g.data, w.data) {
			t.Errorf("entry %d = %+v, want %+v", i, g, w)
		}
	}
	if err := c.Write(cpioEntry{Name: "late"}, nil); err == nil {
		t.Errorf("Write after Close succeeded")
	}
}

func TestCmdlineRoundTrip(t *testing.T) {
	b := guestinit.Boot{
		IP:   netip.MustParsePrefix("10.200.0.2/30"),
		GW:   netip.MustParseAddr("10.200.0.1"),
		MTU:  1400,
		Time: time.Unix(1790000000, 0),
	}
	line := kernelCmdline(b, 2445406)
	for _, w := range []string{"tsc_early_khz=2445406", "console=ttyS0", "reboot=t", "panic=-1", "declaw.ip=10.200.0.2/30", "declaw.gw=10.200.0.1", "declaw.mtu=1400", "declaw.time=1790000000"} {
		if !slices.Contains(strings.Fields(line), w) {
			t.Errorf("kernelCmdline = %q, missing %q", line, w)
		}
	}
	// QEMU's microvm appends virtio_mmio.device=... itself; the guest passes them to the module.
	got, err := guestinit.ParseCmdline(line + " virtio_mmio.device=512@0xfeb00e00:12 virtio-mmio.device=512@0xfeb00c00:11 ro")
	if err != nil {
		t.Fatal(err)
	}
	if got.IP != b.IP || got.GW != b.GW || got.MTU != b.MTU || !got.Time.Equal(b.Time) {
		t.Errorf("ParseCmdline = %+v, want %+v", got, b)
	}
	if want := []string{"device=512@0xfeb00e00:12", "device=512@0xfeb00c00:11"}; !slices.Equal(got.ModParams["virtio_mmio"], want) {
		t.Errorf("module params = %q, want %q", got.ModParams["virtio_mmio"], want)
	}
	for _, bad := range []string{"declaw.ip=10.0.0.1", "declaw.gw=x", "declaw.mtu=big", "declaw.time=soon"} {
		if _, err := guestinit.ParseCmdline(bad); err == nil {
			t.Errorf("ParseCmdline(%q) succeeded, want an error", bad)
		}
	}
	if got, err := guestinit.ParseCmdline(kernelCmdline(guestinit.Boot{PowerOff: true}, 0)); err != nil || !got.PowerOff {
		t.Errorf("PowerOff does not round-trip: %+v, %v", got, err)
	}
	if got, err := guestinit.ParseCmdline("console=ttyS0 quiet"); err != nil || got.IP.IsValid() || got.PowerOff {
		t.Errorf("ParseCmdline without declaw.* = %+v, %v; want no network", got, err)
	}
}

func TestHostTSCkHz(t *testing.T) {
	info := "processor\t: 0\nmodel name\t: X\ncpu MHz\t\t: 2445.406\n\nprocessor\t: 1\ncpu MHz\t\t: 1000.000\n"
	if got := hostTSCkHz([]byte(info)); got != 2445406 {
		t.Errorf("hostTSCkHz = %d, want 2445406", got)
	}
	if got := hostTSCkHz([]byte("processor: 0\n")); got != 0 {
		t.Errorf("hostTSCkHz without cpu MHz = %d, want 0", got)
	}
	if strings.Contains(kernelCmdline(guestinit.Boot{}, 0), "tsc_early_khz") {
		t.Errorf("kernelCmdline(tsc 0) sets tsc_early_khz")
	}
}

func TestQEMUArgs(t *testing.T) {
	p := vmParams{Accel: "tcg", VCPUs: 2, MemoryMB: 256, Kernel: "/boot/vmlinuz-x", Initramfs: "/s/initramfs.cpio",
		Cmdline: "console=ttyS0", Image: "/t/a,b/rootfs.ext4", Dir: "/s/vms/x", Tap: "tap0", MAC: "02:00:00:00:00:01"}
	args := strings.Join(qemuArgs(p, []string{"-S"}), " ")
	for _, want := range []string{
		"-M microvm,isa-serial=on,rtc=on", "-accel tcg -cpu max", "-smp 2 -m 256", "-no-reboot",
		"-drive file=/t/a,,b/rootfs.ext4,format=raw,if=none,id=root,readonly=on",
		"-device virtio-blk-device,drive=root,serial=declaw-root",
		"-device virtio-blk-device,drive=cfg,serial=declaw-cfg",
		"-netdev tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device virtio-net-device,netdev=n0,mac=02:00:00:00:00:01",
		"-qmp unix:/s/vms/x/qmp.sock,server=on,wait=off", "-pidfile /s/vms/x/qemu.pid", "-append console=ttyS0",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("qemuArgs = %q\nmissing %q", args, want)
		}
	}
	if !strings.HasSuffix(args, " -S") {
		t.Errorf("extra args not appended: %q", args)
	}
	p.Accel = "kvm"
	if args := strings.Join(qemuArgs(p, nil), " "); !strings.Contains(args, "-accel kvm -cpu host") {
		t.Errorf("kvm args = %q", args)
	}
	if strings.Contains(args, "declaw-disk") {
		t.Errorf("no Disk, but args name one: %q", args)
	}
	p.Disk = "/s/vms/x/disk.img"
	if args := strings.Join(qemuArgs(p, nil), " "); !strings.Contains(args, "-drive file=/s/vms/x/disk.img,format=raw,if=none,id=disk,discard=unmap -device virtio-blk-device,drive=disk,serial=declaw-disk") {
		t.Errorf("args with a disk = %q", args)
	}
}

func TestCountOOM(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	write := func(s string) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	write("declaw-init: exec /usr/local/bin/envd\n[   12.3] Out of memory: Killed process 212 (python3) total-vm:1000kB\n")
	off, n := countOOM(path, 0)
	if n != 1 {
		t.Fatalf("countOOM = %d, %d; want 1 kill", off, n)
	}
	// A partial line waits for its end; a cgroup OOM inside the guest counts too.
	write("[   13.0] Memory cgroup out of memory: Killed proc")
	if off2, n := countOOM(path, off); n != 0 || off2 != off {
		t.Fatalf("partial line: countOOM = %d, %d; want %d, 0", off2, n, off)
	}
	write("ess 300 (bash)\n[   14.0] Out of memory: Killed process 301 (x)\n")
	if _, n := countOOM(path, off); n != 2 {
		t.Fatalf("countOOM after two more = %d, want 2", n)
	}
	if _, n := countOOM(filepath.Join(t.TempDir(), "none"), 0); n != 0 {
		t.Fatalf("countOOM of a missing file = %d", n)
	}
}

func TestResources(t *testing.T) {
	tests := []struct {
		r, def sandboxrt.Resources
		cpus   int
		mem    int64
	}{
		{sandboxrt.Resources{}, sandboxrt.Resources{}, 1, 512},
		{sandboxrt.Resources{CPUs: 1.5, MemoryMB: 1024}, sandboxrt.Resources{}, 2, 1024},
		{sandboxrt.Resources{}, sandboxrt.Resources{CPUs: 4, MemoryMB: 2048}, 4, 2048},
		{sandboxrt.Resources{CPUs: 0.25, MemoryMB: 16}, sandboxrt.Resources{}, 1, 128},
	}
	for _, tt := range tests {
		cpus, mem := resources(tt.r, tt.def)
		if cpus != tt.cpus || mem != tt.mem {
			t.Errorf("resources(%+v, %+v) = %d, %d; want %d, %d", tt.r, tt.def, cpus, mem, tt.cpus, tt.mem)
		}
	}
}

func TestDetectAccel(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"no kvm", nil, "tcg"},
		{"kvm", map[string]string{"dev/kvm": "", "proc/modules": "kvm_intel 1 0 - Live 0x0\nkvm 2 1 kvm_intel, Live 0x0\n"}, "kvm"},
		{"pvm sysfs", map[string]string{"dev/kvm": "", "sys/module/kvm_pvm/refcnt": "0"}, "tcg"},
		{"pvm modules", map[string]string{"dev/kvm": "", "proc/modules": "kvm_pvm 16384 0 - Live 0x0\nkvm 1 1 kvm_pvm, Live 0x0\n"}, "tcg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for p, content := range tt.files {
				full := filepath.Join(root, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got, reason := detectAccel(root); got != tt.want {
				t.Errorf("detectAccel = %q (%s), want %q", got, reason, tt.want)
			}
		})
	}
}

func TestImageFor(t *testing.T) {
	// A built template: image beside rootfs/, keyed by template.json.
	tmpl := filepath.Join(t.TempDir(), "python")
	rootfs := filepath.Join(tmpl, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmpl, "template.json"), []byte(`{"name":"python","built_at":"1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	imgDir := t.TempDir()
	path, key1, err := imageFor(rootfs, imgDir)
	if err != nil || path != filepath.Join(tmpl, "rootfs.ext4") {
		t.Fatalf("imageFor(template) = %q, %v; want %s", path, err, filepath.Join(tmpl, "rootfs.ext4"))
	}
	if _, again, _ := imageFor(rootfs, imgDir); again != key1 {
		t.Errorf("key changed without a rebuild")
	}
	if err := os.WriteFile(filepath.Join(tmpl, "template.json"), []byte(`{"name":"python","built_at":"2"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, key2, _ := imageFor(rootfs, imgDir); key2 == key1 {
		t.Errorf("key unchanged after template.json changed")
	}
	// Any other directory: image in the image dir, keyed by path and mtimes.
	other := t.TempDir()
	path, k1, err := imageFor(other, imgDir)
	if err != nil || filepath.Dir(path) != imgDir || !strings.HasSuffix(path, ".ext4") {
		t.Fatalf("imageFor(dir) = %q, %v; want a file in %s", path, err, imgDir)
	}
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(other, future, future); err != nil {
		t.Fatal(err)
	}
	if _, k2, _ := imageFor(other, imgDir); k2 == k1 {
		t.Errorf("key unchanged after the directory changed")
	}
	if _, _, err := imageFor(filepath.Join(other, "missing"), imgDir); err == nil {
		t.Errorf("imageFor(missing dir) succeeded")
	}
	// imageCurrent needs both the image and the matching key file.
	img := filepath.Join(imgDir, "x.ext4")
	if imageCurrent(img, "k") {
		t.Errorf("imageCurrent without files = true")
	}
	os.WriteFile(img, nil, 0o644)
	os.WriteFile(keyFile(img), []byte("k\n"), 0o644)
	if !imageCurrent(img, "k") || imageCurrent(img, "other") {
		t.Errorf("imageCurrent does not follow the key file")
	}
}

func TestModuleOrder(t *testing.T) {
	dir := t.TempDir()
	dep := `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
`
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/fs/overlayfs/overlay.ko\n"), 0o644)
	got, err := moduleOrder(dir, []string{"virtio_mmio", "virtio-blk", "ext4", "overlay"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio_mmio.ko",
		"kernel/drivers/block/virtio_blk.ko",
		"kernel/lib/crc16.ko", "kernel/fs/mbcache.ko", "kernel/fs/jbd2/jbd2.ko", "kernel/fs/ext4/ext4.ko.xz",
	}
	if !slices.Equal(got, want) {
		t.Errorf("moduleOrder =\n%q\nwant\n%q", got, want)
	}
	if _, err := moduleOrder(dir, []string{"nosuch"}); err == nil {
		t.Errorf("moduleOrder(unknown module) succeeded")
	}
	if moduleName("kernel/arch/x86/crypto/crc32c-intel.ko.zst") != "crc32c_intel" {
		t.Errorf("moduleName does not fold dashes or strip compression suffixes")
	}
}

func TestNewestKernel(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-30-amd64"} {
		os.WriteFile(filepath.Join(dir, "vmlinuz-"+v), nil, 0o644)
	}
	got, err := newestKernel(dir)
	if err != nil || filepath.Base(got) != "vmlinuz-6.1.0-10-amd64" {
		t.Errorf("newestKernel = %q, %v; want vmlinuz-6.1.0-10-amd64", got, err)
	}
	if _, err := newestKernel(t.TempDir()); err == nil {
		t.Errorf("newestKernel(empty) succeeded")
	}
}

func TestNewValidates(t *testing.T) {
	for name, cfg := range map[string]Config{
		"bad accel": {Accel: "hvf"},
		"no qemu":   {QEMU: "/nonexistent/qemu"},
		"no kernel": {Kernel: "/nonexistent/vmlinuz"},
		"comma dir": {StateDir: filepath.Join(t.TempDir(), "a,b")},
	} {
		if cfg.StateDir == "" {
			cfg.StateDir = t.TempDir()
		}
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded, want an error", name)
		}
	}
}

func TestExtractVmlinux(t *testing.T) {
	// A fake bzImage: a header, then a gzip stream holding an "ELF", then trailing bytes.
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte("\x7fELF fake kernel"))
	zw.Close()
	bz := append(append([]byte("MZ....HdrS...\x1f\x8b no stream here"), z.Bytes()...), "trailer"...)
	got, err := extractVmlinux(bz)
	if err != nil || string(got) != "\x7fELF fake kernel" {
		t.Errorf("extractVmlinux = %q, %v", got, err)
	}
	if _, err := extractVmlinux([]byte("MZ nothing compressed")); err == nil {
		t.Errorf("extractVmlinux without a payload succeeded")
	}
	// The real kernel, when installed: extracted once, with a PVH entry.
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(kernels) == 0 || testing.Short() {
		return
	}
	dir := t.TempDir()
	p, note := bootableKernel(kernels[0], dir)
	t.Logf("bootableKernel(%s) = %s (%s)", kernels[0], p, note)
	if filepath.Dir(p) == dir && !hasPVHNote(p) {
		t.Errorf("extracted kernel %s has no PVH note", p)
	}
	if p2, _ := bootableKernel(kernels[0], dir); p2 != p {
		t.Errorf("second bootableKernel = %s, want the cached %s", p2, p)
	}
}
