#!/usr/bin/env bash
# Fuzzes the parsers that read outside input: config parsing (every plugin's view), result
# conversion, subnet.env, CNI_ARGS and the host-local lease store reader.
#
#   scripts/fuzz.sh [seconds per target] [parallel jobs]
#
# cargo-fuzz (libFuzzer) on the stable toolchain (RUSTC_BOOTSTRAP lets it pass its -Z flags).
# Findings land in fuzz/artifacts/<target>/ and make the script fail.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-600}"
JOBS="${2:-1}"
TARGETS=(config_parse result_convert subnet_env cni_args lease_store)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked -q
command -v g++ >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq g++ >/dev/null; }
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build -O -s none >/dev/null
run() {
    local t=$1
    mkdir -p "corpus/$t"
    cargo fuzz run -O -s none "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" \
        -print_final_stats=1 >"/tmp/fuzz-$t.log" 2>&1 \
        || { echo "fuzz: $t FOUND A CRASH (see fuzz/artifacts/$t, /tmp/fuzz-$t.log)"; return 1; }
    echo "fuzz: $t ok: $(grep -o 'stat::number_of_executed_units: *[0-9]*' "/tmp/fuzz-$t.log" | grep -o '[0-9]*$') runs in ${SECONDS_EACH}s"
}
status=0
if [ "$JOBS" -gt 1 ]; then
    pids=()
    for t in "${TARGETS[@]}"; do
        run "$t" & pids+=($!)
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
    done
    for p in "${pids[@]}"; do wait "$p" || status=1; done
else
    for t in "${TARGETS[@]}"; do run "$t" || status=1; done
fi
exit $status
