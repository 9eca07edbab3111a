#!/usr/bin/env bash
# Benchmark (not a test): `capstan upgrade apply` v1.36.4 -> v1.37.1 of 7 lab hosts
# on containerd 2 (forky's 2.1.9; stacked etcd, 3 control planes + 3 workers + 1 haproxy
# load balancer) built by `capstan init`, with a Deployment of 4 replicas and a
# PodDisruptionBudget (minAvailable 3) for the drains to respect. Prints the wall time end to end, the per-phase and per-host
# times from apply's own summary, and the SSH round trips per host.
#   benches/upgrade.sh       MAX_UNAVAILABLE=1 by default
set -euo pipefail
cd "$(dirname "$0")/.."
mu=${MAX_UNAVAILABLE:-1}

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/capstan
bed=${CARGO_TARGET_DIR:-$PWD/target}/bench-bed
./tests/lab/prepare.sh "$bed" >/dev/null 2>&1
cache=$(mktemp -d)
name=bench-upgrade
out=$(mktemp -d)
trap '"$bin" lab down --name "$name" --out "$out" >/dev/null 2>&1 || true; rm -rf "$cache" "$out"' EXIT
"$bin" lab up --name "$name" --control-planes 3 --workers 3 --load-balancers 1 --out "$out" \
  --mirror "$bed/mirror" --mount "$bed/images:/var/lib/standin-images" -q >/dev/null
sed -i 's/^\( *kubernetes_version:\).*/\1 v1.36.4/; s/^\(    containerd:\).*/\1 v2.1.9/' "$out/cluster.yaml"

s=$(date +%s.%N)
"$bin" init -i "$out" --cache-dir "$cache" -q >/dev/null
e=$(date +%s.%N)
printf 'init v1.36.4, 7 hosts: %.1f s\n' "$(echo "$e - $s" | bc)"

kubectl --kubeconfig "$out/.capstan/admin.conf" apply -f - >/dev/null <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: registry.k8s.io/pause:3.10}]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: default}
spec: {minAvailable: 3, selector: {matchLabels: {app: web}}}
YAML
for _ in $(seq 1 60); do
  n=$(kubectl --kubeconfig "$out/.capstan/admin.conf" get pods -l app=web \
        --field-selector=status.phase=Running -o name 2>/dev/null | wc -l)
  [ "$n" -ge 4 ] && break
  sleep 1
done

s=$(date +%s.%N)
doc=$("$bin" upgrade apply -i "$out" --cache-dir "$cache" --to v1.37.1 --yes \
        --max-unavailable "$mu" --output json)
e=$(date +%s.%N)
printf 'upgrade apply v1.36.4 -> v1.37.1, 7 hosts, --max-unavailable %s: %.1f s wall\n' \
  "$mu" "$(echo "$e - $s" | bc)"
printf '%s' "$doc" > "$out/upgrade.json"
python3 - "$out/upgrade.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
if d.get("stopped"):
    print("STOPPED:", d["stopped"])
    sys.exit(1)
t = d["timings"]
print("  phases: " + ", ".join("%s %.1f s" % (p["name"], p["seconds"]) for p in t["phases"]))
print("  hosts:  " + ", ".join("%s %.1f s" % (h["name"], h["seconds"]) for h in t["hosts"]))
drains = [g for p in d["phases"] for g in p["gates"] if "drained" in g]
print("  drains: " + ", ".join(drains))
changes = sum(len(h["plan"]["changes"]) for p in d["phases"] for h in p["hosts"])
rt = list(d["round_trips"].values())
print("  changes: %d, round trips per host %d-%d" % (changes, min(rt), max(rt)))
PY

s=$(date +%s.%N)
doc=$("$bin" upgrade apply -i "$out" --cache-dir "$cache" --to v1.37.1 --yes --output json)
e=$(date +%s.%N)
printf 'no-op upgrade apply (same version again): %.2f s wall\n' "$(echo "$e - $s" | bc)"
