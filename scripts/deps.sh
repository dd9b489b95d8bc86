#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and run Declaw:
# runsc (gVisor), mmdebstrap, gcc (templates get a small preload library),
# nftables, iproute2, tmux, python3, and for the microvm
# runtime QEMU, a Debian kernel (its modules go into the initramfs) and e2fsprogs. Idempotent.
set -euo pipefail
need=()
for pkg in runsc mmdebstrap nftables iproute2 tmux python3 util-linux ca-certificates make gcc libc6-dev \
	qemu-system-x86 linux-image-amd64 e2fsprogs xz-utils; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
	echo "deps: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v go >/dev/null; then
	if [ -x /usr/local/go/bin/go ]; then export PATH=$PATH:/usr/local/go/bin; else
		echo "deps: Go is required (https://go.dev/dl); Debian's golang is too old" >&2; exit 1
	fi
fi
