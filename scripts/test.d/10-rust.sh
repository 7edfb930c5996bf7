#!/usr/bin/env bash
# Formatting, lints, and every cargo test in the workspace (unit tests and real-filesystem integration tests).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$BERTH_ROOT"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo test --workspace --all-features
