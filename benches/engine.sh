#!/usr/bin/env bash
# Benchmark (not a test): `capstan apply` of common + containerd on 10 and 50 lab hosts:
# the first run from bare hosts, then no-op runs of `apply` and `plan`, with wall time and
# SSH round trips per host (counted by the engine, after the handshake).
#   benches/engine.sh [SIZES...]     default: 10 50
#   RUNS=N (default 3) no-op runs of each verb; SETTLE=S (default 60) seconds to wait after
#   the first run before them.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(10 50)
runs=${RUNS:-3}
. benches/hostcpu.sh

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/capstan
./tests/lab/build-image.sh >/dev/null
mirror=${CARGO_TARGET_DIR:-$PWD/target}/bench-mirror
./tests/lab/build-mirror.sh "$mirror" >/dev/null
sysctl -qw fs.inotify.max_user_instances=8192 fs.inotify.max_user_watches=524288 2>/dev/null || true
cache=$(mktemp -d)

seconds() { python3 -c 'import sys,json; print(json.load(sys.stdin)["seconds"])'; }
trips() { python3 -c 'import sys,json; h=json.load(sys.stdin)["hosts"]; t=[x["round_trips"] for x in h]; print(f"{min(t)}-{max(t)}")'; }
changes() { python3 -c 'import sys,json; print(sum(len((x.get("plan") or {}).get("changes", [])) for x in json.load(sys.stdin)["hosts"]))'; }

for n in "${sizes[@]}"; do
  name="bench-engine-$n"
  out=$(mktemp -d)
  trap '"$bin" lab down --name "$name" --out "$out" >/dev/null 2>&1 || true' EXIT
  "$bin" lab up --name "$name" --control-planes 1 --workers $((n - 1)) --out "$out" --mirror "$mirror" -q >/dev/null
  # Warm the artifact cache so the first run measures the hosts, not the mirror.
  "$bin" plan -i "$out" --roles common,containerd --cache-dir "$cache" -q >/dev/null
  s=$(date +%s.%N)
  rc=0
  first=$("$bin" apply -i "$out" --roles common,containerd --cache-dir "$cache" --output json 2>"$out/first.err") || rc=$?
  e=$(date +%s.%N)
  if [ "$rc" -ne 0 ]; then
    # Say why rather than stop silently: the failed hosts with their errors, then stderr's end.
    echo "apply from bare hosts on $n hosts exited $rc after $(echo "$e - $s" | bc) s" >&2
    python3 -c 'import sys,json
for h in json.load(sys.stdin).get("hosts", []):
    if h.get("error"): print("  " + h["host"] + ": " + str(h["error"]))' <<<"$first" >&2 || true
    tail -20 "$out/first.err" >&2
    exit 1
  fi
  printf 'apply from bare hosts, %d hosts: %.2f s wall, %s changes, round trips per host %s\n' \
    "$n" "$(echo "$e - $s" | bc)" "$(changes <<<"$first")" "$(trips <<<"$first")"
  # The first run just started a containerd on every host: let them settle (the lab hosts
  # share this machine's cores), so that the no-op runs measure a steady cluster.
  sleep "${SETTLE:-60}"
  for verb in apply plan; do
    for i in $(seq 1 "$runs"); do
      c0=$(hosts_cpu_ns "$name")
      s=$(date +%s.%N)
      doc=$("$bin" "$verb" -i "$out" --roles common,containerd --cache-dir "$cache" --output json)
      e=$(date +%s.%N)
      c1=$(hosts_cpu_ns "$name")
      printf 'no-op %s, %d hosts, run %d: %.3f s wall (%.1f ms per host), hosts CPU %.1f ms per host, %s changes, round trips per host %s, load %s\n' \
        "$verb" "$n" "$i" "$(echo "$e - $s" | bc)" "$(echo "($e - $s) * 1000 / $n" | bc -l)" \
        "$(echo "($c1 - $c0) / 1000000 / $n" | bc -l)" "$(changes <<<"$doc")" "$(trips <<<"$doc")" "$(cut -d' ' -f1 /proc/loadavg)"
    done
  done
  "$bin" lab down --name "$name" --out "$out" >/dev/null
  trap - EXIT
done
rm -rf "$cache"
