#!/usr/bin/env bash
# host-local ADD and DEL latency, ours vs the Go plugin (Debian's containernetworking-plugins),
# on a network already holding N leases (default 5000) and on an empty one, in one run.
# Calls alternate ours/Go so that machine noise hits both alike. Each plugin gets its own
# dataDir (on disk, like the default /var/lib/cni/networks), pre-filled with leases in the
# shared on-disk format. Everything runs inside a private network namespace.
#
#   scripts/bench-host-local.sh [leases] [iterations]
set -euo pipefail
cd "$(dirname "$0")/.."
LEASES="${1:-5000}"
ITER="${2:-200}"

if [ -z "${CNI_BENCH_INNER:-}" ]; then
    scripts/setup.sh
    cargo build --release --locked -q -p host-local
    exec unshare --net env CNI_BENCH_INNER=1 "$0" "$@"
fi

OURS="$PWD/target/release/host-local"
GO=/usr/lib/cni/host-local
work=$(mktemp -d /var/tmp/cni-rs-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT

conf() { # conf DATADIR
    printf '{"cniVersion":"1.0.0","name":"bench","type":"bridge","ipam":{"type":"host-local","subnet":"10.200.0.0/16","dataDir":"%s"}}' "$1"
}

prefill() { # prefill DATADIR COUNT
    local dir="$1/bench" i
    mkdir -p "$dir"
    for ((i = 0; i < $2; i++)); do
        printf 'pre-%d\r\neth0' "$i" >"$dir/10.200.$((2 + i / 250)).$((1 + i % 250))"
    done
    [ "$2" -gt 0 ] && printf '10.200.%d.%d' $((2 + ($2 - 1) / 250)) $((1 + ($2 - 1) % 250)) >"$dir/last_reserved_ip.0"
    return 0
}

# time_call BIN CMD ID CONF -> microseconds on stdout
time_call() {
    local t0 t1
    t0=$EPOCHREALTIME
    CNI_COMMAND="$2" CNI_CONTAINERID="$3" CNI_NETNS=/var/run/netns/bench CNI_IFNAME=eth0 \
        CNI_PATH=/usr/lib/cni "$1" <<<"$4" >/dev/null || { echo "FAILED: $1 $2 $3" >&2; exit 1; }
    t1=$EPOCHREALTIME
    echo $(( (${t1/./} - ${t0/./}) ))
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# One iteration = ADD then DEL of a fresh container in each of the four setups (ours and Go,
# empty and full network), in a random order, so that the I/O one of them causes (Go reads
# every lease on each call) does not always land on the same neighbour.
setups=(ours-0 ours-N go-0 go-N)
declare -A bin=([ours-0]="$OURS" [ours-N]="$OURS" [go-0]="$GO" [go-N]="$GO")
declare -A cfg
for s in "${setups[@]}"; do
    n=0; [ "${s#*-}" = N ] && n="$LEASES"
    prefill "$work/$s" "$n"
    cfg[$s]=$(conf "$work/$s")
    # Warm-up: our first call indexes the leases "another plugin" wrote.
    time_call "${bin[$s]}" ADD warm "${cfg[$s]}" >/dev/null
    time_call "${bin[$s]}" DEL warm "${cfg[$s]}" >/dev/null
    : >"$work/$s.add"; : >"$work/$s.del"
done
for ((i = 0; i < ITER; i++)); do
    order=$(printf '%s\n' "${setups[@]}" | shuf)
    for s in $order; do
        time_call "${bin[$s]}" ADD "c$i" "${cfg[$s]}" >>"$work/$s.add"
        time_call "${bin[$s]}" DEL "c$i" "${cfg[$s]}" >>"$work/$s.del"
    done
done

ms() { bc -l <<<"$1/1000"; }
echo "host-local: median of $ITER calls each, dataDir on $(df -T "$work" | awk 'NR==2 {print $2}'), $LEASES leases in the full network"
echo "| cmd | ours, empty | ours, full | Go, empty | Go, full | Go/ours (full) | ours full/empty |"
echo "|-----|-------------|------------|-----------|----------|----------------|-----------------|"
for cmd in add del; do
    declare -A med=()
    for s in "${setups[@]}"; do med[$s]=$(median <"$work/$s.$cmd"); done
    printf '| %-3s | %8.2f ms | %7.2f ms | %6.2f ms | %5.2f ms | %13.1fx | %14.2fx |\n' "${cmd^^}" \
        "$(ms "${med[ours-0]}")" "$(ms "${med[ours-N]}")" "$(ms "${med[go-0]}")" "$(ms "${med[go-N]}")" \
        "$(bc -l <<<"${med[go-N]}/${med[ours-N]}")" "$(bc -l <<<"${med[ours-N]}/${med[ours-0]}")"
done
