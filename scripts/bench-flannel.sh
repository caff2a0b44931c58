#!/usr/bin/env bash
# The kube-flannel chain (flannel → bridge → host-local, then portmap with one mapping):
# ADD and DEL latency of the whole chain per pod, each pod in its own network namespace.
# The Go chain cannot run here (Debian ships no Go flannel); bench-bridge.sh and
# bench-portmap.sh compare the parts with the Go plugins. Runs in a private network namespace.
#
#   scripts/bench-flannel.sh [iterations]
set -euo pipefail
cd "$(dirname "$0")/.."
ITER="${1:-100}"

if [ -z "${CNI_BENCH_INNER:-}" ]; then
    scripts/setup.sh
    cargo build --release --locked -q -p flannel -p bridge -p host-local -p portmap
    exec unshare --net env CNI_BENCH_INNER=1 "$0" "$@"
fi

BIN="$PWD/target/release"
. scripts/lib/bench-common.sh
printf 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n' >"$work/subnet.env"

flannel='{"cniVersion":"0.3.1","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true},"subnetFile":"'$work'/subnet.env","dataDir":"'$work'/flannel","ipam":{"dataDir":"'$work'/ipam"}}'

call() { # call PLUGIN CMD ID STDIN
    CNI_COMMAND="$2" CNI_CONTAINERID="$3" CNI_NETNS="$work/$3.netns" CNI_IFNAME=eth0 \
        CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$3" CNI_PATH="$BIN" \
        "$BIN/$1" <<<"$4" >"$work/out" || { echo "FAILED: $1 $2 $3: $(cat "$work/out")" >&2; exit 1; }
}

portmap_conf() { # portmap_conf PREV PORT
    printf '{"cniVersion":"0.3.1","name":"cbr0","type":"portmap","capabilities":{"portMappings":true},"stateDir":"%s","runtimeConfig":{"portMappings":[{"hostPort":%s,"containerPort":80,"protocol":"tcp"}]},"prevResult":%s}' "$work/pm" "$2" "$1"
}


: >"$work/add"; : >"$work/del"
for ((i = 0; i < ITER; i++)); do
    id="pod$i"
    touch "$work/$id.netns"; unshare --net="$work/$id.netns" true
    t0=$EPOCHREALTIME
    call flannel ADD "$id" "$flannel"
    pm=$(portmap_conf "$(cat "$work/out")" $((30000 + i)))
    call portmap ADD "$id" "$pm"
    t1=$EPOCHREALTIME
    call portmap DEL "$id" "$pm"
    call flannel DEL "$id" "$flannel"
    t2=$EPOCHREALTIME
    echo $(( (${t1/./} - ${t0/./}) )) >>"$work/add"
    echo $(( (${t2/./} - ${t1/./}) )) >>"$work/del"
    umount "$work/$id.netns"; rm -f "$work/$id.netns"
done
echo "kube-flannel chain (flannel → bridge → host-local, portmap with one mapping), $ITER pods"
echo "| cmd | median | p95 |"
echo "|-----|--------|-----|"
for cmd in add del; do
    printf '| %s | %6.2f ms | %6.2f ms |\n' "${cmd^^}" "$(ms "$(median <"$work/$cmd")")" "$(ms "$(p95 <"$work/$cmd")")"
done
