#!/usr/bin/env bash
# Berth's whole test suite, on a fresh machine or a warm one: installs what it needs, then runs every
# stage in scripts/test.d/ in name order (each stage is one executable script). This is the README's test
# command and exactly what .ci/run runs.
# Usage: scripts/test.sh [STAGE-NAME-SUBSTRING...]   (no argument: every stage)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BERTH_ROOT"

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh needs root: the tests make real mounts, loop devices and btrfs pools" >&2
  exit 1
fi

stages=()
for s in scripts/test.d/*.sh; do
  if [ $# -eq 0 ]; then stages+=("$s"); continue; fi
  for want in "$@"; do case "$s" in *"$want"*) stages+=("$s") ;; esac; done
done

passed=0 failed=0 total_start=$SECONDS
for s in "${stages[@]}"; do
  if step "$(basename "$s" .sh)" bash "$s"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "suite finished in $((SECONDS - total_start))s"
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
