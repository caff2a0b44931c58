#!/usr/bin/env bash
# portmap ADD and DEL latency with one TCP mapping, ours (nftables) vs the Go portmap
# (Debian's 1.1.1, iptables), in one run, alternating, on pods set up by our bridge.
# Everything runs inside a private network namespace.
#
#   scripts/bench-portmap.sh [iterations]
set -euo pipefail
cd "$(dirname "$0")/.."
ITER="${1:-100}"

if [ -z "${CNI_BENCH_INNER:-}" ]; then
    scripts/setup.sh
    cargo build --release --locked -q -p bridge -p host-local -p portmap
    exec unshare --net env CNI_BENCH_INNER=1 "$0" "$@"
fi

OURS="$PWD/target/release"
GO=/usr/lib/cni
. scripts/lib/bench-common.sh

bridge_conf='{"cniVersion":"0.4.0","name":"bench","type":"bridge","isGateway":true,"isDefaultGateway":true,"hairpinMode":true,"ipam":{"type":"host-local","subnet":"10.12.0.0/16","dataDir":"'$work'/ipam"}}'

run() { # run DIR PLUGIN CMD ID STDIN -> microseconds (stdout of the plugin in $work/out)
    local t0 t1
    t0=$EPOCHREALTIME
    CNI_COMMAND="$3" CNI_CONTAINERID="$4" CNI_NETNS="$work/$4.netns" CNI_IFNAME=eth0 \
        CNI_PATH="$1" "$1/$2" <<<"$5" >"$work/out" || { echo "FAILED: $2 $3 $4: $(cat "$work/out")" >&2; exit 1; }
    t1=$EPOCHREALTIME
    echo $(( (${t1/./} - ${t0/./}) ))
}

portmap_conf() { # portmap_conf PREV HOSTPORT
    printf '{"cniVersion":"0.4.0","name":"bench","type":"portmap","capabilities":{"portMappings":true},"stateDir":"%s","runtimeConfig":{"portMappings":[{"hostPort":%s,"containerPort":80,"protocol":"tcp"}]},"prevResult":%s}' "$work/pm" "$2" "$1"
}


: >"$work/add-ours"; : >"$work/add-go"; : >"$work/del-ours"; : >"$work/del-go"
for ((i = 0; i < ITER; i++)); do
    for impl in ours go; do
        id="$impl-$i"
        touch "$work/$id.netns"; unshare --net="$work/$id.netns" true
        run "$OURS" bridge ADD "$id" "$bridge_conf" >/dev/null
        prev=$(cat "$work/out")
        port=$((20000 + i * 2)); [ "$impl" = go ] && port=$((port + 1))
        pm=$(portmap_conf "$prev" "$port")
        if [ "$impl" = ours ]; then dir=$OURS; else dir=$GO; fi
        run "$dir" portmap ADD "$id" "$pm" >>"$work/add-$impl"
        run "$dir" portmap DEL "$id" "$pm" >>"$work/del-$impl"
        run "$OURS" bridge DEL "$id" "$bridge_conf" >/dev/null
        umount "$work/$id.netns"; rm -f "$work/$id.netns"
    done
done
echo "portmap, one TCP mapping, median of $ITER calls each, ours (nftables) vs Go 1.1.1 (iptables) in one run"
echo "| cmd | ours | Go | Go/ours |"
echo "|-----|------|----|---------|"
for cmd in add del; do
    a=$(median <"$work/$cmd-ours"); b=$(median <"$work/$cmd-go")
    printf '| %s | %6.2f ms | %6.2f ms | %5.1fx |\n' "${cmd^^}" "$(ms "$a")" "$(ms "$b")" "$(bc -l <<<"$b/$a")"
done
