#!/usr/bin/env bash
# Runs the whole suite. Services tests start are stopped by the tests themselves; the reaper
# before and after catches anything an interrupted or crashed run left behind.
# The real-node files (test/cluster/: a Kubernetes node running the chart's dozen pods) run
# after the rest, not beside it: on 2 cores they would starve the other worker's e2e suites.
# With arguments (files or filters), exactly those run, in one vitest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/reap.sh
trap 'bash scripts/reap.sh' EXIT INT TERM
start=$SECONDS
if (($#)); then
  npx vitest run "$@"
  rc=$?
else
  reports=(.run/vitest-main.json .run/vitest-cluster.json)
  mkdir -p .run && rm -f "${reports[@]}"
  json() { echo --reporter=default --reporter=json --outputFile.json="$1"; }
  npx vitest run --exclude 'test/cluster/**' $(json "${reports[0]}")
  rc=$?
  echo "make test: vitest (all but test/cluster) exited $rc after $((SECONDS - start))s"
  npx vitest run test/cluster $(json "${reports[1]}")
  node_rc=$?
  ((rc == 0)) && rc=$node_rc
  # Both runs' failures, last: a CI log's tail is often all one gets to see.
  node scripts/failed-tests.mjs "${reports[@]}"
fi
echo "make test: vitest exited $rc after $((SECONDS - start))s"
exit $rc
