#!/usr/bin/env bash
# The ReplicatedDatabase benchmark (issue 4): 200 databases x 3 members on 50 simulated nodes, from apply
# until every member is Ready; the operator's peak RSS; its API writes during 5 minutes at rest; and the
# Promote failover time. Brings up its own e2e cluster (berth-cluster) and always tears it down.
# Usage: scripts/rdb-bench.sh [DATABASES] [STEADY_SECONDS] [NODES]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BERTH_ROOT"
databases=${1:-200} steady=${2:-300} nodes=${3:-50}

export BERTH_E2E_STATE_DIR=${BERTH_E2E_STATE_DIR:-$(mktemp -d /tmp/berth-rdb-bench.XXXXXX)}
# The binary the build step made (cargo run would rebuild it with a different feature set).
cluster=("$BERTH_ROOT/target/release/berth-cluster")
trap '[ -x "${cluster[0]}" ] && "${cluster[@]}" down --purge || true' EXIT

step "build (release)" cargo build --release -p berth-operator -p berth-csi -p berth-e2e --bins --examples
step "go tools" scripts/go-tools.sh cluster
step "cluster up ($nodes nodes)" "${cluster[@]}" up --nodes "$nodes" --port-base 27600
step "benchmark" env BERTH_KUBECONFIG="$BERTH_E2E_STATE_DIR/kubeconfig" \
  target/release/examples/rdb_bench --operator target/release/berth-operator \
  --databases "$databases" --steady-seconds "$steady"
