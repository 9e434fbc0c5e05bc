#!/usr/bin/env bash
# Tears down a test node and puts the host back as it was, from what startNode recorded in
# <node dir>/state/ before it changed anything. The one teardown: the harness's stop() runs
# it after stopping the node's processes gracefully, and scripts/reap.sh runs it for a node a
# crashed or killed test run left behind. Idempotent; every step tolerates "already gone".
#
#   bash test/cluster/teardown.sh <node dir>
set -u
dir="${1:?usage: teardown.sh <node dir>}"
state="$dir/state"
[[ -d "$state" ]] || exit 0
read_state() { [[ -f "$state/$1" ]] && cat "$state/$1"; }
netns="$(read_state netns)"
host_link="$(read_state host-link)"
cgroup_root="$(read_state cgroup-root)"
log() { printf '[node teardown] %s\n' "$*" >&2; }

# 1. Processes. Everything the harness started (containerd and its shims, etcd, the control
# plane, kubelet, kube-proxy, CoreDNS) runs in the node's network namespace; the pods'
# processes are in their own namespaces but inside the kubelet's cgroup root.
pod_pids() { cat /sys/fs/cgroup/*/"$cgroup_root"/**/cgroup.procs 2>/dev/null; }
shopt -s globstar nullglob
for _ in $(seq 1 50); do
  pids="$( { [[ -n "$netns" ]] && ip netns pids "$netns" 2>/dev/null; [[ -n "$cgroup_root" ]] && pod_pids; } | sort -u)"
  [[ -z "$pids" ]] && break
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null
  sleep 0.1
done
[[ -n "${pids:-}" ]] && log "processes still alive: $pids"

# 2. Mounts: whatever is mounted under the node's directory (containerd's snapshots and
# sandbox /dev/shm, the kubelet's volumes and its rshared root) and the pods' network
# namespaces containerd bound under /run/netns. Deepest first, lazily: a mount point whose
# last user just died may still read as busy for a moment.
before_netns="$(read_state netns-before)"
mounts() {
  awk '{print $5}' /proc/self/mountinfo | sed 's/\\040/ /g' | while read -r m; do
    if [[ "$m" == "$dir"/* ]]; then echo "$m"; fi
    if [[ "$m" == /run/netns/cni-* || "$m" == /var/run/netns/cni-* ]]; then
      grep -qxF "$(basename "$m")" <<<"$before_netns" || echo "$m"
    fi
  done | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-
}
for _ in 1 2 3 4 5; do
  list="$(mounts)"
  [[ -z "$list" ]] && break
  while read -r m; do umount -l "$m" 2>/dev/null; done <<<"$list"
done
[[ -n "$(mounts)" ]] && log "still mounted: $(mounts | tr '\n' ' ')"
for f in /run/netns/cni-*; do
  grep -qxF "$(basename "$f")" <<<"$before_netns" || rm -f "$f"
done

# 3. Cgroups: the kubelet's root in every v1 hierarchy (and the unified one), deepest first.
if [[ -n "$cgroup_root" ]]; then
  for h in /sys/fs/cgroup/*/; do
    [[ -d "$h$cgroup_root" ]] && find "$h$cgroup_root" -depth -type d -exec rmdir {} + 2>/dev/null
    [[ -d "$h$cgroup_root" ]] && log "cgroup left: $h$cgroup_root"
  done
fi

# 4. Network: the namespace (its bridge, pods' veth ends, KUBE-* chains and ip_forward die
# with it) and the host's end of the veth with its routes.
if [[ -n "$netns" ]] && ip netns list | grep -qw "$netns"; then ip netns delete "$netns" || log "netns $netns not deleted"; fi
if [[ -n "$host_link" ]] && ip link show "$host_link" >/dev/null 2>&1; then ip link delete "$host_link"; fi

# 5. Kernel settings the kubelet changed (recorded as `name value` before it started).
if [[ -f "$state/sysctls" ]]; then
  while read -r name value; do
    [[ -n "$name" ]] && sysctl -q -w "$name=$value" >/dev/null 2>&1 || log "could not restore $name=$value"
  done <"$state/sysctls"
fi

# 6. Host paths the node's components create on their own (CNI's cache, the shims' socket
# directory, the kubelet's /var/log/containers links) that did not exist before it started.
# `ip netns add` makes /run/netns a mount point of its own: unmount before removing.
if [[ -f "$state/paths-created" ]]; then
  while read -r p; do
    [[ -n "$p" && -e "$p" ]] || continue
    while awk '{print $5}' /proc/self/mountinfo | grep -qxF "$p"; do umount -l "$p" || break; done
    rm -rf --one-file-system "$p"
  done <"$state/paths-created"
fi

# 7. The node's data (images, snapshots, etcd, volumes), now that nothing is mounted in it;
# the logs stay for reading.
if [[ -z "$(mounts)" ]]; then
  rm -rf --one-file-system "$dir/containerd" "$dir/kubelet" "$dir/etcd" "$dir/volumes" "$dir/runc"
  rm -rf "$state"
else
  log "left $dir in place: mounts remain"
  exit 1
fi
