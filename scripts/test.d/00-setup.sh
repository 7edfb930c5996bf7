#!/usr/bin/env bash
# Installs the Debian packages the tests need (idempotent) and checks the Rust toolchain's components.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
apt_install btrfs-progs xfsprogs e2fsprogs fuse3 util-linux
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt
