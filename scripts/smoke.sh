#!/usr/bin/env bash
# Real-cluster smoke test: from nothing to a verified two-cluster mesh and back, on a Linux host with
# Docker (the GitHub Actions workflow .github/workflows/smoke.yml runs it on ubuntu-latest).
#
#   scripts/smoke.sh            install pinned kind and istioctl, build meshctl, run the whole cycle
#   TOPOLOGY=docs/examples/primary-remote.yaml scripts/smoke.sh
#                               the same for a deployment model from a meshctl.yaml (kind clusters)
#   UPGRADE_FROM=1.30.3 scripts/smoke.sh
#                               the mesh built on that Istio release, then `meshctl upgrade`d to the
#                               pinned one, verified, finished, and `up` finds nothing to change
#
# Pinned versions come from `meshctl version -o json` (src/versions.rs is the one place they live).
# Downloads are checked against the checksum files the projects publish beside them, and against
# KIND_SHA256 / ISTIOCTL_SHA256 when those are set. On failure, `meshctl diagnose` collects every
# cluster into $ARTIFACTS (default ./smoke-artifacts) before the clusters are deleted.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
artifacts=${ARTIFACTS:-$root/smoke-artifacts}
tools=${TOOLS_DIR:-$root/.smoke-tools}
clusters=${CLUSTERS:-2}
# The mesh: CLUSTERS kind clusters (multi-primary, multi-network), or the meshctl.yaml in TOPOLOGY.
if [ -n "${TOPOLOGY:-}" ]; then
  topology=(--config "$TOPOLOGY")
  clusters=$(grep -c -- '- {name:' "$TOPOLOGY")
else
  topology=(--clusters "$clusters")
fi
# What verify proves besides every pair: locality failover and weighted distribution. An ambient
# mesh fails over by the Service's trafficDistribution, which ztunnel applies; weighted
# distribution is a DestinationRule, which only a waypoint applies there (meshctl installs none,
# and refuses that check).
checks=(--failover --locality distribute)
if [ -n "${TOPOLOGY:-}" ] && grep -q '^dataplane: ambient' "$TOPOLOGY"; then
  checks=(--failover)
fi
# The release the mesh is built on: the pinned one, or UPGRADE_FROM (then upgraded).
from=()
if [ -n "${UPGRADE_FROM:-}" ]; then
  from=(--istio-version "$UPGRADE_FROM")
fi
mkdir -p "$artifacts" "$tools"
export PATH="$tools:$PATH"
export MESHCTL_HOME="$root/.smoke-state"
export KUBECONFIG="$root/.smoke-state/kubeconfig"
mkdir -p "$MESHCTL_HOME"

log() { printf '%s smoke: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# sha256 of file $1 must equal $2.
check_sum() {
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    log "checksum mismatch for $1: got $got, expected $2"
    exit 1
  fi
}

log "building meshctl"
cargo build --release --locked --manifest-path "$root/Cargo.toml"
meshctl="$root/target/release/meshctl"
versions=$("$meshctl" version -o json)
kind_version=$(jq -r '.kind' <<<"$versions")
istio_version=$(jq -r '.istio' <<<"$versions")
log "pinned: kind $kind_version, istio $istio_version"

if ! command -v kind >/dev/null || ! kind version | grep -q "$kind_version"; then
  log "installing kind $kind_version"
  base="https://github.com/kubernetes-sigs/kind/releases/download/$kind_version"
  curl -fsSLo "$tools/kind" "$base/kind-linux-amd64"
  curl -fsSLo "$tools/kind.sha256sum" "$base/kind-linux-amd64.sha256sum"
  check_sum "$tools/kind" "${KIND_SHA256:-$(cut -d' ' -f1 "$tools/kind.sha256sum")}"
  chmod +x "$tools/kind"
fi
if ! command -v istioctl >/dev/null || ! istioctl version --remote=false 2>/dev/null | grep -q "$istio_version"; then
  log "installing istioctl $istio_version"
  tarball="istioctl-$istio_version-linux-amd64.tar.gz"
  base="https://github.com/istio/istio/releases/download/$istio_version"
  curl -fsSLo "$tools/$tarball" "$base/$tarball"
  curl -fsSLo "$tools/$tarball.sha256" "$base/$tarball.sha256"
  check_sum "$tools/$tarball" "${ISTIOCTL_SHA256:-$(cut -d' ' -f1 "$tools/$tarball.sha256")}"
  tar -xzf "$tools/$tarball" -C "$tools" istioctl
fi

# Several kind clusters on one host exhaust the default inotify limits (kind's known issues).
if [ "$(cat /proc/sys/fs/inotify/max_user_watches)" -lt 524288 ] || [ "$(cat /proc/sys/fs/inotify/max_user_instances)" -lt 512 ]; then
  log "raising inotify limits"
  sudo sysctl -w fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=512
fi

collect_diagnostics() {
  log "collecting diagnostics in $artifacts"
  # Everything meshctl's part of the mesh holds, per cluster, with no secret data.
  "$meshctl" diagnose "${topology[@]}" --out "$artifacts/diagnose.tar.gz" || true
  "$meshctl" status "${topology[@]}" -o json > "$artifacts/status.json" 2>&1 || true
  # The nodes' own logs (kubelet, containerd) are not reachable through the API server.
  for i in $(seq 1 "$clusters"); do
    kind export logs --name "cluster$i" "$artifacts/cluster$i-kind-logs" >/dev/null 2>&1 || true
  done
}

finish() {
  local code=$?
  if [ "$code" -ne 0 ]; then
    collect_diagnostics
  fi
  log "deleting the clusters"
  "$meshctl" down --purge || true
  exit "$code"
}
trap finish EXIT

log "meshctl doctor"
"$meshctl" doctor "${topology[@]}"
log "meshctl up ${topology[*]} ${from[*]}"
"$meshctl" up "${topology[@]}" "${from[@]}"
log "meshctl up again: must change nothing"
"$meshctl" up "${topology[@]}" "${from[@]}" 2>&1 | tee "$artifacts/second-up.txt"
grep -q "nothing to change" "$artifacts/second-up.txt"
log "meshctl verify ${checks[*]}"
"$meshctl" verify "${topology[@]}" "${checks[@]}" --junit "$artifacts/verify.xml"
if [ -n "${UPGRADE_FROM:-}" ]; then
  log "meshctl upgrade --to $istio_version (canary, cluster by cluster, each gated by verify)"
  "$meshctl" upgrade "${topology[@]}" --to "$istio_version" 2>&1 | tee "$artifacts/upgrade.txt"
  log "meshctl upgrade --finish"
  "$meshctl" upgrade "${topology[@]}" --finish
  log "meshctl verify after the upgrade"
  "$meshctl" verify "${topology[@]}" --junit "$artifacts/verify-upgraded.xml"
  log "meshctl up after the upgrade: must change nothing"
  "$meshctl" up "${topology[@]}" 2>&1 | tee "$artifacts/up-after-upgrade.txt"
  grep -q "nothing to change" "$artifacts/up-after-upgrade.txt"
fi
log "meshctl status"
"$meshctl" status "${topology[@]}"
log "passed"
