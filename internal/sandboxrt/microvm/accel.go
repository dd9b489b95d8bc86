package microvm

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
)

// detectAccel picks the accelerator for Accel "auto" on the host whose
// filesystem is rooted at root ("/" normally; a fake tree in tests):
// "tcg" when /dev/kvm is missing or the KVM module is kvm_pvm (nested
// paravirtual KVM, on which a stock kernel hangs at boot, see
// ARCHITECTURE §2), else "kvm". The reason is for the log.
func detectAccel(root string) (accel, reason string) {
	if _, err := os.Stat(filepath.Join(root, "dev/kvm")); err != nil {
		return "tcg", "no /dev/kvm"
	}
	if _, err := os.Stat(filepath.Join(root, "sys/module/kvm_pvm")); err == nil {
		return "tcg", "/dev/kvm is PVM (kvm_pvm loaded)"
	}
	if f, err := os.Open(filepath.Join(root, "proc/modules")); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if name, _, _ := strings.Cut(sc.Text(), " "); name == "kvm_pvm" {
				return "tcg", "/dev/kvm is PVM (kvm_pvm in /proc/modules)"
			}
		}
	}
	return "kvm", "/dev/kvm present"
}
