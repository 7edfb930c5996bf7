#!/usr/bin/env bash
# The ReplicatedDatabase operator beyond unit tests:
#  1. the postgres engine profile against real PostgreSQL (Debian's package) on 127.0.0.1, using exactly the
#     scripts the operator mounts in Pods;
#  2. the CRD (schema, CEL rules, scale subresource) and the controller binary against a bare etcd +
#     kube-apiserver (the failover test plays scheduler and kubelet itself);
#  3. scenarios 8-13 in the e2e cluster (real control plane, kwok nodes, berth-csi behind the CSI sidecars)
#     when the e2e harness is in the tree.
# Everything it starts it stops, also on failure.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$BERTH_ROOT"

apiserver_dir="" cluster_dir=""
cleanup() {
  local rc=$?
  if [ -n "$apiserver_dir" ]; then scripts/rdb-apiserver.sh down "$apiserver_dir" || true; fi
  if [ -n "$cluster_dir" ]; then
    if [ "$rc" -ne 0 ] && [ -d "$cluster_dir/logs" ]; then
      for f in "$cluster_dir"/logs/*.log; do echo "--- $f"; tail -n 10 "$f"; done
    fi
    BERTH_E2E_STATE_DIR="$cluster_dir" cargo run -q -p berth-e2e --bin berth-cluster -- down --purge || true
  fi
  exit "$rc"
}
trap cleanup EXIT

step "install PostgreSQL" apt_install postgresql postgresql-client util-linux curl openssl
BERTH_PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
export BERTH_PG_BIN
echo "PostgreSQL: $("$BERTH_PG_BIN/postgres" --version)"
step "build the operator and its tests" cargo build -p berth-operator --bins --tests
step "postgres profile" cargo test -p berth-operator --test postgres_profile -- --nocapture

if ! grep -q "kube-apiserver" scripts/go-tools.sh; then
  echo "SKIPPED the API server and cluster tests: scripts/go-tools.sh cannot build kube-apiserver on this tree (it comes with the e2e harness)"
  exit 0
fi
apiserver_dir=$(mktemp -d /tmp/berth-operator-rdb-apiserver.XXXXXX)
step "etcd + kube-apiserver" scripts/rdb-apiserver.sh up "$apiserver_dir" 27400
step "CRD validation; controller failover through the API server" env BERTH_KUBECONFIG="$apiserver_dir/kubeconfig" \
  cargo test -p berth-operator --test rdb_apiserver -- --nocapture --test-threads 1
scripts/rdb-apiserver.sh down "$apiserver_dir"
apiserver_dir=""

if [ ! -f e2e/src/bin/berth-cluster.rs ]; then
  echo "SKIPPED the cluster scenarios: the e2e harness (berth-cluster) is not in this tree"
  exit 0
fi
cluster_dir=$(mktemp -d /tmp/berth-operator-rdb-e2e.XXXXXX)
export BERTH_E2E_STATE_DIR=$cluster_dir
step "cluster tools" scripts/go-tools.sh cluster
step "build berth-csi and the harness" cargo build -p berth-csi -p berth-e2e --bins
step "cluster up (5 kwok nodes)" cargo run -q -p berth-e2e --bin berth-cluster -- up --nodes 5 --port-base 27800
step "ReplicatedDatabase scenarios 8-13" env BERTH_KUBECONFIG="$cluster_dir/kubeconfig" \
  cargo test -p berth-operator --test rdb_cluster -- --nocapture
