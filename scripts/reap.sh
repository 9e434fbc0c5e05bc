#!/usr/bin/env bash
# Stops every service a test run started and left behind (the harness records each one's
# process group in .run/pids/). Run before and after the test suite.
set -u
dir="$(cd "$(dirname "$0")/.." && pwd)/.run/pids"
[[ -d "$dir" ]] || exit 0
for f in "$dir"/*; do
  [[ -e "$f" ]] || continue
  pid="$(basename "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    echo "reap: stopping $(head -1 "$f") (pid $pid)" >&2
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
done
