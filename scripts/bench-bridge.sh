#!/usr/bin/env bash
# bridge + host-local ADD and DEL latency, ours vs the Go plugins (Debian's
# containernetworking-plugins), in one run: calls alternate ours/Go for fresh containers,
# each implementation on its own bridge and subnet. Two configs: flannel's delegate (no
# masquerade: flanneld masquerades) and the same with ipMasq (nftables for us, iptables for Go).
# Everything runs inside a private network namespace; containers get namespaces of their own.
#
#   scripts/bench-bridge.sh [iterations]
#
# This script builds, installs what is missing and enters a private network namespace; the
# runner, `bench bridge` (bench/src/plugins.rs), runs and times the calls.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bench-common.sh

if [ -z "${CNI_BENCH_INNER:-}" ]; then
    scripts/setup.sh
    cargo build --release --locked -q -p bridge -p host-local -p bench --bins
    bench_enter "$0" "$@"
fi

bench bridge "$@"
