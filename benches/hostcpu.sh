# Sourced by the benches: CPU time the lab's hosts (containers) used, read from their cgroups.
# Wall time on a shared 2-core machine moves with everyone else's load; the hosts' CPU per
# run does not, so the benches print both.
#   hosts_cpu_ns LAB      total CPU nanoseconds used so far by the containers of lab LAB
hosts_cpu_ns() {
  local total=0 id v f
  for id in $(docker ps -q --no-trunc --filter "label=capstan.lab=$1"); do
    v=0
    for f in /sys/fs/cgroup/cpuacct/docker/$id/cpuacct.usage \
             /sys/fs/cgroup/cpu,cpuacct/docker/$id/cpuacct.usage \
             /sys/fs/cgroup/cpuacct/system.slice/docker-$id.scope/cpuacct.usage; do
      if [ -r "$f" ]; then v=$(cat "$f"); break; fi
    done
    if [ "$v" = 0 ]; then
      for f in /sys/fs/cgroup/system.slice/docker-$id.scope/cpu.stat /sys/fs/cgroup/docker/$id/cpu.stat; do
        if [ -r "$f" ]; then v=$(awk '$1 == "usage_usec" { print $2 * 1000 }' "$f"); break; fi
      done
    fi
    total=$((total + v))
  done
  echo "$total"
}
