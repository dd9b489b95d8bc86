package gvisor

import (
	"os/exec"

	"github.com/declaw/declaw/internal/network/nsrun"
)

// startInNetNS starts cmd with the network namespace at nsPath, so that
// runsc and its abstract control sockets live in the sandbox's netns.
func startInNetNS(nsPath string, cmd *exec.Cmd) error { return nsrun.Start(nsPath, cmd) }
