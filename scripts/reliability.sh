#!/usr/bin/env bash
# The long variants of the reliability checks (CI runs short ones):
#   - the storm (200 pods through flannel → portmap, 16 in parallel, 3 rounds),
#   - SIGKILL at random points of ADD, CNI_CRASH_TRIALS trials (default 120),
#   - the fuzzers, FUZZ_SECONDS per target (default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --release --bins --locked -q
CI=true CNI_PLUGIN_DIR="$PWD/target/release" CNI_CRASH_TRIALS="${CNI_CRASH_TRIALS:-120}" \
    cargo test --locked -p conformance --test reliability -- --test-threads=1
scripts/fuzz.sh "${FUZZ_SECONDS:-600}" 2
