#!/usr/bin/env bash
# Prepares the whole test bed in OUT, each step skipped when up to date:
#
#   1. the lab image (tests/lab/build-image.sh)
#   2. the stand-ins at every version            OUT/standins/vX.Y.Z/...   (build-standins.sh)
#   3. the artifact mirror, with the kubelet      OUT/mirror/               (build-mirror.sh)
#      stand-in at every version in dl.k8s.io's layout (.sha256 beside each file)
#   4. the image store: the control-plane         OUT/images/registry.k8s.io/kube-apiserver/vX.Y.Z/kube-apiserver
#      stand-ins under the references capstan's   (…kube-controller-manager, kube-scheduler likewise)
#      manifests use (src/artifacts/catalog.rs images())
#
# Then `capstan lab up --mount OUT/images:/var/lib/standin-images` and an inventory whose
# artifacts.mirror is file://OUT/mirror run a whole cluster.
#
# Usage: tests/lab/prepare.sh OUT
# Env:   CAPSTAN_LAB_IMAGE (default: build-image.sh's tag, src/lab DEFAULT_IMAGE), CAPSTAN_STANDIN_VERSIONS,
#        CAPSTAN_SKIP_LAB_IMAGE=1 to skip step 1 (no Docker needed then)
set -euo pipefail

die() { echo "prepare: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: $0 OUT"
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
IMAGE=${CAPSTAN_LAB_IMAGE:-$(sed -n 's/^TAG=\${1:-\(.*\)}$/\1/p' "$HERE/build-image.sh")}
REGISTRY=registry.k8s.io

if [ "${CAPSTAN_SKIP_LAB_IMAGE:-0}" != 1 ]; then
    "$HERE/build-image.sh" "$IMAGE" >&2 || die "building the lab image failed"
fi

"$HERE/build-standins.sh" "$OUT/standins" >&2 || die "building the stand-ins failed"
VERSIONS=$(cat "$OUT/standins/versions")

CAPSTAN_KUBELET_STANDINS="$OUT/standins" "$HERE/build-mirror.sh" "$OUT/mirror" >&2 || die "building the mirror failed"

for v in $VERSIONS; do
    for c in kube-apiserver kube-controller-manager kube-scheduler; do
        dest="$OUT/images/$REGISTRY/$c/$v/$c"
        src="$OUT/standins/$v/$c"
        if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
            continue
        fi
        mkdir -p "$(dirname "$dest")"
        # A hard link costs no disk; a copy only where OUT spans file systems.
        ln -f "$src" "$dest.tmp.$$" 2>/dev/null || cp "$src" "$dest.tmp.$$"
        chmod 0755 "$dest.tmp.$$"
        mv -f "$dest.tmp.$$" "$dest"
    done
done

echo "lab image: $IMAGE"
echo "versions:  $(echo $VERSIONS)"
echo "mirror:    file://$OUT/mirror"
echo "images:    $OUT/images   (capstan lab up --mount $OUT/images:/var/lib/standin-images)"
