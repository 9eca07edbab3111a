#!/usr/bin/env bash
# The first thing to run on a new (Debian, root) machine: installs Docker and friends,
# builds the lab image, the stand-ins and the test artifact mirror, builds capstan, starts a
# lab of 3 control planes + 2 workers + 1 load balancer, builds an HA cluster on it with
# `capstan init` (twice: the second run changes nothing) and lists its nodes with kubectl.
#   ./try-lab.sh            then: ./target/release/capstan lab down --name try
set -euo pipefail
cd "$(dirname "$0")"

./tests/lab/install-deps.sh
# The lab image, the stand-ins at every version, the artifact mirror and the image store.
./tests/lab/prepare.sh "$PWD/lab/bed"
cargo build --release
capstan=${CARGO_TARGET_DIR:-./target}/release/capstan

$capstan lab up --name try --control-planes 3 --workers 2 --load-balancers 1 \
    --mirror "$PWD/lab/bed/mirror" --mount "$PWD/lab/bed/images:/var/lib/standin-images"
$capstan check -i lab/try
$capstan init -i lab/try --dry-run -q
$capstan init -i lab/try
$capstan init -i lab/try          # a second run changes nothing
kubectl --kubeconfig lab/try/.capstan/admin.conf get nodes -o wide
