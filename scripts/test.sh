#!/usr/bin/env bash
# Runs the whole suite. Services tests start are stopped by the tests themselves; the reaper
# before and after catches anything an interrupted or crashed run left behind.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/reap.sh
trap 'bash scripts/reap.sh' EXIT INT TERM
start=$SECONDS
npx vitest run "$@"
rc=$?
echo "make test: vitest exited $rc after $((SECONDS - start))s"
exit $rc
