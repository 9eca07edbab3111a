#!/usr/bin/env bash
# Fuzzes inventory parsing + validation (fuzz/fuzz_targets/inventory.rs) for a fixed budget
# and keeps what the fuzzer finds in fuzz/corpus/inventory, which `cargo test` replays on
# stable (tests/inventory_errors.rs). Not part of CI: it needs cargo-fuzz and libFuzzer's
# instrumentation (nightly flags), and it is a benchmark of robustness, not a pass/fail gate
# of a commit.
#
#   benches/fuzz.sh [SECONDS]      default 300
#
# Toolchain: the default one (the stable toolchain the workspace builds with) with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz only needs `-Z` flags; fine for a fuzz build, never for a
# release); FUZZ_TOOLCHAIN=nightly uses `cargo +nightly` instead. The fuzz crate (fuzz/) is not a workspace member: `cargo build --workspace`
# never sees it, and its build output stays in fuzz/target (git-ignored).
#
# The build: no sanitizer (capstan forbids unsafe code; what we hunt is panics, hangs and
# runaway memory), with debug assertions (integer overflow panics, as in `cargo test`).
#
# Prints the figures: executions, executions per second, corpus size before and after,
# crashes/timeouts/OOMs. A crash is saved under fuzz/artifacts/inventory/; reproduce it with
#   benches/fuzz.sh --repro fuzz/artifacts/inventory/crash-…
# then, once fixed, copy the input into fuzz/corpus/inventory/ under a name that says what it
# is, so the replay test keeps it. Exit 1 when the fuzzer found something.
set -euo pipefail
cd "$(dirname "$0")/.."

toolchain=()
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
    toolchain=("+$FUZZ_TOOLCHAIN")
else
    export RUSTC_BOOTSTRAP=1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (once)" >&2
    cargo install cargo-fuzz --locked
fi
fuzz() { cargo ${toolchain[@]+"${toolchain[@]}"} fuzz "$@"; }
flags=(-s none -a)

if [ "${1:-}" = "--repro" ]; then
    fuzz run "${flags[@]}" inventory "$2"
    exit
fi
budget="${1:-300}"
corpus=fuzz/corpus/inventory
artifacts=fuzz/artifacts/inventory
mkdir -p "$artifacts"

fuzz build "${flags[@]}" inventory

# The fuzzer writes new inputs into the first corpus folder ($work) and reads the saved
# corpus from the second.
work="$(mktemp -d)"
min="$(mktemp -d)"
mkdir -p fuzz/target; log=fuzz/target/fuzz-inventory.log
trap 'rm -rf "$work" "$min" "$log.merge"' EXIT
start=$(find "$corpus" -type f | wc -l)
found_before=$(find "$artifacts" -type f | wc -l)
status=0
echo "fuzzing for ${budget}s (log: $log)" >&2
fuzz run "${flags[@]}" inventory "$work" "$corpus" -- \
    -max_total_time="$budget" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
grep -E '^#[0-9]+' "$log" | tail -n 3 || true
found=$(( $(find "$artifacts" -type f | wc -l) - found_before ))

# Minimise: libFuzzer's merge (what `cargo fuzz cmin` runs) into a folder that starts with
# the hand-written, named seeds (the replay test refers to them by name), so that of the
# generated inputs (named by their sha1) only those that add coverage stay.
# Edges only (-use_counters=0), not hit counts: a few hundred inputs instead of thousands.
for f in "$corpus"/*; do
    [[ "${f##*/}" =~ ^[0-9a-f]{40}$ ]] || cp "$f" "$min"/
done
if fuzz run "${flags[@]}" inventory "$min" "$corpus" "$work" -- -merge=1 -use_counters=0 \
    -max_len=65536 -timeout=10 >"$log.merge" 2>&1; then
    rm -f "$corpus"/*
    cp "$min"/* "$corpus"/
else
    echo "benches/fuzz.sh: minimising failed (kept the corpus as it was):" >&2
    tail -n 5 "$log.merge" >&2
    status=1
fi
rm -f "$log.merge"
end=$(find "$corpus" -type f | wc -l)

stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
echo
echo "fuzzed inventory loading + validation for ${budget}s"
echo "  executions:        $(stat number_of_executed_units) ($(stat average_exec_per_sec)/s)"
echo "  new inputs found:  $(stat new_units_added)"
echo "  peak memory:       $(stat peak_rss_mb) MB"
echo "  corpus:            ${start} -> ${end} inputs ($(du -sh "$corpus" | cut -f1)), minimised"
echo "  crashes/timeouts/OOMs: ${found}$( [ "$found" = 0 ] || echo " (see $artifacts)")"
if [ "$status" != 0 ] || [ "$found" != 0 ]; then
    grep -E 'panicked|SUMMARY|ERROR' "$log" | head -n 20 >&2 || true
    exit 1
fi
