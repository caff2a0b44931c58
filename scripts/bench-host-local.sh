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

run() { # run LEASES -> prints one table row per command
    local n="$1" d_ours="$work/ours-$1" d_go="$work/go-$1" i
    prefill "$d_ours" "$n"
    prefill "$d_go" "$n"
    local c_ours c_go
    c_ours=$(conf "$d_ours")
    c_go=$(conf "$d_go")
    # Warm-up: our first call indexes the leases the "other plugin" wrote.
    time_call "$OURS" ADD warm "$c_ours" >/dev/null; time_call "$OURS" DEL warm "$c_ours" >/dev/null
    time_call "$GO" ADD warm "$c_go" >/dev/null; time_call "$GO" DEL warm "$c_go" >/dev/null
    : >"$work/add-ours"; : >"$work/add-go"; : >"$work/del-ours"; : >"$work/del-go"
    for ((i = 0; i < ITER; i++)); do
        time_call "$OURS" ADD "c$i" "$c_ours" >>"$work/add-ours"
        time_call "$GO" ADD "c$i" "$c_go" >>"$work/add-go"
        time_call "$OURS" DEL "c$i" "$c_ours" >>"$work/del-ours"
        time_call "$GO" DEL "c$i" "$c_go" >>"$work/del-go"
    done
    for cmd in add del; do
        local a b
        a=$(median <"$work/$cmd-ours")
        b=$(median <"$work/$cmd-go")
        printf '| %6s | %-3s | %8.2f ms | %8.2f ms | %6.1fx |\n' "$n" "${cmd^^}" \
            "$(bc -l <<<"$a/1000")" "$(bc -l <<<"$b/1000")" "$(bc -l <<<"$b/$a")"
    done
}

echo "host-local, median of $ITER calls each, dataDir on $(df -T "$work" | awk 'NR==2 {print $2}')"
echo "| leases | cmd |      ours  |    Go 1.1.1 | Go/ours |"
echo "|--------|-----|------------|------------|---------|"
run 0
run "$LEASES"
