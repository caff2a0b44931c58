#!/usr/bin/env bash
# flanneld in kube mode at scale: a real kube-apiserver (scripts/kube-build.sh) holding 1, 1,000
# then 5,000 Node objects as a cluster has them (peers annotated as Go flanneld annotates them,
# vxlan); per count the agent's start to every peer programmed next to the floor (the same
# entries by `ip -batch` + `bridge -batch`, same run, medians of `reps`), VmRSS/VmHWM; at the
# largest count the event latency of new Nodes (creation sent → route in the kernel), idle CPU
# and the apiserver's requests and bytes over the agent's start and the idle minute.
# Everything runs in private namespaces (a "lan" with the control plane, a node per run).
# Writes docs/bench-kube.md (docs/performance.md).
#
#   scripts/bench-kube.sh [nodes=1,1000,5000] [events=200] [idle-secs=60] [reps=3]
#   scripts/bench-kube.sh 1,200 20 5 1     # the short form CI runs
#
# This script builds and enters a private network namespace; the runner, `bench kube`
# (bench/src/kube.rs), measures and prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bench-common.sh

if [ -z "${CNI_BENCH_INNER:-}" ]; then
    scripts/setup.sh
    scripts/kube-build.sh
    cargo build --release --locked -q -p flanneld -p bench --bins
    bench_enter "$0" "$@"
fi

bench kube "${1:-1,1000,5000}" "${2:-200}" "${3:-60}" "${4:-3}" "${CNI_BENCH_OUT:-$PWD/docs}"
