#!/usr/bin/env bash
# Prepares the whole test bed in OUT, each step skipped when up to date:
#
#   1. the lab image (tests/lab/build-image.sh)
#   2. the stand-ins at every version            OUT/standins/vX.Y.Z/...   (build-standins.sh)
#   3. the artifact mirror, with the kubelet      OUT/mirror/               (build-mirror.sh)
#      stand-in at every version in dl.k8s.io's layout (.sha256 beside each file)
#   4. the image store: the control-plane         OUT/images/registry.k8s.io/kube-apiserver/vX.Y.Z/kube-apiserver
#      stand-ins under the references capstan's   (…kube-controller-manager, kube-scheduler likewise)
#      manifests use (src/artifacts/catalog.rs images(), catalog/catalog.yaml)
#   5. the addon images of the image store:       OUT/images/registry.k8s.io/kube-proxy/vX.Y.Z/kube-proxy
#      kube-proxy at every version; CoreDNS and    OUT/images/registry.k8s.io/coredns/coredns/TAG/{coredns,.entrypoint}
#      pause at the tags kubeadm pairs with each   OUT/images/registry.k8s.io/pause/TAG/{pause,.entrypoint}
#      minor (catalog/catalog.yaml);                   OUT/images/ghcr.io/flannel-io/flannel/TAG/{flanneld,cp}
#      flannel and its CNI plugin at the tags of   OUT/images/ghcr.io/flannel-io/flannel-cni-plugin/TAG/{flannel,cp}
#      roles/addons/role.yaml (`cp` is image-cp.sh: the init containers copy files of the image)
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
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
IMAGE=${CAPSTAN_LAB_IMAGE:-$(sed -n 's/^TAG=\${1:-\(.*\)}$/\1/p' "$HERE/build-image.sh")}
REGISTRY=registry.k8s.io

if [ "${CAPSTAN_SKIP_LAB_IMAGE:-0}" != 1 ]; then
    "$HERE/build-image.sh" "$IMAGE" >&2 || die "building the lab image failed"
fi

# The addon images' tags: kubeadm's CoreDNS and pause per minor, capstan's flannel.
WANTED=${CAPSTAN_STANDIN_VERSIONS:-$(sed -n 's/^VERSIONS=\${CAPSTAN_STANDIN_VERSIONS:-\(.*\)}$/\1/p' "$HERE/build-standins.sh")}
# catalog/catalog.yaml writes each minor's images on one line: `images: {coredns: T, pause: "T", ...}`.
DEFAULTS=$(awk '/^  v[0-9]+\.[0-9]+:/ { m = $1; sub(/:$/, "", m); sub(/^v1\./, "", m) }
    /^    images: *\{/ { c = $0; sub(/.*coredns: */, "", c); sub(/[,} ].*/, "", c)
                         p = $0; sub(/.*pause: *"?/, "", p); sub(/"?[,} ].*/, "", p)
                         if (m != "") print m, c, p; m = "" }' "$ROOT/catalog/catalog.yaml")
[ -n "$DEFAULTS" ] || die "no kubeadm images found in catalog/catalog.yaml"
COREDNS_TAGS= PAUSE_TAGS=
for v in $WANTED; do
    minor=$(echo "$v" | cut -d. -f2)
    line=$(echo "$DEFAULTS" | awk -v m="$minor" '$1 == m')
    [ -n "$line" ] || die "no CoreDNS/pause tags for $v in catalog/catalog.yaml"
    COREDNS_TAGS="$COREDNS_TAGS $(echo "$line" | cut -d' ' -f2)"
    PAUSE_TAGS="$PAUSE_TAGS $(echo "$line" | cut -d' ' -f3)"
