#!/usr/bin/env bash
# Installs the host tools that package guest needs to build and boot test
# guests: QEMU (TCG is enough), a statically linked busybox for the
# initramfs, cpio, and xz/zstd for kernels whose modules are compressed.
# It is idempotent: when everything is present it changes nothing and
# does not touch the network. Needs root (apt-get).
set -euo pipefail

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for pkg in qemu-system-x86 busybox-static cpio xz-utils zstd; do
	installed "$pkg" || missing+=("$pkg")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet (or stale ones): refresh
# only when apt does not know one of the packages we need.
for pkg in "${missing[@]}"; do
	if ! apt-cache show --no-all-versions "$pkg" >/dev/null 2>&1; then
		apt-get update -q
		break
	fi
done
apt-get install -y -q --no-install-recommends "${missing[@]}"
