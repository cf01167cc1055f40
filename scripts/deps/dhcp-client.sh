#!/usr/bin/env bash
# What the DHCP end-to-end tests and `make demo` need besides busybox's
# udhcpc; idempotent, called by install-deps.sh. isc-dhcp-client is unpacked
# under build/dhcp-client (`apt-get download`, not installed: the machine
# needs no DHCP client of its own), and the guest image (test/e2e/guest)
# copies its dhclient with its libraries as the guest's DHCPv6 client;
# and dnsmasq-base is installed: the "L2's own" DHCP server the tests run
# on a host plugged into the simulated switch (the package is only the
# binary; the service is in package dnsmasq, which is not installed).
set -euo pipefail
cd "$(dirname "$0")/../.."

unpack() { # unpack <dir> <binary inside> <package>...
  local dir=$1 bin=$2
  shift 2
  [ -x "$dir/$bin" ] && return 0
  echo "install-deps: apt-get download $* (unpacked into ${dir#$PWD/})"
  local tmp
  tmp=$(mktemp -d)
  chmod 755 "$tmp" # apt-get download fetches as user _apt
  if ! (cd "$tmp" && apt-get download -qq "$@"); then
    apt-get update -qq
    (cd "$tmp" && apt-get download -qq "$@")
  fi
  rm -rf "$dir.new"
  mkdir -p "$dir.new"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$dir.new"; done
  rm -rf "$tmp" "$dir"
  mv "$dir.new" "$dir"
}

unpack "$PWD/build/dhcp-client" sbin/dhclient isc-dhcp-client
if ! command -v dnsmasq >/dev/null 2>&1; then
  echo "install-deps: apt-get install dnsmasq-base"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq dnsmasq-base >/dev/null || { apt-get update -qq && apt-get install -y -qq dnsmasq-base >/dev/null; }
fi
