#!/usr/bin/env bash
# The long variants of the reliability checks (CI runs short ones):
#   - the storm (200 pods through flannel → portmap, 16 in parallel, 3 rounds),
#   - SIGKILL at random points of ADD, CNI_CRASH_TRIALS trials (default 120),
#   - flanneld under faults (conformance/tests/flanneld_faults.rs): start races at
#     FLANNELD_FAULTS_SCALE times the CI size (default 3: 60 agents for 72 subnets, then 90
#     for 72), FLANNELD_FAULTS_ITERATIONS etcd kills, member failovers and agent restarts
#     (default 10),
#   - the fuzzers, FUZZ_SECONDS per target (default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --release --bins --locked -q
CI=true CNI_PLUGIN_DIR="$PWD/target/release" CNI_CRASH_TRIALS="${CNI_CRASH_TRIALS:-120}" \
    cargo test --locked -p conformance --test reliability -- --test-threads=1
CI=true CNI_PLUGIN_DIR="$PWD/target/release" \
    FLANNELD_FAULTS_SCALE="${FLANNELD_FAULTS_SCALE:-3}" \
    FLANNELD_FAULTS_ITERATIONS="${FLANNELD_FAULTS_ITERATIONS:-10}" \
    cargo test --locked -p conformance --test flanneld_faults -- --nocapture
scripts/fuzz.sh "${FUZZ_SECONDS:-600}" 2
