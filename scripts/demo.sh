#!/usr/bin/env bash
# The demo: the whole flannel system on one machine, step by step. A real etcd on an underlay
# network (private namespaces), three nodes each running our flanneld (ansible-role-flanneld's
# flags, mutual TLS), their leases in etcd and the subnet.env each wrote, what the backend
# programmed on node 1 (flannel.100's routes, neighbours and FDB entries with vxlan; routes
# with host-gw), two pods per node made by our CNI plugins through kube-flannel's conflist
# pinging across nodes, a hostPort answering from another node, and the teardown. Nothing
# touches the machine's own network; everything is removed at the end, also on failure or
# Ctrl-C. The steps are demo/src/main.rs (`cluster-demo`) over drivers::cluster, the
# same code the CI test (conformance/tests/overlay.rs) checks.
#
#   scripts/demo.sh                    # vxlan
#   scripts/demo.sh --backend host-gw  # or vxlan, or wireguard (etcd demo)
#   scripts/demo.sh --single-node      # one node, subnet.env by hand, three pods (no flanneld)
#   scripts/demo.sh --kube             # flanneld --kube-subnet-mgr on a real kube-apiserver,
#                                      # host-gw (seed 000's check); --kube --backend vxlan
#   scripts/demo.sh --cluster          # kube-flannel, ours (deploy/kube-flannel.yml, our image)
#                                      # on a real cluster: kubelets, containerd, scheduler...
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { printf '\n\033[31mdemo failed: %s\033[0m\n' "$*" >&2; exit 1; }
args=()
kube=
cluster=
if [ "${1:-}" = --kube ]; then
    kube=1
    args=(--kube)
    shift
elif [ "${1:-}" = --cluster ]; then
    kube=1
    cluster=1
    args=(--cluster)
    shift
fi
case "${1:-}" in
    --single-node) [ -z "$kube" ] || fail "--kube and --single-node exclude each other"
                   exec scripts/demo-single-node.sh ;;
    --backend) [ -n "${2:-}" ] || fail "--backend vxlan|host-gw|wireguard"; args+=(--backend "$2") ;;
    "") ;;
    *) fail "usage: $0 [--single-node | [--kube | --cluster] [--backend vxlan|host-gw|wireguard]]" ;;
esac
[ "$(id -u)" -eq 0 ] || fail "run as root: the demo creates network namespaces"
scripts/setup.sh
if [ -n "$kube" ]; then
    # Kubernetes 1.20.2 from Debian's source package: about 6 minutes once, cached after.
    scripts/kube-build.sh
fi
if [ -n "$cluster" ]; then
    printf '\n\033[1m== building our image (static binaries, FROM scratch; about 3 minutes the first time)\033[0m\n'
    scripts/image.sh
fi
printf '\n\033[1m== building the release plugins, cnitool, flanneld and the demo\033[0m\n'
cargo build --workspace --release --bins --locked -q
CNI_PLUGIN_DIR="$PWD/target/release" target/release/cluster-demo "${args[@]}" \
    || fail "see above: its last lines say what it removed"
