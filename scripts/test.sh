#!/usr/bin/env bash
# Runs the whole suite. Services tests start are stopped by the tests themselves; the reaper
# before and after catches anything an interrupted or crashed run left behind.
# Two kinds of files run after the rest, each kind on its own, not beside other suites: on 2
# cores they would starve the other worker's e2e suites (and be starved by them):
# test/load/ (minutes of steady traffic through Envoy) and test/cluster/ (a Kubernetes node
# running the chart's dozen pods).
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
  reports=(.run/vitest-main.json .run/vitest-load.json .run/vitest-cluster.json)
  mkdir -p .run && rm -f "${reports[@]}"
  json() { echo --reporter=default --reporter=json --outputFile.json="$1"; }
  # The trainer's own tests (Python: scikit-learn, skl2onnx, onnxruntime).
  (cd trainer && ../.tools/python/bin/python -m pytest -q -p no:cacheprovider tests)
  py_rc=$?
  echo "make test: pytest trainer/tests exited $py_rc after $((SECONDS - start))s"
  npx vitest run --exclude 'test/cluster/**' --exclude 'test/load/**' $(json "${reports[0]}")
  rc=$?
  ((rc == 0)) && rc=$py_rc
  echo "make test: vitest (all but test/load and test/cluster) exited $rc after $((SECONDS - start))s"
  npx vitest run test/load --maxWorkers=1 $(json "${reports[1]}")
  load_rc=$?
  ((rc == 0)) && rc=$load_rc
  echo "make test: vitest test/load exited $load_rc after $((SECONDS - start))s"
  npx vitest run test/cluster $(json "${reports[2]}")
  node_rc=$?
  ((rc == 0)) && rc=$node_rc
  # Both runs' failures, last: a CI log's tail is often all one gets to see.
  node scripts/failed-tests.mjs "${reports[@]}"
fi
echo "make test: vitest exited $rc after $((SECONDS - start))s"
exit $rc
