#!/usr/bin/env bash
# Cluster e2e: builds the pinned control plane and CSI sidecars (cached by version), brings up a real
# kube-apiserver/etcd/controller-manager/scheduler with kwok nodes and berth-csi behind the real
# sidecars, runs the storage e2e tests against it, and always tears it down (also on failure).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$BERTH_ROOT"

apt_install btrfs-progs e2fsprogs util-linux fuse3
export BERTH_E2E_STATE_DIR=${BERTH_E2E_STATE_DIR:-$(mktemp -d /tmp/berth-e2e.XXXXXX)}
cluster="${CARGO_TARGET_DIR:-$BERTH_ROOT/target}/debug/berth-cluster"
# Own ports (below the ephemeral range), so a developer's cluster on the default ports is left alone.
port_base=${BERTH_E2E_PORT_BASE:-$((20000 + RANDOM % 1000 * 10))}

teardown() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -d "$BERTH_E2E_STATE_DIR/logs" ]; then
    echo "--- e2e failed; last lines of each component log:"
    for f in "$BERTH_E2E_STATE_DIR"/logs/*.log; do
      echo "--- $f"; tail -n 15 "$f"
    done
  fi
  if [ -x "$cluster" ]; then "$cluster" down --purge || true; fi
  exit "${rc:-1}"
}
trap teardown EXIT

step "go tools (cold: builds from the Go module proxy)" scripts/go-tools.sh cluster
# One cargo invocation per package set, each the same as when it is used below, so nothing is
# rebuilt with different features in between.
step "cargo build (berth-csi, nolinkfs)" cargo build -p berth-csi -p nolinkfs
step "cargo build (berth-cluster, e2e tests)" cargo test -p berth-e2e --test storage --no-run
step "cargo build (berth-cluster)" cargo build -p berth-e2e --bins
step "cluster up" "$cluster" up --port-base "$port_base" --nodes 3 --pool-size 512M --node-pool-size node-3=160M --nolinks-pool
step "storage e2e" cargo test -p berth-e2e --test storage -- --ignored --test-threads 2

up_again() { # a second `up` on a running cluster must start nothing
  local out
  out=$("$cluster" up --port-base "$port_base" --nodes 3 --pool-size 512M --node-pool-size node-3=160M --nolinks-pool) || return 1
  echo "$out"
  grep -q "nothing to start" <<<"$out"
}
step "cluster up again (idempotent)" up_again
step "cluster status" "$cluster" status
