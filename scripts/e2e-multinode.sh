#!/usr/bin/env bash
# The whole system on one machine, for humans: runs the Rust test conformance/tests/overlay.rs
# (the same one CI runs) with its progress shown. Per backend (host-gw, vxlan): a real etcd on
# an underlay LAN namespace, three node namespaces each running our flanneld with
# ansible-role-flanneld's flags and our CNI plugins with kube-flannel's conflist, two pods per
# node pinging each other (30 of 30), a hostPort on node 1 answering from node 3, pod →
# internet masqueraded, a Go-format node, a fourth node joining, a node leaving, and
# afterwards nothing left. Checks the machine cannot run yet are printed as SKIPPED.
#
#   scripts/e2e-multinode.sh                 # both backends, release binaries built first
#   scripts/e2e-multinode.sh host-gw         # one backend (host-gw | vxlan)
#   CNI_PLUGIN_DIR=dir scripts/e2e-multinode.sh   # plugins and flanneld from dir
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "e2e-multinode: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "run as root: it creates network namespaces"
case "${1:-}" in
    "") filter=whole_system_ ;;
    host-gw) filter=whole_system_host_gw ;;
    vxlan) filter=whole_system_vxlan ;;
    *) fail "usage: $0 [host-gw|vxlan]" ;;
esac
if [ -z "${CNI_PLUGIN_DIR:-}" ]; then
    scripts/setup.sh
    cargo build --workspace --release --bins --locked -q
    CNI_PLUGIN_DIR="$PWD/target/release"
fi
export CNI_PLUGIN_DIR
[ -x "$CNI_PLUGIN_DIR/flanneld" ] || fail "no flanneld in $CNI_PLUGIN_DIR"

# SKIPPED lines (conformance::skip) appear in the output as the test runs.
cargo test -p conformance --locked --test overlay -- "$filter" --nocapture --test-threads=1 \
    || fail "see above"
echo "e2e-multinode: OK"
