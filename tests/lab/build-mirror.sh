#!/usr/bin/env bash
# Builds capstan's TEST artifact mirror in OUT from what this machine can have:
#
#   etcd + etcdctl   Debian's etcd-server/etcd-client, repacked as upstream's
#                    github.com/etcd-io/etcd/releases/download/v{V}/etcd-v{V}-linux-{arch}.tar.gz
#                    (members etcd-v{V}-linux-{arch}/{etcd,etcdctl})
#   containerd       Debian's containerd, repacked as upstream's
#                    github.com/containerd/containerd/releases/download/v{V}/containerd-{V}-linux-{arch}.tar.gz
#                    (members bin/{containerd,containerd-shim*,ctr})
#   runc             Debian's runc, as github.com/opencontainers/runc/releases/download/v{V}/runc.{arch}
#   cni-plugins      Debian's containernetworking-plugins, repacked as upstream's
#                    github.com/containernetworking/plugins/releases/download/v{V}/cni-plugins-linux-{arch}-v{V}.tgz
#                    (members ./bridge ./host-local ./loopback ./portmap ... at the tarball root)
#   kubectl          the machine's real kubectl builds (/usr/bin/kubectl, and the versioned builds
#                    beside the Cloud SDK's), else Debian's kubernetes-client, at
#                    release/v{V}/bin/linux/{arch}/kubectl
#   kubelet          the stand-ins (tests/standins) at every version: see place_kubelet below
#
# Every file gets a `.sha256` beside it (`sha256sum` format). The .deb files are fetched with
# `apt-get download` (never installed) and unpacked with `dpkg-deb -x` into a temp dir. Work
# is skipped when an artifact is up to date (same source, outputs present); tarballs are
# packed reproducibly, so re-runs give identical bytes. Prints the versions it placed.
#
# Usage: tests/lab/build-mirror.sh OUT
# Env:   CAPSTAN_DEB_CACHE   where downloaded .deb files are kept (default ~/.cache/capstan-lab/debs)
#        CAPSTAN_KUBELET_STANDINS   a build-standins.sh output dir: its kubelet at every version
#        CAPSTAN_KUBELET_STANDIN, CAPSTAN_KUBELET_VERSION   one kubelet stand-in binary to place
set -euo pipefail

die() { echo "build-mirror: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUT"
OUT=$1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STAMPS="$OUT/.build-mirror"
mkdir -p "$STAMPS"

for tool in apt-get apt-cache dpkg-deb sha256sum tar gzip; do
    command -v "$tool" >/dev/null || die "$tool is required (this script expects a Debian machine)"
done

ARCH=$(dpkg --print-architecture)
case "$ARCH" in
    amd64|arm64) ;;
    *) die "unsupported architecture $ARCH (capstan knows amd64 and arm64)" ;;
esac

DEB_CACHE=${CAPSTAN_DEB_CACHE:-${HOME:-/root}/.cache/capstan-lab/debs}
mkdir -p "$DEB_CACHE"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

PLACED=()

# --- helpers ------------------------------------------------------------------------------

# `apt-get update`, at most once per run (a marker file: callers run in subshells).
apt_update_once() {
    [ -e "$WORK/apt-updated" ] && return 1
    touch "$WORK/apt-updated"
    echo "build-mirror: running apt-get update" >&2
    apt-get update -qq >&2 || die "apt-get update failed"
}

# The candidate version of a Debian package; updates the apt lists when they lack it.
deb_version() {
    local pkg=$1 v
    v=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if { [ -z "$v" ] || [ "$v" = "(none)" ]; } && apt_update_once; then
        v=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
    fi
    [ -n "$v" ] && [ "$v" != "(none)" ] || die "Debian package $pkg is not available from apt"
    echo "$v"
}

