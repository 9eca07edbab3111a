#!/usr/bin/env bash
# Benchmark (not a test): `capstan init` of issue 6's scenario 1 (stacked etcd, 3 control
# planes + 2 workers + 1 haproxy load balancer) from bare lab hosts with the artifacts
# already cached, then no-op re-runs; wall time and SSH round trips per host. Today's
# cluster: Kubernetes v1.37.1 (the stand-ins) on containerd 2 (forky's 2.1.9).
#   benches/init.sh          RUNS=3 by default for the no-op
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/capstan
bed=${CARGO_TARGET_DIR:-$PWD/target}/bench-bed
./tests/lab/prepare.sh "$bed" >/dev/null
cache=$(mktemp -d)
name=bench-init
out=$(mktemp -d)
trap '"$bin" lab down --name "$name" --out "$out" >/dev/null 2>&1 || true; rm -rf "$cache"' EXIT
"$bin" lab up --name "$name" --control-planes 3 --workers 2 --load-balancers 1 --out "$out" \
  --mirror "$bed/mirror" --mount "$bed/images:/var/lib/standin-images" -q >/dev/null
sed -i 's/^\( *kubernetes_version:\).*/\1 v1.37.1/; s/^\(    containerd:\).*/\1 v2.1.9/' "$out/cluster.yaml"
# Warm the artifact cache so the first run measures the hosts, not the mirror.
"$bin" plan -i "$out" --cache-dir "$cache" -q >/dev/null 2>&1 || true

trips() { python3 -c 'import sys,json; t=list(json.load(sys.stdin)["round_trips"].values()); print(f"{min(t)}-{max(t)}")'; }
changes() { python3 -c 'import sys,json; d=json.load(sys.stdin); print(sum(len(h["plan"]["changes"]) for p in d["phases"] for h in p["hosts"]))'; }

s=$(date +%s.%N)
first=$("$bin" init -i "$out" --cache-dir "$cache" --output json)
e=$(date +%s.%N)
printf 'init from bare hosts, 6 hosts: %.2f s wall, %s changes, round trips per host %s\n' \
  "$(echo "$e - $s" | bc)" "$(changes <<<"$first")" "$(trips <<<"$first")"
for i in $(seq 1 "$runs"); do
  s=$(date +%s.%N)
  doc=$("$bin" init -i "$out" --cache-dir "$cache" --output json)
  e=$(date +%s.%N)
  printf 'no-op init, run %d: %.3f s wall, %s changes, round trips per host %s\n' \
    "$i" "$(echo "$e - $s" | bc)" "$(changes <<<"$doc")" "$(trips <<<"$doc")"
done
