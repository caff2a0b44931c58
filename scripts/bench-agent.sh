#!/usr/bin/env bash
# flanneld at scale: etcd holding 1,000 then 5,000 peers' leases (Go's format, vxlan), the
# agent's start to every peer programmed next to the floor (the same entries by `ip -batch` +
# `bridge -batch`), event latency (lease put → route in the kernel, and the agent's own
# histogram), memory at 0/1,000/5,000 peers, CPU while idle. Everything runs in private
# namespaces (a "lan" with etcd, a node per run).
#
#   scripts/bench-agent.sh [peers=1000,5000] [events=200] [idle-secs=20]
#   scripts/bench-agent.sh --kube [nodes=1,1000,5000] [events=200] [idle-secs=60] [reps=3]
#                                   # the same in kube mode on a real kube-apiserver
#                                   # (scripts/bench-kube.sh, docs/bench-kube.md)
#
# This script builds and enters a private network namespace; the runner, `bench agent`
# (bench/src/agent/), measures and writes docs/bench-agent.md and
# docs/bench-agent.svg (the table and plot of docs/performance.md, "flanneld at scale").
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --kube ]; then
    shift
    exec scripts/bench-kube.sh "$@"
fi
. scripts/lib/bench-common.sh

if [ -z "${CNI_BENCH_INNER:-}" ]; then
    scripts/setup.sh
    cargo build --release --locked -q -p flanneld -p bench --bins
    bench_enter "$0" "$@"
fi

bench agent "${1:-1000,5000}" "${2:-200}" "${3:-20}" "$PWD/docs"
