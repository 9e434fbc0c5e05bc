#!/usr/bin/env bash
# Stops every service a test run started and left behind (the harness records each one's
# process group in .run/pids/), then tears down any test node a killed run left (its
# namespace, mounts, cgroups, kernel settings: test/cluster/teardown.sh, from what the node
# recorded in .run/node/<id>/state/ before it changed anything). Run before and after the
# test suite.
set -u
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/.run/pids"
if [[ -d "$dir" ]]; then
  for f in "$dir"/*; do
    [[ -e "$f" ]] || continue
    pid="$(basename "$f")"
    if kill -0 "$pid" 2>/dev/null; then
      echo "reap: stopping $(head -1 "$f") (pid $pid)" >&2
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
fi
# A node whose owner is alive is in use (another test file's): leave it to that owner. A
# killed owner can linger a moment as a zombie, which `kill -0` still finds: not alive.
alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ "$(cut -d' ' -f1 <<<"${stat##*) }")" != Z ]]
}
owner="$(cat /tmp/nox-node.lock.d/pid 2>/dev/null)"
if [[ -n "$owner" ]] && alive "$owner"; then exit 0; fi
for node in "$root"/.run/node/*/; do
  [[ -d "$node/state" ]] || continue
  echo "reap: tearing down the test node in $node" >&2
  bash "$root/test/cluster/teardown.sh" "${node%/}"
done
rm -rf /tmp/nox-node.lock.d
