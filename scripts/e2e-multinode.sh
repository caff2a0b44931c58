#!/usr/bin/env bash
# Three nodes, one flannel vxlan overlay, two pods per node, all in network namespaces this
# script creates (never the machine's own network) and deletes on exit, also on failure.
#
# Each "node" is a namespace on an underlay bridge (198.18.0.N/24, benchmark-test range) with
# the flannel.1 vxlan device (VNI 1, port 8472, MTU 1450) and the routes, neighbour and FDB
# entries flanneld's vxlan backend installs for the other nodes' subnets, and a subnet.env
# (10.244.N.1/24 of 10.244.0.0/16). Pods are created with cnitool through kube-flannel's
# conflist (flannel → portmap). Checked: every pod pings every other pod, a hostPort on node 1
# answers from node 2, and after DEL nothing of ours remains on any node.
#
#   scripts/e2e-multinode.sh            # builds the release binaries first
#   CNI_PLUGIN_DIR=dir scripts/e2e-multinode.sh   # uses plugins and cnitool from dir
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "e2e-multinode: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "run as root: it creates network namespaces"
if [ -z "${CNI_PLUGIN_DIR:-}" ]; then
    scripts/setup.sh
    cargo build --workspace --release --bins --locked -q
    CNI_PLUGIN_DIR="$PWD/target/release"
fi
BIN="$CNI_PLUGIN_DIR"
[ -x "$BIN/cnitool" ] || fail "no cnitool in $BIN"

id=$$
underlay="e2e-ul-$id"
nodes=(1 2 3)
work=$(mktemp -d /tmp/cni-e2e-XXXXXX)
node_ns() { echo "e2e-node$1-$id"; }
pod_ns() { echo "e2e-pod$1$2-$id"; }
cleanup() {
    for n in "${nodes[@]}"; do
        for p in a b; do ip netns del "$(pod_ns "$n" "$p")" 2>/dev/null || true; done
        ip netns del "$(node_ns "$n")" 2>/dev/null || true
    done
    ip netns del "$underlay" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

ip netns add "$underlay"
ip -n "$underlay" link add ul0 type bridge
ip -n "$underlay" link set ul0 up

vtep_mac() { printf '02:00:00:00:00:%02x' "$1"; }
for n in "${nodes[@]}"; do
    ns=$(node_ns "$n")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$underlay" link add "ul-n$n" type veth peer name eth0 netns "$ns"
    ip -n "$underlay" link set "ul-n$n" master ul0 up
    ip -n "$ns" addr add "198.18.0.$n/24" dev eth0
    ip -n "$ns" link set eth0 up
    # What flanneld's vxlan backend sets up on this node.
    ip -n "$ns" link add flannel.1 address "$(vtep_mac "$n")" type vxlan id 1 \
        local "198.18.0.$n" dev eth0 dstport 8472 nolearning
    ip -n "$ns" link set flannel.1 mtu 1450 up
    ip -n "$ns" addr add "10.244.$n.0/32" dev flannel.1
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
    for m in "${nodes[@]}"; do
        [ "$m" = "$n" ] && continue
        ip -n "$ns" route add "10.244.$m.0/24" via "10.244.$m.0" dev flannel.1 onlink
        ip -n "$ns" neigh add "10.244.$m.0" lladdr "$(vtep_mac "$m")" dev flannel.1 nud permanent
        bridge -n "$ns" fdb append "$(vtep_mac "$m")" dev flannel.1 dst "198.18.0.$m"
    done
    mkdir -p "$work/node$n/net.d"
    printf 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.%s.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n' \
        "$n" >"$work/node$n/subnet.env"
    cat >"$work/node$n/net.d/10-flannel.conflist" <<CONF
{ "name": "cbr0", "cniVersion": "0.3.1", "plugins": [
  { "type": "flannel", "delegate": { "hairpinMode": true, "isDefaultGateway": true },
    "subnetFile": "$work/node$n/subnet.env", "dataDir": "$work/node$n/flannel",
    "ipam": { "dataDir": "$work/node$n/ipam" } },
  { "type": "portmap", "capabilities": { "portMappings": true }, "stateDir": "$work/node$n/portmap" } ] }
CONF
done

cni() { # cni NODE COMMAND POD [CAP_ARGS]
    ip netns exec "$(node_ns "$1")" env NETCONFPATH="$work/node$1/net.d" CNI_PATH="$BIN" \
        CNI_CACHE_DIR="$work/node$1/cache" CNI_CONTAINERID="$3" CAP_ARGS="${4:-}" \
        "$BIN/cnitool" "$2" cbr0 "/run/netns/$3" >/dev/null
}

declare -A pod_ip
for n in "${nodes[@]}"; do
    for p in a b; do
        pod=$(pod_ns "$n" "$p")
        ip netns add "$pod"
        caps=""
        [ "$n$p" = 1a ] && caps='{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
        cni "$n" add "$pod" "$caps" || fail "ADD $pod on node $n"
        pod_ip[$n$p]=$(ip -n "$pod" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
        echo "node $n pod $p: ${pod_ip[$n$p]}"
    done
done

pings=0
for from in "${!pod_ip[@]}"; do
    for to in "${!pod_ip[@]}"; do
        [ "$from" = "$to" ] && continue
        ip netns exec "$(pod_ns "${from:0:1}" "${from:1:1}")" ping -c1 -W2 -q "${pod_ip[$to]}" >/dev/null \
            || fail "pod $from cannot reach pod $to (${pod_ip[$to]})"
        pings=$((pings + 1))
    done
done
echo "ping matrix: $pings of $pings pod pairs answered"

mkdir -p "$work/www" && echo "hello from node 1" >"$work/www/index.html"
ip netns exec "$(pod_ns 1 a)" python3 -m http.server 80 --directory "$work/www" >/dev/null 2>&1 &
http=$!
answer=""
for _ in $(seq 50); do
    answer=$(ip netns exec "$(node_ns 2)" curl -s -m 1 http://198.18.0.1:8080/ 2>/dev/null) && break
    sleep 0.1
done
kill "$http" 2>/dev/null || true
[ "$answer" = "hello from node 1" ] || fail "hostPort 8080 on node 1 did not answer from node 2"
echo "hostPort: node 2 → node 1:8080 answered \"$answer\""

for n in "${nodes[@]}"; do
    for p in a b; do cni "$n" del "$(pod_ns "$n" "$p")" || fail "DEL pod $n$p"; done
    ns=$(node_ns "$n")
    veths=$(ip -n "$ns" -o link show type veth | grep -c veth || true)
    leases=$(find "$work/node$n/ipam" -type f -name '10.*' | wc -l)
    saved=$(find "$work/node$n/flannel" -type f | wc -l)
    rules=$(ip netns exec "$ns" nft list ruleset | grep -c 'dnat\|masquerade' || true)
    [ "$veths$leases$saved$rules" = "0000" ] \
        || fail "node $n keeps veths=$veths leases=$leases saved=$saved rules=$rules"
done
echo "after DEL: no veth, lease, saved config or rule of ours on any node"
echo "e2e-multinode: OK"
