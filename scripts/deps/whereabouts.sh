#!/usr/bin/env bash
# The IPAM `make bench` measures tapbridge-ipam against: whereabouts built
# from github.com/k8snetworkplumbingwg/whereabouts (test/tools/whereabouts
# pins the version) into build/whereabouts/, with the CRDs it stores its
# pools and reservations in, copied from the same module in the module cache.
# Idempotent: skipped while build/whereabouts holds the binary and CRDs of
# the pinned version.
set -euo pipefail
cd "$(dirname "$0")/../.."

mod=test/tools/whereabouts
path=github.com/k8snetworkplumbingwg/whereabouts
want=$(cd "$mod" && go list -m -f '{{.Version}}' "$path")
out="$PWD/build/whereabouts"
if ! { [ -x "$out/whereabouts" ] && [ "$(cat "$out/whereabouts.version" 2>/dev/null)" = "$want" ]; }; then
  echo "install-deps: go build $path/cmd@$want"
  mkdir -p "$out"
  # Stamped as upstream's hack/build-go.sh does, so `whereabouts` VERSION says what was built.
  ldflags="-s -w -X $path/pkg/version.Version=$want"
  (cd "$mod" && CGO_ENABLED=0 nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$out/whereabouts.tmp" "$path/cmd")
  mv "$out/whereabouts.tmp" "$out/whereabouts"
  echo "$want" > "$out/whereabouts.version"
fi

# IPPool and OverlappingRangeIPReservation are what the IPAM writes;
# NodeSlicePool is read only when a config asks for node slices, but v0.9.2
# ships it with the others and the bench applies all three.
if [ "$(cat "$out/crds.version" 2>/dev/null)" != "$want" ]; then
  src=$(cd "$mod" && go mod download -json "$path@$want" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$out/crds"
  for crd in ippools overlappingrangeipreservations nodeslicepools; do
    cp "$src/doc/crds/whereabouts.cni.cncf.io_$crd.yaml" "$out/crds/"
  done
  chmod 644 "$out"/crds/*.yaml
  echo "$want" > "$out/crds.version"
fi
