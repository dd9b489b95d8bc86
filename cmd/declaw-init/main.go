// Command declaw-init is /init of the microvm runtime's initramfs (built
// static, CGO_ENABLED=0). It prepares the guest and execs envd as PID 1;
// see package guestinit.
package main

import "github.com/declaw/declaw/internal/sandboxrt/microvm/guestinit"

func main() { guestinit.Main() }
