#!/usr/bin/env bash
# Builds the TEST-ONLY stand-ins (tests/standins) and stamps one copy of each component per
# version, so that every version has its own bytes and sha256:
#
#   OUT/vX.Y.Z/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy}
#   OUT/versions            the versions, one a line
#   OUT/addons/NAME/VERSION/NAME   each addon of CAPSTAN_STANDIN_ADDONS, stamped with its version
#   OUT/standin             the stand-in unstamped (for image files that are only copied)
#
# Usage: tests/lab/build-standins.sh OUT
# Env:   CAPSTAN_STANDIN_VERSIONS   space-separated versions (default: the minors 1.31 to 1.37,
#                                   two patches of 1.32, each at a version of which the test
#                                   mirror has a real kubectl)
#        CAPSTAN_STANDIN_ADDONS     space-separated NAME:vX.Y.Z of addon stand-ins (coredns,
#                                   flanneld, pause) to stamp with their own versions (default: none)
#        CARGO_TARGET_DIR           as cargo uses it
# Skipped when the built binary and the versions are unchanged. Prints the versions.
set -euo pipefail

die() { echo "build-standins: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: $0 OUT"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
VERSIONS=${CAPSTAN_STANDIN_VERSIONS:-v1.31.9 v1.32.4 v1.32.5 v1.33.1 v1.34.5 v1.35.2 v1.36.4 v1.37.1}
COMPONENTS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
ADDONS=${CAPSTAN_STANDIN_ADDONS:-}

for v in $VERSIONS; do
    [[ "$v" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "version '$v' is not vX.Y.Z"
done
for a in $ADDONS; do
    [[ "$a" =~ ^[a-z-]+:v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "addon '$a' is not NAME:vX.Y.Z"
done

# The whole workspace with every target, as the test command builds it: `-p capstan-standins`
# alone resolves other dependency features and would compile every shared dependency again.
echo "build-standins: cargo build --workspace --all-targets" >&2
(cd "$ROOT" && cargo build -q --locked --workspace --all-targets >&2) || die "cargo build failed"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN="$TARGET/debug/standin"
[ -x "$BIN" ] || die "$BIN was not built"

SOURCE="$(sha256sum "$BIN" | cut -d' ' -f1) $VERSIONS | $COMPONENTS | $ADDONS"
if [ -f "$OUT/.source" ] && [ "$(cat "$OUT/.source")" = "$SOURCE" ]; then
    echo "build-standins: up to date in $OUT" >&2
else
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    # Without debug info: the copies go into mirrors and image stores.
    objcopy --strip-debug "$BIN" "$WORK/standin" 2>/dev/null || cp "$BIN" "$WORK/standin"
    for v in $VERSIONS; do
        mkdir -p "$OUT/$v"
        for c in $COMPONENTS; do
            "$WORK/standin" stamp "$WORK/standin" "$OUT/$v/$c" "$v" || die "stamping $c $v failed"
        done
    done
    for a in $ADDONS; do
        name=${a%%:*} v=${a#*:}
        mkdir -p "$OUT/addons/$name/$v"
        "$WORK/standin" stamp "$WORK/standin" "$OUT/addons/$name/$v/$name" "$v" || die "stamping $name $v failed"
    done
    cp "$WORK/standin" "$OUT/standin.tmp.$$" && mv -f "$OUT/standin.tmp.$$" "$OUT/standin"
    printf '%s\n' $VERSIONS > "$OUT/versions"
    echo "$SOURCE" > "$OUT/.source"
fi
for v in $VERSIONS; do
    echo "standins $v: $(sha256sum "$OUT/$v/kubelet" | cut -c1-16)… (kubelet)"
done
