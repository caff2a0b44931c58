#!/usr/bin/env bash
# Runs the conformance matrix against our plugins and against another plugin directory
# (default: Debian's Go plugins in /usr/lib/cni), and prints where the results differ.
#
#   scripts/matrix.sh [plugin-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
other="${1:-/usr/lib/cni}"
scripts/setup.sh
cargo build --workspace --release --bins --locked -q
rm -f target/matrix-diff.txt
CI=true CNI_PLUGIN_DIR="$PWD/target/release" CNI_MATRIX_OTHER="$other" \
    cargo test --locked -q -p conformance --test matrix
echo "== differences between ours and $other (see docs/differences.md for the intended ones)"
cat target/matrix-diff.txt
