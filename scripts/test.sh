#!/usr/bin/env bash
# The test command: every test, offline (extra arguments go to cargo test). The real-API-server
# tests run where controller-runtime's envtest would find etcd, kube-apiserver and
# kube-controller-manager (KUBEBUILDER_ASSETS, or setup-envtest's store) and skip with one line
# elsewhere; a KUBEBUILDER_ASSETS folder that lacks one of them fails them instead. The last line
# counts the tests run and skipped across every test binary.
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Each skipped test writes one line here (tests/support/mod.rs, record_skip).
export MESHCTL_SKIP_LOG="$work/skipped"
: > "$MESHCTL_SKIP_LOG"

status=0
cargo test --locked "$@" 2>&1 | tee "$work/log" || status=$?

# libtest's own summary, one per test binary: "test result: ok. 12 passed; 0 failed; 1 ignored; …".
read -r passed failed ignored < <(
  sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p' "$work/log" |
    awk '{p += $1; f += $2; i += $3} END {print p + 0, f + 0, i + 0}'
)
skipped="$(sort -u "$MESHCTL_SKIP_LOG" | wc -l)"
# One line per reason, with how many tests it skipped (real API servers missing, ../shared missing).
sort -u "$MESHCTL_SKIP_LOG" | sed -E 's/^[^:]*: //' | sort | uniq -c | while read -r count reason; do
  case "$reason" in
    *shared/upstream*) echo "test: $count tests skipped ($reason): they read Istio's and MetalLB's files in ../shared/upstream" ;;
    *) echo "test: $count real-API-server tests skipped ($reason); they run where KUBEBUILDER_ASSETS names etcd, kube-apiserver and kube-controller-manager 1.36 (README, Development)" ;;
  esac
done
[ "$ignored" -eq 0 ] || echo "test: $ignored ignored by #[ignore]"
# A skipped test returns early, so libtest counted it as passed: the line below does not.
echo "tests: $((passed - skipped)) passed, $failed failed, $skipped skipped"
exit "$status"
