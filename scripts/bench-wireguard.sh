#!/usr/bin/env bash
# Pod-to-pod TCP throughput across two nodes (iperf3, one stream) over host-gw (the floor),
# vxlan, the wireguard backend's userspace WireGuard in our flanneld (this kernel has no
# WireGuard module), and wireguard-go set up as Go flannel's device: the cost of encryption,
# side by side in one run, with the CPU the userspace WireGuard processes spent per GiB.
# Everything runs in private namespaces (a "lan", two nodes, their pods).
# Writes docs/bench-wireguard.md (docs/performance.md).
#
#   scripts/bench-wireguard.sh [secs=5] [reps=3]
#   scripts/bench-wireguard.sh 2 1     # the short form CI runs
#
# This script builds and enters a private network namespace; the runner, `bench wireguard`
# (bench/src/wireguard.rs), measures and prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bench-common.sh

if [ -z "${CNI_BENCH_INNER:-}" ]; then
    scripts/setup.sh
    # flanneld, the runner and kube-flannel's chain (flannel → bridge → host-local, portmap).
    cargo build --release --locked -q -p flanneld -p bench -p flannel -p bridge -p host-local \
        -p portmap -p loopback --bins
    bench_enter "$0" "$@"
fi

# The cluster rig takes flanneld and the plugins from here.
export CNI_PLUGIN_DIR="$PWD/target/release"
bench wireguard "${1:-5}" "${2:-3}" "${CNI_BENCH_OUT:-$PWD/docs}"
