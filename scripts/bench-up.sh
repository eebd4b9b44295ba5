#!/usr/bin/env bash
# Benchmark: wall time of `meshctl up` for 1, 2 and 4 clusters against fake tools with realistic,
# tenfold scaled-down durations (kind create 3 s, istioctl install 2 s) and real kube-apiservers
# (KUBEBUILDER_ASSETS or setup-envtest's store, as the tests find them). Prints each wall time and
# wall(4)/wall(1); the target (issue 5) is below 1.5.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet --bench up_scaling 2>/dev/null | grep -E '^(up --clusters|wall)'
