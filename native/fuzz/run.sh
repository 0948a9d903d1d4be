#!/usr/bin/env bash
# Bounded cargo-fuzz run of every target of the compiled decoder (native/fuzz/fuzz_targets):
#   native/fuzz/run.sh CORPUS_DIR SECONDS_PER_TARGET
# CORPUS_DIR/<target> holds the seeds (python -m tests.fuzz.native_seeds CORPUS_DIR) and
# gathers libFuzzer's finds. Everything built or written lives under $CARGO_CACHE (default
# $OBSFLOW_CACHE/cargo, else ~/.cache/obsflow/cargo), never in the repo: cargo-fuzz itself
# (installed from crates.io on first use), its build, crash artifacts (CARGO_CACHE/fuzz/artifacts).
# cargo-fuzz needs nightly flags (-Z sanitizer...): RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. Exit status: 0 when no target crashed, else libFuzzer's (crash
# input and its backtrace printed; the input kept in the artifacts folder).
set -euo pipefail
corpus=${1:?corpus dir}
seconds=${2:-60}
cache=${CARGO_CACHE:-${OBSFLOW_CACHE:-$HOME/.cache/obsflow}/cargo}
export CARGO_HOME="$cache/home" CARGO_TARGET_DIR="$cache/fuzz/target" RUSTC_BOOTSTRAP=1
fuzz="$cache/fuzz/bin/cargo-fuzz"
if [ ! -x "$fuzz" ]; then
    cargo install cargo-fuzz --locked --version 0.13.2 --root "$cache/fuzz"
fi
cd "$(dirname "$0")/.."
artifacts="$cache/fuzz/artifacts"
mkdir -p "$artifacts"
start=$(date +%s)
"$fuzz" build -O
echo "native-fuzz: build took $(( $(date +%s) - start )) s"
status=0
for target in $(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^obsflow-native-fuzz$'); do
    mkdir -p "$corpus/$target"
    t0=$(date +%s)
    log="$artifacts/$target.log"
    if "$fuzz" run -O "$target" "$corpus/$target" -- -max_total_time="$seconds" -artifact_prefix="$artifacts/$target-" \
            -print_final_stats=1 -close_fd_mask=1 2>"$log"; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "native-fuzz: target $target: no crash, $runs inputs in $(( $(date +%s) - t0 )) s (corpus $(ls "$corpus/$target" | wc -l) files)"
    else
        tail -n 60 "$log" >&2
        echo "native-fuzz: target $target CRASHED (input and log in $artifacts/)" >&2
        status=1
    fi
done
rmdir fuzz/artifacts/* fuzz/artifacts 2>/dev/null || true  # cargo-fuzz makes them even with -artifact_prefix
exit $status
