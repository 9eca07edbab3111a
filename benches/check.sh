#!/usr/bin/env bash
# Benchmark (not a test): wall time of `capstan check` against 10 and 50 lab hosts.
# Each host costs one SSH handshake and one exec (the facts probe). Prints per run and per host
# the wall time and the CPU time the lab hosts spent (sshd, the probe; see hostcpu.sh).
#   benches/check.sh [SIZES...]     default: 10 50
# Needs what tests/run-all.sh needs (Docker, the lab image); raises inotify limits for big labs.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(10 50)
runs=${RUNS:-5}
. benches/hostcpu.sh

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/capstan
./tests/lab/build-image.sh >/dev/null
sysctl -qw fs.inotify.max_user_instances=8192 fs.inotify.max_user_watches=524288 2>/dev/null || true

for n in "${sizes[@]}"; do
  name="bench-check-$n"
  out=$(mktemp -d)
  trap '"$bin" lab down --name "$name" --out "$out" >/dev/null 2>&1 || true' EXIT
  t0=$(date +%s.%N)
  "$bin" lab up --name "$name" --control-planes 1 --workers $((n - 1)) --out "$out" -q >/dev/null
  t1=$(date +%s.%N)
  printf 'lab up, %d hosts: %.1f s\n' "$n" "$(echo "$t1 - $t0" | bc)"
  "$bin" check -i "$out" -q >/dev/null || true   # warm caches once
  total=0
  for i in $(seq 1 "$runs"); do
    c0=$(hosts_cpu_ns "$name")
    s=$(date +%s.%N)
    "$bin" check -i "$out" -q >/dev/null || true
    e=$(date +%s.%N)
    c1=$(hosts_cpu_ns "$name")
    d=$(echo "$e - $s" | bc)
    total=$(echo "$total + $d" | bc)
    printf 'check, %d hosts, run %d: %.3f s (%.1f ms per host), hosts CPU %.1f ms per host, load %s\n' \
      "$n" "$i" "$d" "$(echo "$d * 1000 / $n" | bc -l)" "$(echo "($c1 - $c0) / 1000000 / $n" | bc -l)" "$(cut -d' ' -f1 /proc/loadavg)"
  done
  printf 'check, %d hosts: mean %.3f s over %d runs\n' "$n" "$(echo "$total / $runs" | bc -l)" "$runs"
  "$bin" lab down --name "$name" --out "$out" >/dev/null
  trap - EXIT
done