# 1:3.4.23-4+b4 -> 3.4.23 ; 1.6.20~ds1-1+deb12u3 -> 1.6.20 ; 1.1.5+ds1-1 -> 1.1.5
upstream_version() {
    local v=${1#*:}
    v=${v%%-*}
    v=${v%%~*}
    v=${v%%+*}
    echo "$v"
}

# Path of the .deb of PKG at VERSION: apt's own archive cache, else `apt-get download`.
fetch_deb() {
    local pkg=$1 ver=$2 file dir
    file="${pkg}_${ver//:/%3a}_${ARCH}.deb"
    for dir in /var/cache/apt/archives "$DEB_CACHE"; do
        if [ -s "$dir/$file" ]; then echo "$dir/$file"; return; fi
    done
    if ! (cd "$DEB_CACHE" && apt-get download -qq -o APT::Sandbox::User=root "$pkg=$ver" >&2); then
        apt_update_once || die "apt-get download $pkg=$ver failed"
        (cd "$DEB_CACHE" && apt-get download -qq -o APT::Sandbox::User=root "$pkg=$ver" >&2) || die "apt-get download $pkg=$ver failed"
    fi
    [ -s "$DEB_CACHE/$file" ] || die "apt-get download did not produce $DEB_CACHE/$file"
    echo "$DEB_CACHE/$file"
}

# Unpacks PKG (at its candidate version) into a fresh dir under $WORK; prints the dir.
unpack_deb() {
    local pkg=$1 ver=$2 deb dir
    deb=$(fetch_deb "$pkg" "$ver")
    dir="$WORK/deb-$pkg"
    rm -rf "$dir"; mkdir -p "$dir"
    dpkg-deb -x "$deb" "$dir" || die "dpkg-deb -x $deb failed"
    echo "$dir"
}

# Is REL (relative to OUT) up to date with SOURCE (a string naming what it was built from)?
up_to_date() {
    local rel=$1 source=$2 stamp
    stamp="$STAMPS/$(echo "$rel" | tr '/' '_').stamp"
    [ -s "$OUT/$rel" ] && [ -s "$OUT/$rel.sha256" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$source" ]
}

# Moves FILE into OUT/REL atomically, writes REL.sha256 beside it and the stamp.
publish() {
    local file=$1 rel=$2 source=$3 dest name
    dest="$OUT/$rel"
    name=$(basename "$rel")
    mkdir -p "$(dirname "$dest")"
    mv -f "$file" "$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
    (cd "$(dirname "$dest")" && sha256sum "$name" > "$name.sha256.tmp.$$" && mv -f "$name.sha256.tmp.$$" "$name.sha256")
    echo "$source" > "$STAMPS/$(echo "$rel" | tr '/' '_').stamp"
}

# Reproducible tar.gz of the tree in DIR (entries as given) into FILE.
pack() {
    local dir=$1 file=$2; shift 2
    tar -C "$dir" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
        --format=gnu -cf - "$@" | gzip -n -6 > "$file"
}

placed() { PLACED+=("$(printf '%-11s %-9s %s' "$1" "$2" "$3")"); }

# --- etcd + etcdctl -----------------------------------------------------------------------
place_etcd() {
    local dver cver v rel top srv cli
    dver=$(deb_version etcd-server)
    cver=$(deb_version etcd-client)
    v=$(upstream_version "$dver")
    top="etcd-v$v-linux-$ARCH"
    rel="github.com/etcd-io/etcd/releases/download/v$v/$top.tar.gz"
    if ! up_to_date "$rel" "etcd-server=$dver etcd-client=$cver"; then
        srv=$(unpack_deb etcd-server "$dver")
        cli=$(unpack_deb etcd-client "$cver")
        mkdir -p "$WORK/etcd/$top"
        install -m 0755 "$srv/usr/bin/etcd" "$WORK/etcd/$top/etcd"
        install -m 0755 "$cli/usr/bin/etcdctl" "$WORK/etcd/$top/etcdctl"
        pack "$WORK/etcd" "$WORK/etcd.tar.gz" "$top"
        publish "$WORK/etcd.tar.gz" "$rel" "etcd-server=$dver etcd-client=$cver"
    fi
    placed etcd "v$v" "$rel"
}

# --- containerd ---------------------------------------------------------------------------
place_containerd() {
    local dver v rel dir f
    dver=$(deb_version containerd)
    v=$(upstream_version "$dver")
    rel="github.com/containerd/containerd/releases/download/v$v/containerd-$v-linux-$ARCH.tar.gz"
    if ! up_to_date "$rel" "containerd=$dver"; then
        dir=$(unpack_deb containerd "$dver")
        mkdir -p "$WORK/containerd/bin"
        for f in "$dir"/usr/bin/containerd* "$dir/usr/bin/ctr"; do
            install -m 0755 "$f" "$WORK/containerd/bin/$(basename "$f")"
        done
        for f in containerd containerd-shim-runc-v2 ctr; do
            [ -x "$WORK/containerd/bin/$f" ] || die "Debian's containerd $dver has no $f"
        done
        pack "$WORK/containerd" "$WORK/containerd.tar.gz" bin
        publish "$WORK/containerd.tar.gz" "$rel" "containerd=$dver"
    fi
    placed containerd "v$v" "$rel"
}

# --- runc ---------------------------------------------------------------------------------
place_runc() {
    local dver v rel dir bin
    dver=$(deb_version runc)
    v=$(upstream_version "$dver")
    rel="github.com/opencontainers/runc/releases/download/v$v/runc.$ARCH"
    if ! up_to_date "$rel" "runc=$dver"; then
        dir=$(unpack_deb runc "$dver")
        bin="$dir/usr/sbin/runc"
        [ -x "$bin" ] || bin="$dir/usr/bin/runc"
        [ -x "$bin" ] || die "Debian's runc $dver has no runc binary"
        install -m 0755 "$bin" "$WORK/runc"
        publish "$WORK/runc" "$rel" "runc=$dver"
    fi
    placed runc "v$v" "$rel"
}

# --- CNI plugins --------------------------------------------------------------------------
# Upstream's tarball holds every plugin at its root as ./NAME; Debian installs the same
# plugins into /usr/lib/cni. The names capstan needs (src/artifacts/catalog.rs CNI_PLUGINS)
# must all be there.
place_cni_plugins() {
    local dver v rel dir f
    dver=$(deb_version containernetworking-plugins)
    v=$(upstream_version "$dver")
    rel="github.com/containernetworking/plugins/releases/download/v$v/cni-plugins-linux-$ARCH-v$v.tgz"
    if ! up_to_date "$rel" "containernetworking-plugins=$dver"; then
        dir=$(unpack_deb containernetworking-plugins "$dver")
        rm -rf "$WORK/cni"; mkdir -p "$WORK/cni"
        for f in "$dir"/usr/lib/cni/*; do
            [ -f "$f" ] && install -m 0755 "$f" "$WORK/cni/$(basename "$f")"
        done
        for f in bandwidth bridge firewall host-device host-local loopback portmap ptp tuning; do
            [ -x "$WORK/cni/$f" ] || die "Debian's containernetworking-plugins $dver has no $f"
        done
        chmod 0755 "$WORK/cni"
        pack "$WORK/cni" "$WORK/cni.tgz" .
        publish "$WORK/cni.tgz" "$rel" "containernetworking-plugins=$dver"
    fi
    placed cni-plugins "v$v" "$rel"
}

# --- kubectl ------------------------------------------------------------------------------
# The version a kubectl binary reports (v1.32.4-dispatcher -> v1.32.4), or nothing.
kubectl_version() {
    "$1" version --client -o json 2>/dev/null \
        | sed -n 's/.*"gitVersion": *"\(v[0-9]*\.[0-9]*\.[0-9]*\)[^"]*".*/\1/p' | head -n1
}

place_kubectl_binary() {
    local bin=$1 v=$2 rel source
    rel="release/$v/bin/linux/$ARCH/kubectl"
    source="$(readlink -f "$bin") $(stat -L -c '%s %Y' "$bin")"
    if ! up_to_date "$rel" "$source"; then
        cp -L "$bin" "$WORK/kubectl"
        chmod 0755 "$WORK/kubectl"
        publish "$WORK/kubectl" "$rel" "$source"
    fi
    placed kubectl "$v" "$rel"
}

place_kubectl() {
    local found=0 bin v seen=" "
    # /usr/bin/kubectl first (the brief's v1.32.4), then versioned builds of minors capstan
    # supports (1.31+), skipping versions already placed.
    for bin in /usr/bin/kubectl /usr/lib/google-cloud-sdk/bin/kubectl.1.3[1-9]; do
        [ -x "$bin" ] || continue
        v=$(kubectl_version "$bin")
        [ -n "$v" ] || continue
        case "$seen" in *" $v "*) continue ;; esac
        seen="$seen$v "
        place_kubectl_binary "$bin" "$v"
        found=1
    done
    if [ "$found" = 0 ]; then
        local dver dir
        dver=$(deb_version kubernetes-client)
        dir=$(unpack_deb kubernetes-client "$dver")
        v=$(kubectl_version "$dir/usr/bin/kubectl")
        [ -n "$v" ] || v="v$(upstream_version "$dver")"
        place_kubectl_binary "$dir/usr/bin/kubectl" "$v"
    fi
}

# --- kubelet (the stand-in) ---------------------------------------------------------------
# The real kubelet is not available here; tests/standins provides a stand-in honouring its
# contract. Each version goes to release/{v}/bin/linux/{arch}/kubelet like the real one.
#   CAPSTAN_KUBELET_STANDINS=DIR   every DIR/vX.Y.Z/kubelet (tests/lab/build-standins.sh's output)
#   CAPSTAN_KUBELET_STANDIN=BIN + CAPSTAN_KUBELET_VERSION=vX.Y.Z   one binary
place_kubelet_binary() {
    local bin=$1 v=$2 rel source
    [ -x "$bin" ] || die "kubelet stand-in $bin is not an executable"
    [[ "$v" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "kubelet version must be vX.Y.Z, not '$v'"
    rel="release/$v/bin/linux/$ARCH/kubelet"
    source="$(readlink -f "$bin") $(stat -L -c '%s %Y' "$bin")"
    if ! up_to_date "$rel" "$source"; then
        cp -L "$bin" "$WORK/kubelet"
        chmod 0755 "$WORK/kubelet"
        publish "$WORK/kubelet" "$rel" "$source"
    fi
    placed kubelet "$v" "$rel (stand-in)"
}

place_kubelet() {
    local dir=${CAPSTAN_KUBELET_STANDINS:-} bin=${CAPSTAN_KUBELET_STANDIN:-} d
    if [ -n "$dir" ]; then
        [ -d "$dir" ] || die "CAPSTAN_KUBELET_STANDINS=$dir is not a directory"
        for d in "$dir"/v*/; do
            [ -x "$d/kubelet" ] || continue
            place_kubelet_binary "$d/kubelet" "$(basename "$d")"
        done
    fi
    if [ -n "$bin" ]; then
        place_kubelet_binary "$bin" "${CAPSTAN_KUBELET_VERSION:-}"
    fi
}

place_etcd
place_containerd
place_runc
place_cni_plugins
place_kubectl
place_kubelet

echo "mirror: file://$OUT"
printf '  %s\n' "${PLACED[@]}"
