#!/usr/bin/env bash
# The upstream csi-sanity conformance suite against every berth-csi driver configuration.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$BERTH_ROOT"
cargo build -q -p berth-csi
bash scripts/csi-sanity.sh
