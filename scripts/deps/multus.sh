#!/usr/bin/env bash
# The Multus test tier (test/kube, TestMultus*): Multus thin (cmd/multus)
# and thick (multus-daemon, multus-shim) built from the module pinned in
# test/tools/multus into build/multus. `go install …@v4.x` is refused (the
# module proxy does not list a gopkg.in module's versions), so they build
# from that module. Idempotent: skipped while build/multus holds each
# binary of the pinned version.
set -euo pipefail
cd "$(dirname "$0")/../.."

mod=test/tools/multus
path=gopkg.in/k8snetworkplumbingwg/multus-cni.v4
want=$(cd "$mod" && go list -m -f '{{.Version}}' "$path")
out="$PWD/build/multus"
for bin in multus multus-daemon multus-shim; do
  [ -x "$out/$bin" ] && [ "$(cat "$out/$bin.version" 2>/dev/null)" = "$want" ] && continue
  echo "install-deps: go build $path/cmd/$bin@$want"
  mkdir -p "$out"
  # Stamped as a release build is, so `multus -v` says what was built.
  ldflags="-s -w -X $path/pkg/multus.version=$want"
  (cd "$mod" && CGO_ENABLED=0 nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$out/$bin.tmp" "$path/cmd/$bin")
  mv "$out/$bin.tmp" "$out/$bin"
  echo "$want" > "$out/$bin.version"
done

# The cluster network of the tier's Multus config: the reference loopback
# plugin, as simple as a cluster network gets.
if [ ! -x "$out/loopback" ]; then
  echo "install-deps: go install containernetworking/plugins/main/loopback@v1.9.1"
  GOBIN="$out" CGO_ENABLED=0 go install github.com/containernetworking/plugins/plugins/main/loopback@v1.9.1
fi
