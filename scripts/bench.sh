#!/usr/bin/env bash
# The side-by-side benchmark: our plugins vs the Go reference plugins (Debian's
# containernetworking-plugins in /usr/lib/cni), same workload, alternating ours/Go in one run.
# Workload per pod: bridge (+ host-local) then portmap with one TCP mapping, the chain a
# flannel node runs below flannel (Debian has no Go flannel; our flannel chain is reported
# beside it). Everything runs inside a private network namespace, pods in their own.
#
#   scripts/bench.sh [sequential pods, default 50]
#
# Prints medians, p95 and ratios; docs/performance.md holds a full run.
set -euo pipefail
cd "$(dirname "$0")/.."
SEQ="${1:-50}"

if [ -z "${CNI_BENCH_INNER:-}" ]; then
    scripts/setup.sh
    command -v /usr/bin/time >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq time >/dev/null; }
    cargo build --release --locked -q --workspace --bins
    # The build scripts/install.sh puts on nodes: glibc static-pie.
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -q \
        --target "$(rustc -vV | sed -n 's/host: //p')" --target-dir target/static \
        -p loopback -p host-local -p bridge -p portmap -p flannel
    exec unshare --net env CNI_BENCH_INNER=1 "$0" "$@"
fi

OURS="$PWD/target/release"
STATIC="$PWD/target/static/$(rustc -vV | sed -n 's/host: //p')/release"
GO=/usr/lib/cni
[ -x "$GO/bridge" ] || { echo "bench: $GO/bridge missing: apt-get install containernetworking-plugins" >&2; exit 1; }
. scripts/lib/bench-common.sh

# Each implementation gets its own bridge, subnet and state.
bridge_conf() { # IMPL
    local br=cni0 net=10.10 ; [ "$1" = go ] && br=cni1 net=10.11
    [ "$1" = static ] && br=cni2 net=10.14
    printf '{"cniVersion":"0.4.0","name":"bench","type":"bridge","bridge":"%s","isGateway":true,"isDefaultGateway":true,"hairpinMode":true,"mtu":1450,"ipam":{"type":"host-local","subnet":"%s.0.0/16","dataDir":"%s/ipam-%s"}}' "$br" "$net" "$work" "$1"
}
portmap_conf() { # PREV PORT
    printf '{"cniVersion":"0.4.0","name":"bench","type":"portmap","capabilities":{"portMappings":true},"stateDir":"%s/pm","runtimeConfig":{"portMappings":[{"hostPort":%s,"containerPort":80,"protocol":"tcp"}]},"prevResult":%s}' "$work" "$2" "$1"
}
flannel_conf='{"cniVersion":"0.4.0","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true,"bridge":"cni2"},"subnetFile":"'$work'/subnet.env","dataDir":"'$work'/flannel","ipam":{"dataDir":"'$work'/ipam-fl"}}'
printf 'FLANNEL_NETWORK=10.12.0.0/16\nFLANNEL_SUBNET=10.12.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n' >"$work/subnet.env"

is_go() { if [ "$1" = go ]; then echo 1; else echo 0; fi; }
dir_of() {
    case "$1" in go | go-p) echo "$GO" ;; static) echo "$STATIC" ;; *) echo "$OURS" ;; esac
}

# call DIR PLUGIN CMD ID STDIN OUTFILE -> exit status
call() {
    CNI_COMMAND="$3" CNI_CONTAINERID="$4" CNI_NETNS="$work/$4.netns" CNI_IFNAME=eth0 \
        CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=$4" CNI_PATH="$1" \
        "$1/$2" <<<"$5" >"$6"
}

