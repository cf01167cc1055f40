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

# Upstream plugins the tests run (IPAM; loopback for containerd's CRI) and compare against (bridge), at
# the version go.mod pins: the plugin runs host-local and static in process
# from that module, and the tests compare it with these binaries. One that
# is there but of another version is installed again.
gobin="$PWD/build/cni-bin"
plugins_version=$(go list -m -f '{{.Version}}' github.com/containernetworking/plugins)
for p in ipam/host-local ipam/static main/bridge main/loopback; do
  bin="$gobin/$(basename $p)"
  [ -x "$bin" ] && go version -m "$bin" 2>/dev/null | grep -q "^[[:space:]]*mod[[:space:]].*[[:space:]]$plugins_version\b" && continue
  echo "install-deps: go install containernetworking/plugins/$p@$plugins_version"
  GOBIN="$gobin" CGO_ENABLED=0 go install "github.com/containernetworking/plugins/plugins/$p@$plugins_version"
done

# Real callers: cnitool on containerd 1.7's libcni (1.6's v1.1.1 reads configs the same way), and on the project's.
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
./scripts/deps/libvirt.sh
./scripts/deps/cri.sh
./scripts/deps/dhcp-client.sh
./scripts/deps/kube.sh
./scripts/deps/multus.sh
