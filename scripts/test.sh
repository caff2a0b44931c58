#!/usr/bin/env bash
# The test command: lint, build the release plugins, and run every test against them.
# Tests run plugins only inside private network namespaces they create and delete.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/kube-build.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build --release"
cargo build --workspace --release --bins --locked
echo "== the flannel image (scripts/image.sh), which tests/kube_flannel.rs installs on a cluster"
scripts/image.sh
echo "== cargo test (plugins from target/release)"
rm -f target/test-skips.txt target/flanneld-etcdctl.txt target/e2e-*.txt target/kube-*.txt target/cluster-*.txt
CNI_PLUGIN_DIR="$PWD/target/release" cargo test --workspace --locked
if [ -s target/flanneld-etcdctl.txt ]; then
    echo "== flanneld: etcd as the agent left it (conformance/tests/flanneld.rs)"
    cat target/flanneld-etcdctl.txt
fi
for f in target/e2e-*.txt; do
    [ -s "$f" ] || continue
    echo "== the whole system on one machine, $(basename "$f" .txt | sed 's/^e2e-//') (conformance/tests/overlay.rs)"
    cat "$f"
done
for f in target/kube-*.txt; do
    [ -s "$f" ] || continue
    echo "== flanneld on a real kube-apiserver, $(basename "$f" .txt | sed 's/^kube-//') (conformance/tests/flanneld_kube.rs)"
    cat "$f"
done
for f in target/cluster-*.txt; do
    [ -s "$f" ] || continue
    echo "== kube-flannel, ours, on a real cluster, $(basename "$f" .txt | sed 's/^cluster-//') (conformance/tests/kube_flannel.rs)"
    cat "$f"
done
if [ -s target/test-skips.txt ]; then
    echo "== skipped checks (the environment lacks what they need)"
    cat target/test-skips.txt
fi
echo "== install.sh"
scripts/test-install.sh
echo "== fuzz smoke (scripts/fuzz.sh; the long run is scripts/reliability.sh)"
scripts/fuzz.sh 15