done
COREDNS_TAGS=$(printf '%s\n' $COREDNS_TAGS | sort -u)
PAUSE_TAGS=$(printf '%s\n' $PAUSE_TAGS | sort -u)
FLANNEL_IMAGE=$(sed -n 's/^ *flannel_image: *//p' "$ROOT/roles/addons/role.yaml")
FLANNEL_CNI_IMAGE=$(sed -n 's/^ *flannel_cni_plugin_image: *//p' "$ROOT/roles/addons/role.yaml")
[ -n "$FLANNEL_IMAGE" ] && [ -n "$FLANNEL_CNI_IMAGE" ] || die "no flannel images in roles/addons/role.yaml"
FLANNEL_TAG=${FLANNEL_IMAGE##*:}
# Stamps are vX.Y.Z: pause's 3.10 is stamped v3.10.0 (its `-v` prints 3.10 again).
ADDONS="flanneld:$FLANNEL_TAG"
for t in $COREDNS_TAGS; do ADDONS="$ADDONS coredns:$t"; done
for t in $PAUSE_TAGS; do
    case $t in *.*.*) ADDONS="$ADDONS pause:v$t" ;; *) ADDONS="$ADDONS pause:v$t.0" ;; esac
done

CAPSTAN_STANDIN_ADDONS="$ADDONS" "$HERE/build-standins.sh" "$OUT/standins" >&2 || die "building the stand-ins failed"
VERSIONS=$(cat "$OUT/standins/versions")

CAPSTAN_KUBELET_STANDINS="$OUT/standins" "$HERE/build-mirror.sh" "$OUT/mirror" >&2 || die "building the mirror failed"

# place SRC DEST: DEST becomes SRC's bytes (mode 0755), untouched when already equal.
place() {
    local src=$1 dest=$2
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    # A hard link costs no disk; a copy only where OUT spans file systems.
    ln -f "$src" "$dest.tmp.$$" 2>/dev/null || cp "$src" "$dest.tmp.$$"
    chmod 0755 "$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
}
# entrypoint DIR PATH: the image's entrypoint, for containers without `command`.
entrypoint() {
    mkdir -p "$1"
    [ "$(cat "$1/.entrypoint" 2>/dev/null)" = "$2" ] || echo "$2" > "$1/.entrypoint"
}

for v in $VERSIONS; do
    for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
        place "$OUT/standins/$v/$c" "$OUT/images/$REGISTRY/$c/$v/$c"
    done
done
for t in $COREDNS_TAGS; do
    place "$OUT/standins/addons/coredns/$t/coredns" "$OUT/images/$REGISTRY/coredns/coredns/$t/coredns"
    entrypoint "$OUT/images/$REGISTRY/coredns/coredns/$t" /coredns
done
for t in $PAUSE_TAGS; do
    case $t in *.*.*) stamp=v$t ;; *) stamp=v$t.0 ;; esac
    place "$OUT/standins/addons/pause/$stamp/pause" "$OUT/images/$REGISTRY/pause/$t/pause"
    entrypoint "$OUT/images/$REGISTRY/pause/$t" /pause
done
FLANNEL_DIR="$OUT/images/${FLANNEL_IMAGE%:*}/$FLANNEL_TAG"
place "$OUT/standins/addons/flanneld/$FLANNEL_TAG/flanneld" "$FLANNEL_DIR/flanneld"
place "$HERE/image-cp.sh" "$FLANNEL_DIR/cp"
CNI_DIR="$OUT/images/${FLANNEL_CNI_IMAGE%:*}/${FLANNEL_CNI_IMAGE##*:}"
# The CNI plugin binary is only copied to /opt/cni/bin (the stand-in pods share the host network).
place "$OUT/standins/standin" "$CNI_DIR/flannel"
place "$HERE/image-cp.sh" "$CNI_DIR/cp"

echo "lab image: $IMAGE"
echo "versions:  $(echo $VERSIONS)"
echo "mirror:    file://$OUT/mirror"
echo "images:    $OUT/images   (capstan lab up --mount $OUT/images:/var/lib/standin-images)"
