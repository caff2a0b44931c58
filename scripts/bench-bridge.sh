#!/usr/bin/env bash
# bridge + host-local ADD and DEL latency, ours vs the Go plugins (Debian's
# containernetworking-plugins), in one run: calls alternate ours/Go for fresh containers,
# each implementation on its own bridge and subnet. Two configs: flannel's delegate (no
# masquerade: flanneld masquerades) and the same with ipMasq (nftables for us, iptables for Go).
# Everything runs inside a private network namespace; containers get namespaces of their own.
#
#   scripts/bench-bridge.sh [iterations]
set -euo pipefail
cd "$(dirname "$0")/.."
ITER="${1:-100}"

if [ -z "${CNI_BENCH_INNER:-}" ]; then
    scripts/setup.sh
    cargo build --release --locked -q -p bridge -p host-local
    exec unshare --net env CNI_BENCH_INNER=1 "$0" "$@"
fi

OURS="$PWD/target/release"
GO=/usr/lib/cni
. scripts/lib/bench-common.sh

conf() { # conf BRIDGE SUBNET DATADIR MASQ
    printf '{"cniVersion":"0.4.0","name":"bench","type":"bridge","bridge":"%s","isGateway":true,"isDefaultGateway":true,"hairpinMode":true,"mtu":1450,"ipMasq":%s,"ipam":{"type":"host-local","subnet":"%s","dataDir":"%s"}}' "$1" "$4" "$2" "$3"
}

time_call() { # time_call PLUGIN_DIR CMD ID CONF -> microseconds
    local t0 t1
    t0=$EPOCHREALTIME
    CNI_COMMAND="$2" CNI_CONTAINERID="$3" CNI_NETNS="$work/$3.netns" CNI_IFNAME=eth0 \
        CNI_PATH="$1" "$1/bridge" <<<"$4" >/dev/null || { echo "FAILED: $1 $2 $3" >&2; exit 1; }
    t1=$EPOCHREALTIME
    echo $(( (${t1/./} - ${t0/./}) ))
}


echo "bridge + host-local, median of $ITER fresh containers each, ours vs Go 1.1.1 in one run"
echo "| config | cmd | ours | Go | Go/ours |"
echo "|--------|-----|------|----|---------|"
for masq in false true; do
    c_ours=$(conf cni0 10.10.0.0/16 "$work/ipam-ours" "$masq")
    c_go=$(conf cni1 10.11.0.0/16 "$work/ipam-go" "$masq")
    : >"$work/add-ours"; : >"$work/add-go"; : >"$work/del-ours"; : >"$work/del-go"
    for ((i = 0; i < ITER; i++)); do
        for impl in ours go; do
            id="$impl-$masq-$i"
            touch "$work/$id.netns"
            unshare --net="$work/$id.netns" true
            if [ "$impl" = ours ]; then dir=$OURS c=$c_ours; else dir=$GO c=$c_go; fi
            time_call "$dir" ADD "$id" "$c" >>"$work/add-$impl"
        done
        for impl in ours go; do
            id="$impl-$masq-$i"
            if [ "$impl" = ours ]; then dir=$OURS c=$c_ours; else dir=$GO c=$c_go; fi
            time_call "$dir" DEL "$id" "$c" >>"$work/del-$impl"
            umount "$work/$id.netns"; rm -f "$work/$id.netns"
        done
    done
    label="flannel delegate"; [ "$masq" = true ] && label="+ ipMasq"
    for cmd in add del; do
        a=$(median <"$work/$cmd-ours"); b=$(median <"$work/$cmd-go")
        printf '| %-16s | %s | %6.2f ms | %6.2f ms | %5.1fx |\n' "$label" "${cmd^^}" \
            "$(ms "$a")" "$(ms "$b")" "$(bc -l <<<"$b/$a")"
    done
done
