#!/usr/bin/env bash
# The single-node demo (scripts/demo.sh --single-node): pods on a flannel network, driven the
# way kubelet's runtime drives CNI, with the subnet.env flanneld would write.
#
# Builds the release plugins and cnitool, then inside a private "node" network namespace
# (never the machine's own) writes the subnet.env flanneld would write, creates three pods
# (each its own network namespace) through kube-flannel's conflist (flannel → portmap), shows
# their addresses and routes, cni0, pod-to-pod pings and a hostPort answering, then deletes
# the pods and shows the node clean. Everything is removed on exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { printf '\n\033[31mdemo failed: %s\033[0m\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root: the demo creates network namespaces"
scripts/setup.sh
say "building the release plugins and cnitool"
cargo build --workspace --release --bins --locked -q
BIN="$ROOT/target/release"

# What a run killed outright (SIGKILL, power loss) left: its namespaces and work dir carry its
# PID; those of a PID that no longer runs are removed, with the processes inside them.
for ns in $(ip netns list | awk '{print $1}' | grep -E '^cni-demo-(node|pod[0-9])-[0-9]+$' || true); do
    owner=${ns##*-}
    [ -d "/proc/$owner" ] && continue
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null && echo "removed $ns, left by run $owner"
done
for d in /tmp/cni-demo-*-*; do
    [ -d "$d" ] || continue
    owner=$(basename "$d" | cut -d- -f3)
    case "$owner" in ''|*[!0-9]*) continue ;; esac
    [ -d "/proc/$owner" ] || { rm -rf "$d" && echo "removed $d, left by run $owner"; }
done

run_id=$$
node="cni-demo-node-$run_id"
pods=("cni-demo-pod1-$run_id" "cni-demo-pod2-$run_id" "cni-demo-pod3-$run_id")
work=$(mktemp -d "/tmp/cni-demo-$run_id-XXXXXX")
http_pid=""
cleanup() {
    [ -n "$http_pid" ] && kill "$http_pid" 2>/dev/null || true
    for ns in "${pods[@]}" "$node"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

# The node and its pods.
ip netns add "$node"
ip -n "$node" link set lo up
for pod in "${pods[@]}"; do ip netns add "$pod"; done

# What flanneld writes on a node that was given 10.244.1.0/24.
mkdir -p "$work/net.d"
cat >"$work/subnet.env" <<ENV
FLANNEL_NETWORK=10.244.0.0/16
FLANNEL_SUBNET=10.244.1.1/24
FLANNEL_MTU=1450
FLANNEL_IPMASQ=true
ENV
# kube-flannel's cni-conf.json, with the state paths of this demo.
cat >"$work/net.d/10-flannel.conflist" <<CONF
{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "flannel",
      "delegate": { "hairpinMode": true, "isDefaultGateway": true },
      "subnetFile": "$work/subnet.env",
      "dataDir": "$work/flannel",
      "ipam": { "dataDir": "$work/ipam" }
    },
    {
      "type": "portmap",
      "capabilities": { "portMappings": true },
      "stateDir": "$work/portmap"
    }
  ]
}
CONF

cni() { # cni COMMAND POD [CAP_ARGS]
    ip netns exec "$node" env NETCONFPATH="$work/net.d" CNI_PATH="$BIN" CNI_CACHE_DIR="$work/cache" \
        CNI_CONTAINERID="$2" CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=$2" \
        CAP_ARGS="${3:-}" "$BIN/cnitool" "$1" cbr0 "/run/netns/$2"
}

say "subnet.env (as flanneld writes it)"
cat "$work/subnet.env"

for i in "${!pods[@]}"; do
    pod=${pods[$i]}
    caps=""
    [ "$i" -eq 0 ] && caps='{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
    say "ADD ${pod} ${caps:+(hostPort 8080 → 80)}"
    cni add "$pod" "$caps" >"$work/result-$i.json" || fail "ADD of $pod"
    addr=$(ip -n "$pod" -4 -o addr show eth0 | awk '{print $4}')
    echo "address: $addr"
    echo "routes:"; ip -n "$pod" route | sed 's/^/  /'
done

say "the node's bridge cni0"
ip -n "$node" -br addr show cni0
ip -n "$node" -o link show cni0 | grep -o 'mtu [0-9]*'
echo "bridge ports:"; ip -n "$node" -br link show master cni0 | sed 's/^/  /'

ip_of() { ip -n "$1" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1; }
say "pings between pods"
for from in 0 1 2; do
    to=$(( (from + 1) % 3 ))
    target=$(ip_of "${pods[$to]}")
    ip netns exec "${pods[$from]}" ping -c1 -W2 -q "$target" >/dev/null \
        || fail "${pods[$from]} cannot reach ${pods[$to]} ($target)"
    echo "${pods[$from]} → ${pods[$to]} ($target): ok"
done

say "a hostPort answering"
mkdir -p "$work/www" && echo "hello from ${pods[0]}" >"$work/www/index.html"
ip netns exec "${pods[0]}" python3 -m http.server 80 --bind 0.0.0.0 --directory "$work/www" \
    >/dev/null 2>&1 &
http_pid=$!
for _ in $(seq 50); do
    ip netns exec "$node" curl -s -m 1 http://127.0.0.1:8080/ >"$work/http" 2>/dev/null && break
    sleep 0.1
done
[ -s "$work/http" ] || fail "nothing answered on the node's 127.0.0.1:8080"
echo "node → 127.0.0.1:8080: $(cat "$work/http")"
answer=$(ip netns exec "${pods[1]}" curl -s -m 2 "http://10.244.1.1:8080/") || fail "pod → node:8080"
echo "${pods[1]} → 10.244.1.1:8080: $answer"
kill "$http_pid"; wait "$http_pid" 2>/dev/null || true; http_pid=""

say "DEL of every pod"
for pod in "${pods[@]}"; do
    cni del "$pod" || fail "DEL of $pod"
    echo "$pod deleted"
done

say "the node afterwards"
veths=$(ip -n "$node" -br link | grep -c veth || true)
leases=$(find "$work/ipam" -type f -name '10.*' | wc -l)
saved=$(find "$work/flannel" -type f | wc -l)
rules=$(ip netns exec "$node" nft list ruleset | grep -c 'dnat\|masquerade' || true)
echo "veth pairs: $veths, host-local leases: $leases, saved flannel configs: $saved, port-mapping rules: $rules"
[ "$veths$leases$saved$rules" = "0000" ] || fail "something was left on the node"
say "done: the node is clean; namespaces and files are removed on exit"