# The timed sections hold only the plugin calls: configs are built before the clock starts
# (a `$(...)` forks bash, about 1 ms, which would be charged to the plugin).
# chain_add IMPL ID PORT -> writes timings "total bridge portmap" to stdout
chain_add() {
    local d bc pm t0 t1 t2 t3
    d=$(dir_of "$1"); bc=$(bridge_conf "$1")
    t0=$EPOCHREALTIME
    call "$d" bridge ADD "$2" "$bc" "$work/$2.res" || { echo "FAILED bridge ADD $1 $2: $(cat "$work/$2.res")" >&2; return 1; }
    t1=$EPOCHREALTIME
    portmap_conf "$(<"$work/$2.res")" "$3" >"$work/$2.pm"; pm=$(<"$work/$2.pm")
    t2=$EPOCHREALTIME
    call "$d" portmap ADD "$2" "$pm" "$work/$2.out" || { echo "FAILED portmap ADD $1 $2: $(cat "$work/$2.out")" >&2; return 1; }
    t3=$EPOCHREALTIME
    local b p; b=$(us "$t0" "$t1"); p=$(us "$t2" "$t3")
    echo "$((b + p)) $b $p"
}
chain_del() {
    local d bc pm t0 t1 t2
    d=$(dir_of "$1"); bc=$(bridge_conf "$1"); pm=$(<"$work/$2.pm")
    t0=$EPOCHREALTIME
    call "$d" portmap DEL "$2" "$pm" "$work/$2.out" || { echo "FAILED portmap DEL $1 $2" >&2; return 1; }
    t1=$EPOCHREALTIME
    call "$d" bridge DEL "$2" "$bc" "$work/$2.out" || { echo "FAILED bridge DEL $1 $2" >&2; return 1; }
    t2=$EPOCHREALTIME
    echo "$(us "$t0" "$t2") $(us "$t1" "$t2") $(us "$t0" "$t1")"
}

col() { awk -v c="$1" '{print $c}' "$2"; }

echo "# Benchmark: ours vs Go $(dpkg-query -W -f='${Version}' containernetworking-plugins 2>/dev/null), $(nproc) CPUs, kernel $(uname -r)"
echo

# 1. Sequential.
for impl in ours go; do : >"$work/seq-add-$impl"; : >"$work/seq-del-$impl"; done
: >"$work/seq-add-flannel"; : >"$work/seq-del-flannel"
for ((i = 0; i < SEQ; i++)); do
    for impl in ours go; do
        id="s-$impl-$i"; new_ns "$id"
        chain_add "$impl" "$id" $((20000 + i * 2 + $(is_go "$impl"))) >>"$work/seq-add-$impl"
    done
    for impl in ours go; do
        id="s-$impl-$i"
        chain_del "$impl" "$id" >>"$work/seq-del-$impl"; del_ns "$id"
    done
    # Our flannel chain (flannel → bridge → host-local, then portmap).
    id="s-fl-$i"; new_ns "$id"
    t0=$EPOCHREALTIME
    call "$OURS" flannel ADD "$id" "$flannel_conf" "$work/$id.res"
    t1=$EPOCHREALTIME
    portmap_conf "$(<"$work/$id.res")" $((40000 + i)) | sed 's/"name":"bench"/"name":"cbr0"/' >"$work/$id.pm"
    pm=$(<"$work/$id.pm")
    t2=$EPOCHREALTIME
    call "$OURS" portmap ADD "$id" "$pm" "$work/$id.out"
    t3=$EPOCHREALTIME
    call "$OURS" portmap DEL "$id" "$pm" "$work/$id.out"
    call "$OURS" flannel DEL "$id" "$flannel_conf" "$work/$id.out"
    t4=$EPOCHREALTIME
    echo $(( $(us "$t0" "$t1") + $(us "$t2" "$t3") )) >>"$work/seq-add-flannel"; us "$t3" "$t4" >>"$work/seq-del-flannel"
    del_ns "$id"
