#!/bin/sh
# Builds the image of capstan's lab hosts (see DESIGN.md "The test bed") when it is missing.
#
#   tests/lab/build-image.sh [TAG]        default TAG: capstan-lab:bookworm-3 (src/lab DEFAULT_IMAGE)
#   LAB_SUITE=trixie tests/lab/build-image.sh    capstan-lab:trixie-3, a second image (not the default)
#
# Debian bookworm (debootstrap --variant=minbase) with systemd as PID 1, OpenSSH, sudo and what a
# golden VM image carries, `docker import`ed with the entrypoint tests/lab/entrypoint.sh.
# The same recipe makes a Debian trixie image (glibc 2.41), on which the test mirror's forky
# runc 1.3.6 (glibc 2.38) runs; bookworm's glibc 2.36 cannot run it.
# Bump the tag's suffix (here and in src/lab/mod.rs) whenever this recipe changes.
#
# Environment: LAB_SUITE bookworm (default) or trixie; LAB_MIRROR overrides the Debian mirror
# (default: the one apt uses on this machine).
# Needs root, debootstrap and a running dockerd. Takes about 2 minutes.
# (docker import cannot set STOPSIGNAL: `capstan lab up` passes --stop-signal SIGRTMIN+3.)
set -eu

TAG=${1:-capstan-lab:bookworm-3}
HERE=$(cd "$(dirname "$0")" && pwd)
SUITE=${LAB_SUITE:-bookworm}
case $SUITE in
    bookworm) ;;
    trixie) TAG=${1:-capstan-lab:trixie-3} ;;
    *) echo "build-image: error: LAB_SUITE must be bookworm or trixie, not '$SUITE'" >&2; exit 1 ;;
esac

say() { echo "build-image: $*"; }
die() { echo "build-image: error: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "docker is not reachable: start dockerd (systemctl start docker, or dockerd &)"

if docker image inspect "$TAG" >/dev/null 2>&1; then
    say "$TAG is present ($(docker image inspect -f '{{.Id}} created {{.Created}}' "$TAG")); nothing to do"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap and chroot)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"

