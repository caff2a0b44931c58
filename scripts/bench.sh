#!/usr/bin/env bash
# The side-by-side benchmark: our plugins (dynamic and static builds) vs the Go reference
# plugins (Debian's containernetworking-plugins in /usr/lib/cni), same workload, alternating
# in one run. Workload per pod: bridge (+ host-local) then portmap with one TCP mapping, the
# chain a flannel node runs below flannel (Debian has no Go flannel; our flannel chain is
# reported beside it). Sections: sequential, parallel, host-local at 5,000 leases, peak RSS
# and sizes, and the `ip -batch` floor.
#
#   scripts/bench.sh [sequential pods, default 50]
#
# This script builds, installs what is missing and enters a private network namespace; the
# runner, `bench all` (bench/src/), does the rest. docs/performance.md holds a run.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bench-common.sh

if [ -z "${CNI_BENCH_INNER:-}" ]; then
    scripts/setup.sh
    cargo build --release --locked -q --workspace --bins
    # The build scripts/install.sh puts on nodes: glibc static-pie.
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -q \
        --target "$(rustc -vV | sed -n 's/host: //p')" --target-dir target/static \
        -p loopback -p host-local -p bridge -p portmap -p flannel
    [ -x /usr/lib/cni/bridge ] || { echo "bench: /usr/lib/cni/bridge missing: apt-get install containernetworking-plugins" >&2; exit 1; }
    bench_enter "$0" "$@"
fi

bench --static "$PWD/target/static/$(rustc -vV | sed -n 's/host: //p')/release" all "$@"
