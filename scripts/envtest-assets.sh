#!/usr/bin/env bash
# Unpacks the real control-plane binaries (etcd, kube-apiserver, kube-controller-manager) from
# ../shared/envtest into a build-local folder, checks them against SHA256SUMS, and prints the folder.
# Use it as controller-runtime's envtest does:  export KUBEBUILDER_ASSETS="$(scripts/envtest-assets.sh)"
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="${ENVTEST_SRC:-$root/../shared/envtest}"
dest="${ENVTEST_DEST:-$root/target/envtest}"
if [ ! -f "$src/SHA256SUMS" ]; then
  echo "envtest-assets: no $src/SHA256SUMS: the envtest binaries are not there" >&2
  exit 1
fi
mkdir -p "$dest"
for bin in etcd kube-apiserver kube-controller-manager; do
  # Unpack again only when the binary is missing or does not match its sum.
  if ! (cd "$dest" && grep " $bin\$" "$src/SHA256SUMS" | sha256sum --check --status 2>/dev/null); then
    xz -dc "$src/$bin.xz" > "$dest/$bin.tmp"
    chmod 0755 "$dest/$bin.tmp"
    mv "$dest/$bin.tmp" "$dest/$bin"
  fi
done
if ! (cd "$dest" && sha256sum --check --quiet "$src/SHA256SUMS" >&2); then
  echo "envtest-assets: checksums in $src/SHA256SUMS do not match the unpacked binaries" >&2
  exit 1
fi
echo "$dest"
