#!/usr/bin/env bash
# Installs libvirt for the e2e tier that runs it as KubeVirt's
# virt-launcher does (test/e2e/libvirt_test.go): the daemons (libvirtd,
# virtqemud), the QEMU driver and virsh. No libvirt-daemon-system and no
# recommends: that keeps out the systemd units, the "default" NAT network
# (virbr0) and its firewall rules; the test runs its own daemon, with its
# own config and runtime dirs, inside a pod netns. Idempotent: does not
# touch the network when everything is installed.
set -euo pipefail

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for pkg in libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients; do
	installed "$pkg" || missing+=("$pkg")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

echo "install-deps: apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
for pkg in "${missing[@]}"; do
	if ! apt-cache show --no-all-versions "$pkg" >/dev/null 2>&1; then
		apt-get update -qq
		break
	fi
done
# Other installs may hold the dpkg lock for a while (parallel deps scripts).
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
