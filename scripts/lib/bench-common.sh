# Shared by the benchmark scripts, sourced by each right after it starts. Outside the private
# network namespace it offers `bench_enter`; inside (CNI_BENCH_INNER set) it makes a work
# directory, removed on exit with every namespace pinned in it, brings up lo, and offers
# `bench`: the Rust runner (the bench crate: bench/src/main.rs, bench/src/) that makes
# the pods' namespaces, runs and times the plugins and prints the tables.

# bench_enter SCRIPT [ARGS...]: runs SCRIPT again inside a new network namespace, telling the
# runner which namespace is the machine's own (it refuses to run there).
bench_enter() {
    local host
    host=$(stat -L -c %i /proc/self/ns/net)
    exec unshare --net env CNI_BENCH_INNER=1 CNI_BENCH_HOST_NETNS="$host" "$@"
}

if [ -n "${CNI_BENCH_INNER:-}" ]; then
    # Named for its owner (this shell), so a later run removes it if this one is killed.
    work=$(mktemp -d "/tmp/cni-rs-bench-$$-XXXXXX")
    bench_cleanup() {
        # The runner removes what it made; this is for a runner that was killed or aborted.
        for f in "$work"/*.netns; do
            [ -e "$f" ] && { umount "$f" 2>/dev/null || true; rm -f "$f"; }
        done
        rm -f /run/netns/"$(basename "$work")"-*
        rm -rf "$work"
    }
    trap bench_cleanup EXIT
    ip link set lo up
fi

# bench COMMAND [ARGS...]: our builds from target/release, Go's from /usr/lib/cni.
bench() {
    "$PWD/target/release/bench" --work "$work" --ours "$PWD/target/release" --go /usr/lib/cni "$@"
}
