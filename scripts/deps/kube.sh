#!/usr/bin/env bash
# The API-server test tier (test/kube): kube-apiserver and kubectl built from
# k8s.io/kubernetes (test/tools/kube pins the version), etcd from Debian.
# Idempotent: the build (about 11 minutes on a 2-core machine, then cached)
# is skipped while build/kube/ holds both binaries of the pinned version.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v etcd >/dev/null 2>&1; then
  echo "install-deps: apt-get install etcd-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq etcd-server >/dev/null
  # The tier runs its own etcd in a netns; on a machine with systemd the
  # package also starts one in the host's netns, which nothing here wants.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
fi

mod=test/tools/kube
want=$(cd "$mod" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
out="$PWD/build/kube"
have() { [ -x "$out/$1" ] && [ "$(cat "$out/$1.version" 2>/dev/null)" = "$want" ]; }
for bin in kube-apiserver kubectl; do
  have "$bin" && continue
  echo "install-deps: go build k8s.io/kubernetes/cmd/$bin@$want (several minutes)"
  mkdir -p "$out"
  # The version is stamped so `kubectl version` and the API server's
  # /version say what was built, as a release build would.
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$want -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$want" | cut -d. -f2)"
  (cd "$mod" && CGO_ENABLED=0 nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$out/$bin.tmp" "k8s.io/kubernetes/cmd/$bin")
  mv "$out/$bin.tmp" "$out/$bin"
  echo "$want" > "$out/$bin.version"
done

# The upstream CRDs the tier applies (NAD, IPAMClaim), fetched into the
# module cache now so that the tests need no network.
go mod download github.com/k8snetworkplumbingwg/network-attachment-definition-client@v1.7.6 \
  github.com/k8snetworkplumbingwg/ipamclaims@v0.4.0-alpha