done
echo "## Sequential, $SEQ pods each (median / p95)"
echo
echo "| what | ours | Go | Go/ours |"
echo "|---|---|---|---|"
row() { # LABEL FILE-OURS FILE-GO COLUMN
    local a b
    a=$(col "$4" "$2" | median); b=$(col "$4" "$3" | median)
    printf '| %s | %s / %s ms | %s / %s ms | %s |\n' "$1" "$(ms "$a")" "$(ms "$(col "$4" "$2" | p95)")" \
        "$(ms "$b")" "$(ms "$(col "$4" "$3" | p95)")" "$(ratio "$b" "$a")"
}
row "chain ADD (bridge+host-local, portmap)" "$work/seq-add-ours" "$work/seq-add-go" 1
row "chain DEL" "$work/seq-del-ours" "$work/seq-del-go" 1
row "bridge (+host-local) ADD" "$work/seq-add-ours" "$work/seq-add-go" 2
row "bridge (+host-local) DEL" "$work/seq-del-ours" "$work/seq-del-go" 2
row "portmap ADD" "$work/seq-add-ours" "$work/seq-add-go" 3
row "portmap DEL" "$work/seq-del-ours" "$work/seq-del-go" 3
printf '| our flannel chain ADD / DEL | %s / %s ms | — | — |\n' "$(ms "$(median <"$work/seq-add-flannel")")" "$(ms "$(median <"$work/seq-del-flannel")")"
echo

# 2. Parallel.
echo "## Parallel ADD, then parallel DEL (wall time)"
echo
echo "| pods | ours ADD | Go ADD | ratio | ours DEL | Go DEL | ratio | checks |"
echo "|---|---|---|---|---|---|---|---|"
for n in 20 100; do
    declare -A wall=()
    for impl in ours go; do
        for ((i = 0; i < n; i++)); do new_ns "p$n-$impl-$i"; done
        t0=$EPOCHREALTIME
        for ((i = 0; i < n; i++)); do chain_add "$impl" "p$n-$impl-$i" $((50000 + i + $(is_go "$impl") * 1000)) >/dev/null & done
        wait
        t1=$EPOCHREALTIME
        ips=$(for ((i = 0; i < n; i++)); do grep -o '"address": *"[^"]*"' "$work/p$n-$impl-$i.res"; done | sort | uniq -d | wc -l)
        t2=$EPOCHREALTIME
        for ((i = 0; i < n; i++)); do chain_del "$impl" "p$n-$impl-$i" >/dev/null & done
        wait
        t3=$EPOCHREALTIME
        for ((i = 0; i < n; i++)); do del_ns "p$n-$impl-$i"; done
        wall[$impl-add]=$(us "$t0" "$t1"); wall[$impl-del]=$(us "$t2" "$t3"); wall[$impl-dup]=$ips
    done
    sleep 1
    leftover=$(ip -o link show type veth | wc -l)
    leases=$(find "$work"/ipam-* -type f -name '10.*' 2>/dev/null | wc -l)
    printf '| %s | %s ms | %s ms | %s | %s ms | %s ms | %s | duplicate IPs %s/%s, veths left %s, leases left %s |\n' "$n" \
        "$(ms "${wall[ours-add]}")" "$(ms "${wall[go-add]}")" "$(ratio "${wall[go-add]}" "${wall[ours-add]}")" \
        "$(ms "${wall[ours-del]}")" "$(ms "${wall[go-del]}")" "$(ratio "${wall[go-del]}" "${wall[ours-del]}")" \
        "${wall[ours-dup]}" "${wall[go-dup]}" "$leftover" "$leases"
done
echo

# 3. host-local with 5,000 leases.
echo "## host-local on a network holding 5,000 leases"
echo
scripts/bench-host-local.sh 5000 100 2>/dev/null | tail -4 | sed 's/^/    /' || true
echo

