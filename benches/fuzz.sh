#!/usr/bin/env bash
# Fuzzes inventory parsing + validation (fuzz/fuzz_targets/inventory.rs) for a fixed budget
# and keeps what the fuzzer finds in fuzz/corpus/inventory, which `cargo test` replays on
# stable (tests/inventory_errors.rs). Not part of CI: it needs nightly Rust and cargo-fuzz,
# and it is a benchmark of robustness, not a pass/fail gate of a commit.
#
#   benches/fuzz.sh [SECONDS]      default 300
#
# A crash is saved under fuzz/artifacts/inventory/; reproduce it with
#   cargo +nightly fuzz run inventory fuzz/artifacts/inventory/crash-…
# then copy the input into fuzz/corpus/inventory/ once fixed, so the replay test keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-300}"

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "benches/fuzz.sh: needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (once)" >&2
    cargo install cargo-fuzz --locked
fi

# The fuzzer writes new inputs into the first corpus folder; merge them back minimised.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$(ls fuzz/corpus/inventory | wc -l)
cargo +nightly fuzz run inventory "$work" fuzz/corpus/inventory -- \
    -max_total_time="$budget" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1
# Keep only inputs that add coverage (-merge=1), named by their sha1 as libFuzzer does.
cargo +nightly fuzz run inventory fuzz/corpus/inventory "$work" -- -merge=1 >/dev/null 2>&1 || true
end=$(ls fuzz/corpus/inventory | wc -l)
echo "fuzzed inventory loading for ${budget}s without a crash; corpus ${start} -> ${end} inputs"
