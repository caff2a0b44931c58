#!/usr/bin/env bash
# The demo: builds the release plugins and runs them the way a runtime does, inside a private
# "node" network namespace with pods in their own namespaces. Nothing outside those
# namespaces is touched, and everything is removed on exit (also on failure or Ctrl-C).
#
# Today the suite has the loopback plugin; the flannel network demo (bridge, host-local,
# portmap, pods pinging each other) grows here as those plugins land.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
echo "== building release plugins"
cargo build --workspace --release --bins --locked -q
BIN="$PWD/target/release"

run_id="cnirs-demo-$$"
node="${run_id}-node"
pods=("${run_id}-pod1" "${run_id}-pod2")
cleanup() {
    for ns in "${pods[@]}" "$node"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$node"
for pod in "${pods[@]}"; do ip netns add "$pod"; done

cni() { # cni COMMAND POD
    printf '%s' '{"cniVersion":"1.1.0","name":"cni-loopback","type":"loopback"}' |
        CNI_COMMAND="$1" CNI_CONTAINERID="$2" CNI_NETNS="/run/netns/$2" CNI_IFNAME=lo \
        CNI_PATH="$BIN" ip netns exec "$node" "$BIN/loopback"
}

for pod in "${pods[@]}"; do
    echo "== ADD $pod"
    cni ADD "$pod"
    echo
    ip -n "$pod" -brief addr show lo
    ip netns exec "$pod" ping -c1 -W1 127.0.0.1 >/dev/null && echo "   $pod: ping 127.0.0.1 ok"
    cni CHECK "$pod" && echo "   CHECK ok"
done
for pod in "${pods[@]}"; do
    echo "== DEL $pod"
    cni DEL "$pod"
    cni DEL "$pod" # DEL is idempotent
    ip -n "$pod" -brief link show lo
done
echo "== done: node and pods removed"
