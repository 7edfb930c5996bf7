#!/usr/bin/env bash
# Node agent against real components: installs Debian's containerd, runc, docker-registry, skopeo, umoci
# and busybox-static, then runs the Rust tests that start private containerd instances (own root, state
# and socket under a temp dir, config_path set) and registries on 127.0.0.1, build small OCI images
# locally and import them. Nothing is pulled from the internet. Every process the tests start is killed by
# PID (by the tests themselves, and by the trap below from the PID files they leave, should a test die).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$BERTH_ROOT"

apt_install containerd runc docker-registry skopeo umoci busybox-static

BERTH_NA_TMP=$(mktemp -d /tmp/berth-node-agent.XXXXXX)
export BERTH_NA_TMP
cleanup() {
  # Kill, by PID, whatever a crashed test left running: containerd and registries (the tests' PID files),
  # container shims and their processes (containerd's own shim.pid / init.pid under the same temp dir).
  local pidfile pid
  while IFS= read -r pidfile; do
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
  done < <(find "$BERTH_NA_TMP" -name '*.pid' 2>/dev/null)
  grep -o " $BERTH_NA_TMP[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
  rm -rf "$BERTH_NA_TMP" || true
}
trap cleanup EXIT

# BERTH_REQUIRE_REAL turns "skipped: tool missing" into a failure: here everything must be installed.
export BERTH_REQUIRE_REAL=1
step "node agent vs real containerd and registry" \
  cargo test -p berth-operator --test node_agent_real -- --test-threads=1

# The same agent fed through a real kube-apiserver: the e2e harness's (its own state dir and ports, so it
# never meets another stage's cluster). BERTH_NA_KUBECONFIG may point at a running cluster instead.
if [ -z "${BERTH_NA_KUBECONFIG:-}" ] && [ ! -f e2e/src/bin/berth-cluster.rs ]; then
  echo "SKIPPED node_agent_cluster: the e2e harness (e2e/src/bin/berth-cluster.rs) is not in this tree yet"
  exit 0
fi
if [ -z "${BERTH_NA_KUBECONFIG:-}" ]; then
  cluster=(cargo run -q -p berth-e2e --bin berth-cluster -- --state-dir "$BERTH_NA_TMP/cluster")
  teardown_cluster() { "${cluster[@]}" down --purge >/dev/null 2>&1 || true; cleanup; }
  trap teardown_cluster EXIT
  step "go tools for the cluster (cached by version)" scripts/go-tools.sh cluster
  step "cargo build (berth-csi, berth-cluster)" cargo build -q -p berth-csi -p berth-e2e --bins
  step "cluster up (1 simulated node)" "${cluster[@]}" up --nodes 1 --port-base 27410
  export BERTH_NA_KUBECONFIG=$BERTH_NA_TMP/cluster/kubeconfig
  # The agent serves the harness's simulated node, with its own containerd.
  export BERTH_NA_SIMULATED_NODE=node-1
fi
export BERTH_REQUIRE_CLUSTER=1
step "node agent through the API server" \
  cargo test -p berth-operator --test node_agent_cluster -- --test-threads=1
