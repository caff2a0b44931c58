#!/usr/bin/env bash
# The kube-flannel chain (flannel → bridge → host-local, then portmap with one mapping):
# ADD and DEL latency of the whole chain per pod, each pod in its own network namespace.
# The Go chain cannot run here (Debian ships no Go flannel); bench-bridge.sh and
# bench-portmap.sh compare the parts with the Go plugins. Runs in a private network namespace.
#
#   scripts/bench-flannel.sh [iterations]
#
# This script builds, installs what is missing and enters a private network namespace; the
# runner, `bench flannel` (bench/src/plugins.rs), runs and times the calls.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bench-common.sh

if [ -z "${CNI_BENCH_INNER:-}" ]; then
    scripts/setup.sh
    cargo build --release --locked -q -p flannel -p bridge -p host-local -p portmap -p bench --bins
    bench_enter "$0" "$@"
fi

bench flannel "$@"
