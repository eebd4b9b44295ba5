#!/usr/bin/env bash
# Benchmark: wall time of a second `meshctl up` on a healthy 3-cluster mesh (real kube-apiservers
# from KUBEBUILDER_ASSETS or setup-envtest's store, fake kind/docker/istioctl). Prints each run with
# the API writes and tool runs it caused (both must be 0) and the median; the target (issue 11) is
# below 1 s.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet --bench second_up 2>/dev/null | grep -E '^(second up|median)'
