# Shared by the benchmark scripts (sourced, inside the private network namespace they run in):
# a work directory removed on exit with every namespace pinned in it, and the statistics.

work=$(mktemp -d /tmp/cni-rs-bench-XXXXXX)
bench_cleanup() {
    jobs -p | xargs -r kill 2>/dev/null || true
    for f in "$work"/*.netns; do
        [ -e "$f" ] && { umount "$f" 2>/dev/null || true; rm -f "$f"; }
    done
    rm -rf "$work"
}
trap bench_cleanup EXIT
ip link set lo up

# A pod's namespace, pinned at $work/<id>.netns.
new_ns() { touch "$work/$1.netns"; unshare --net="$work/$1.netns" true; }
del_ns() { umount "$work/$1.netns" 2>/dev/null || true; rm -f "$work/$1.netns"; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
p95() { sort -n | awk '{a[NR]=$1} END {i=int(NR*0.95+0.5); if (i<1) i=1; print a[i]}'; }
# microseconds → milliseconds with two decimals
ms() { printf '%.2f' "$(bc -l <<<"$1/1000")"; }
ratio() { printf '%.1fx' "$(bc -l <<<"$1/$2")"; }
# microseconds between two $EPOCHREALTIME values
us() { echo $(( (${2/./} - ${1/./}) )); }
