#!/bin/sh
# Entrypoint of capstan's lab hosts (see DESIGN.md "The test bed").
#
# Runs as PID 1 of a container started by `capstan lab up` (--cgroupns=private, no --privileged,
# CAP_SYS_ADMIN) and prepares the container so that systemd, containerd and a real kubelet
# behave as on a VM, then execs systemd in a fresh cgroup namespace:
#
#  1. every cgroup mount is remounted read-write (Docker mounts them read-only);
#  2. in the v1 hierarchies that the Docker host does not mount (hugetlb, perf_event, net_cls
#     on these machines) the container's namespace root is the host's root cgroup, shared by
#     every container: move into a per-host child there and show that child at the mount point;
#  3. `/` becomes rshared (kubelet and containerd propagate mounts);
#  4. the non-namespaced sysctls the kubelet would write into the host kernel are shadowed by
#     bind-mounted files that already hold the values it wants;
#  5. the default route is removed when CAPSTAN_LAB_NO_DEFAULT_ROUTE=1 (the lab's networks are
#     internal: no egress);
#  6. exec unshare --cgroup /sbin/init: every hierarchy's root is now this host's own cgroup.
set -eu

log() { echo "capstan-lab-entrypoint: $*" >&2; }

host=$(hostname)

# 1. cgroup mounts read-write.
#    /proc/self/mountinfo field 5 is the mount point, the fstype follows the " - " separator.
cgroup_mounts() {
    awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { fs = $(i + 1); break }
           if (fs == "cgroup" || fs == "cgroup2" || ($5 == "/sys/fs/cgroup" && fs == "tmpfs")) print $5 }' \
        /proc/self/mountinfo
}
for mp in $(cgroup_mounts); do
    mount -o remount,bind,rw "$mp" || log "cannot remount $mp read-write"
done

# 2. v1 hierarchies the Docker host does not mount: Docker does not mount them in the container
#    either. Where the hierarchy exists in the kernel (/proc/cgroups: hierarchy id != 0), mount it;
#    its namespace root is then the real root, shared by every container, so move into a per-host
#    child and show that child at the mount point. (A hierarchy that does not exist cannot be
#    created from a non-initial cgroup namespace; nothing can use it, so it is skipped.)
mounted_controllers=$(awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup") print $(i + 3); break } }' \
    /proc/self/mountinfo | tr ',' '\n')
for id in $(awk 'NR > 1 && $4 == 1 && $2 != 0 { print $2 }' /proc/cgroups | sort -u); do
    controllers=$(awk -v id="$id" 'NR > 1 && $2 == id { print $1 }' /proc/cgroups)
    missing=no
    for c in $controllers; do
        echo "$mounted_controllers" | grep -qx "$c" || missing=yes
    done
    [ "$missing" = yes ] || continue
    opts=$(echo $controllers | tr ' ' ',')
    dir=/sys/fs/cgroup/$opts
    mkdir -p "$dir"
    if ! mount -t cgroup -o "$opts" cgroup "$dir" 2>/dev/null; then
        log "cannot mount cgroup hierarchy $opts; skipped"
        continue
    fi
    for c in $controllers; do
        [ "$c" = "$opts" ] || [ -e "/sys/fs/cgroup/$c" ] || ln -s "$opts" "/sys/fs/cgroup/$c"
    done
done
#    In cgroup v1 only a hierarchy's root cgroup has `release_agent`: under --cgroupns=private the
#    hierarchies Docker manages show the container's own cgroup, so finding it means a shared root.
for dir in /sys/fs/cgroup/*; do
    [ -d "$dir" ] && [ ! -L "$dir" ] && mountpoint -q "$dir" || continue
    [ -e "$dir/release_agent" ] && [ -e "$dir/cgroup.procs" ] || continue
    child="$dir/capstan-lab-$host"
    mkdir -p "$child"
    echo $$ >"$child/cgroup.procs"
    mount --bind "$child" "$dir"
    log "cgroup ${dir#/sys/fs/cgroup/}: moved into the per-host child $child"
done

# 3. Shared mount propagation, as on a systemd host.
mount --make-rshared /

# 4. Shadow the non-namespaced sysctls with the values the kubelet wants.
shadow=/run/capstan-lab/sysctl
mkdir -p "$shadow"
for pair in \
    vm/overcommit_memory=1 \
    vm/panic_on_oom=0 \
    kernel/panic=10 \
    kernel/panic_on_oops=1 \
    kernel/keys/root_maxkeys=1000000 \
    kernel/keys/root_maxbytes=25000000; do
    key=${pair%%=*}
    value=${pair#*=}
    target=/proc/sys/$key
    [ -e "$target" ] || continue
    file="$shadow/$(echo "$key" | tr / .)"
    echo "$value" >"$file"
    mount --bind "$file" "$target" || log "cannot shadow $target"
done

# 5. A lab network is internal (no egress), but Docker 20.10 still gives its containers a default
#    route through the bridge. `capstan lab up` sets CAPSTAN_LAB_NO_DEFAULT_ROUTE=1: drop it, so
#    that traffic to the outside fails at once ("Network is unreachable") and never leaves.
if [ "${CAPSTAN_LAB_NO_DEFAULT_ROUTE:-0}" = 1 ]; then
    while ip route show default | grep -q .; do
        ip route del default || { log "cannot remove the default route"; break; }
    done
    ip -6 route del default 2>/dev/null || true
fi

# 6. systemd as PID 1 in its own cgroup namespace.
if [ "$#" -eq 0 ]; then set -- /sbin/init; fi
exec unshare --cgroup "$@"
