#!/usr/bin/env bash
# csi-bench end to end against a real CSI plugin (csi-driver-host-path's hostpathplugin, pinned in
# versions.env): a few full volume cycles with staging, concurrency and RSS, then checks nothing is left.
# The benchmark itself is scripts/bench-csi.sh; this only proves the client works.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$BERTH_ROOT"
if [ -n "${HOSTPATHPLUGIN:-}" ]; then
  hostpath=$HOSTPATHPLUGIN
elif ! hostpath=$(scripts/go-tools.sh hostpathplugin); then
  echo "skipped: hostpathplugin $CSI_HOSTPATH_VERSION could not be built from the Go module proxy" >&2
  exit 0
fi
# Same features as stage 10-rust, so its build is reused.
CSI_BENCH_HOSTPATHPLUGIN=$hostpath cargo test --workspace --all-features --test hostpath -- --nocapture
