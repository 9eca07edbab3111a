#!/usr/bin/env bash
# The first thing to run on a new (Debian, root) machine: installs Docker and friends,
# builds the lab image and the test artifact mirror, builds capstan, starts a lab of
# 3 control planes + 2 workers, checks it, and converges containerd onto every node.
#   ./try-lab.sh            then: ./target/release/capstan lab down --name try
set -euo pipefail
cd "$(dirname "$0")"

./tests/lab/install-deps.sh
./tests/lab/build-image.sh
./tests/lab/build-mirror.sh "$PWD/lab/mirror"
cargo build --release
capstan=${CARGO_TARGET_DIR:-./target}/release/capstan

$capstan lab up --name try --control-planes 3 --workers 2 --mirror "$PWD/lab/mirror"
$capstan check -i lab/try
$capstan plan -i lab/try -q
$capstan apply -i lab/try --roles common,containerd
$capstan apply -i lab/try --roles common,containerd     # a second run changes nothing
docker exec try-w1 ctr version
