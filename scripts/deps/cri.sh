#!/usr/bin/env bash
# What the containerd CRI tier (test/e2e/cri) needs; idempotent, called by
# install-deps.sh. Everything goes under build/cri:
#   - Debian's containerd (1.6) and runc, unpacked from their packages
#     (`apt-get download`, not installed: installing containerd enables
#     and starts a system containerd on a machine with systemd, and the
#     tests run their own);
#   - crictl from the module proxy;
#   - containerd 2.x (daemon, runc shim, ctr) built from the module proxy,
#     static, without the snapshotters that need cgo.
# (The upstream `loopback` plugin, which containerd's CRI runs for every
# pod's lo, is installed with the other upstream plugins by install-deps.sh.)
set -euo pipefail
cd "$(dirname "$0")/../.."

CRICTL_VERSION=v1.37.0
CONTAINERD2_VERSION=v2.4.2
dir="$PWD/build/cri"
mkdir -p "$dir"

debian="$dir/debian"
if [ ! -x "$debian/usr/bin/containerd" ] || [ ! -x "$debian/usr/sbin/runc" ]; then
  echo "install-deps: apt-get download containerd runc (unpacked into build/cri/debian)"
  tmp=$(mktemp -d)
  chmod 755 "$tmp" # apt-get download fetches as user _apt
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && apt-get download -qq containerd runc); then
    apt-get update -qq
    (cd "$tmp" && apt-get download -qq containerd runc)
  fi
  rm -rf "$debian.new"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$debian.new"; done
  rm -rf "$debian"
  mv "$debian.new" "$debian"
fi

if [ ! -x "$dir/crictl" ]; then
  echo "install-deps: go install cri-tools/cmd/crictl@$CRICTL_VERSION"
  GOBIN="$dir" CGO_ENABLED=0 go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
fi

c2="$dir/containerd-$CONTAINERD2_VERSION"
pkgs=()
for b in containerd containerd-shim-runc-v2 ctr; do
  [ -x "$c2/$b" ] || pkgs+=("github.com/containerd/containerd/v2/cmd/$b@$CONTAINERD2_VERSION")
done
if [ ${#pkgs[@]} -gt 0 ]; then # one go install: the three share most packages
  echo "install-deps: go install containerd/v2 (containerd, containerd-shim-runc-v2, ctr)@$CONTAINERD2_VERSION"
  GOBIN="$c2" CGO_ENABLED=0 go install -tags no_btrfs,no_devmapper,no_zfs "${pkgs[@]}"
fi
