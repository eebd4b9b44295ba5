#!/usr/bin/env bash
# The test command: unpacks the real control-plane binaries from ../shared/envtest when
# KUBEBUILDER_ASSETS is not set already, then runs every test (extra arguments go to cargo test).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${KUBEBUILDER_ASSETS:-}" ]; then
  if [ -d ../shared/envtest ]; then
    KUBEBUILDER_ASSETS="$(scripts/envtest-assets.sh)"
    export KUBEBUILDER_ASSETS
  else
    echo "test: ../shared/envtest is not there; the real-API-server tests will be skipped" >&2
  fi
fi
exec cargo test --locked "$@"
