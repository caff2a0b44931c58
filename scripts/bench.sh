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
# The same two plugins as a network list, for the parallel runner (it passes the mapping as
# the portMappings capability, as a runtime does).
conflist() { # IMPL
    printf '{"cniVersion":"0.4.0","name":"bench","plugins":[%s,{"type":"portmap","capabilities":{"portMappings":true},"stateDir":"%s/pm"}]}' \
        "$(bridge_conf "$1" | sed 's/"cniVersion":"0.4.0","name":"bench",//')" "$work"
}
flannel_conf='{"cniVersion":"0.4.0","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true,"bridge":"cni3"},"subnetFile":"'$work'/subnet.env","dataDir":"'$work'/flannel","ipam":{"dataDir":"'$work'/ipam-fl"}}'
printf 'FLANNEL_NETWORK=10.12.0.0/16\nFLANNEL_SUBNET=10.12.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n' >"$work/subnet.env"

is_go() { if [ "$1" = go ]; then echo 1; else echo 0; fi; }
# port_of IMPL BASE STRIDE -> the first host port of IMPL's block of STRIDE ports after BASE
port_of() { case "$1" in go) echo $(($2 + $3)) ;; static) echo $(($2 + 2 * $3)) ;; *) echo "$2" ;; esac; }
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
IMPLS="ours static go"
for impl in $IMPLS; do : >"$work/seq-add-$impl"; : >"$work/seq-del-$impl"; done
: >"$work/seq-add-flannel"; : >"$work/seq-del-flannel"
# Each round starts with the namespaces made and the last round's torn down and settled
# (a namespace's teardown runs in a kernel worker holding the RTNL lock), and rotates the
# order of the implementations so that none always follows another's DEL.
for ((i = 0; i < SEQ; i++)); do
    all=($IMPLS); k=$((i % ${#all[@]})); order="${all[*]:k} ${all[*]:0:k}"
    for impl in $IMPLS fl; do new_ns "s-$impl-$i"; done
    sleep 0.2
    for impl in $order; do
        chain_add "$impl" "s-$impl-$i" "$(port_of "$impl" $((20000 + i * 3)) 1)" >>"$work/seq-add-$impl"
    done
    for impl in $order; do
        chain_del "$impl" "s-$impl-$i" >>"$work/seq-del-$impl"
    done
    # Our flannel chain (flannel → bridge → host-local, then portmap).
    id="s-fl-$i"
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
    for impl in $IMPLS fl; do del_ns "s-$impl-$i"; done
done
echo "## Sequential, $SEQ pods each (median / p95)"
echo
echo "ours: \`cargo build --release\` (dynamically linked); static: the glibc static-pie build"
echo "scripts/install.sh puts on nodes (the Go plugins are static too)."
echo
echo "| what | ours | static | Go | Go/ours | Go/static |"
echo "|---|---|---|---|---|---|"
row() { # LABEL WHAT(add|del) COLUMN
    local f="$work/seq-$2" a b c
    a=$(col "$3" "$f-ours" | median); b=$(col "$3" "$f-static" | median); c=$(col "$3" "$f-go" | median)
    printf '| %s | %s / %s ms | %s / %s ms | %s / %s ms | %s | %s |\n' "$1" \
        "$(ms "$a")" "$(ms "$(col "$3" "$f-ours" | p95)")" "$(ms "$b")" "$(ms "$(col "$3" "$f-static" | p95)")" \
        "$(ms "$c")" "$(ms "$(col "$3" "$f-go" | p95)")" "$(ratio "$c" "$a")" "$(ratio "$c" "$b")"
}
row "chain ADD (bridge+host-local, portmap)" add 1
row "chain DEL" del 1
row "bridge (+host-local) ADD" add 2
row "bridge (+host-local) DEL" del 2
row "portmap ADD" add 3
row "portmap DEL" del 3
printf '| our flannel chain ADD / DEL | %s / %s ms | — | — | — | — |\n' "$(ms "$(median <"$work/seq-add-flannel")")" "$(ms "$(median <"$work/seq-del-flannel")")"
echo

# 2. Parallel: conformance's bench-parallel runs the pods as a runtime does (a thread per pod,
# plugins forked and exec'd, prevResult passed in process), so no bash job per pod is timed.
# Rounds alternate the implementations; the table holds each one's median round. A bash job
# per pod would add several bash forks per pod to the timed wall (about 70 ms for 20 pods).
echo "## Parallel ADD, then parallel DEL (wall time, median of the rounds; plugin CPU time per pod)"
echo
echo "| pods | rounds | | ours | static | Go | Go/ours | Go/static |"
echo "|---|---|---|---|---|---|---|---|"
for n in 20 100; do
    rounds=5; [ "$n" -gt 20 ] && rounds=3
    for impl in $IMPLS; do conflist "$impl" >"$work/$impl.conflist"; : >"$work/par-$n-$impl"; done
    checks=""
    for ((k = 0; k < rounds; k++)); do
        for impl in $IMPLS; do
            id="p$n-$k-$impl"
            for ((i = 0; i < n; i++)); do new_ns "$id-$i"; done
            sleep $((n / 20))   # the previous round's namespaces are torn down by a kernel worker
            if ! out=$("$OURS/bench-parallel" "$(dir_of "$impl")" "$work/$impl.conflist" "$work" "$id" "$n" \
                "$(port_of "$impl" $((50000 + k * 300)) 100)"); then
                checks="$checks $impl round $k: FAILED ($out)"
            fi
            echo "$out" >>"$work/par-$n-$impl"
            for ((i = 0; i < n; i++)); do del_ns "$id-$i"; done
        done
    done
    sleep 1
    dups=$(cat "$work"/par-"$n"-* | awk '{d += $5} END {print d + 0}')
    fails=$(cat "$work"/par-"$n"-* | awk '{f += $6} END {print f + 0}')
    leftover=$(ip -o link show type veth | wc -l)
    leases=$(find "$work"/ipam-* -type f -name '10.*' 2>/dev/null | wc -l)
    prow() { # LABEL COLUMN DIVISOR
        local a b c
        a=$(col "$2" "$work/par-$n-ours" | median); b=$(col "$2" "$work/par-$n-static" | median)
        c=$(col "$2" "$work/par-$n-go" | median)
        printf '| %s | %s | %s | %s ms | %s ms | %s ms | %s | %s |\n' "$n" "$rounds" "$1" \
            "$(ms $((a / $3)))" "$(ms $((b / $3)))" "$(ms $((c / $3)))" "$(ratio "$c" "$a")" "$(ratio "$c" "$b")"
    }
    prow "ADD wall" 1 1
    prow "DEL wall" 2 1
    prow "ADD CPU per pod" 3 "$n"
    prow "DEL CPU per pod" 4 "$n"
    echo "| $n | | checks | duplicate IPs $dups, failed calls $fails, veths left $leftover, leases left $leases$checks | | | | |"
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
sa=$(col 1 "$work/seq-add-static" | median); sd=$(col 1 "$work/seq-del-static" | median)
echo "## The floor (\`ip -batch\` on the host and in the pod: veth pair, bridge port, address, route; \`ip link del\`)"
echo
echo "| | floor | our chain | static chain | ours/floor | static/floor |"
echo "|---|---|---|---|---|---|"
printf '| ADD | %s ms | %s ms | %s ms | %s | %s |\n' "$(ms "$fa")" "$(ms "$oa")" "$(ms "$sa")" "$(ratio "$oa" "$fa")" "$(ratio "$sa" "$fa")"
printf '| DEL | %s ms | %s ms | %s ms | %s | %s |\n' "$(ms "$fd")" "$(ms "$od")" "$(ms "$sd")" "$(ratio "$od" "$fd")" "$(ratio "$sd" "$fd")"