# 4. Memory and size.
echo "## Peak RSS of one ADD, and binary size"
echo
echo "ours: \`cargo build --release\` (dynamically linked); static: the glibc static-pie build"
echo "scripts/install.sh puts on nodes."
echo
echo "| plugin | ours RSS | static RSS | Go RSS | ours size | static size | Go size |"
echo "|---|---|---|---|---|---|---|"
rss() { # DIR PLUGIN ID STDIN -> max RSS in KiB of one ADD; the plugin's stdout in $work/$3.res
    CNI_COMMAND=ADD CNI_CONTAINERID="$3" CNI_NETNS="$work/$3.netns" CNI_IFNAME=eth0 CNI_PATH="$1" \
        /usr/bin/time -o "$work/$3.rss" -f '%M' "$1/$2" <<<"$4" >"$work/$3.res" || true
    tail -1 "$work/$3.rss"
}
declare -A r=()
for impl in ours static go; do
    d=$(dir_of "$impl")
    new_ns "r-$impl-lo"; new_ns "r-$impl-br"; new_ns "r-$impl-hl"
    r[loopback-$impl]=$(rss "$d" loopback "r-$impl-lo" '{"cniVersion":"0.4.0","name":"lo","type":"loopback"}')
    r[host-local-$impl]=$(rss "$d" host-local "r-$impl-hl" "$(bridge_conf "$impl" | sed 's/"name":"bench"/"name":"rss"/')")
    r[bridge-$impl]=$(rss "$d" bridge "r-$impl-br" "$(bridge_conf "$impl")")
    r[portmap-$impl]=$(rss "$d" portmap "r-$impl-br" "$(portmap_conf "$(cat "$work/r-$impl-br.res")" $((60000 + $(is_go "$impl"))))")
done
for p in loopback host-local bridge portmap; do
    printf '| %s | %s KiB | %s KiB | %s KiB | %s | %s | %s |\n' "$p" "${r[$p-ours]}" \
        "${r[$p-static]}" "${r[$p-go]}" "$(stat -c %s "$OURS/$p")" "$(stat -c %s "$STATIC/$p")" \
        "$(stat -c %s "$GO/$p")"
done
printf '| flannel | — | — | — | %s | %s | — |\n' "$(stat -c %s "$OURS/flannel")" \
    "$(stat -c %s "$STATIC/flannel")"
echo

# 5. The floor: the same kernel work done by `ip -batch`, one for the host side (veth pair
# with its peer created in the pod's namespace, bridge port, up) and one inside the pod
# (address, link up, default route); deletion is one `ip link del`.
: >"$work/floor-add"; : >"$work/floor-del"
ip link add floorbr type bridge; ip addr add 10.13.0.1/16 dev floorbr; ip link set floorbr up
mkdir -p /run/netns
for ((i = 0; i < SEQ; i++)); do
    id="f-$i"; new_ns "$id"
    # `ip -n` takes a name under /run/netns: a symlink to the pinned namespace.
    link="/run/netns/cni-rs-bench-$$-$i"; ln -sf "$work/$id.netns" "$link"
    host="vf$(printf '%08x' "$i")"
    printf 'link add %s type veth peer name eth0 netns %s\nlink set %s master floorbr\nlink set %s up\n' \
        "$host" "$work/$id.netns" "$host" "$host" >"$work/floor-host.batch"
    printf 'addr add 10.13.1.%s/16 dev eth0\nlink set eth0 up\nroute add default via 10.13.0.1\n' \
        $((i % 250 + 2)) >"$work/floor-pod.batch"
    t0=$EPOCHREALTIME
    ip -batch "$work/floor-host.batch"
    ip -n "$(basename "$link")" -batch "$work/floor-pod.batch"
    t1=$EPOCHREALTIME
    us "$t0" "$t1" >>"$work/floor-add"
    t0=$EPOCHREALTIME; ip link del "$host"; t1=$EPOCHREALTIME
    us "$t0" "$t1" >>"$work/floor-del"
    rm -f "$link"; del_ns "$id"
done
fa=$(median <"$work/floor-add"); fd=$(median <"$work/floor-del")
oa=$(col 1 "$work/seq-add-ours" | median); od=$(col 1 "$work/seq-del-ours" | median)
echo "## The floor (\`ip -batch\` on the host and in the pod: veth pair, bridge port, address, route; \`ip link del\`)"
echo
echo "| | floor | our chain | chain/floor |"
echo "|---|---|---|---|"
printf '| ADD | %s ms | %s ms | %s |\n' "$(ms "$fa")" "$(ms "$oa")" "$(ratio "$oa" "$fa")"
printf '| DEL | %s ms | %s ms | %s |\n' "$(ms "$fd")" "$(ms "$od")" "$(ratio "$od" "$fd")"
