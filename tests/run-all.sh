#!/usr/bin/env bash
# The project's test command: formatting, strict clippy, then every test of the workspace
# (capstan and the test-only stand-ins), the lab ones included (they need a running Docker engine; .ci/run installs and starts one).
set -euo pipefail
cd "$(dirname "$0")/.."

./tests/lab/build-image.sh
# The second lab image (Debian trixie), where forky's runc 1.3.6 runs (tests/lab_containerd2.rs).
LAB_SUITE=trixie ./tests/lab/build-image.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --all-targets --locked --no-fail-fast -- --test-threads "${CAPSTAN_TEST_THREADS:-2}"
