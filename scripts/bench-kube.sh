#!/usr/bin/env bash
# flanneld in kube mode at scale: a real kube-apiserver (scripts/kube-build.sh) holding 3, then
# 1,000 Node objects as a cluster has them (peers annotated as Go flanneld annotates them,
# vxlan); the agent's start to every peer programmed, and its VmRSS/VmHWM. Everything runs in
# private namespaces (a "lan" with the control plane, a node per run).
#
#   scripts/bench-kube.sh [nodes=3,1000]
#
# This script builds and enters a private network namespace; the runner, `bench kube`
# (conformance/src/bench/kube.rs), measures and prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bench-common.sh

if [ -z "${CNI_BENCH_INNER:-}" ]; then
    scripts/setup.sh
    scripts/kube-build.sh
    cargo build --release --locked -q -p flanneld -p conformance --bins
    bench_enter "$0" "$@"
fi

bench kube "${1:-3,1000}"
