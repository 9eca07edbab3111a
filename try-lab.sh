#!/usr/bin/env bash
# The first thing to run on a new (Debian, root) machine: installs Docker and friends,
# builds the lab image, the stand-ins and the test artifact mirror, builds capstan, starts a
# lab of 3 control planes + 2 workers + 1 load balancer, builds an HA cluster on it with
# `capstan init` (twice: the second run changes nothing) and lists its nodes with kubectl.
#   ./try-lab.sh            then: ./target/release/capstan lab down --name try
# The setup steps write to lab/try-lab.log, not to the terminal: what a new user reads is
# capstan's own output (tests/lab_try.rs runs this script and holds it to two screens).
# For that test: CAPSTAN_BIN (a built capstan: no release build), TRY_LAB_DIR (instead of
# ./lab), TRY_LAB_BED (a prepared test bed), TRY_LAB_NAME (instead of try).
set -euo pipefail
cd "$(dirname "$0")"

dir=${TRY_LAB_DIR:-$PWD/lab}
bed=${TRY_LAB_BED:-$dir/bed}
name=${TRY_LAB_NAME:-try}
mkdir -p "$dir"
log=$dir/try-lab.log
: >"$log"

# Runs a setup step with its output in the log; on failure shows the log's last lines.
step() {
    local what=$1
    shift
    printf '%s ... ' "$what"
    local t0=$SECONDS
    if "$@" >>"$log" 2>&1; then
        echo "done ($((SECONDS - t0)) s)"
    else
        echo "failed; the last lines of $log:"
        tail -n 25 "$log"
        exit 1
    fi
}

echo "setting up (the details go to $log)"
step "installing Docker, debootstrap, OpenSSH, etcd, kubectl" ./tests/lab/install-deps.sh
# The lab image, the stand-ins at every version, the artifact mirror and the image store.
step "building the lab image, stand-ins and test mirror (a few minutes, once)" \
    ./tests/lab/prepare.sh "$bed"
if [ -n "${CAPSTAN_BIN:-}" ]; then
    capstan=$CAPSTAN_BIN
else
    step "building capstan (cargo build --release)" cargo build --release
    capstan=${CARGO_TARGET_DIR:-./target}/release/capstan
fi
echo

run() {
    echo "\$ capstan $*"
    "$capstan" "$@"
    echo
}
inv=$dir/$name
run lab up --name "$name" --out "$inv" --control-planes 3 --workers 2 --load-balancers 1 \
    --mirror "$bed/mirror" --mount "$bed/images:/var/lib/standin-images"
run check -i "$inv"
run init -i "$inv" --dry-run -q
run init -i "$inv"
run init -i "$inv"                 # a second run changes nothing
echo "\$ kubectl --kubeconfig $inv/.capstan/admin.conf get nodes"
kubectl --kubeconfig "$inv/.capstan/admin.conf" get nodes
