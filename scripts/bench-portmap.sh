#!/usr/bin/env bash
# portmap ADD and DEL latency with one TCP mapping, ours (nftables) vs the Go portmap
# (Debian's 1.1.1, iptables), in one run, alternating, on pods set up by our bridge.
# Everything runs inside a private network namespace.
#
#   scripts/bench-portmap.sh [iterations]
#
# This script builds, installs what is missing and enters a private network namespace; the
# runner, `bench portmap` (bench/src/plugins.rs), runs and times the calls.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bench-common.sh

if [ -z "${CNI_BENCH_INNER:-}" ]; then
    scripts/setup.sh
    cargo build --release --locked -q -p bridge -p host-local -p portmap -p bench --bins
    bench_enter "$0" "$@"
fi

bench portmap "$@"
