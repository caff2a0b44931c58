#!/usr/bin/env bash
# host-local ADD and DEL latency, ours vs the Go plugin (Debian's containernetworking-plugins),
# on a network already holding N leases (default 5000) and on an empty one, in one run.
# Calls alternate ours/Go so that machine noise hits both alike. Each plugin gets its own
# dataDir (on disk, like the default /var/lib/cni/networks), pre-filled with leases in the
# shared on-disk format. Everything runs inside a private network namespace.
#
#   scripts/bench-host-local.sh [leases] [iterations]
#
# This script builds, installs what is missing and enters a private network namespace; the
# runner, `bench host-local` (bench/src/plugins.rs), runs and times the calls.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bench-common.sh

if [ -z "${CNI_BENCH_INNER:-}" ]; then
    scripts/setup.sh
    cargo build --release --locked -q -p host-local -p bench --bins
    bench_enter "$0" "$@"
fi

bench host-local "$@"
