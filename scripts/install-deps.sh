#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmark need on a fresh
# Debian machine; idempotent, so `make test` can run it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in ip:iproute2 qemu-system-x86_64:qemu-system-x86 busybox:busybox-static cpio:cpio \
            dpkg-deb:dpkg xz:xz-utils zstd:zstd flock:util-linux strace:strace /usr/bin/time:time; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
# busybox-static puts a static busybox at /bin/busybox; a dynamic one is not enough in a guest.
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Upstream plugins the tests run (IPAM) and compare against (bridge).
gobin="$PWD/build/cni-bin"
for p in ipam/host-local ipam/static main/bridge; do
  [ -x "$gobin/$(basename $p)" ] && continue
  echo "install-deps: go install containernetworking/plugins/$p@v1.9.1"
  GOBIN="$gobin" CGO_ENABLED=0 go install "github.com/containernetworking/plugins/plugins/$p@v1.9.1"
done

# Real callers: cnitool on the libcni containerd 1.6 vendors, and on the project's.
for v in v1.1.2 v1.3.0; do
  [ -x "$PWD/build/cnitool/$v/cnitool" ] && continue
  echo "install-deps: go install containernetworking/cni/cnitool@$v"
  GOBIN="$PWD/build/cnitool/$v" CGO_ENABLED=0 go install "github.com/containernetworking/cni/cnitool@$v"
done

# Static analysis.
tools="$PWD/build/tools"
if [ ! -x "$tools/staticcheck" ]; then
  echo "install-deps: go install staticcheck"
  GOBIN="$tools" go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
./scripts/deps/kube.sh
./scripts/deps/multus.sh