# The Debian mirror apt uses here (deb822 "URIs:" or one-line "deb URL suite"), security excluded.
find_mirror() {
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk '
            /^[[:space:]]*#/ { next }
            /^URIs:/ { for (i = 2; i <= NF; i++) print $i }
            /^deb[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }
        ' "$f"
    done | grep -E '/debian/?$' | grep -v -- '-security' | head -n 1
}
MIRROR=${LAB_MIRROR:-$(find_mirror)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

PACKAGES="systemd,systemd-sysv,dbus,openssh-server,sudo,iproute2,iptables,curl,ca-certificates"
PACKAGES="$PACKAGES,haproxy,nginx,libnginx-mod-stream,openssl,kmod,procps,python3"
# kubeadm's preflight and the kubelet want these on the PATH.
PACKAGES="$PACKAGES,conntrack,socat,ethtool,ebtables,util-linux,mount,less"
# Ubuntu's resolver, off unless a test turns it on (its stub at 127.0.0.53 in resolv.conf).
PACKAGES="$PACKAGES,systemd-resolved"

START=$(date +%s)
WORK=$(mktemp -d /tmp/capstan-lab-image.XXXXXX)
ROOT=$WORK/root
cleanup() {
    for m in proc sys dev/pts dev; do
        mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m"
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

say "debootstrap $SUITE (minbase) from $MIRROR into $ROOT"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 30 "$WORK/debootstrap.log" >&2
    die "debootstrap failed (log above)"
}
say "debootstrap done in $(($(date +%s) - START)) s"

in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

# --- users -----------------------------------------------------------------------------------
# ops: sudo asks for its password ("ops"); deploy: passwordless sudo. Both log in by key only
# (capstan lab up installs the lab's key into root's, ops's and deploy's authorized_keys).
in_root useradd --create-home --shell /bin/bash --groups sudo ops
echo 'ops:ops' | in_root chpasswd
in_root useradd --create-home --shell /bin/bash deploy
in_root usermod --password '*' deploy # no password, but not locked
echo 'deploy ALL=(ALL:ALL) NOPASSWD: ALL' >"$ROOT/etc/sudoers.d/deploy"
chmod 0440 "$ROOT/etc/sudoers.d/deploy"
for home in root home/ops home/deploy; do
    install -d -m 0700 "$ROOT/$home/.ssh"
done
in_root chown ops:ops /home/ops/.ssh
in_root chown deploy:deploy /home/deploy/.ssh
say "users: root (key), ops (key, sudo with password 'ops'), deploy (key, passwordless sudo)"

# --- sshd: keys only, host keys generated per container at first boot -------------------------
cat >"$ROOT/etc/ssh/sshd_config.d/capstan-lab.conf" <<'EOF'
# capstan lab host: public keys only.
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UseDNS no
MaxStartups 200:30:400
# ed25519 and ECDSA only: generating an RSA key at each container's first boot costs seconds
# of CPU per host, which makes big labs slow to start.
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
EOF
rm -f "$ROOT"/etc/ssh/ssh_host_*
cat >"$ROOT/etc/systemd/system/capstan-ssh-host-keys.service" <<'EOF'
[Unit]
Description=Generate this lab host's own SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/bin/rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ecdsa_key /etc/ssh/ssh_host_ecdsa_key.pub
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -C "" -f /etc/ssh/ssh_host_ed25519_key
ExecStart=/usr/bin/ssh-keygen -q -t ecdsa -N "" -C "" -f /etc/ssh/ssh_host_ecdsa_key
RemainAfterExit=yes

[Install]
RequiredBy=ssh.service
EOF
in_root systemctl enable capstan-ssh-host-keys.service >/dev/null 2>&1
in_root systemctl enable ssh.service >/dev/null 2>&1
say "sshd: root by key only, no passwords; ed25519 and ECDSA host keys generated at each container's first boot"

# --- services capstan manages are installed but disabled --------------------------------------
in_root systemctl disable haproxy.service nginx.service >/dev/null 2>&1
say "haproxy and nginx installed, disabled"
# systemd-resolved as on Ubuntu, but off: a lab host resolves through Docker's 127.0.0.11
# unless a test starts it. Its package points /etc/resolv.conf at its stub; Docker mounts
# its own file there in each container, so a plain file is left.
in_root systemctl disable systemd-resolved.service >/dev/null 2>&1
rm -f "$ROOT/etc/resolv.conf"
: >"$ROOT/etc/resolv.conf"
say "systemd-resolved installed, disabled"

# --- systemd in a container (as kind does) ----------------------------------------------------
# Units that need hardware, a console or a writable /proc/sys fail in a container: mask them.
MASK="getty.target console-getty.service getty@tty1.service serial-getty@.service
systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket
systemd-udev-trigger.service systemd-udev-settle.service systemd-modules-load.service
systemd-firstboot.service systemd-remount-fs.service systemd-journald-audit.socket
sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount sys-fs-fuse-connections.mount
dev-hugepages.mount apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer"
for unit in $MASK; do
    ln -sf /dev/null "$ROOT/etc/systemd/system/$unit"
done
mkdir -p "$ROOT/etc/systemd/journald.conf.d"
printf '[Journal]\nReadKMsg=no\nStorage=volatile\n' >"$ROOT/etc/systemd/journald.conf.d/capstan-lab.conf"
say "masked: $(echo $MASK | tr '\n' ' ')"

# Each container gets its own machine-id (systemd generates it at first boot).
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$ROOT/var/lib/dbus/machine-id"

# Hostname and hosts come from Docker; no fstab.
: >"$ROOT/etc/fstab"
rm -f "$ROOT/etc/hostname"

# --- entrypoint -------------------------------------------------------------------------------
install -m 0755 "$HERE/entrypoint.sh" "$ROOT/usr/local/sbin/capstan-lab-entrypoint"
echo "$TAG" >"$ROOT/etc/capstan-lab-image"

# --- slim down and import ---------------------------------------------------------------------
in_root apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/log/*.log "$ROOT"/tmp/* \
    "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/*

say "importing into docker as $TAG"
tar --numeric-owner --xattrs -C "$ROOT" -c . | docker import \
    --change 'ENTRYPOINT ["/usr/local/sbin/capstan-lab-entrypoint"]' \
    --change 'CMD ["/sbin/init"]' \
    --change 'ENV container=docker' \
    --message "capstan lab host: Debian $SUITE minbase + systemd, sshd (tests/lab/build-image.sh)" \
    - "$TAG" >/dev/null
say "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{ printf "%.0f MB", $1 / 1e6 }')) in $(($(date +%s) - START)) s"
